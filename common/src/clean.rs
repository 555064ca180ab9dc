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
//! | System V msg, shm, sem | `/proc/sysvipc/*` | owned by us, with the key and id a reader's lock file records |
//!
//! # Pitfalls
//! Without a mounted `/dev/mqueue` the kernel offers no list of POSIX queues, and
//! a System V object whose record is gone (its lock file removed by hand) has
//! nothing that marks it ours: `ipcs` and `ipcrm` remain the tools for those.

use std::fs;
use std::path::{Path, PathBuf};

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::mqueue::{MQ_OFlag, mq_close, mq_open, mq_unlink};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, lstat};

use crate::error::{Context, Error, Result};
use crate::liveness::{READER_SUFFIX, WRITERS_SUFFIX};
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
    /// A running process still holds it (its lock is taken): listed, never removed.
    pub live: bool,
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
        Err(e) => Err(Error::errno(format!("{} IPC_RMID id {id}", kind.label()), e)),
    }
}

/// Everything of ours in every namespace: the private directory and name prefix
/// in use (see [`paths::private_dir_path`] and [`paths::name_prefix`]).
pub fn scan() -> Result<Vec<Leftover>> {
    scan_with(&paths::private_dir_path(), &paths::name_prefix())
}

/// What the private directory says about who is still running.
struct Directory {
    /// Every entry, with its stat.
    entries: Vec<(PathBuf, FileStat)>,
    /// Entries a running process holds a lock on (or, for a socket, on `<path>.lock`).
    live: HashSet<PathBuf>,
    /// POSIX names (without the slash) that a live reader's lock file records.
    live_names: HashSet<String>,
    /// System V objects the readers' lock files record: (key, id, live).
    records: Vec<(u32, i32, bool)>,
}

/// Everything of ours, with `dir` as the private directory and `prefix` as the
/// POSIX name prefix. An object a running process still uses is listed with
/// `live` set, and never removed.
///
/// A private directory that fails [`paths::check_private_dir`] (a symbolic link
/// planted in `/tmp`, say) is refused, not scanned: removing "its" entries
/// would remove whatever it points at.
pub fn scan_with(dir: &Path, prefix: &str) -> Result<Vec<Leftover>> {
    let d = read_directory(dir)?;
    let me = uid();
    let mut found = Vec::new();
    for (path, st) in &d.entries {
        let kind = match file_kind(st) {
            SFlag::S_IFIFO => "fifo",
            SFlag::S_IFSOCK => "socket",
            SFlag::S_IFREG => "file",
            SFlag::S_IFDIR => "directory",
            _ => "other",
        };
        found.push(Leftover {
            kind,
            name: path.display().to_string(),
            how: Removal::Unlink(path.clone()),
            live: d.live.contains(path),
        });
    }
    found.extend(scan_prefixed(
        &d,
        Path::new(DEV_SHM),
        &format!("{prefix}.{me}."),
        "",
        "posix shm",
    )?);
    let sem = format!("sem.{prefix}.{me}.");
    found.extend(scan_prefixed(&d, Path::new(DEV_SHM), &sem, "sem.", "posix semaphore")?);
    let mq = format!("{prefix}.{me}.");
    found.extend(scan_prefixed(&d, Path::new(DEV_MQUEUE), &mq, "", "posix queue")?);
    if !mqueue_mounted() {
        found.extend(scan_posix_queues(&d, prefix));
    }
    for kind in [SysvKind::Msg, SysvKind::Shm, SysvKind::Sem] {
        found.extend(scan_sysv(kind, &d)?);
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

fn read_directory(dir: &Path) -> Result<Directory> {
    let mut d = Directory {
        entries: Vec::new(),
        live: HashSet::new(),
        live_names: HashSet::new(),
        records: Vec::new(),
    };
    if paths::lstat_opt(dir)?.is_none() {
        return Ok(d);
    }
    paths::check_private_dir(dir)?;
    for path in entries(dir)? {
        if let Ok(st) = lstat(&path) {
            d.entries.push((path, st));
        }
    }
    for (path, st) in &d.entries {
        if is_locked(path, st) {
            d.live.insert(path.clone());
        }
    }
    // A socket is live if its `<path>.lock` is; a reader lock file names the
    // POSIX object it guards: `<kind>.<name>.reader.lock`.
    for (path, _) in &d.entries {
        let lock = PathBuf::from(format!("{}.lock", path.display()));
        if d.live.contains(&lock) {
            d.live.insert(path.clone());
        }
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(rest) = file.strip_suffix(READER_SUFFIX) {
            if d.live.contains(path) {
                if let Some((_, name)) = rest.split_once('.') {
                    d.live_names.insert(name.to_string());
                }
                d.live.insert(path.with_file_name(format!("{rest}{WRITERS_SUFFIX}")));
            }
        }
    }
    for (path, st) in &d.entries {
        if file_kind(st) == SFlag::S_IFREG && st.st_size <= 4096 {
            let live = d.live.contains(path);
            let text = fs::read_to_string(path).unwrap_or_default();
            d.records.extend(recorded_objects(&text).into_iter().map(|(key, id)| (key, id, live)));
        }
    }
    Ok(d)
}

/// The System V objects a reader recorded in its lock file
/// ([`crate::liveness::ReaderPresence::publish`]): pairs of `<x>key=0x...` and
/// `<x>id=N` with the same `<x>` (`key=`/`id=`, `shm_key=`/`shm_id=`...).
#[must_use]
pub fn recorded_objects(text: &str) -> Vec<(u32, i32)> {
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for word in text.split_whitespace() {
        let Some((name, value)) = word.split_once('=') else { continue };
        if let Some(prefix) = name.strip_suffix("key") {
            let key = match value.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => value.parse::<i32>().ok().map(|k| u32::from_ne_bytes(k.to_ne_bytes())),
            };
            keys.extend(key.map(|k| (prefix.to_string(), k)));
        } else if let Some(prefix) = name.strip_suffix("id") {
            ids.extend(value.parse::<i32>().ok().map(|i| (prefix.to_string(), i)));
        }
    }
    keys.into_iter()
        .filter_map(|(prefix, key)| {
            ids.iter().find(|(p, _)| *p == prefix).map(|(_, id)| (key, *id))
        })
        .collect()
}

/// Whether a running process holds a lock on this file: an OFD/POSIX record
/// lock (asked without taking it) or an `flock` (tried, and let go at once).
fn is_locked(path: &Path, st: &FileStat) -> bool {
    let kind = file_kind(st);
    if kind != SFlag::S_IFREG && kind != SFlag::S_IFIFO {
        return false;
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(fd) = open(path, flags, Mode::empty()) else {
        return false;
    };
    // SAFETY: libc::flock is plain old data; zeroed means "whole file".
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    if fcntl(fd.as_fd(), FcntlArg::F_OFD_GETLK(&mut fl)).is_ok()
        && i32::from(fl.l_type) != libc::F_UNLCK
    {
        return true;
    }
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    rc != 0 && Errno::last() == Errno::EWOULDBLOCK
}

/// Entries of `dir` named `<prefix>...` and owned by us; `strip` is what to take
/// off the file name to get the POSIX name (`sem.` for semaphores).
fn scan_prefixed(
    d: &Directory,
    dir: &Path,
    prefix: &str,
    strip: &str,
    kind: &'static str,
) -> Result<Vec<Leftover>> {
    let mut found = Vec::new();
    for path in entries(dir)? {
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !file.starts_with(prefix) || !lstat(&path).is_ok_and(|st| st.st_uid == uid()) {
            continue;
        }
        let live = d.live_names.contains(file.trim_start_matches(strip));
        found.push(Leftover {
            kind,
            name: path.display().to_string(),
            how: Removal::Unlink(path),
            live,
        });
    }
    Ok(found)
}

/// Whether an mqueue file system is mounted at /dev/mqueue (then it lists every queue).
fn mqueue_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| l.split_whitespace().nth(1) == Some(DEV_MQUEUE) && l.contains(" mqueue "))
    })
}

