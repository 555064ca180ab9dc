//! Finding and removing what our programs left behind, in every namespace.
//!
//! A process killed with SIGKILL cannot clean up, and kernel objects outlive their
//! processes: a FIFO node or socket file stays in its directory, a POSIX queue or
//! shared memory object stays until unlinked, a System V object until `IPC_RMID`
//! or reboot. `ipc-clean` lists them all and removes them with `--remove`:
//!
//! | namespace | where we look | which are ours |
//! |---|---|---|
//! | private directory | its entries | all of them |
//! | POSIX shm and named semaphores | `/dev/shm` | `ipc-demos.<uid>.*`, `sem.ipc-demos.<uid>.*`, owned by us |
//! | POSIX message queues | `/dev/mqueue` when mounted; else the default name and the names our lock files record | `ipc-demos.<uid>.*`, or recorded, owned by us |
//! | System V msg, shm, sem | `/proc/sysvipc/*` | owned by us, key made by `ftok` from a file in the private directory |
//!
//! # Pitfalls
//! Without a mounted `/dev/mqueue` the kernel offers no list of POSIX queues, and
//! a System V object made with an explicit `--key`, or whose key file is gone, has
//! nothing that marks it ours: `ipcs` and `ipcrm` remain the tools for those.

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, mq_close, mq_open, mq_unlink};
use nix::sys::stat::{Mode, SFlag, fstat, lstat};

use crate::error::{Context, Error, Result};
use crate::liveness::READER_SUFFIX;
use crate::paths::{self, file_kind, uid};

/// Lock-file kind of POSIX message queues (see [`paths::posix_lock_base`]).
pub const MQ_POSIX: &str = "mq-posix";

/// Where POSIX shared memory and named semaphores appear as files.
pub const DEV_SHM: &str = "/dev/shm";
/// Where POSIX message queues appear, if an mqueue file system is mounted there.
pub const DEV_MQUEUE: &str = "/dev/mqueue";

/// The three System V IPC kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysvKind {
    /// Message queue (msgget).
    Msg,
    /// Shared memory segment (shmget).
    Shm,
    /// Semaphore set (semget).
    Sem,
}

impl SysvKind {
    fn proc_file(self) -> &'static str {
        match self {
            SysvKind::Msg => "/proc/sysvipc/msg",
            SysvKind::Shm => "/proc/sysvipc/shm",
            SysvKind::Sem => "/proc/sysvipc/sem",
        }
    }

    fn ipcrm_flag(self) -> &'static str {
        match self {
            SysvKind::Msg => "-q",
            SysvKind::Shm => "-m",
            SysvKind::Sem => "-s",
        }
    }

    fn label(self) -> &'static str {
        match self {
            SysvKind::Msg => "sysv msg queue",
            SysvKind::Shm => "sysv shm segment",
            SysvKind::Sem => "sysv semaphore set",
        }
    }
}

/// How a leftover is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Removal {
    /// A file-system name: FIFO, socket, lock file, `/dev/shm` or `/dev/mqueue` entry.
    Unlink(PathBuf),
    /// A System V object by id.
    Sysv(SysvKind, i32),
    /// A POSIX message queue by name (no file to unlink without /dev/mqueue).
    MqUnlink(String),
}

/// One object of ours that is still there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// What it is: "fifo", "posix shm", "sysv msg queue"...
    pub kind: &'static str,
    /// Its name: a path, or `key 0x... id N`.
    pub name: String,
    how: Removal,
}

impl Leftover {
    /// The shell command that removes it by hand.
    #[must_use]
    pub fn command(&self) -> String {
        match &self.how {
            Removal::Unlink(p) => format!("rm {}", p.display()),
            Removal::Sysv(kind, id) => format!("ipcrm {} {id}", kind.ipcrm_flag()),
            Removal::MqUnlink(_) => "ipc-clean --remove".to_string(),
        }
    }

    /// Removes it: unlink the name, or `IPC_RMID` the System V id.
    pub fn remove(&self) -> Result<()> {
        match &self.how {
            Removal::Unlink(p) => match fs::remove_file(p) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                r => r.context(|| format!("unlink {}", p.display())),
            },
            Removal::Sysv(kind, id) => remove_sysv(*kind, *id),
            // mq_unlink: the queue goes once the last descriptor to it closes.
            Removal::MqUnlink(name) => match mq_unlink(name.as_str()) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(Error::errno(format!("mq_unlink {name}"), e)),
            },
        }
    }
}

/// IPC_RMID on a System V object; gone already counts as removed.
pub fn remove_sysv(kind: SysvKind, id: i32) -> Result<()> {
    // SAFETY: IPC_RMID takes no buffer argument (null is documented as ignored);
    // an invalid id is reported by the kernel as EINVAL/EIDRM, not undefined behaviour.
    let rc = unsafe {
        match kind {
            SysvKind::Msg => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            SysvKind::Shm => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            SysvKind::Sem => libc::semctl(id, 0, libc::IPC_RMID),
        }
    };
    match Errno::result(rc) {
        Ok(_) | Err(Errno::EINVAL | Errno::EIDRM) => Ok(()),
        Err(e) => Err(Error::errno(
            format!("{} IPC_RMID id {id}", kind.label()),
            e,
        )),
    }
}

/// Everything of ours in every namespace: the private directory and name prefix
/// in use (see [`paths::private_dir_path`] and [`paths::name_prefix`]).
pub fn scan() -> Result<Vec<Leftover>> {
    scan_with(&paths::private_dir_path(), &paths::name_prefix())
}

