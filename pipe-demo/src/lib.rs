//! Anonymous pipes: a one-way byte stream between related processes.
//!
//! A pipe is a kernel buffer with two descriptors: what is written to one end is
//! read, in order, from the other. It has no name, so only processes that inherit
//! a descriptor can use it: a shell's `writer | reader`, or a parent that creates
//! it before `fork`. It is half duplex: a conversation needs two (see
//! `pipe-duplex`).
//!
//! # Lifecycle
//! 1. `pipe2(O_CLOEXEC)` returns the read end and the write end;
//! 2. `fork`; the child `dup2`s the read end onto its standard input and `execv`s
//!    the reader (close-on-exec closes every other copy of both ends in it);
//! 3. the parent writes frames to the write end, then closes it: the reader sees
//!    end of file once the last write end is closed;
//! 4. the parent `waitpid`s for the child's exit status.
//!
//! # Cleanup
//! Nothing to remove: the kernel frees the pipe when its last descriptor closes,
//! whichever way the processes end.
//!
//! # Pitfalls
//! - A forgotten write end, held open by the reader itself or a sibling, means the
//!   reader never sees end of file: hence `O_CLOEXEC` on both ends.
//! - Writing to a pipe nobody reads raises SIGPIPE; Rust ignores it, so the write
//!   fails with `EPIPE` instead, reported as "reader went away" (exit 3).
//! - A pipe holds 64 KiB by default. Frames larger than that cost the writer a
//!   sleep and a wake-up each; [`set_pipe_size`] (`--pipe-size`) raises it up to
//!   `/proc/sys/fs/pipe-max-size`.
//! - Writes of at most `PIPE_BUF` (4096) bytes are atomic; larger ones may be
//!   split, which matters only when several processes write to one pipe (see
//!   fifo-demo).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ipc_common::error::{Context, Error, Result};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::unistd::{AccessFlags, ForkResult, Pid, access, dup2_stdin, execv, fork, isatty, pipe2};

/// A pipe's capacity unless raised: 16 pages.
pub const DEFAULT_PIPE_SIZE: usize = 64 << 10;
/// The ceiling for `F_SETPIPE_SZ` without `CAP_SYS_RESOURCE`.
pub const PIPE_MAX_SIZE_FILE: &str = "/proc/sys/fs/pipe-max-size";
/// Largest write the kernel keeps in one piece (`PIPE_BUF`).
pub const PIPE_BUF: usize = libc::PIPE_BUF;

/// Creates a pipe: `(read end, write end)`, both close-on-exec.
pub fn create_pipe() -> Result<(OwnedFd, OwnedFd)> {
    // pipe2 with O_CLOEXEC: a child we exec keeps only the ends we hand it on purpose.
    pipe2(OFlag::O_CLOEXEC).context(|| "pipe2")
}

/// The pipe's capacity in bytes.
pub fn pipe_size(fd: BorrowedFd<'_>) -> Result<usize> {
    let n = fcntl(fd, FcntlArg::F_GETPIPE_SZ).context(|| "fcntl F_GETPIPE_SZ")?;
    Ok(usize::try_from(n).unwrap_or(DEFAULT_PIPE_SIZE))
}

/// The system's ceiling for [`set_pipe_size`], from `/proc/sys/fs/pipe-max-size`.
pub fn pipe_max_size() -> Result<usize> {
    let text = std::fs::read_to_string(PIPE_MAX_SIZE_FILE)
        .context(|| format!("read {PIPE_MAX_SIZE_FILE}"))?;
    text.trim().parse().map_err(|_| {
        Error::system(format!("{PIPE_MAX_SIZE_FILE}: not a number: {:?}", text.trim()))
    })
}