/// POSIX queues, found without /dev/mqueue: the default name, and every name a
/// reader's lock file records (`mq-posix.<name>.reader.lock`).
fn scan_posix_queues(d: &Directory, prefix: &str) -> Vec<Leftover> {
    let mut names = vec![format!("{prefix}.{}.mq", uid())];
    let base = format!("{MQ_POSIX}.");
    for (path, _) in &d.entries {
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(name) = file.strip_prefix(&base).and_then(|r| r.strip_suffix(READER_SUFFIX)) {
            names.push(name.to_string());
        }
    }
    names.sort();
    names.dedup();
    let mut found = Vec::new();
    for name in names {
        let slashed = format!("/{name}");
        let flags = MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC;
        // mq_open only to look: does it exist, and is it ours?
        let Ok(mqd) = mq_open(slashed.as_str(), flags, Mode::empty(), None) else {
            continue;
        };
        let ours = fstat(&mqd).is_ok_and(|st| st.st_uid == uid());
        let _ = mq_close(mqd);
        if ours {
            let live = d.live_names.contains(&name);
            found.push(Leftover {
                kind: "posix queue",
                name: slashed.clone(),
                how: Removal::MqUnlink(slashed),
                live,
            });
        }
    }
    found
}

/// System V objects of ours: owned by us, with the key and id a reader's lock
/// file in the private directory records. Not "any key `ftok` could make from
/// one of our files": `ftok` keys collide across directories, and another
/// directory's queue must never be listed as ours, let alone removed.
fn scan_sysv(kind: SysvKind, d: &Directory) -> Result<Vec<Leftover>> {
    let text = match fs::read_to_string(kind.proc_file()) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e).context(|| format!("read {}", kind.proc_file())),
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(key_col), Some(uid_col)) = (col("key"), col("uid")) else {
        return Ok(Vec::new());
    };
    let Some(id_col) = col("msqid").or_else(|| col("shmid")).or_else(|| col("semid")) else {
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
        let id = i32::try_from(id).unwrap_or(-1);
        let record = d.records.iter().find(|(k, i, _)| *k == key && *i == id);
        if let (true, Some(&(_, _, live))) = (owner == i64::from(uid()), record) {
            found.push(Leftover {
                kind: kind.label(),
                name: format!("key {key:#010x} id {id}"),
                how: Removal::Sysv(kind, id),
                live,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_pair_keys_and_ids_by_prefix() {
        let text = "shm_key=0x48000123 shm_id=98310 sem_key=0x53000123 sem_id=7\n";
        assert_eq!(recorded_objects(text), vec![(0x4800_0123, 98310), (0x5300_0123, 7)]);
        assert_eq!(recorded_objects("key=0x4d0000cb id=7\n"), vec![(0x4d00_00cb, 7)]);
        assert!(recorded_objects("name=/ipc-demos.0.mq\n").is_empty());
    }
}
