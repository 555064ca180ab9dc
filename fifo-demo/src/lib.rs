//! Named pipes (FIFOs): a pipe with a name in the file system, so unrelated
//! processes can meet at it.
//!
//! A FIFO is a pipe that `mkfifo` gives a path. Whoever may open the path may
//! read or write the pipe — no common parent needed — and several writers can
//! feed one reader at once. The data never touches the disk: the path is only a
//! meeting point; the bytes live in the same kernel buffer as an anonymous pipe's.
//!
//! # Lifecycle
//! 1. the reader creates the FIFO: `mkfifo(path, 0600)` in the private directory;
//! 2. it opens it `O_RDONLY | O_NONBLOCK` (a blocking open would wait for a writer
//!    and ignore Ctrl-C) and takes an `flock` on it, which marks it as live;
//! 3. each writer opens it `O_WRONLY | O_NONBLOCK`, which fails with `ENXIO`
//!    until a reader has it open: the writer retries until `--timeout`;
//! 4. every writer's frames go into the one pipe; the reader sees end of file when
//!    the last writer closes, and, if more writers are expected, opens the FIFO
//!    again to wait for the next one (a FIFO reports "hang-up" to a reader until
//!    reopened);
//! 5. the reader unlinks the path.
//!
//! # Cleanup
//! The reader owns the path ([`Fifo`] unlinks it on drop: on success, error and
//! SIGINT/SIGTERM). A reader killed with SIGKILL leaves the node behind; the next
//! reader finds it unlocked, calls it stale, and says how to remove it (or
//! `--force` does). Nothing else survives: the pipe's buffer dies with its last
//! descriptor.
//!
//! # Pitfalls
//! - `PIPE_BUF`: a write of at most `PIPE_BUF` (4096) bytes to a pipe is atomic
//!   — it is never mixed with another writer's bytes. Larger writes may be split
//!   and interleaved. So with several writers, no write may split a frame or
//!   exceed 4096 bytes: the writer gathers whole frames into writes of at most
//!   `PIPE_BUF` (many 64-byte frames per system call, still atomic), sends a
//!   frame of up to 4096 bytes (4072 of payload) as one write, and warns once
//!   when a frame is larger.
//! - A symbolic link or a regular file at the path must not be followed or
//!   truncated: the path is checked with `lstat`, opened with `O_NOFOLLOW` and
//!   checked again with `fstat` on the descriptor.
//! - Opening the write end before any reader exists fails (`ENXIO`) in
//!   non-blocking mode, and blocks forever otherwise.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipc_common::driver::{FrameSink, FrameSource};
use ipc_common::error::{Context, Error, Result};
use ipc_common::frame::{Frame, Header};
use ipc_common::paths::{self, check_ours, expect_kind, remove_if_same};
use ipc_common::stream::{StreamSink, StreamSource, WritePolicy};
use ipc_common::wait::{Deadline, pause, wait_fd};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::PollFlags;

use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::unistd::{mkfifo, unlink};

pub use pipe_demo::{PIPE_BUF, set_pipe_size};

/// File name of the FIFO in the private directory.
pub const FIFO_NAME: &str = "fifo";
/// Permissions of a new FIFO: owner read and write only.
pub const FIFO_MODE: Mode = Mode::S_IRUSR.union(Mode::S_IWUSR);
/// How often a writer retries opening a FIFO that has no reader yet.
pub const OPEN_RETRY: Duration = Duration::from_millis(20);

/// `<private dir>/fifo`, creating the private directory if needed.
pub fn default_path() -> Result<PathBuf> {
    Ok(paths::private_dir()?.join(FIFO_NAME))
}

/// The reader's FIFO: it created the node, holds it open and locked, and
/// removes it when dropped (unless kept).
#[derive(Debug)]
pub struct Fifo {
    path: PathBuf,
    st: FileStat,
    /// The first read descriptor: holds the `flock` that tells a live FIFO from a stale one.
    lock: OwnedFd,
    keep: bool,
}

fn what(path: &Path) -> String {
    format!("FIFO {}", path.display())
}

/// Opens the read end without waiting for a writer.
fn open_read_end(path: &Path) -> Result<OwnedFd> {
    // O_NONBLOCK: return now even with no writer; O_NOFOLLOW: never through a link.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    open(path, flags, Mode::empty()).context(|| format!("open {} for reading", path.display()))
}

