//! Two real processes per measurement: fork, pin, and reap.
//!
//! Every run forks: the child is the writer (throughput) or the echo side
//! (latency), running the mechanism crate's library code; the parent reads or
//! times. Objects the reading side owns are made in the parent before the
//! fork, so the child starts with a copy of the owner in its memory. That copy
//! belongs to the parent: the child never drops it — it ends in
//! [`child_side`], which calls `exit` and so runs no destructor — or it would
//! remove the parent's objects under it.
//!
//! The child also asks the kernel to kill it if the parent dies
//! (`PR_SET_PDEATHSIG`): it holds copies of the parent's descriptors and
//! locks, so it could not tell by itself that its reader is gone.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use ipc_common::error::{Context, Error, Exit, Result};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::mman::munmap;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid, getpid, getppid};

/// How the child names itself in its error lines.
pub const CHILD: &str = "ipc-bench child";

/// CPUs for the parent and the child (`--pin 0,1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The parent's CPU.
    pub parent: usize,
    /// The child's CPU.
    pub child: usize,
}

impl std::str::FromStr for Pin {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?}: expected two CPU numbers, PARENT,CHILD (as in 0,1)");
        let (a, b) = s.split_once(',').ok_or_else(bad)?;
        Ok(Pin {
            parent: a.trim().parse().map_err(|_| bad())?,
            child: b.trim().parse().map_err(|_| bad())?,
        })
    }
}

/// Binds this process to one CPU.
pub fn pin_to(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).context(|| format!("CPU {cpu}"))?;
    // sched_setaffinity: run only on `cpu` (and its caches) from now on.
    sched_setaffinity(Pid::from_raw(0), &set)
        .context(|| format!("sched_setaffinity CPU {cpu}"))
        .map_err(|e| e.hint("see nproc for the CPUs this machine has"))
}

/// `Err` unless this process has exactly one thread: `fork` copies only the
/// calling thread, and `setenv` is unsound next to a thread reading.
pub fn single_threaded() -> Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat").context(|| "read /proc/self/stat")?;
    // Field 20 (num_threads), counted after the ")" that ends field 2 (comm).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    match after.split_whitespace().nth(17) {
        Some("1") => Ok(()),
        Some(n) => Err(Error::system(format!(
            "ipc-bench has {n} threads; it forks, so it must have one (a bug)"
        ))),
        None => Err(Error::system("cannot read num_threads from /proc/self/stat")),
    }
}

/// The two sides of a fork.
#[derive(Debug)]
pub enum Fork {
    /// In the child: run its side in [`child_side`].
    Child,
    /// In the parent: the child's pid, for [`reap`].
    Parent(Pid),
}

/// Forks, after checking that this process is single-threaded and flushing
/// standard output (the child's `exit` would print a copy of what is buffered).
pub fn fork() -> Result<Fork> {
    use std::io::Write;
    single_threaded()?;
    std::io::stdout().flush().context(|| "flush standard output")?;
    match ipc_common::process::fork_process()? {
        ForkResult::Child => Ok(Fork::Child),
        ForkResult::Parent { child } => Ok(Fork::Parent(child)),
    }
}

/// Runs the child's side, then exits with its status (SPEC §2 codes); never
/// returns, so the parent's objects copied into this process are never dropped.
pub fn child_side(pin: Option<Pin>, parent: Pid, side: impl FnOnce() -> Result<()>) -> ! {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // prctl PR_SET_PDEATHSIG: die with the parent; then check it is still
        // there (it may have gone before the call).
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context(|| "prctl PR_SET_PDEATHSIG")?;
        if getppid() != parent {
            return Err(Error::peer_lost("the bench went away before its child started"));
        }
        if let Some(pin) = pin {
            pin_to(pin.child)?;
        }
        side()
    }))
    .unwrap_or_else(|_| Err(Error::system("the child panicked")));
    ipc_common::process::exit_child(CHILD, result)
}

/// The parent's result, once the child is reaped: ours if we failed (the child
/// is stopped first, so it cannot wait for us forever), the child's if only it did.
pub fn reap<T>(child: Pid, ours: Result<T>) -> Result<T> {
    if ours.is_err() {
        // kill SIGTERM: its signal flag unwinds it within a tick.
        let _ = kill(child, Signal::SIGTERM);
    }
    let theirs = ipc_common::process::wait_child(child, CHILD);
    match (ours, theirs) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(theirs)) => Err(theirs),
        // We lost the child: its own failure is the cause.
        (Err(ours), Err(theirs)) if ours.exit() == Exit::PeerLost => {
            Err(Error::new(theirs.exit(), format!("{} ({})", theirs.message(), ours.message())))
        }
        (Err(ours), _) => Err(ours),
    }
}

/// The parent's pid, for the child to check on.
#[must_use]
pub fn me() -> Pid {
    getpid()
}

/// One page of memory shared with every child (`MAP_SHARED | MAP_ANONYMOUS`,
/// made before the first fork): the stop flag, and the floors' words, each on
/// a cache line of its own.
#[derive(Debug)]
pub struct SharedPage {
    base: NonNull<u64>,
}

/// Bytes of the page.
const PAGE: usize = 4096;
/// Words 64 bytes apart: one cache line each.
pub const LINES: usize = PAGE / 64;

impl SharedPage {
    /// Maps the page, zeroed.
    pub fn new() -> Result<Self> {
        let len = std::num::NonZeroUsize::new(PAGE).unwrap_or(std::num::NonZeroUsize::MIN);
        // Shared, so a forked child sees our stores and we its.
        let ptr = ipc_common::process::map_shared_anonymous(len)
            .context(|| "mmap MAP_SHARED|MAP_ANONYMOUS")?;
        Ok(SharedPage { base: ptr.cast() })
    }

    /// The 64-bit word at the start of cache line `line`.
    ///
    /// # Panics
    /// If `line` is not below [`LINES`].
    #[must_use]
    pub fn word(&self, line: usize) -> &AtomicU64 {
        assert!(line < LINES, "line {line} is outside the shared page");
        // SAFETY: inside the page (checked), 8-byte aligned (page start + 64 k),
        // mapped for as long as `self`; AtomicU64 is valid for any bits, and
        // both processes touch it only through atomic operations.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(line * 8)) }
    }

    /// `len` bytes from `offset` into cache line `line`, for plain copies
    /// ordered by an atomic word (the frame-lines floor).
    ///
    /// # Panics
    /// If they do not fit in the page.
    #[must_use]
    pub fn bytes(&self, line: usize, offset: usize, len: usize) -> *mut u8 {
        assert!(line * 64 + offset + len <= PAGE, "bytes outside the shared page");
        // SAFETY: inside the page (checked just above).
        unsafe { self.base.as_ptr().cast::<u8>().add(line * 64 + offset) }
    }

    /// The 32-bit word at the start of cache line `line` (a futex word).
    ///
    /// # Panics
    /// If `line` is not below [`LINES`].
    #[must_use]
    pub fn word32(&self, line: usize) -> &AtomicU32 {
        assert!(line < LINES, "line {line} is outside the shared page");
        // SAFETY: as for `word`, 4-byte aligned; never used as a u64 at the same line.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(line * 8).cast::<u32>()) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        let _ = unsafe { munmap(self.base.cast(), PAGE) };
    }
}
