//! Who is still there: lock files the kernel releases when a process dies.
//!
//! A byte stream tells a reader that its writers are gone (end of file); a
//! queue, a semaphore or a shared segment does not — it outlives them all. So
//! each side of such a pair holds a lock on a small file in the private
//! directory, and asks whether the other side's lock is still held:
//!
//! ```text
//! <dir>/<base>.reader.lock    the reader holds a write lock: "a reader is here"
//! <dir>/<base>.writers.lock   every writer holds a read lock: "a writer is here"
//! ```
//!
//! The locks are Linux open-file-description locks (`fcntl(F_OFD_SETLK)`), which
//! behave like `flock`: tied to the open file, released by the kernel when the
//! process exits, however it exits. Unlike `flock`, a lock can be *queried*
//! without being taken (`F_OFD_GETLK`), so a writer checking on the reader never
//! holds, even for an instant, a lock the next reader would trip over.
//!
//! The reader creates both files and removes them when it exits; a reader killed
//! with SIGKILL leaves them, unlocked, which is how the next one recognises a
//! stale object. The reader's lock file also names the object for System V:
//! its key is `ftok` of that file.
//!
//! # Pitfalls
//! - A lock file must not be replaced between being opened and being locked:
//!   after locking, the reader checks that the path still names the file it locked.
//! - Queries race with arrivals by nature: "no writer" is only final once the
//!   object is also empty (see the queue sources).

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::sys::stat::{FileStat, Mode, fstat};
use nix::sys::uio::{pread, pwrite};
use nix::unistd::ftruncate;

use crate::error::{Context, Error, Result};
use crate::paths::{check_ours, remove_if_same};

/// Suffix of the file the reader locks.
pub const READER_SUFFIX: &str = ".reader.lock";
/// Suffix of the file every writer locks.
pub const WRITERS_SUFFIX: &str = ".writers.lock";

/// `<dir>/<base>.reader.lock`.
#[must_use]
pub fn reader_lock_path(dir: &Path, base: &str) -> PathBuf {
    dir.join(format!("{base}{READER_SUFFIX}"))
}

/// `<dir>/<base>.writers.lock`.
#[must_use]
pub fn writers_lock_path(dir: &Path, base: &str) -> PathBuf {
    dir.join(format!("{base}{WRITERS_SUFFIX}"))
}

fn flock_struct(kind: i32) -> libc::flock {
    // SAFETY: libc::flock is plain old data; all-zero is a valid value
    // (whole file: l_whence SEEK_SET, l_start 0, l_len 0; l_pid 0 as OFD locks require).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = i16::try_from(kind).unwrap_or_default();
    fl.l_whence = 0;
    fl
}

/// Takes an OFD lock of `kind` (`F_RDLCK`/`F_WRLCK`) without waiting; `Ok(false)` if held elsewhere.
fn try_lock(fd: &OwnedFd, kind: i32, path: &Path) -> Result<bool> {
    let fl = flock_struct(kind);
    // fcntl F_OFD_SETLK: lock the whole file; released when this file is closed.
    match fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(Error::errno(format!("fcntl F_OFD_SETLK {}", path.display()), e)),
    }
}

/// Whether another open file holds a lock that conflicts with `kind`.
fn held_elsewhere(fd: &OwnedFd, kind: i32, path: &Path) -> Result<bool> {
    let mut fl = flock_struct(kind);
    // fcntl F_OFD_GETLK: ask who would block us, without taking anything.
    fcntl(fd.as_fd(), FcntlArg::F_OFD_GETLK(&mut fl))
        .context(|| format!("fcntl F_OFD_GETLK {}", path.display()))?;
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// The whole (small) content of a lock file.
fn read_all(fd: &OwnedFd, path: &Path) -> Result<String> {
    let mut buf = [0u8; 512];
    // pread at 0: the file position is nobody's business.
    let n = pread(fd, &mut buf, 0).context(|| format!("pread {}", path.display()))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Opens (with `create`, creates: 0600) the lock file `path`, refusing a
/// symbolic link, anything but a regular file, and a file not ours; `None` if
/// it does not exist and `create` is off. Not locked yet: the caller locks it.
pub fn open_lock_file(path: &Path, create: bool) -> Result<Option<(OwnedFd, FileStat)>> {
    let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if create {
        flags |= OFlag::O_CREAT;
    }
    // open with O_NOFOLLOW: a planted symbolic link fails with ELOOP.
    let fd = match open(path, flags, Mode::S_IRUSR | Mode::S_IWUSR) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) if !create => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(Error::system(format!(
                "{} is a symbolic link; refusing to follow it",
                path.display()
            )));
        }
        Err(e) => return Err(Error::errno(format!("open {}", path.display()), e)),
    };
    let st = fstat(&fd).context(|| format!("fstat {}", path.display()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::system(format!(
            "{} is not a regular file; refusing to use it",
            path.display()
        )));
    }
    check_ours(&st, &format!("lock file {}", path.display()))?;
    Ok(Some((fd, st)))
}

