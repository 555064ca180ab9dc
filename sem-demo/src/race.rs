//! The race on a shared counter, and what each lock costs to prevent it.
//!
//! P forked processes each add 1 to one counter in shared memory M times. An
//! addition is two steps — load the value, store value + 1 — and another process
//! may store in between: both loaded 41, both store 42, one update is lost. With
//! a lock around the two steps (the critical section) none is.
//!
//! ```text
//! --lock none     load; store                         lost updates
//! --lock atomic   fetch_add (one locked instruction)  none; not a lock, the baseline
//! --lock mutex    pthread_mutex_lock; load; store; unlock   (robust, process-shared; futex)
//! --lock posix    sem_wait; load; store; sem_post           (unnamed, pshared; futex)
//! --lock sysv     semop -1 SEM_UNDO; load; store; semop +1  (a system call each, always)
//! ```
//!
//! The counter, the semaphore and the mutex live in one anonymous `MAP_SHARED`
//! mapping made before `fork`, so every child sees the same memory; the System V
//! set is the only kernel object with a name (a key from a file in the private
//! directory). The processes wait at a start line (a flag in the mapping) so they
//! all run at once; each records its finishing time, and the cost per lock/unlock
//! pair is the wall time from the start line to the last finisher divided by P × M.
//!
//! `--permits K` makes the semaphore a counting one, K permits: the processes
//! then count how many are inside at once (an atomic increment on entry, a
//! decrement on exit, the maximum kept), and yield the CPU inside to invite the
//! others in. The maximum measured must be at most K, and with K < P it reaches K.
//!
//! Every wait is bounded: a child tries the lock at once (the uncontended
//! path, which is what the numbers measure, makes no extra call), and only
//! when it must sleep does it sleep in 100 ms ticks (`sem_timedwait`,
//! `semtimedop`, `pthread_mutex_timedlock`) that look at the stop flag.
//!
//! # Cleanup
//! The parent owns everything ([`Race`]): it destroys the semaphore and mutex,
//! removes the System V set and its key file, and unmaps, after reaping every
//! child. Children never drop anything: they leave with `exit`, which runs no
//! destructors. A child dies with its parent (`PR_SET_PDEATHSIG`), so a parent
//! killed with SIGKILL leaves no process behind, only the System V set and key
//! file (`ipc-clean` lists them).

use std::fmt;
use std::mem::size_of;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, compiler_fence};
use std::time::Duration;

use ipc_common::error::{Context, Error, Exit, Result};
use ipc_common::paths;
use ipc_common::signals;
use ipc_common::wait::Deadline;
use nix::errno::Errno;
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};

use crate::{
    KeyFile, Locked, Mapping, MutexGuard, Op, RobustMutex, Semaphore, SysvSet, create_with_ftok,
};

/// Default number of processes.
pub const DEFAULT_PROCS: u32 = 4;
/// Default increments per process.
pub const DEFAULT_ITERATIONS: u64 = 200_000;
/// Most processes.
pub const MAX_PROCS: u32 = 64;
/// First `ftok` project id tried for the race's System V set.
const SYSV_PROJ: u8 = b'R';
/// How often a child looks at the stop flag (in iterations).
const CHECK_EVERY: u64 = 1 << 12;
/// `Shared::stop` when the parent stops the children for a failure, not a signal.
const STOP_FAILED: u32 = u32::MAX;

/// What guards the counter (`--lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Nothing: load and store, racing.
    None,
    /// An atomic `fetch_add`: no lock at all, one indivisible instruction.
    Atomic,
    /// A robust process-shared pthread mutex.
    Mutex,
    /// An unnamed process-shared POSIX semaphore.
    Posix,
    /// A System V semaphore, with `SEM_UNDO`.
    Sysv,
}

impl LockKind {
    /// Every kind, cheapest first: what `--lock all` runs.
    pub const ALL: [LockKind; 5] =
        [LockKind::None, LockKind::Atomic, LockKind::Mutex, LockKind::Posix, LockKind::Sysv];

    /// Whether it can count (`--permits`).
    #[must_use]
    pub fn counts(self) -> bool {
        matches!(self, LockKind::Posix | LockKind::Sysv)
    }
}