/// Refuses a descriptor that is not a FIFO of ours (checked on the open file,
/// so the path cannot be swapped between check and use).
fn check_fd(fd: &OwnedFd, path: &Path) -> Result<FileStat> {
    let st = fstat(fd).context(|| format!("fstat {}", path.display()))?;
    if paths::file_kind(&st) != SFlag::S_IFIFO {
        return Err(Error::system(format!("{} is not a FIFO; refusing to use it", path.display())));
    }
    check_ours(&st, &what(path))
        .map_err(|e| e.hint(format!("chmod 600 {0}, or remove it: rm {0}", path.display())))?;
    Ok(st)
}

/// Tries `flock(LOCK_EX | LOCK_NB)`: `Ok(true)` if we got it.
fn try_lock(fd: &OwnedFd, path: &Path) -> Result<bool> {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    match Errno::result(rc) {
        Ok(_) => Ok(true),
        Err(Errno::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(Error::errno(format!("flock {}", path.display()), e)),
    }
}

/// Creates the FIFO at `path` (mode 0600) and opens and locks its read end.
///
/// An existing path is examined, never followed or overwritten: a link, another
/// file type, or a FIFO not ours or open to others is refused; our FIFO with a
/// live reader (locked) is refused; our stale FIFO (unlocked, left by a killed
/// reader) is named with the command that removes it, or removed with `force`.
pub fn create_fifo(path: &Path, force: bool) -> Result<Fifo> {
    loop {
        // mkfifo: give the pipe a name; 0600 so only our uid may open it.
        match mkfifo(path, FIFO_MODE) {
            Ok(()) => break,
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::errno(format!("mkfifo {}", path.display()), e)),
        }
        let Some(st) = expect_kind(path, SFlag::S_IFIFO, "FIFO")? else {
            continue;
        };
        check_ours(&st, &what(path))
            .map_err(|e| e.hint(format!("chmod 600 {0}, or remove it: rm {0}", path.display())))?;
        let probe = open_read_end(path)?;
        if !try_lock(&probe, path)? {
            return Err(Error::system(format!("{} is in use by another fifo-reader", what(path)))
                .hint("stop that reader first, or pick another --path"));
        }
        if !force {
            return Err(Error::system(format!(
                "{} is stale (left by a reader that was killed)",
                what(path)
            ))
            .hint(format!(
                "remove it: rm {} (or make clean-ipc, or add --force)",
                path.display()
            )));
        }
        drop(probe);
        unlink(path).context(|| format!("unlink stale {}", path.display()))?;
    }
    let lock = open_read_end(path)?;
    let st = check_fd(&lock, path)?;
    if !try_lock(&lock, path)? {
        return Err(Error::system(format!("{} was taken by another fifo-reader", what(path))));
    }
    Ok(Fifo { path: path.to_path_buf(), st, lock, keep: false })
}

impl Fifo {
    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leave the FIFO in place on drop (`--keep`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// A fresh read end: after every writer has gone, the old one reports
    /// end of file until the FIFO is reopened.
    pub fn open_reader(&self) -> Result<OwnedFd> {
        let fd = open_read_end(&self.path)?;
        let st = check_fd(&fd, &self.path)?;
        if (st.st_dev, st.st_ino) != (self.st.st_dev, self.st.st_ino) {
            return Err(Error::peer_lost(format!("{} was replaced under us", what(&self.path))));
        }
        Ok(fd)
    }

    /// The lock descriptor: a read end that stays open as long as the FIFO is ours.
    pub fn lock_fd(&self) -> &OwnedFd {
        &self.lock
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        if !self.keep {
            // unlink, but only the node we made: not a replacement put there since.
            remove_if_same(&self.path, self.st.st_dev, self.st.st_ino);
        }
    }
}

/// Waits until a writer has written to (or opened and closed) `fd`, a fresh
/// read end. Needed because `read` on a FIFO that no writer holds returns end
/// of file at once, before anyone came; `poll` on a fresh descriptor waits.
pub fn wait_for_writer(
    fd: BorrowedFd<'_>,
    path: &Path,
    deadline: &Deadline,
    timeout: Option<Duration>,
) -> Result<()> {
    if wait_fd(fd, PollFlags::POLLIN, deadline, || Ok(()))? {
        return Ok(());
    }
    let secs = timeout.unwrap_or_default().as_secs();
    Err(Error::peer_lost(format!("no writer came to {} within {secs} s (--timeout)", what(path))))
}

/// Frames from a FIFO, across writers that come and go (see the module docs).
#[derive(Debug)]
pub struct FifoSource<'f> {
    fifo: &'f Fifo,
    /// The binary's name, to say so when the FIFO is reopened; `None` when quiet.
    announce: Option<&'static str>,
    inner: StreamSource<OwnedFd>,
    /// The descriptor is fresh: wait for a writer before the first read.
    fresh: bool,
    deadline: Deadline,
    timeout: Option<Duration>,
}