/// Raises (or lowers) the pipe's capacity; returns the size the kernel chose
/// (rounded up to a power-of-two number of pages).
///
/// Checked against `/proc/sys/fs/pipe-max-size` first, so the error names the
/// file to raise rather than the bare `EPERM` an unprivileged caller would get.
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) -> Result<usize> {
    let max = pipe_max_size()?;
    if bytes > max {
        return Err(Error::system(format!(
            "--pipe-size {bytes} is above {PIPE_MAX_SIZE_FILE} ({max})"
        ))
        .hint(format!("raise it: sysctl fs.pipe-max-size={}", bytes.next_power_of_two())));
    }
    let want = i32::try_from(bytes)
        .map_err(|_| Error::usage(format!("--pipe-size {bytes}: too large")))?;
    // F_SETPIPE_SZ: fewer, larger writes fit before the writer must sleep.
    let got = fcntl(fd, FcntlArg::F_SETPIPE_SZ(want))
        .context(|| format!("fcntl F_SETPIPE_SZ {bytes}"))
        .map_err(|e| e.hint("see /proc/sys/fs/pipe-user-pages-soft and pipe-user-pages-hard"))?;
    Ok(usize::try_from(got).unwrap_or(bytes))
}

/// Refuses a terminal where a pipe of frames should be (exit 2), with the command
/// that was probably meant.
pub fn refuse_terminal(fd: BorrowedFd<'_>, which: &str, meant: &str) -> Result<()> {
    if isatty(fd).unwrap_or(false) {
        return Err(Error::usage(format!(
            "{which} is a terminal, not a pipe; run: {meant} (or add --raw)"
        )));
    }
    Ok(())
}

/// `pipe-reader`, found beside this executable (the same build).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context(|| "readlink /proc/self/exe")?;
    let path = me.with_file_name(name);
    // access X_OK now, so a missing reader is a clear error before anything forks.
    access(&path, AccessFlags::X_OK)
        .context(|| format!("{name} not found beside {}: access {}", me.display(), path.display()))
        .map_err(|e| e.hint("build it: cargo build --release -p pipe-demo"))?;
    Ok(path)
}

/// Forks and runs `program args...` with `read_end` as its standard input.
/// The read end is consumed: the parent has no use for it, and once its copy is
/// closed, a reader that dies shows up at the writer as `EPIPE` at once.
pub fn spawn_reader(read_end: OwnedFd, program: &Path, args: &[String]) -> Result<Pid> {
    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| Error::usage("program path has a NUL byte"))?;
    // Everything exec needs is built before fork: the child only makes system calls.
    let name = program.file_name().unwrap_or_default().as_bytes();
    let mut c_args = vec![CString::new(name).unwrap_or_default()];
    for a in args {
        c_args.push(CString::new(a.as_str()).map_err(|_| Error::usage("argument has a NUL byte"))?);
    }
    // SAFETY: this process is single-threaded (no thread holds a lock the child
    // could need), and the child only calls dup2, fcntl, signal, execv and _exit.
    match unsafe { fork() }.context(|| "fork")? {
        ForkResult::Child => {
            // dup2: the read end becomes standard input (dup2 clears close-on-exec).
            let ok = if read_end.as_raw_fd() == 0 {
                fcntl(read_end.as_fd(), FcntlArg::F_SETFD(FdFlag::empty())).is_ok()
            } else {
                dup2_stdin(&read_end).is_ok()
            };
            if ok {
                // SAFETY: restoring the default disposition installs no handler.
                // The reader should die of SIGPIPE like any Unix filter, not inherit
                // the ignore that Rust set up for us.
                unsafe {
                    let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
                }
                // execv: become the reader; on success this does not return.
                let _ = execv(&path, &c_args);
            }
            // SAFETY: _exit ends the child at once, without running the parent's
            // destructors or flushing its copied stdio buffers.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            // close our copy of the read end: only the child reads.
            drop(read_end);
            Ok(child)
        }
    }
}

// Forking, reaping and exit-code plumbing are shared by every crate that starts
// related processes: they live in common, and are re-exported here where the
// pipe examples first needed them.
pub use ipc_common::process::{exit_child, first_cause, fork_process, wait_child};