impl FromStr for LockKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(LockKind::None),
            "atomic" => Ok(LockKind::Atomic),
            "mutex" => Ok(LockKind::Mutex),
            "posix" => Ok(LockKind::Posix),
            "sysv" => Ok(LockKind::Sysv),
            _ => Err(format!("{s:?}: expected none, atomic, mutex, posix, sysv or all")),
        }
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            LockKind::None => "none",
            LockKind::Atomic => "atomic",
            LockKind::Mutex => "mutex",
            LockKind::Posix => "posix",
            LockKind::Sysv => "sysv",
        })
    }
}

/// One run's parameters.
#[derive(Debug, Clone, Copy)]
pub struct RaceOptions {
    /// P: processes.
    pub procs: u32,
    /// M: increments per process.
    pub iterations: u64,
    /// What guards the counter.
    pub lock: LockKind,
    /// A counting semaphore with this many permits (posix or sysv only).
    pub permits: Option<u32>,
}

/// What a run measured.
#[derive(Debug, Clone, Copy)]
pub struct RaceResult {
    /// P × M.
    pub expected: u64,
    /// The counter at the end.
    pub got: u64,
    /// From the start line to the last process's finish.
    pub elapsed: Duration,
    /// Most processes seen inside the critical section at once (`--permits` only).
    pub max_inside: u32,
}

impl RaceResult {
    /// Updates lost.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.got)
    }

    /// Updates lost, in percent of those made.
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // counts below 2^52, for a percentage
    pub fn lost_percent(&self) -> f64 {
        100.0 * self.lost() as f64 / self.expected.max(1) as f64
    }

    /// Wall time per increment (per lock/unlock pair, for the locks), in nanoseconds.
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // a count below 2^52, for a quotient
    pub fn ns_per_pair(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e9 / self.expected.max(1) as f64
    }
}

/// The shared page: counter, start line, the locks, finishing times. Every
/// field another process writes is atomic, or a [`Semaphore`] / [`RobustMutex`]
/// (an `UnsafeCell`), so a `&Shared` may be held while they change.
#[repr(C, align(64))]
struct Shared {
    /// The counter, alone on its cache line.
    counter: AtomicU64,
    _pad: [u64; 7],
    /// Children past their setup, waiting at the start line.
    ready: AtomicU32,
    /// The start line opens (the parent sets it once all are ready).
    go: AtomicU32,
    /// Why to stop early: 0 = go on; SIGINT or SIGTERM; or [`STOP_FAILED`].
    stop: AtomicU32,
    inside: AtomicU32,
    max_inside: AtomicU32,
    start_ns: AtomicU64,
    /// An unnamed POSIX semaphore (`sem_init` pshared = 1) when `--lock posix`.
    sem: Semaphore,
    /// A robust process-shared mutex when `--lock mutex`.
    mutex: RobustMutex,
    end_ns: [AtomicU64; MAX_PROCS as usize],
}

/// `Err` once a stop was asked for: a stop signal reached this process, or the
/// parent set `stop` (the signal it got, or [`STOP_FAILED`]).
fn stopped(sh: &Shared) -> Result<()> {
    signals::check()?;
    match sh.stop.load(Ordering::Relaxed) {
        0 => Ok(()),
        STOP_FAILED => Err(Error::system("stopped by the parent: another process failed")),
        sig => Err(Error::interrupted(i32::try_from(sig).unwrap_or(libc::SIGTERM))),
    }
}

