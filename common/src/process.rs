//! Related processes: `fork`, memory shared across it, reaping a child, and
//! passing its exit code on.
//!
//! A pipe between a parent and its child, a shared anonymous mapping, a
//! benchmark's two sides: each starts with `fork` and ends with the parent
//! reaping the child and deciding whose failure to report. Written once here.
//!
//! # Pitfalls
//! - `fork` in a multi-threaded process may leave the child holding a lock
//!   another thread held (malloc's, say): our processes are single-threaded
//!   when they fork, which is what makes running ordinary code in the child safe.
//! - A blocking `waitpid` is restarted after our SIGINT handler (`SA_RESTART`)
//!   and would never notice it: the wait is a `poll` on a pidfd instead.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::error::{Context, Error, Exit, Result};
use crate::signals;
use crate::wait::TICK;

/// The poll tick in milliseconds.
const TICK_MS: u16 = TICK.as_millis() as u16;

/// A descriptor for a child process that becomes readable when it exits.
fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(fd).context(|| format!("pidfd_open {pid}"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) })
}

/// Waits for a child and turns its status into `Ok` (exit 0) or the error class
/// its exit code means (SPEC §2), so the parent can exit with the same code.
///
/// The wait is a `poll` on a pidfd rather than a blocking `waitpid` (which the
/// kernel restarts after our SIGINT handler and so would never notice it): a stop
/// signal to us is passed on to the child, and we still wait for it to finish
/// cleaning up, so no child outlives its parent.
pub fn wait_child(pid: Pid, name: &str) -> Result<()> {
    let pidfd = pidfd_open(pid)?;
    let mut passed_on = false;
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        // poll the pidfd: readable once the child has exited.
        match poll(&mut fds, PollTimeout::from(TICK_MS)) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => break,
            Err(e) => return Err(Error::errno("poll pidfd", e)),
        }
        if let (Some(sig), false) = (signals::pending(), passed_on) {
            // kill: pass the stop request on; the child cleans up and exits.
            let _ = kill(pid, Signal::try_from(sig).ok());
            passed_on = true;
        }
    }
    // waitpid: reap it (it has exited, so this does not block).
    let status = waitpid(pid, None).context(|| format!("waitpid {name}"))?;
    let exit = match status {
        WaitStatus::Exited(_, 0) => return Ok(()),
        WaitStatus::Exited(_, 127) => {
            return Err(Error::system(format!(
                "{name} (pid {pid}) could not be started (exec failed)"
            )));
        }
        WaitStatus::Exited(_, code) => Exit::from_code(code),
        WaitStatus::Signaled(_, sig, _) => {
            return Err(Error::peer_lost(format!("{name} (pid {pid}) was killed by {sig}")));
        }
        other => {
            return Err(Error::system(format!("{name} (pid {pid}): unexpected status {other:?}")));
        }
    };
    Err(Error::new(exit, format!("{name} (pid {pid}) failed with exit status {}", exit.code())))
}

/// Forks a related process that needs no `exec`: it already has the pipes.
pub fn fork_process() -> Result<ForkResult> {
    // SAFETY: our processes are single-threaded, so the child may go on running
    // ordinary Rust code (allocation included): no other thread held a lock.
    unsafe { fork() }.context(|| "fork")
}

/// Maps `len` bytes shared with every child forked after this call:
/// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)`.
///
/// The pages are zeroed and belong to no file. `MAP_SHARED` is what makes a
/// child's stores visible to its parent: a `MAP_PRIVATE` mapping (memmap2's
/// `map_anon`) is copied on write at `fork`. The caller owns the mapping and
/// ends it with `munmap(ptr, len)`; the pages go with the last process that
/// has them. The error is the bare errno, for the caller's own context.
pub fn map_shared_anonymous(len: NonZeroUsize) -> nix::Result<NonNull<c_void>> {
    // SAFETY: no MAP_FIXED: the kernel picks an unused address, so the new
    // mapping replaces nothing and aliases nothing in this process.
    unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }
}

/// Ends a forked child: prints its error as `bin: ...` and exits with its code.
pub fn exit_child(bin: &str, result: Result<()>) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(err) => {
            crate::say!("{bin}: {err}");
            err.exit().code()
        }
    };
    // exit (not _exit): flush what the child printed; it owns no kernel object.
    std::process::exit(i32::from(code))
}

/// The error to exit with when we and our child may both have failed: our own,
/// unless we only lost the child (`EPIPE`, end of file), in which case the
/// child's failure is the cause — ours is printed first as context.
pub fn first_cause(bin: &str, ours: Result<()>, child: Result<()>) -> Result<()> {
    match (ours, child) {
        (Ok(()), child) => child,
        (Err(ours), Err(theirs)) if ours.exit() == Exit::PeerLost => {
            crate::say!("{bin}: {ours}");
            Err(theirs)
        }
        (Err(ours), _) => Err(ours),
    }
}