/// The reader's presence: it holds the reader lock, and can ask about writers.
#[derive(Debug)]
pub struct ReaderPresence {
    reader: OwnedFd,
    writers: OwnedFd,
    reader_path: PathBuf,
    writers_path: PathBuf,
    ids: [(u64, u64); 2],
    keep: bool,
    previous: String,
    published: bool,
}

impl ReaderPresence {
    /// Creates (or reuses) both lock files under `dir` and takes the reader lock.
    ///
    /// Fails (exit 1) if another reader holds it: `what` names the object in the
    /// message ("POSIX queue /x"). A leftover, unlocked file from a killed reader
    /// is simply reused: finding it is how the caller learns the object is stale.
    pub fn claim(dir: &Path, base: &str, what: &str) -> Result<Self> {
        let reader_path = reader_lock_path(dir, base);
        let writers_path = writers_lock_path(dir, base);
        loop {
            let Some((reader, rst)) = open_lock_file(&reader_path, true)? else {
                continue;
            };
            if !try_lock(&reader, libc::F_WRLCK, &reader_path)? {
                return Err(Error::system(format!("{what} is in use by another reader"))
                    .hint("stop that reader first, or pick another name"));
            }
            // Still the file at the path? (It may have been removed by the reader
            // we replaced between our open and our lock.)
            match fs::symlink_metadata(&reader_path) {
                Ok(m) if std::os::unix::fs::MetadataExt::ino(&m) == rst.st_ino => {}
                _ => continue,
            }
            let Some((writers, wst)) = open_lock_file(&writers_path, true)? else {
                continue;
            };
            // What the last reader published (a killed one's stale object, say);
            // then clear it, so writers wait for what we publish.
            let previous = read_all(&reader, &reader_path)?;
            ftruncate(&reader, 0).context(|| format!("ftruncate {}", reader_path.display()))?;
            return Ok(ReaderPresence {
                reader,
                writers,
                reader_path,
                writers_path,
                ids: [(rst.st_dev, rst.st_ino), (wst.st_dev, wst.st_ino)],
                keep: false,
                previous,
                published: false,
            });
        }
    }

    /// Whether any writer holds its lock now.
    pub fn writers_present(&self) -> Result<bool> {
        held_elsewhere(&self.writers, libc::F_WRLCK, &self.writers_path)
    }

    /// The reader's lock file: `ftok` names System V objects after it.
    pub fn reader_path(&self) -> &Path {
        &self.reader_path
    }

    /// What the previous reader of this name published ([`ReaderPresence::publish`]):
    /// after a crash, which object it left.
    pub fn previous(&self) -> &str {
        &self.previous
    }

    /// Records `text` in the reader lock file for writers to read: which object
    /// this reader made (a System V key and id, say). Writers find nothing
    /// there until this is called.
    ///
    /// Publishing also marks the object as this reader's: on drop the lock files
    /// go with it. A reader that stops before publishing (it found a stale
    /// object, say) puts the previous record back and leaves the files, so the
    /// stale object stays findable by the next reader and by `ipc-clean`.
    pub fn publish(&mut self, text: &str) -> Result<()> {
        self.published = true;
        let path = self.reader_path.display();
        // pwrite at offset 0 of the emptied file: one write, read whole by writers.
        let n = pwrite(&self.reader, text.as_bytes(), 0).context(|| format!("pwrite {path}"))?;
        if n != text.len() {
            return Err(Error::system(format!("pwrite {path}: short write")));
        }
        Ok(())
    }

    /// Leave the lock files in place on drop (with `--keep`, the object stays too).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The reader's open lock file (for `fstat`).
    pub fn reader_fd(&self) -> &OwnedFd {
        &self.reader
    }
}

impl Drop for ReaderPresence {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if !self.published && !self.previous.is_empty() {
            // We made nothing: leave the record of what a killed reader left.
            let _ = pwrite(&self.reader, self.previous.as_bytes(), 0);
            return;
        }
        // Remove only the files we locked; our locks go with our descriptors.
        remove_if_same(&self.writers_path, self.ids[1].0, self.ids[1].1);
        remove_if_same(&self.reader_path, self.ids[0].0, self.ids[0].1);
    }
}