fn now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// The lock, as the processes use it.
#[derive(Clone, Copy)]
enum Lock<'a> {
    None,
    Atomic,
    Mutex(&'a RobustMutex),
    Posix(&'a Semaphore),
    Sysv(&'a SysvSet),
}

/// Everything a race owns: the mapping, and the System V set if any. Dropped
/// (by the parent only) after every child is reaped.
pub struct Race {
    // Field order is drop order: the set and its key file, then the mapping.
    sysv: Option<(SysvSet, KeyFile)>,
    inited: Option<LockKind>,
    map: Mapping,
    opts: RaceOptions,
}

impl fmt::Debug for Race {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Race").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl Race {
    /// Maps the shared page and makes the lock.
    pub fn new(opts: RaceOptions) -> Result<Race> {
        let map = Mapping::anonymous(size_of::<Shared>())?;
        let mut race = Race { sysv: None, inited: None, map, opts };
        let permits = opts.permits.unwrap_or(1);
        match opts.lock {
            LockKind::None | LockKind::Atomic => {}
            LockKind::Posix => {
                // SAFETY: `sem` is inside our fresh MAP_SHARED mapping, aligned by
                // repr(C); no child exists yet; the mapping outlives every use (Race).
                unsafe { Semaphore::init_at(race.shared().sem.as_ptr(), permits)? };
                race.inited = Some(LockKind::Posix);
            }
            LockKind::Mutex => {
                // SAFETY: as for the semaphore.
                unsafe { RobustMutex::init_at(race.shared().mutex.as_ptr())? };
                race.inited = Some(LockKind::Mutex);
            }
            LockKind::Sysv => {
                let dir = paths::private_dir()?;
                let file = KeyFile::create_or_open(
                    &dir.join(format!("sem-race.{}.key", std::process::id())),
                )?;
                let permits = u16::try_from(permits).unwrap_or(u16::MAX);
                // semget IPC_EXCL under ftok(file, 'R'), or the next free project id.
                let set = create_with_ftok(file.path(), SYSV_PROJ, &[permits])?;
                race.sysv = Some((set, file));
            }
        }
        Ok(race)
    }

    fn shared(&self) -> &Shared {
        // SAFETY: the mapping holds one zero-initialised Shared (all atomics and
        // plain bytes, valid as zeros), page-aligned, for as long as self lives.
        unsafe { &*self.map.start_as::<Shared>() }
    }

    fn lock(&self) -> Lock<'_> {
        let sh = self.shared();
        match self.opts.lock {
            LockKind::None => Lock::None,
            LockKind::Atomic => Lock::Atomic,
            // Both initialised in new (inited), before any child existed.
            LockKind::Posix => Lock::Posix(&sh.sem),
            LockKind::Mutex => Lock::Mutex(&sh.mutex),
            LockKind::Sysv => self.sysv.as_ref().map_or(Lock::None, |(set, _)| Lock::Sysv(set)),
        }
    }

    /// Forks the processes, lets them go at once, reaps them, and reports.
    pub fn run(&self) -> Result<RaceResult> {
        let opts = self.opts;
        let sh = self.shared();
        let mut children = Vec::with_capacity(opts.procs as usize);
        let result = self.start(&mut children);
        // Whatever happened, no child outlives us.
        let reaped = reap(&children, sh, result.is_err());
        result?;
        reaped?;
        let start = sh.start_ns.load(Ordering::Relaxed);
        let end = sh.end_ns[..opts.procs as usize]
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .max()
            .unwrap_or(start);
        Ok(RaceResult {
            expected: u64::from(opts.procs) * opts.iterations,
            got: sh.counter.load(Ordering::Relaxed),
            elapsed: Duration::from_nanos(end.saturating_sub(start)),
            max_inside: sh.max_inside.load(Ordering::Relaxed),
        })
    }

    fn start(&self, children: &mut Vec<Pid>) -> Result<()> {
        let sh = self.shared();
        let parent = getpid();
        for n in 0..self.opts.procs {
            // SAFETY: we are single-threaded, so the child may run ordinary Rust code.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    let code = match die_with(parent).and_then(|()| self.child(n as usize)) {
                        Ok(()) => 0,
                        Err(err) => {
                            // Stopped by a signal or by the parent: the parent says why, once.
                            let asked = sh.stop.load(Ordering::Relaxed) != 0;
                            if !asked && !matches!(err.exit(), Exit::Interrupted(_)) {
                                ipc_common::say!("sem-race: process {n}: {err}");
                            }
                            i32::from(err.exit().code())
                        }
                    };
                    // exit, not return: the child must not drop the parent's owners.
                    std::process::exit(code);
                }
                Ok(ForkResult::Parent { child }) => children.push(child),
                Err(e) => return Err(Error::errno("fork", e)),
            }
        }
        wait_at_start_line(sh, self.opts.procs, children)?;
        // Open the start line: every process is ready, let them go together.
        sh.start_ns.store(now_ns(), Ordering::Relaxed);
        sh.go.store(1, Ordering::Release);
        Ok(())
    }

    /// One process's part: M increments inside the critical section.
    fn child(&self, n: usize) -> Result<()> {
        let sh = self.shared();
        let lock = self.lock();
        sh.ready.fetch_add(1, Ordering::AcqRel);
        // The start line: spin (not yield), so that we are on a CPU when it opens.
        while sh.go.load(Ordering::Acquire) == 0 {
            stopped(sh)?;
            std::hint::spin_loop();
        }
        let counting = self.opts.permits.is_some();
        let mut left = self.opts.iterations;
        while left > 0 {
            let batch = left.min(CHECK_EVERY);
            if counting {
                counting_batch(sh, lock, batch)?;
            } else {
                increment_batch(sh, lock, batch)?;
            }
            left -= batch;
            stopped(sh)?;
        }
        sh.end_ns[n].store(now_ns(), Ordering::Relaxed);
        Ok(())
    }
}