/// Everything of ours, with `dir` as the private directory and `prefix` as the
/// POSIX name prefix.
pub fn scan_with(dir: &Path, prefix: &str) -> Result<Vec<Leftover>> {
    let mut found = scan_private_dir(dir)?;
    found.extend(scan_prefixed(
        Path::new(DEV_SHM),
        &format!("{prefix}.{}.", uid()),
        "posix shm",
    )?);
    found.extend(scan_prefixed(
        Path::new(DEV_SHM),
        &format!("sem.{prefix}.{}.", uid()),
        "posix semaphore",
    )?);
    found.extend(scan_prefixed(
        Path::new(DEV_MQUEUE),
        &format!("{prefix}.{}.", uid()),
        "posix queue",
    )?);
    found.extend(scan_posix_queues(dir, prefix)?);
    let keys = ftok_suffixes(dir)?;
    for kind in [SysvKind::Msg, SysvKind::Shm, SysvKind::Sem] {
        found.extend(scan_sysv(kind, &keys)?);
    }
    Ok(found)
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            v.sort();
            Ok(v)
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(Vec::new()),
        Err(e) => Err(e).context(|| format!("opendir {}", dir.display())),
    }
}

fn scan_private_dir(dir: &Path) -> Result<Vec<Leftover>> {
    let mut found = Vec::new();
    for path in entries(dir)? {
        let Ok(st) = lstat(&path) else { continue };
        let kind = match file_kind(&st) {
            SFlag::S_IFIFO => "fifo",
            SFlag::S_IFSOCK => "socket",
            SFlag::S_IFREG => "file",
            SFlag::S_IFDIR => "directory",
            _ => "other",
        };
        found.push(Leftover {
            kind,
            name: path.display().to_string(),
            how: Removal::Unlink(path),
        });
    }
    Ok(found)
}

fn scan_prefixed(dir: &Path, prefix: &str, kind: &'static str) -> Result<Vec<Leftover>> {
    let mut found = Vec::new();
    for path in entries(dir)? {
        let ours_by_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix));
        if !ours_by_name {
            continue;
        }
        if lstat(&path).is_ok_and(|st| st.st_uid == uid()) {
            found.push(Leftover {
                kind,
                name: path.display().to_string(),
                how: Removal::Unlink(path),
            });
        }
    }
    Ok(found)
}

/// POSIX queues, found without /dev/mqueue: the default name, and every name a
/// reader's lock file in `dir` records (`mq-posix.<name>.reader.lock`).
fn scan_posix_queues(dir: &Path, prefix: &str) -> Result<Vec<Leftover>> {
    let mut names = vec![format!("/{prefix}.{}.mq", uid())];
    let base = format!("{MQ_POSIX}.");
    for path in entries(dir)? {
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(name) = file
            .strip_prefix(&base)
            .and_then(|r| r.strip_suffix(READER_SUFFIX))
        {
            names.push(format!("/{name}"));
        }
    }
    names.sort();
    names.dedup();
    let mut found = Vec::new();
    for name in names {
        let flags = MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC;
        // mq_open only to look: does it exist, and is it ours?
        let Ok(mqd) = mq_open(name.as_str(), flags, Mode::empty(), None) else {
            continue;
        };
        let ours = fstat(&mqd).is_ok_and(|st| st.st_uid == uid());
        let _ = mq_close(mqd);
        if ours {
            found.push(Leftover {
                kind: "posix queue",
                name: name.clone(),
                how: Removal::MqUnlink(name),
            });
        }
    }
    Ok(found)
}

/// The low 24 bits `ftok` takes from each file in `dir` (device and inode); the
/// top 8 bits are the project id, any of which we may have used.
fn ftok_suffixes(dir: &Path) -> Result<Vec<u32>> {
    let mut keys = Vec::new();
    for path in entries(dir)? {
        if let Ok(st) = lstat(&path) {
            keys.push(ftok_suffix(st.st_dev, st.st_ino));
        }
    }
    Ok(keys)
}

/// `ftok`'s recipe (glibc): `(proj << 24) | (dev & 0xff) << 16 | (ino & 0xffff)`, minus the proj.
#[must_use]
pub fn ftok_suffix(dev: u64, ino: u64) -> u32 {
    (((dev & 0xff) << 16) | (ino & 0xffff)) as u32
}

fn scan_sysv(kind: SysvKind, suffixes: &[u32]) -> Result<Vec<Leftover>> {
    let text = match fs::read_to_string(kind.proc_file()) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e).context(|| format!("read {}", kind.proc_file())),
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(key_col), Some(uid_col)) = (col("key"), col("uid")) else {
        return Ok(Vec::new());
    };
    let Some(id_col) = col("msqid")
        .or_else(|| col("shmid"))
        .or_else(|| col("semid"))
    else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |c: usize| f.get(c).and_then(|s| s.parse::<i64>().ok());
        let (Some(key), Some(id), Some(owner)) = (num(key_col), num(id_col), num(uid_col)) else {
            continue;
        };
        // The key column is a signed int: take its 32 bits as the kernel stores them.
        let key = u32::from_ne_bytes((key as i32).to_ne_bytes());
        let ours = owner == i64::from(uid()) && key != 0 && suffixes.contains(&(key & 0x00ff_ffff));
        if ours {
            let id = i32::try_from(id).unwrap_or(-1);
            found.push(Leftover {
                kind: kind.label(),
                name: format!("key {key:#010x} id {id}"),
                how: Removal::Sysv(kind, id),
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftok_suffix_matches_glibc() {
        // glibc: key = (st_ino & 0xffff) | ((st_dev & 0xff) << 16) | (proj_id << 24)
        assert_eq!(ftok_suffix(0x1234_56fe, 0xabcd_ef12), 0x00fe_ef12);
    }
}