/// A writer's presence: it holds a shared writers lock, and can ask about the reader.
#[derive(Debug)]
pub struct WriterPresence {
    reader: OwnedFd,
    _writers: OwnedFd,
    reader_path: PathBuf,
}

impl WriterPresence {
    /// Opens the reader's lock files under `dir` and takes a writers lock.
    /// `Ok(None)` while they do not exist yet (no reader has come).
    pub fn join(dir: &Path, base: &str) -> Result<Option<Self>> {
        let reader_path = reader_lock_path(dir, base);
        let writers_path = writers_lock_path(dir, base);
        let Some((reader, _)) = open_lock_file(&reader_path, false)? else {
            return Ok(None);
        };
        let Some((writers, _)) = open_lock_file(&writers_path, false)? else {
            return Ok(None);
        };
        if !try_lock(&writers, libc::F_RDLCK, &writers_path)? {
            return Err(Error::system(format!(
                "{} is locked for writing by someone",
                writers_path.display()
            )));
        }
        Ok(Some(WriterPresence { reader, _writers: writers, reader_path }))
    }

    /// Whether the reader still holds its lock.
    pub fn reader_present(&self) -> Result<bool> {
        held_elsewhere(&self.reader, libc::F_RDLCK, &self.reader_path)
    }

    /// What the reader published ([`ReaderPresence::publish`]); empty until then.
    pub fn published(&self) -> Result<String> {
        read_all(&self.reader, &self.reader_path)
    }

    /// The reader's lock file (its path names the System V key).
    pub fn reader_path(&self) -> &Path {
        &self.reader_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ipc-demos-liveness-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        dir
    }

    /// OFD locks belong to open files, not processes, so one process can play
    /// both roles here.
    #[test]
    fn each_side_sees_the_other_come_and_go() {
        let dir = scratch("roles");
        assert!(WriterPresence::join(&dir, "q").unwrap().is_none(), "no reader yet");
        let reader = ReaderPresence::claim(&dir, "q", "queue q").unwrap();
        let err = ReaderPresence::claim(&dir, "q", "queue q").unwrap_err();
        assert_eq!(
            err.message(),
            "queue q is in use by another reader; stop that reader first, or pick another name"
        );
        assert!(!reader.writers_present().unwrap());

        let writer = WriterPresence::join(&dir, "q").unwrap().unwrap();
        let second = WriterPresence::join(&dir, "q").unwrap().unwrap();
        assert!(reader.writers_present().unwrap());
        assert!(writer.reader_present().unwrap());
        drop(writer);
        assert!(reader.writers_present().unwrap(), "one writer is left");
        drop(second);
        assert!(!reader.writers_present().unwrap());

        let writer = WriterPresence::join(&dir, "q").unwrap().unwrap();
        drop(reader);
        assert!(!writer.reader_present().unwrap());
        assert!(!reader_lock_path(&dir, "q").exists(), "the reader removes its lock files");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_a_reader_publishes_survives_a_reader_that_made_nothing() {
        let dir = scratch("publish");
        let mut first = ReaderPresence::claim(&dir, "q", "queue q").unwrap();
        first.publish("key=0x4d000001 id=7\n").unwrap();
        let writer = WriterPresence::join(&dir, "q").unwrap().unwrap();
        assert_eq!(writer.published().unwrap(), "key=0x4d000001 id=7\n");
        drop(writer);
        first.keep(); // killed: the record stays
        drop(first);
        // A reader that finds the stale object and stops keeps the record...
        let second = ReaderPresence::claim(&dir, "q", "queue q").unwrap();
        assert_eq!(second.previous(), "key=0x4d000001 id=7\n");
        drop(second);
        assert!(reader_lock_path(&dir, "q").exists());
        // ...for the next one, which publishes its own and removes the files on exit.
        let mut third = ReaderPresence::claim(&dir, "q", "queue q").unwrap();
        assert_eq!(third.previous(), "key=0x4d000001 id=7\n");
        third.publish("key=0x4d000001 id=8\n").unwrap();
        drop(third);
        assert!(!reader_lock_path(&dir, "q").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_killed_readers_lock_file_is_reused_unlocked() {
        let dir = scratch("reuse").join("sub");
        fs::create_dir(&dir).unwrap();
        let mut first = ReaderPresence::claim(&dir, "q", "queue q").unwrap();
        first.keep(); // as if SIGKILLed: files stay, the lock goes with the descriptor
        let ino = fstat(first.reader_fd()).unwrap().st_ino;
        drop(first);
        let second = ReaderPresence::claim(&dir, "q", "queue q").unwrap();
        assert_eq!(fstat(second.reader_fd()).unwrap().st_ino, ino, "same file: same ftok key");
        drop(second);
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}