/// In a child: die when the parent dies (`PR_SET_PDEATHSIG`), so no process
/// outlives a parent killed with SIGKILL.
fn die_with(parent: Pid) -> Result<()> {
    // prctl PR_SET_PDEATHSIG SIGKILL: the kernel kills us when our parent dies...
    set_pdeathsig(Signal::SIGKILL).context(|| "prctl PR_SET_PDEATHSIG")?;
    // ...from now on: if it died before, we have been re-parented already.
    if getppid() != parent {
        return Err(Error::peer_lost("sem-race exited before this process started"));
    }
    Ok(())
}

/// The parent at the start line: waits until all `procs` children are ready.
/// A child that ended before getting there (killed, or failed in its setup)
/// would keep the others spinning for ever: it is noticed, without reaping it
/// (`waitid` `WNOWAIT`; [`reap`] collects it), and the start is called off.
fn wait_at_start_line(sh: &Shared, procs: u32, children: &[Pid]) -> Result<()> {
    while sh.ready.load(Ordering::Acquire) < procs {
        signals::check()?;
        for &child in children {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            // waitid WNOWAIT: has it ended? (it stays a zombie for reap to collect)
            let how = match waitid(Id::Pid(child), flags) {
                Ok(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
                Ok(WaitStatus::Signaled(_, sig, _)) => format!("was killed by {sig}"),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::errno(format!("waitid {child}"), e)),
            };
            return Err(Error::system(format!("process {child} {how} before the start line")));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// P on a semaphore, bounded: at once if a permit is free, else in ticks that
/// look at the stop flag.
fn take_sem(sem: &Semaphore, sh: &Shared) -> Result<()> {
    // sem_trywait, then sem_timedwait in ticks.
    sem.wait_until(&Deadline::never(), || stopped(sh)).map(drop)
}

/// P with `SEM_UNDO` on the set's semaphore, bounded the same way.
fn take_set(set: &SysvSet, sh: &Shared) -> Result<()> {
    // semtimedop {0 -1 SEM_UNDO} in ticks: undone by the kernel if we die holding it.
    set.op_until(&[Op::wait(0).undo()], &Deadline::never(), || stopped(sh)).map(drop)
}

/// The mutex, bounded the same way; a dead holder's `EOWNERDEAD` is an error
/// here (its increment may be half done, and this demo does not repair).
fn lock_mutex<'m>(mutex: &'m RobustMutex, sh: &Shared) -> Result<MutexGuard<'m>> {
    // pthread_mutex_trylock, then pthread_mutex_timedlock in ticks.
    let guard = mutex
        .lock_until(&Deadline::never(), || stopped(sh))?
        .ok_or_else(|| Error::system("pthread_mutex_timedlock: gave up"))?;
    if guard.how() == Locked::OwnerDied {
        return Err(Error::system(
            "pthread_mutex_lock: EOWNERDEAD: a process died holding the mutex; the counter cannot be trusted",
        ));
    }
    Ok(guard)
}

/// `counter = counter + 1`, as two steps (load, store), `batch` times, with the lock around.
fn increment_batch(sh: &Shared, lock: Lock<'_>, batch: u64) -> Result<()> {
    let c = &sh.counter;
    // The unlocked increment: load, then store. Another process can store between.
    // The fence only stops the compiler from fusing the two into one `inc` on
    // memory, which no interrupt splits: then only two processes running at the
    // same moment on two CPUs could race, never two taking turns on one CPU.
    let racy = || {
        let value = c.load(Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        c.store(value + 1, Ordering::Relaxed);
    };
    match lock {
        Lock::None => (0..batch).for_each(|_| racy()),
        Lock::Atomic => (0..batch).for_each(|_| {
            c.fetch_add(1, Ordering::Relaxed);
        }),
        Lock::Mutex(mutex) => {
            for _ in 0..batch {
                let guard = lock_mutex(mutex, sh)?;
                racy();
                drop(guard); // unlock
            }
        }
        Lock::Posix(sem) => {
            for _ in 0..batch {
                take_sem(sem, sh)?; // P
                racy();
                sem.post()?; // V
            }
        }
        Lock::Sysv(set) => {
            for _ in 0..batch {
                take_set(set, sh)?; // P, undone by the kernel if we die
                racy();
                set.op(&[Op::post(0).undo()])?; // V
            }
        }
    }
    Ok(())
}

/// With K permits: count who is inside, and linger (yield) to let others in.
fn counting_batch(sh: &Shared, lock: Lock<'_>, batch: u64) -> Result<()> {
    let inside = || {
        let now = sh.inside.fetch_add(1, Ordering::AcqRel) + 1;
        sh.max_inside.fetch_max(now, Ordering::AcqRel);
        sh.counter.fetch_add(1, Ordering::Relaxed);
        std::thread::yield_now();
        sh.inside.fetch_sub(1, Ordering::AcqRel);
    };
    for _ in 0..batch {
        match lock {
            Lock::Posix(sem) => {
                take_sem(sem, sh)?;
                inside();
                sem.post()?;
            }
            Lock::Sysv(set) => {
                take_set(set, sh)?;
                inside();
                set.op(&[Op::post(0).undo()])?;
            }
            _ => return Err(Error::usage("--permits needs --lock posix or sysv")),
        }
    }
    Ok(())
}

/// Waits for every child. On a stop signal, tells them to stop with that
/// signal (they look every few thousand iterations, and on every tick of a
/// wait). A child killed by a signal may have died inside the critical section,
/// holding a lock the others wait for: they are killed too.
fn reap(children: &[Pid], sh: &Shared, stopping: bool) -> Result<()> {
    let mut left: Vec<Pid> = children.to_vec();
    let mut first: Option<Error> = None;
    let sig = || signals::pending().and_then(|s| u32::try_from(s).ok());
    if stopping {
        sh.stop.store(sig().unwrap_or(STOP_FAILED), Ordering::Relaxed);
    }
    while !left.is_empty() {
        if let Some(sig) = sig() {
            sh.stop.store(sig, Ordering::Relaxed);
        }
        // waitpid WNOHANG: collect whoever has finished, without blocking (a
        // blocking waitpid would be restarted after our SIGINT handler, deaf to it).
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                left.retain(|p| *p != pid);
                let failure = match status {
                    WaitStatus::Exited(_, 0) => None,
                    WaitStatus::Exited(_, code) => Some(Error::new(
                        Exit::from_code(code),
                        format!("process {pid} failed with exit status {code}"),
                    )),
                    WaitStatus::Signaled(_, sig, _) => {
                        // It may have died holding the lock: stop the others now.
                        for p in &left {
                            let _ = kill(*p, Signal::SIGKILL);
                        }
                        Some(Error::system(format!(
                            "process {pid} was killed by {sig}; stopped the others (it may have held the lock)"
                        )))
                    }
                    _ => None,
                };
                if first.is_none() {
                    first = failure;
                }
            }
            Err(Errno::ECHILD) => break,
            Err(e) => return Err(Error::errno("waitpid", e)),
        }
    }
    signals::check()?;
    first.map_or(Ok(()), Err)
}