impl<'f> FifoSource<'f> {
    /// Reads `fifo`; `first_timeout` bounds the wait for the first writer;
    /// `announce` (the binary's name, unless quiet) says when it waits for more.
    pub fn new(
        fifo: &'f Fifo,
        max_frame: u32,
        first_timeout: Option<Duration>,
        announce: Option<&'static str>,
    ) -> Result<Self> {
        // --timeout covers the first writer (below) and then any stall mid-stream.
        let inner = StreamSource::new(fifo.open_reader()?, max_frame, None, what(fifo.path()))?
            .with_stall(first_timeout);
        let deadline = Deadline::after(first_timeout);
        Ok(FifoSource { fifo, announce, inner, fresh: true, deadline, timeout: first_timeout })
    }
}

impl FrameSource for FifoSource<'_> {
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        if self.fresh {
            wait_for_writer(self.inner.fd(), self.fifo.path(), &self.deadline, self.timeout)?;
            self.fresh = false;
        }
        self.inner.recv()
    }

    fn next_writer(&mut self) -> Result<bool> {
        // open again: the new descriptor waits quietly for the next writer
        // (--timeout covers only the first one).
        let fresh = self.fifo.open_reader()?;
        drop(self.inner.replace_fd(fresh)?);
        if let Some(bin) = self.announce {
            ipc_common::say!(
                "{bin}: every writer has closed the FIFO; reopened it to wait for the next"
            );
        }
        (self.fresh, self.deadline) = (true, Deadline::never());
        Ok(true)
    }
}

/// Opens `path` for writing, waiting until a reader has it open or `timeout` passes.
///
/// `O_NONBLOCK` makes the open fail with `ENXIO` instead of blocking while no
/// reader exists, so the wait is bounded and Ctrl-C works.
pub fn open_writer(path: &Path, timeout: Option<Duration>) -> Result<OwnedFd> {
    let deadline = Deadline::after(timeout);
    loop {
        // Refuse a link, another file type, or a stranger's FIFO before waiting on it.
        if let Some(st) = expect_kind(path, SFlag::S_IFIFO, "FIFO")? {
            check_ours(&st, &what(path))?;
        }

        let flags = OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        // open for writing: succeeds only once a reader has the FIFO open.
        match open(path, flags, Mode::empty()) {
            Ok(fd) => {
                check_fd(&fd, path)?;
                return Ok(fd);
            }
            // No FIFO yet, or no reader on it yet: wait and retry.
            Err(Errno::ENOENT | Errno::ENXIO) => {}
            Err(Errno::ELOOP) => {
                return Err(Error::system(format!(
                    "{} is a symbolic link; refusing to follow it",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(Error::errno(format!("open {} for writing", path.display()), e));
            }
        }
        if deadline.expired() {
            let secs = timeout.unwrap_or_default().as_secs();
            return Err(Error::peer_lost(format!(
                "no fifo-reader opened {} within {secs} s (--timeout)",
                path.display()
            ))
            .hint("start fifo-reader first"));
        }
        pause(&deadline, OPEN_RETRY)?;
    }
}

/// Frames into a FIFO in writes of at most `PIPE_BUF` bytes, each holding whole
/// frames only, so frames stay whole among several writers. Says once if a
/// frame is larger than `PIPE_BUF` (it then goes alone, and may be split).
#[derive(Debug)]
pub struct FifoSink {
    inner: StreamSink<OwnedFd>,
    bin: &'static str,
    warn: bool,
}

impl FifoSink {
    /// Writes to `fd`; `quiet` silences the `PIPE_BUF` note; `stall` bounds how
    /// long a full FIFO may stay full (a frozen reader, `--timeout`).
    pub fn new(
        fd: OwnedFd,
        path: &Path,
        bin: &'static str,
        quiet: bool,
        stall: Option<Duration>,
    ) -> Result<Self> {
        let inner =
            StreamSink::new(fd, WritePolicy::Atomic(PIPE_BUF), what(path))?.with_stall(stall);
        Ok(FifoSink { inner, bin, warn: !quiet })
    }

    /// The write end, for `--pipe-size`.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.fd()
    }
}

impl FrameSink for FifoSink {
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        if self.warn && header.frame_len() > PIPE_BUF {
            self.warn = false;
            ipc_common::say!(
                "{}: note: a frame of {} bytes is above PIPE_BUF ({PIPE_BUF}): the kernel keeps a write whole \
                 only up to PIPE_BUF, so if other writers share this FIFO, frames can interleave (the reader rejects them)",
                self.bin,
                header.frame_len()
            );
        }
        self.inner.send(header, payload)
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
}