impl Drop for Race {
    fn drop(&mut self) {
        let sh = self.shared();
        match self.inited {
            // SAFETY: every child has been reaped (run reaps before returning), so
            // nobody uses the semaphore or mutex any more.
            Some(LockKind::Posix) => unsafe {
                let _ = sh.sem.destroy();
            },
            // SAFETY: as above.
            Some(LockKind::Mutex) => unsafe {
                sh.mutex.destroy();
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that ends before the start line is noticed, not waited for.
    #[test]
    fn the_start_line_notices_a_process_that_died_before_it() {
        let map = Mapping::anonymous(size_of::<Shared>()).expect("mmap");
        // SAFETY: zeroed memory is a valid Shared (atomics, and locks never used here).
        let sh = unsafe { &*map.start_as::<Shared>() };
        // SAFETY: the child only calls _exit, which is async-signal-safe (the test
        // harness runs threads, so nothing else is allowed in the child).
        let child = match unsafe { fork() }.expect("fork") {
            // SAFETY: see above: _exit only.
            ForkResult::Child => unsafe { libc::_exit(3) },
            ForkResult::Parent { child } => child,
        };
        let err = wait_at_start_line(sh, 1, &[child]).expect_err("must not wait for ever");
        assert_eq!(
            err.message(),
            format!("process {child} exited with status 3 before the start line")
        );
        // It was left for reap: collect it now.
        assert_eq!(waitpid(child, None).expect("waitpid"), WaitStatus::Exited(child, 3));
    }
}
