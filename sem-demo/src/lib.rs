//! Semaphores and mutexes between processes: the IPC that carries no data, but
//! protects the data other IPC shares.
//!
//! A semaphore is a counter with two operations, which Dijkstra named P and V:
//!
//! - **P** (`sem_wait`; `semop` with `-1`): take one; while the count is 0, sleep;
//! - **V** (`sem_post`; `semop` with `+1`): give one back, waking a sleeper.
//!
//! Put P before and V after the code that touches shared data — the *critical
//! section* — and at most N processes run it at once, N being the initial count:
//! 1 makes a lock, K counts K free slots of a buffer. Without it, two processes
//! that both do `counter = counter + 1` can both read 41 and both write 42: an
//! update is lost (`sem-race --lock none` shows it happen).
//!
//! This file holds the primitives, each an RAII type with one owner:
//!
//! | type | calls | where it lives | on holder death |
//! |---|---|---|---|
//! | [`NamedSemaphore`] | `sem_open` `O_CREAT \| O_EXCL` 0600, `sem_unlink` | `/dev/shm/sem.NAME`, found by name | stays taken: no owner, no undo |
//! | [`Semaphore`] | `sem_init` pshared = 1, `sem_wait`, `sem_timedwait`, `sem_post` | inside shared memory you map | the same |
//! | [`SysvSet`] | `semget` `IPC_CREAT \| IPC_EXCL` 0600, `SETALL`, `semop`, `semtimedop` | the kernel, found by key | released if taken with `SEM_UNDO` |
//! | [`RobustMutex`] | `pthread_mutex_*`, `PTHREAD_PROCESS_SHARED`, `PTHREAD_MUTEX_ROBUST` | inside shared memory | next locker gets `EOWNERDEAD` |
//!
//! and the shared memory they (and the data they guard) live in: [`Mapping`]
//! (anonymous `MAP_SHARED`, inherited across `fork`) and [`ShmObject`]
//! (`shm_open` + `mmap`, found by name). What the binaries show lives in
//! [`buffer`] (`sem-writer`/`sem-reader`), [`race`] (`sem-race`) and [`holder`]
//! (`sem-holder`).
//!
//! # Lifecycle
//! 1. the owner creates the object exclusively (`O_EXCL`, `IPC_EXCL`), mode 0600,
//!    and gives it its initial count;
//! 2. others open it by name or key, after checking it is ours and private;
//! 3. everyone does P … V around each critical section; every wait in these
//!    programs is bounded (a try first, then 100 ms ticks: `sem_timedwait`,
//!    `semtimedop`, `pthread_mutex_timedlock`), so Ctrl-C, `--timeout` and a
//!    dead peer are noticed;
//! 4. the owner removes it (`sem_unlink`, `IPC_RMID`, `shm_unlink`) on exit.
//!
//! # Cleanup
//! The owner's `Drop` removes the object, on success, error and SIGINT/SIGTERM.
//! A process killed with SIGKILL leaves named objects behind (`/dev/shm/sem.*`,
//! `/dev/shm/*`, System V sets): `ipc-clean` lists them, `make clean-ipc` or the
//! reader's `--force` removes them. An anonymous [`Mapping`] dies with its last process.
//!
//! # Pitfalls
//! - **No owner.** A semaphore is a count, not a lock with an owner: any process
//!   may post it, and the kernel does not know who "holds" it. A POSIX semaphore
//!   taken by a process that dies stays taken for good. System V can undo a
//!   dead process's operations (`SEM_UNDO`); a robust mutex *has* an owner and
//!   tells the next locker (`EOWNERDEAD`). `sem-holder` shows all three.
//! - **`SEM_UNDO` only where one process does both P and V** (a lock). On the
//!   bounded buffer's `empty`/`full` counts the writer does P and the reader V:
//!   undoing one side's half at exit would corrupt the count.
//! - **The System V initialisation race.** `semget(IPC_CREAT)` and `SETALL` are
//!   two calls: an opener can come between them and use semaphores still at 0.
//!   The creator's first `semop` sets `sem_otime`, so an opener waits until
//!   `sem_otime != 0` ([`SysvSet::open_id`]). POSIX `sem_open` has no such gap
//!   (glibc builds the semaphore in a temporary file and `link`s it into place).
//! - **`ftok` keys collide.** A key keeps only 8 bits of the file's device and 16
//!   of its inode, and file systems hand out inode numbers 65536 apart readily.
//!   So a set found under "our" key may be someone else's: creators take the
//!   next project id when a key is taken ([`create_with_ftok`]) and record the
//!   key and id they got; openers use the record, never the key alone.
//! - **A name is looked up twice.** `sem_open` of an existing semaphore opens
//!   `/dev/shm/sem.NAME` by name, after our `lstat` checked it: a process of ours
//!   could swap the file in between. [`NamedSemaphore::open`] then checks the
//!   file it mapped (device and inode in `/proc/self/maps`) against the one at
//!   the path, opened `O_NOFOLLOW` and checked with `fstat`.
//! - **EINTR.** `sem_wait`, `semop` and friends are not restarted after a signal
//!   handler ran: they are retried unless the signal asked us to stop.
//! - **`sem_timedwait` takes a `CLOCK_REALTIME` deadline**, which jumps with the
//!   wall clock; waits here are 100 ms ticks, so a jump costs at most one tick.

use std::cell::UnsafeCell;
use std::ffi::CString;
use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Duration;

use ipc_common::clean::{DEV_SHM, SysvKind, remove_sysv};
use ipc_common::error::{Context, Error, Result};
use ipc_common::paths::{self, check_ours};
use ipc_common::process;
use ipc_common::signals;
use ipc_common::wait::{Deadline, TICK, wait_in_ticks};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, posix_fallocate};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap, shm_open, shm_unlink};
use nix::sys::signal::kill;
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, major, minor};
use nix::sys::statvfs::fstatvfs;
use nix::sys::time::TimeSpec;
use nix::sys::uio::{pread, pwrite};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{Pid, ftruncate};

pub mod buffer;
pub mod holder;
pub mod race;

/// Permissions of every object made here: owner read and write only.
pub const MODE: u32 = 0o600;

// ---------------------------------------------------------------------------
// Names, bounded waits, peers
// ---------------------------------------------------------------------------

fn c_name(name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| Error::usage(format!("{name:?}: a name cannot hold a NUL byte")))
}

/// Where the kernel shows POSIX shared memory object `name`: `/dev/shm/NAME`.
#[must_use]
pub fn shm_path(name: &str) -> PathBuf {
    Path::new(DEV_SHM).join(name.trim_start_matches('/'))
}

/// Where glibc keeps named semaphore `name`: `/dev/shm/sem.NAME`.
#[must_use]
pub fn sem_path(name: &str) -> PathBuf {
    Path::new(DEV_SHM).join(format!("sem.{}", name.trim_start_matches('/')))
}

/// Refuses an existing POSIX object at `path` (in `/dev/shm`) that is not a
/// regular file of ours, private to us; it is left untouched. `Ok(None)` if absent.
pub fn check_existing(path: &Path, what: &str) -> Result<Option<FileStat>> {
    let Some(st) = paths::expect_kind(path, SFlag::S_IFREG, what)? else {
        return Ok(None);
    };
    check_ours(&st, what)?;
    Ok(Some(st))
}

/// `CLOCK_REALTIME` now plus `d`: the absolute deadline `sem_timedwait` and
/// `pthread_mutex_timedlock` take.
fn realtime_after(d: Duration) -> Result<TimeSpec> {
    let now = clock_gettime(ClockId::CLOCK_REALTIME).context(|| "clock_gettime CLOCK_REALTIME")?;
    Ok(now + TimeSpec::from(d))
}

/// Whether process `pid` is running: it exists (kill with signal 0 does not fail
/// with `ESRCH`), is not a zombie, and is not exiting. The kernel releases a
/// dying process's `SEM_UNDO` adjustments and robust mutexes *during* its exit,
/// so the waiter it wakes can look before the process is a zombie: its flags
/// then hold `PF_EXITING`.
#[must_use]
pub fn process_alive(pid: i32) -> bool {
    /// `PF_EXITING` in the flags of /proc/PID/stat: exit under way.
    const PF_EXITING: u64 = 0x4;
    if pid <= 0 || matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH)) {
        return false;
    }
    // /proc/PID/stat: "pid (comm) state ppid pgrp session tty tpgid flags ...".
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let fields: Vec<&str> =
        stat.rsplit_once(") ").map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let zombie = matches!(fields.first(), Some(&("Z" | "X")) | None);
    let exiting = fields
        .get(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0);
    !zombie && !exiting
}

// ---------------------------------------------------------------------------
// POSIX semaphores
// ---------------------------------------------------------------------------

/// A POSIX semaphore, wherever it lives: in the mapping `sem_open` made
/// ([`NamedSemaphore`] dereferences to this), or unnamed, placed by you in shared
/// memory and initialised with [`Semaphore::init_at`].
///
/// ```text
/// #[repr(C)] struct Ring { items: Semaphore, space: Semaphore, ... }  // in a MAP_SHARED mapping
/// unsafe { Semaphore::init_at(ring.items.as_ptr(), 0)? };   // creator, once
/// ring.items.wait_until(&deadline, || Ok(()))?; ...; ring.items.post()?;
/// ```
///
/// glibc implements it as a futex word: P and V on an uncontended semaphore stay
/// in user space; only a sleep or a wake-up enters the kernel. Its bytes sit in
/// an [`UnsafeCell`]: other processes change them while we hold a `&Semaphore`.
#[repr(transparent)]
pub struct Semaphore(UnsafeCell<libc::sem_t>);

// SAFETY: a POSIX semaphore is made to be used by many threads and processes at
// once; every access goes through the sem_* functions, which synchronise.
unsafe impl Sync for Semaphore {}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore").field("value", &self.value().ok()).finish()
    }
}

impl Semaphore {
    /// Initialises an unnamed, process-shared semaphore at `at` with count `value`
    /// (`sem_init` with pshared = 1) and returns it.
    ///
    /// # Safety
    /// `at` must point to writable memory of `size_of::<sem_t>()` bytes, aligned
    /// for `sem_t` (8), inside a `MAP_SHARED` mapping that stays mapped for `'a`;
    /// it must not hold a semaphore in use (initialising one twice is undefined),
    /// and no other process may use it before this returns.
    pub unsafe fn init_at<'a>(at: *mut libc::sem_t, value: u32) -> Result<&'a Semaphore> {
        // sem_init pshared=1: the count lives at `at`, usable by every process mapping it.
        // SAFETY: the caller vouches for `at` (see above).
        let rc = unsafe { libc::sem_init(at, 1, value) };
        Errno::result(rc).context(|| format!("sem_init pshared=1 value {value}"))?;
        // SAFETY: just initialised; the caller keeps the mapping for 'a.
        Ok(unsafe { Self::from_ptr(at) })
    }

    /// The semaphore another process (or this one) initialised at `at`.
    ///
    /// # Safety
    /// `at` must point to a semaphore initialised by [`Semaphore::init_at`] (or
    /// made by `sem_open`), in memory that stays mapped for `'a`.
    pub unsafe fn from_ptr<'a>(at: *mut libc::sem_t) -> &'a Semaphore {
        // SAFETY: Semaphore is repr(transparent) over UnsafeCell<sem_t>, itself
        // repr(transparent) over sem_t; the caller vouches for the memory.
        unsafe { &*at.cast::<Semaphore>() }
    }

    /// Where its `sem_t` is: what [`Semaphore::init_at`] takes when a
    /// `Semaphore` field of a shared `#[repr(C)]` struct is initialised in place.
    pub fn as_ptr(&self) -> *mut libc::sem_t {
        self.0.get()
    }

    /// P: takes one, sleeping while the count is 0 (`sem_wait`, retried on `EINTR`
    /// unless a stop signal came). Unbounded: prefer [`Semaphore::wait_until`]
    /// wherever the poster might die.
    pub fn wait(&self) -> Result<()> {
        loop {
            // SAFETY: self is an initialised semaphore in mapped memory (see from_ptr).
            let rc = unsafe { libc::sem_wait(self.as_ptr()) };
            match Errno::result(rc) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => signals::check()?,
                Err(e) => return Err(Error::errno("sem_wait", e)),
            }
        }
    }

    /// P without sleeping (`sem_trywait`): `Ok(false)` if the count is 0.
    pub fn try_wait(&self) -> Result<bool> {
        // SAFETY: as in wait.
        let rc = unsafe { libc::sem_trywait(self.as_ptr()) };
        match Errno::result(rc) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(false),
            Err(e) => Err(Error::errno("sem_trywait", e)),
        }
    }

    /// P, sleeping at most `timeout` (`sem_timedwait`): `Ok(false)` if it ran out
    /// (or a signal handler ran: the caller looks at the stop flag and calls again).
    pub fn timed_wait(&self, timeout: Duration) -> Result<bool> {
        let at = realtime_after(timeout)?;
        // SAFETY: as in wait; `at` is a valid timespec on our stack.
        let rc = unsafe { libc::sem_timedwait(self.as_ptr(), at.as_ref()) };
        match Errno::result(rc) {
            Ok(_) => Ok(true),
            Err(Errno::ETIMEDOUT | Errno::EINTR) => Ok(false),
            Err(e) => Err(Error::errno("sem_timedwait", e)),
        }
    }

    /// P, bounded: tries at once (no system call if the count is above 0), then
    /// sleeps in ticks until `deadline`, checking the stop signals and running
    /// `on_tick` after each quiet tick. `Ok(false)` if the deadline passed.
    pub fn wait_until(
        &self,
        deadline: &Deadline,
        on_tick: impl FnMut() -> Result<()>,
    ) -> Result<bool> {
        if self.try_wait()? {
            return Ok(true);
        }
        wait_in_ticks(deadline, |step| self.timed_wait(step), on_tick)
    }

    /// V: gives one back, waking one sleeper if any (`sem_post`).
    pub fn post(&self) -> Result<()> {
        // SAFETY: as in wait.
        let rc = unsafe { libc::sem_post(self.as_ptr()) };
        Errno::result(rc).map(drop).context(|| "sem_post")
    }

    /// The count now (`sem_getvalue`); 0 when processes are waiting. Only a
    /// snapshot: it may change before you look at it.
    pub fn value(&self) -> Result<i32> {
        let mut value = 0;
        // SAFETY: as in wait; `value` is a valid out-pointer.
        let rc = unsafe { libc::sem_getvalue(self.as_ptr(), &raw mut value) };
        Errno::result(rc).context(|| "sem_getvalue")?;
        Ok(value)
    }

    /// Destroys an unnamed semaphore (`sem_destroy`).
    ///
    /// # Safety
    /// It must have been made by [`Semaphore::init_at`], and no process may use it
    /// any more (none waiting, none about to).
    pub unsafe fn destroy(&self) -> Result<()> {
        // SAFETY: the caller vouches that nobody uses it any more.
        let rc = unsafe { libc::sem_destroy(self.as_ptr()) };
        Errno::result(rc).map(drop).context(|| "sem_destroy")
    }
}

/// A POSIX named semaphore (`sem_open`): found by name by unrelated processes.
///
/// It dereferences to [`Semaphore`] for P and V. The one that created it removes
/// the name on drop (`sem_unlink`); every holder closes its mapping (`sem_close`).
/// The semaphore itself lives until the name is gone and the last process has
/// closed it.
#[derive(Debug)]
pub struct NamedSemaphore {
    sem: NonNull<libc::sem_t>,
    name: String,
    remove: bool,
}

/// The device (major, minor) and inode of the file mapped at `addr` in this
/// process, from `/proc/self/maps`; `None` if no mapping starts there.
fn mapped_file(addr: usize) -> Result<Option<(u64, u64, u64)>> {
    let maps = std::fs::read_to_string("/proc/self/maps").context(|| "read /proc/self/maps")?;
    // "7f12...-7f12... rw-s 00000000 00:1a 12345   /dev/shm/sem.x":
    // range, permissions, offset, device (hex major:minor), inode, path.
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(dev), Some(ino)) = (f.first(), f.get(3), f.get(4)) else {
            continue;
        };
        let start = range.split('-').next().and_then(|s| usize::from_str_radix(s, 16).ok());
        if start != Some(addr) {
            continue;
        }
        let parsed = dev.split_once(':').and_then(|(maj, min)| {
            let hex = |s: &str| u64::from_str_radix(s, 16).ok();
            Some((hex(maj)?, hex(min)?, ino.parse().ok()?))
        });
        return Ok(parsed);
    }
    Ok(None)
}

impl NamedSemaphore {
    /// Creates `name` with count `value`, mode 0600 (`sem_open` with
    /// `O_CREAT | O_EXCL`); `Ok(None)` if the name exists. The result removes the
    /// name on drop (see [`NamedSemaphore::set_remove`]).
    pub fn create(name: &str, value: u32) -> Result<Option<Self>> {
        let c = c_name(name)?;
        // sem_open O_CREAT|O_EXCL 0600: a new semaphore, or EEXIST — never someone else's.
        // SAFETY: `c` is a NUL-terminated name; O_CREAT takes mode and value as the
        // two variadic arguments, passed as unsigned int as the C prototype promotes them.
        let sem = unsafe { libc::sem_open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL, MODE, value) };
        match NonNull::new(sem) {
            Some(sem) => Ok(Some(NamedSemaphore { sem, name: name.to_string(), remove: true })),
            None => match Errno::last() {
                Errno::EEXIST => Ok(None),
                e => Err(Error::errno(format!("sem_open {name} O_CREAT|O_EXCL"), e)),
            },
        }
    }

    /// Opens existing semaphore `name`, a regular file `/dev/shm/sem.NAME` of
    /// ours, mode 0600; `Ok(None)` if there is none (or it went away meanwhile).
    /// The result does not remove the name on drop.
    ///
    /// `sem_open` finds the file by name, so the file checked first (`lstat`) may
    /// not be the one it maps: after `sem_open` the file at the path is opened
    /// `O_NOFOLLOW` and checked again with `fstat`, and its device and inode must
    /// be those of the file `sem_open` mapped (`/proc/self/maps`). A swap in
    /// between is refused; nothing is posted or waited on before that check.
    pub fn open(name: &str) -> Result<Option<Self>> {
        let what = format!("POSIX semaphore {name}");
        let path = sem_path(name);
        // lstat: a link, another type, another owner or open mode is refused untouched.
        if check_existing(&path, &what)?.is_none() {
            return Ok(None);
        }
        let c = c_name(name)?;
        // sem_open without O_CREAT: map the existing one (glibc opens it O_NOFOLLOW).
        // SAFETY: `c` is a NUL-terminated name; without O_CREAT no variadic arguments are read.
        let sem = unsafe { libc::sem_open(c.as_ptr(), 0) };
        let Some(sem) = NonNull::new(sem) else {
            return match Errno::last() {
                Errno::ENOENT => Ok(None),
                e => Err(Error::errno(format!("sem_open {name}"), e)),
            };
        };
        // Ours to close from here (sem_close on drop), whatever the check says.
        let opened = NamedSemaphore { sem, name: name.to_string(), remove: false };
        Ok(opened.is_the_file_at(&path, &what)?.then_some(opened))
    }

    /// Whether the file mapped for us is the regular file of ours now at `path`.
    fn is_the_file_at(&self, path: &Path, what: &str) -> Result<bool> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        // open O_NOFOLLOW, then fstat the descriptor: the file itself, not a name.
        let fd = match open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(false), // unlinked since: its owner is leaving
            Err(Errno::ELOOP) => {
                return Err(Error::system(format!(
                    "{} is a symbolic link; refusing to follow it (where a {what} should be)",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::errno(format!("open {}", path.display()), e)),
        };
        let st = fstat(&fd).context(|| format!("fstat {}", path.display()))?;
        if paths::file_kind(&st) != SFlag::S_IFREG {
            return Err(Error::system(format!(
                "{} is not a regular file; refusing to use it as a {what}",
                path.display()
            )));
        }
        check_ours(&st, what)?;
        let mapped = mapped_file(self.sem.as_ptr().addr())?;
        if mapped != Some((major(st.st_dev), minor(st.st_dev), st.st_ino)) {
            return Err(Error::system(format!(
                "{what}: the file sem_open mapped is not {} (replaced while we opened it); refusing to use it",
                path.display()
            )));
        }
        Ok(true)
    }

    /// The name (`/...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether dropping this removes the name (the owner does; `--keep` does not).
    pub fn set_remove(&mut self, remove: bool) {
        self.remove = remove;
    }

    /// Removes semaphore `name` (`sem_unlink`); gone already is fine.
    pub fn unlink(name: &str) -> Result<()> {
        let c = c_name(name)?;
        // sem_unlink: the name goes now; the semaphore when its last user closes it.
        // SAFETY: `c` is a NUL-terminated name.
        let rc = unsafe { libc::sem_unlink(c.as_ptr()) };
        match Errno::result(rc) {
            Ok(_) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::errno(format!("sem_unlink {name}"), e)),
        }
    }
}

impl Deref for NamedSemaphore {
    type Target = Semaphore;
    fn deref(&self) -> &Semaphore {
        // SAFETY: sem_open returned this mapping of an initialised semaphore; it stays
        // mapped until sem_close in our Drop, which the borrow of self outlives.
        unsafe { Semaphore::from_ptr(self.sem.as_ptr()) }
    }
}

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        if self.remove {
            let _ = Self::unlink(&self.name);
        }
        // sem_close: unmap our view of it.
        // SAFETY: sem_open gave us this pointer and nothing uses it after drop.
        unsafe { libc::sem_close(self.sem.as_ptr()) };
    }
}

// ---------------------------------------------------------------------------
// System V semaphore sets
// ---------------------------------------------------------------------------

unsafe extern "C" {
    /// semtimedop(2): `semop` with a timeout. glibc exports it; the libc crate
    /// does not declare it for Linux.
    fn semtimedop(
        semid: libc::c_int,
        sops: *mut libc::sembuf,
        nsops: libc::size_t,
        timeout: *const libc::timespec,
    ) -> libc::c_int;
}

/// A System V key made from a file (`ftok`): same file (device and inode) and
/// `proj`, same key, in every process. Keys of different files can collide
/// (see the module's pitfalls).
pub fn ftok(path: &Path, proj: u8) -> Result<libc::key_t> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::usage(format!("{}: a path cannot hold a NUL byte", path.display())))?;
    // ftok: key = proj << 24 | (st_dev & 0xff) << 16 | (st_ino & 0xffff).
    // SAFETY: `c` is a NUL-terminated path.
    let key = unsafe { libc::ftok(c.as_ptr(), libc::c_int::from(proj)) };
    Errno::result(key).context(|| format!("ftok {}", path.display()))
}

/// Creates a set (see [`SysvSet::create`]) under `ftok(path, proj)`, for `proj`
/// from `first` up while the key is taken. A taken key may be another
/// directory's set (keys collide), so it is skipped, never used or removed.
pub fn create_with_ftok(path: &Path, first: u8, values: &[u16]) -> Result<SysvSet> {
    for proj in first..=u8::MAX {
        if let Some(set) = SysvSet::create(ftok(path, proj)?, values)? {
            return Ok(set);
        }
    }
    Err(Error::system(format!("semget: every ftok key of {} is taken", path.display()))
        .hint("ipcs -s lists the sets; pass --key, or remove what is stale"))
}

/// One operation of a `semop` call: P or V on semaphore `num` of the set.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Op(libc::sembuf);

/// `ops` as the array `semop` takes. The kernel only reads it (the prototype
/// lacks the `const`), so a shared slice will do.
fn sembufs(ops: &[Op]) -> *mut libc::sembuf {
    ops.as_ptr().cast::<libc::sembuf>().cast_mut()
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sem {} op {:+} flags {:#x}", self.0.sem_num, self.0.sem_op, self.0.sem_flg)
    }
}

impl Op {
    /// P on semaphore `num`: subtract 1, sleeping while it would go below 0.
    #[must_use]
    pub const fn wait(num: u16) -> Op {
        Op(libc::sembuf { sem_num: num, sem_op: -1, sem_flg: 0 })
    }

    /// V on semaphore `num`: add 1, waking sleepers.
    #[must_use]
    pub const fn post(num: u16) -> Op {
        Op(libc::sembuf { sem_num: num, sem_op: 1, sem_flg: 0 })
    }

    /// With `SEM_UNDO`: the kernel records the change and reverses it when this
    /// process exits, however it exits. Only for a semaphore this process both
    /// takes and gives back (a lock).
    #[must_use]
    pub const fn undo(mut self) -> Op {
        self.0.sem_flg |= libc::SEM_UNDO as libc::c_short;
        self
    }

    /// With `IPC_NOWAIT`: fail with `EAGAIN` instead of sleeping.
    #[must_use]
    const fn nowait(mut self) -> Op {
        self.0.sem_flg |= libc::IPC_NOWAIT as libc::c_short;
        self
    }
}

/// A System V semaphore set: `nsems` counters the kernel keeps under one key,
/// changed together, atomically, by one `semop`.
///
/// The creator removes it on drop (`IPC_RMID`): every process sleeping on it then
/// wakes with `EIDRM`, reported here as "removed" (exit 3).
#[derive(Debug)]
pub struct SysvSet {
    id: i32,
    key: libc::key_t,
    nsems: u16,
    remove: bool,
}

/// `IPC_STAT` of set `id`.
fn sem_stat(id: i32) -> std::result::Result<libc::semid_ds, Errno> {
    // SAFETY: semid_ds is plain old data; all-zero is a valid value to overwrite.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // semctl IPC_STAT: owner, creator, mode, key, number of semaphores, time of the last semop.
    // SAFETY: IPC_STAT writes one semid_ds through the pointer passed as the
    // variadic `union semun` argument (a pointer, so passed like one).
    let rc = unsafe { libc::semctl(id, 0, libc::IPC_STAT, &raw mut ds) };
    Errno::result(rc).map(|_| ds)
}

impl SysvSet {
    /// Creates a set under `key` with one semaphore per entry of `values`, each
    /// starting at that value; `Ok(None)` if `key` is taken. Removed on drop.
    ///
    /// `semget` makes the set with every count at 0; `SETALL` then sets them; a
    /// last, no-op `semop` sets `sem_otime`, which tells openers that it is ready.
    pub fn create(key: libc::key_t, values: &[u16]) -> Result<Option<Self>> {
        let nsems = u16::try_from(values.len()).map_err(|_| Error::usage("too many semaphores"))?;
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600; // MODE
        // semget IPC_CREAT|IPC_EXCL 0600: a new set, or EEXIST — never someone else's.
        // SAFETY: plain system call, no memory passed.
        let id = unsafe { libc::semget(key, libc::c_int::from(nsems), flags) };
        let id = match Errno::result(id) {
            Ok(id) => id,
            Err(Errno::EEXIST) => return Ok(None),
            Err(Errno::ENOSPC) => {
                return Err(Error::errno(format!("semget key {key:#010x}"), Errno::ENOSPC)
                    .hint("too many sets or semaphores: see /proc/sys/kernel/sem"));
            }
            Err(e) => {
                return Err(Error::errno(format!("semget key {key:#010x} IPC_CREAT|IPC_EXCL"), e));
            }
        };
        // Ours from here: dropped on any error below, which removes it.
        let set = SysvSet { id, key, nsems, remove: true };
        let mut init = values.to_vec();
        // semctl SETALL: every initial count in one call.
        // SAFETY: SETALL reads `nsems` unsigned shorts through the pointer passed as
        // the variadic `union semun` argument; `init` holds exactly that many.
        let rc = unsafe { libc::semctl(id, 0, libc::SETALL, init.as_mut_ptr()) };
        Errno::result(rc).context(|| format!("semctl SETALL {}", set.what()))?;
        // semop +1 then -1, atomically: changes nothing but sets sem_otime ("ready").
        set.op(&[Op::post(0), Op::wait(0)])?;
        Ok(Some(set))
    }

    /// The id and state of the set under `key`, if there is one.
    pub fn lookup(key: libc::key_t) -> Result<Option<(i32, libc::semid_ds)>> {
        // semget without IPC_CREAT: the existing set's id, or ENOENT.
        // SAFETY: plain system call, no memory passed.
        let id = unsafe { libc::semget(key, 0, 0) };
        let id = match Errno::result(id) {
            Ok(id) => id,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(Error::errno(format!("semget key {key:#010x}"), e)),
        };
        Ok(Self::stat_id(id)?.map(|ds| (id, ds)))
    }

    /// The state of set `id` (`IPC_STAT`), if it still exists.
    pub fn stat_id(id: i32) -> Result<Option<libc::semid_ds>> {
        match sem_stat(id) {
            Ok(ds) => Ok(Some(ds)),
            Err(Errno::EINVAL | Errno::EIDRM) => Ok(None),
            Err(e) => Err(Error::errno(format!("semctl IPC_STAT id {id}"), e)),
        }
    }

    /// Refuses a set that is not ours — owned or created by another uid — or is
    /// open to others; it is left untouched.
    pub fn check_ours(ds: &libc::semid_ds, what: &str) -> Result<()> {
        let me = paths::uid();
        let (owner, creator) = (ds.sem_perm.uid, ds.sem_perm.cuid);
        if owner != me {
            return Err(Error::system(format!(
                "{what} is owned by uid {owner}, not by us (uid {me}); refusing to use it"
            )));
        }
        if creator != me {
            return Err(Error::system(format!(
                "{what} was created by uid {creator}, not by us (uid {me}), and given to us since; refusing to use it"
            )));
        }
        let mode = ds.sem_perm.mode & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::system(format!(
                "{what} has mode {mode:04o}, open to other users; refusing to use it"
            )));
        }
        Ok(())
    }

    /// Opens set `id`, which must still carry `key` (an id is reused once its set
    /// is gone), be ours, private, and hold `nsems` semaphores; `Ok(None)` if it
    /// is gone or now another set. Not removed on drop.
    ///
    /// **The initialisation race**: the creator's `semget` and its `SETALL` are
    /// two calls, and we may arrive between them, when every count is still 0.
    /// So we wait (until `deadline`) for `sem_otime` to become non-zero: the
    /// creator's first `semop`, made after `SETALL` (see [`SysvSet::create`]).
    pub fn open_id(
        id: i32,
        key: libc::key_t,
        nsems: u16,
        deadline: &Deadline,
    ) -> Result<Option<Self>> {
        let what = format!("System V semaphore set key {key:#010x} id {id}");
        loop {
            let Some(ds) = Self::stat_id(id)? else {
                return Ok(None);
            };
            if ds.sem_perm.__key != key {
                return Ok(None); // the id was reused by an unrelated set
            }
            Self::check_ours(&ds, &what)?;
            if ds.sem_nsems != u64::from(nsems) {
                return Err(Error::system(format!(
                    "{what} has {} semaphores, not {nsems}: not one of ours",
                    ds.sem_nsems
                ))
                .hint(format!("remove it: ipcrm -s {id}")));
            }
            if ds.sem_otime != 0 {
                return Ok(Some(SysvSet { id, key, nsems, remove: false }));
            }
            if deadline.expired() {
                return Err(Error::system(format!(
                    "{what} was never initialised (sem_otime is 0): its creator died between semget and its first semop"
                ))
                .hint(format!("remove it: ipcrm -s {id}")));
            }
            ipc_common::wait::pause(deadline, Duration::from_millis(5))?;
        }
    }

    /// "System V semaphore set key 0x... id N", for messages.
    #[must_use]
    pub fn what(&self) -> String {
        format!("System V semaphore set key {:#010x} id {}", self.key, self.id)
    }

    /// The key it was found or made under.
    pub fn key(&self) -> libc::key_t {
        self.key
    }

    /// The set's id (what `ipcs -s` and `ipcrm -s` show).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Number of semaphores in the set.
    pub fn len(&self) -> u16 {
        self.nsems
    }

    /// Whether the set has no semaphores (never, for sets made here).
    pub fn is_empty(&self) -> bool {
        self.nsems == 0
    }

    /// Whether dropping this removes the set.
    pub fn set_remove(&mut self, remove: bool) {
        self.remove = remove;
    }

    fn failed(&self, call: &str, e: Errno) -> Error {
        match e {
            // EIDRM: removed while we slept on it; EINVAL: the id is gone already.
            Errno::EIDRM | Errno::EINVAL => Error::peer_lost(format!(
                "{}: {call}: {}: the set was removed (ipcrm or its owner's exit)",
                self.what(),
                ipc_common::error::errno_text(e)
            )),
            _ => Error::errno(format!("{call} {}", self.what()), e),
        }
    }

    /// `semop`: performs all `ops` at once or none, sleeping until all can be done.
    /// Retried on `EINTR` unless a stop signal came. Unbounded: for V, or for a
    /// P that cannot block; use [`SysvSet::op_until`] for anything that may sleep.
    pub fn op(&self, ops: &[Op]) -> Result<()> {
        loop {
            // SAFETY: Op is repr(transparent) over sembuf, so `ops` is a valid sembuf
            // array of the length passed; the kernel only reads it.
            let rc = unsafe { libc::semop(self.id, sembufs(ops), ops.len()) };
            match Errno::result(rc) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => signals::check()?,
                Err(e) => return Err(self.failed("semop", e)),
            }
        }
    }

    /// `semop` with `IPC_NOWAIT` on every operation: all of `ops` now, or
    /// `Ok(false)` (`EAGAIN`) without sleeping.
    pub fn try_op<const N: usize>(&self, ops: [Op; N]) -> Result<bool> {
        let ops = ops.map(Op::nowait);
        // SAFETY: as in op.
        let rc = unsafe { libc::semop(self.id, sembufs(&ops), N) };
        match Errno::result(rc) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(false),
            Err(e) => Err(self.failed("semop IPC_NOWAIT", e)),
        }
    }

    /// `semtimedop`: like [`SysvSet::op`] but sleeping at most `timeout`;
    /// `Ok(false)` if it ran out or a signal handler ran.
    pub fn timed_op(&self, ops: &[Op], timeout: Duration) -> Result<bool> {
        let ts = TimeSpec::from(timeout);
        // SAFETY: as in op; `ts` is a valid timespec on our stack.
        let rc = unsafe { semtimedop(self.id, sembufs(ops), ops.len(), ts.as_ref()) };
        match Errno::result(rc) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(false),
            Err(e) => Err(self.failed("semtimedop", e)),
        }
    }

    /// `ops`, bounded: sleeps in ticks until `deadline`, checking the stop
    /// signals and running `on_tick` after each quiet tick.
    pub fn op_until(
        &self,
        ops: &[Op],
        deadline: &Deadline,
        on_tick: impl FnMut() -> Result<()>,
    ) -> Result<bool> {
        wait_in_ticks(deadline, |step| self.timed_op(ops, step), on_tick)
    }

    fn get(&self, cmd: libc::c_int, name: &str, num: u16) -> Result<i32> {
        // SAFETY: GETVAL and GETPID take no argument and return the value.
        let rc = unsafe { libc::semctl(self.id, libc::c_int::from(num), cmd) };
        Errno::result(rc).map_err(|e| self.failed(&format!("semctl {name} sem {num}"), e))
    }

    /// The count of semaphore `num` now (`semctl GETVAL`).
    pub fn value(&self, num: u16) -> Result<i32> {
        self.get(libc::GETVAL, "GETVAL", num)
    }

    /// The pid of the last process that operated on semaphore `num`, the kernel's
    /// `SEM_UNDO` at exit included (`semctl GETPID`).
    pub fn last_pid(&self, num: u16) -> Result<i32> {
        self.get(libc::GETPID, "GETPID", num)
    }

    /// Removes set `id` (`IPC_RMID`): sleepers wake with `EIDRM`. Gone already is fine.
    pub fn remove_id(id: i32) -> Result<()> {
        remove_sysv(SysvKind::Sem, id)
    }
}

impl Drop for SysvSet {
    fn drop(&mut self) {
        if self.remove {
            // semctl IPC_RMID: the set goes now; sleepers wake with EIDRM.
            let _ = Self::remove_id(self.id);
        }
    }
}

/// `key=0x... id=N` in a record (a reader's lock file, a key file): the System
/// V set its writer made.
#[must_use]
pub fn parse_set_record(text: &str) -> Option<(libc::key_t, i32)> {
    let mut key = None;
    let mut id = None;
    for word in text.split_whitespace() {
        if let Some(k) = word.strip_prefix("key=0x") {
            key = u32::from_str_radix(k, 16).ok().map(|k| i32::from_ne_bytes(k.to_ne_bytes()));
        } else if let Some(i) = word.strip_prefix("id=") {
            id = i.parse().ok();
        }
    }
    key.zip(id)
}

/// The record [`parse_set_record`] reads: `key=0x... id=N`.
#[must_use]
pub fn set_record(set: &SysvSet) -> String {
    format!("key={:#010x} id={}", set.key(), set.id())
}

// ---------------------------------------------------------------------------
// Robust process-shared mutex
// ---------------------------------------------------------------------------

/// A pthread mutex shared between processes (`PTHREAD_PROCESS_SHARED`) and
/// robust (`PTHREAD_MUTEX_ROBUST`), placed in shared memory.
///
/// Unlike a semaphore it has an owner — the thread that locked it — and the
/// kernel keeps a list of the robust mutexes each thread holds. When the owner
/// dies, the kernel marks the mutex and wakes a waiter, whose lock returns
/// `EOWNERDEAD`: it now holds the lock, and must repair what the dead owner left
/// half-done, then call `pthread_mutex_consistent`. If it unlocks without that,
/// the mutex becomes `ENOTRECOVERABLE`: every later lock fails, for good.
///
/// Like glibc's POSIX semaphores it is a futex word: lock and unlock without
/// contention never enter the kernel. Its bytes sit in an [`UnsafeCell`]:
/// other processes change them while we hold a `&RobustMutex`.
#[repr(transparent)]
pub struct RobustMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a process-shared mutex is made to be used by many threads and processes;
// every access goes through pthread_mutex_*, which synchronise.
unsafe impl Sync for RobustMutex {}

impl fmt::Debug for RobustMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RobustMutex")
    }
}

/// Whether a lock was handed over cleanly or from a dead owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// The previous owner unlocked it.
    Clean,
    /// `EOWNERDEAD`: the previous owner died holding it; the state it guards may be half-updated.
    OwnerDied,
}

fn pthread_check(call: &str, rc: libc::c_int) -> Result<()> {
    if rc == 0 { Ok(()) } else { Err(Error::errno(call, Errno::from_raw(rc))) }
}

impl RobustMutex {
    /// Initialises a robust, process-shared mutex at `at` and returns it.
    ///
    /// # Safety
    /// `at` must point to writable memory of `size_of::<pthread_mutex_t>()` bytes,
    /// aligned for it, inside a `MAP_SHARED` mapping that stays mapped for `'a`;
    /// no process may use it before this returns, nor while it is re-initialised.
    pub unsafe fn init_at<'a>(at: *mut libc::pthread_mutex_t) -> Result<&'a RobustMutex> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: attr is initialised by pthread_mutexattr_init before any other use,
        // and destroyed after pthread_mutex_init copied what it needs.
        unsafe {
            pthread_check(
                "pthread_mutexattr_init",
                libc::pthread_mutexattr_init(attr.as_mut_ptr()),
            )?;
            // PTHREAD_PROCESS_SHARED: usable by every process that maps it.
            let shared =
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            // PTHREAD_MUTEX_ROBUST: an owner's death is reported, not a deadlock.
            let robust =
                libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            let init = if shared == 0 && robust == 0 {
                libc::pthread_mutex_init(at, attr.as_ptr())
            } else {
                0
            };
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            pthread_check("pthread_mutexattr_setpshared", shared)?;
            pthread_check("pthread_mutexattr_setrobust", robust)?;
            pthread_check("pthread_mutex_init", init)?;
            Ok(Self::from_ptr(at))
        }
    }

    /// The mutex initialised at `at` (by this or another process).
    ///
    /// # Safety
    /// `at` must point to a mutex made by [`RobustMutex::init_at`], in memory that
    /// stays mapped for `'a`.
    pub unsafe fn from_ptr<'a>(at: *mut libc::pthread_mutex_t) -> &'a RobustMutex {
        // SAFETY: repr(transparent) over UnsafeCell<pthread_mutex_t>; the caller
        // vouches for the memory.
        unsafe { &*at.cast::<RobustMutex>() }
    }

    /// Where its `pthread_mutex_t` is: what [`RobustMutex::init_at`] takes when a
    /// `RobustMutex` field of a shared `#[repr(C)]` struct is initialised in place.
    pub fn as_ptr(&self) -> *mut libc::pthread_mutex_t {
        self.0.get()
    }

    fn locked(&self, call: &str, rc: libc::c_int) -> Result<Option<MutexGuard<'_>>> {
        let how = match rc {
            0 => Locked::Clean,
            libc::EOWNERDEAD => Locked::OwnerDied,
            libc::ETIMEDOUT | libc::EBUSY => return Ok(None),
            libc::ENOTRECOVERABLE => {
                return Err(Error::errno(call, Errno::ENOTRECOVERABLE).hint(
                    "an owner died holding it and the next one unlocked it without \
                     pthread_mutex_consistent: it can never be locked again; only a new \
                     mutex (pthread_mutex_init on fresh memory) helps",
                ));
            }
            e => return Err(Error::errno(call, Errno::from_raw(e))),
        };
        Ok(Some(MutexGuard { mutex: self, how }))
    }

    /// Locks it if nobody holds it (`pthread_mutex_trylock`): `Ok(None)` if
    /// someone does. `EOWNERDEAD` is a success: see [`MutexGuard::how`].
    pub fn try_lock(&self) -> Result<Option<MutexGuard<'_>>> {
        // SAFETY: self is an initialised mutex in mapped memory (see from_ptr).
        let rc = unsafe { libc::pthread_mutex_trylock(self.as_ptr()) };
        self.locked("pthread_mutex_trylock", rc)
    }

    /// Locks it, sleeping while another process holds it (`pthread_mutex_lock`).
    /// Unbounded: prefer [`RobustMutex::lock_until`].
    pub fn lock(&self) -> Result<MutexGuard<'_>> {
        // SAFETY: as in try_lock.
        let rc = unsafe { libc::pthread_mutex_lock(self.as_ptr()) };
        self.locked("pthread_mutex_lock", rc)?
            .ok_or_else(|| Error::system("pthread_mutex_lock: timed out without a timeout"))
    }

    /// Locks it, bounded: tries at once (no system call if it is free), then
    /// sleeps in ticks until `deadline` (`pthread_mutex_timedlock`), checking the
    /// stop signals and running `on_tick` after each quiet tick; `Ok(None)` if
    /// the deadline passed.
    pub fn lock_until(
        &self,
        deadline: &Deadline,
        mut on_tick: impl FnMut() -> Result<()>,
    ) -> Result<Option<MutexGuard<'_>>> {
        if let Some(guard) = self.try_lock()? {
            return Ok(Some(guard));
        }
        loop {
            signals::check()?;
            if deadline.expired() {
                return Ok(None);
            }
            let at = realtime_after(deadline.step(TICK))?;
            // SAFETY: as in try_lock; `at` is a valid timespec on our stack.
            let rc = unsafe { libc::pthread_mutex_timedlock(self.as_ptr(), at.as_ref()) };
            if let Some(guard) = self.locked("pthread_mutex_timedlock", rc)? {
                return Ok(Some(guard));
            }
            on_tick()?;
        }
    }

    /// Destroys it (`pthread_mutex_destroy`).
    ///
    /// # Safety
    /// It must be unlocked, and no process may use it any more.
    pub unsafe fn destroy(&self) {
        // SAFETY: the caller vouches that nobody uses it any more.
        unsafe { libc::pthread_mutex_destroy(self.as_ptr()) };
    }
}

/// A held [`RobustMutex`]; unlocks on drop.
#[derive(Debug)]
pub struct MutexGuard<'a> {
    mutex: &'a RobustMutex,
    how: Locked,
}

impl MutexGuard<'_> {
    /// How the lock was handed over. After [`Locked::OwnerDied`], repair the
    /// guarded state and call [`MutexGuard::make_consistent`] before unlocking,
    /// or the mutex becomes unusable (`ENOTRECOVERABLE`).
    pub fn how(&self) -> Locked {
        self.how
    }

    /// Declares the guarded state repaired (`pthread_mutex_consistent`): the
    /// mutex works normally again.
    pub fn make_consistent(&mut self) -> Result<()> {
        // SAFETY: we hold the mutex (this guard), which pthread_mutex_consistent requires.
        let rc = unsafe { libc::pthread_mutex_consistent(self.mutex.as_ptr()) };
        pthread_check("pthread_mutex_consistent", rc)?;
        self.how = Locked::Clean;
        Ok(())
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // pthread_mutex_unlock: hand it over (wakes one waiter, if any).
        // SAFETY: this guard means we hold the lock.
        unsafe { libc::pthread_mutex_unlock(self.mutex.as_ptr()) };
    }
}

// ---------------------------------------------------------------------------
// Shared memory for them to live in
// ---------------------------------------------------------------------------

/// A `MAP_SHARED` mapping; unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: NonZeroUsize,
}

impl Mapping {
    /// Anonymous shared memory, zero-filled: shared with every child forked later
    /// (`mmap MAP_SHARED | MAP_ANONYMOUS`), gone when the last of them exits.
    pub fn anonymous(len: usize) -> Result<Mapping> {
        let len = NonZeroUsize::new(len).ok_or_else(|| Error::usage("empty mapping"))?;
        // Ours until munmap in Drop.
        let ptr = process::map_shared_anonymous(len)
            .context(|| format!("mmap {len} bytes MAP_SHARED|MAP_ANONYMOUS"))?;
        Ok(Mapping { ptr, len })
    }

    /// `len` bytes of the file or shared memory object `fd`, shared (`MAP_SHARED`).
    ///
    /// # SIGBUS
    /// The mapping covers the object as long as it was when mapped. If the object
    /// is shrunk later (`ftruncate` by any process that may open it), touching a
    /// page past its new end raises SIGBUS, which kills the process: no error
    /// code, no cleanup. The same happens when a page of a `/dev/shm` object
    /// cannot be allocated at first touch (the tmpfs is full), which is why
    /// [`ShmObject::create`] reserves every page up front. Only objects of ours,
    /// mode 0600, are mapped here, and their creator never shrinks them; a
    /// process of our uid that breaks that rule can kill us this way.
    fn of_fd(fd: &OwnedFd, len: usize, what: &str) -> Result<Mapping> {
        let len =
            NonZeroUsize::new(len).ok_or_else(|| Error::system(format!("{what} is empty")))?;
        // SAFETY: a new mapping of an object we opened; nothing in this process
        // aliases it. Other processes may write it: users treat it as shared memory.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )
        }
        .context(|| format!("mmap {what}"))?;
        Ok(Mapping { ptr, len })
    }

    /// Where it starts (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr().cast()
    }

    /// The start as a pointer to a `T` laid out there (a `#[repr(C)]` header or
    /// state shared by the processes). The start is page-aligned, so aligned for
    /// any `T` of ours; the mapping must hold at least `size_of::<T>()` bytes,
    /// which the openers check (dereferencing is the caller's `unsafe`).
    pub fn start_as<T>(&self) -> *mut T {
        debug_assert!(size_of::<T>() <= self.len() && align_of::<T>() <= 4096);
        #[allow(clippy::cast_ptr_alignment)] // page-aligned: see above
        self.ptr.as_ptr().cast::<T>()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether it is empty (never: mappings have at least one byte).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // munmap: our view goes; the memory lives on while others map it.
        // SAFETY: we mapped exactly this range and hand out no references that outlive self.
        let _ = unsafe { munmap(self.ptr, self.len.get()) };
    }
}

/// A POSIX shared memory object (`shm_open` + `posix_fallocate` + `mmap`),
/// mapped; the creator removes the name on drop (`shm_unlink`).
#[derive(Debug)]
pub struct ShmObject {
    map: Mapping,
    name: String,
    remove: bool,
}

impl ShmObject {
    /// Creates `name`, `len` bytes of zeros, mode 0600 (`O_CREAT | O_EXCL`), and
    /// maps it; `Ok(None)` if the name exists. Removed on drop.
    ///
    /// Every page is reserved now (`posix_fallocate`): a `/dev/shm` without room
    /// fails here with a clear error, not later with SIGBUS at the first touch
    /// (see [`Mapping`]'s SIGBUS note).
    pub fn create(name: &str, len: usize) -> Result<Option<Self>> {
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
        // shm_open O_CREAT|O_EXCL 0600: a new object, or EEXIST.
        let fd = match shm_open(name, flags, Mode::from_bits_truncate(MODE)) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => return Ok(None),
            Err(e) => return Err(Error::errno(format!("shm_open {name} O_CREAT|O_EXCL"), e)),
        };
        // Ours from here: any error below drops it, which unlinks the name.
        let remove = Unlinker(name);
        let size = libc::off_t::try_from(len)
            .map_err(|_| Error::usage(format!("{len} bytes is too large")))?;
        let no_room = |free: String| {
            Error::system(format!("POSIX shm {name}: {len} bytes do not fit in {DEV_SHM} ({free})"))
                .hint(format!(
                    "free some room (df -h {DEV_SHM}), or ask for fewer or smaller slots"
                ))
        };
        // fstatvfs: refuse at once what cannot fit, before allocating any of it.
        let vfs = fstatvfs(&fd).context(|| format!("fstatvfs {DEV_SHM}"))?;
        let free = vfs.blocks_available().saturating_mul(vfs.fragment_size());
        if len as u64 > free {
            return Err(no_room(format!("{free} bytes free")));
        }
        // posix_fallocate: give it its size and reserve its pages (new pages read as zeros).
        match posix_fallocate(&fd, 0, size) {
            Ok(()) => {}
            Err(Errno::ENOSPC) => return Err(no_room("posix_fallocate: ENOSPC".into())),
            // A file system without fallocate: size it, pages come at first touch.
            Err(Errno::EOPNOTSUPP) => {
                ftruncate(&fd, size).context(|| format!("ftruncate {name} {len}"))?;
            }
            Err(e) => return Err(Error::errno(format!("posix_fallocate {name} {len}"), e)),
        }
        let map = Mapping::of_fd(&fd, len, &format!("POSIX shm {name}"))?;
        std::mem::forget(remove);
        Ok(Some(ShmObject { map, name: name.to_string(), remove: true }))
    }

    /// Opens existing object `name` (checked: a regular file, ours, mode 0600,
    /// at least `min_len` bytes) and maps all of it; `Ok(None)` if there is none.
    /// Not removed on drop.
    pub fn open(name: &str, min_len: usize) -> Result<Option<Self>> {
        let what = format!("POSIX shm {name}");
        // shm_open O_RDWR: the existing object (glibc adds O_NOFOLLOW and O_CLOEXEC).
        let fd = match shm_open(name, OFlag::O_RDWR, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(Error::errno(format!("shm_open {name}"), e)),
        };
        // fstat on the descriptor: the object we opened, not what the name says now.
        let st = fstat(&fd).context(|| format!("fstat {what}"))?;
        if paths::file_kind(&st) != SFlag::S_IFREG {
            return Err(Error::system(format!("{what} is not a regular file; refusing to use it")));
        }
        check_ours(&st, &what)?;
        let len = usize::try_from(st.st_size).unwrap_or(0);
        if len < min_len {
            return Err(Error::system(format!(
                "{what} is {len} bytes, too small to be ours ({min_len} at least)"
            )));
        }
        let map = Mapping::of_fd(&fd, len, &what)?;
        Ok(Some(ShmObject { map, name: name.to_string(), remove: false }))
    }

    /// The mapping.
    pub fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether dropping this removes the name.
    pub fn set_remove(&mut self, remove: bool) {
        self.remove = remove;
    }

    /// Removes `name` (`shm_unlink`); gone already is fine.
    pub fn unlink(name: &str) -> Result<()> {
        // shm_unlink: the name goes now; the memory when the last mapping does.
        match shm_unlink(name) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::errno(format!("shm_unlink {name}"), e)),
        }
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        if self.remove {
            let _ = Self::unlink(&self.name);
        }
    }
}

/// Unlinks a just-created object if initialising it fails.
struct Unlinker<'a>(&'a str);

impl Drop for Unlinker<'_> {
    fn drop(&mut self) {
        let _ = ShmObject::unlink(self.0);
    }
}

/// A file in the private directory whose job is to name a System V key (`ftok`
/// takes its device and inode) and to record which set its creator made under
/// it (`key=0x... id=N`), since keys collide. The run that made it removes it.
#[derive(Debug)]
pub struct KeyFile {
    fd: OwnedFd,
    path: PathBuf,
    st: FileStat,
    created: bool,
    remove: bool,
}

impl KeyFile {
    /// Creates `path` (0600, `O_EXCL`), or takes it as it is if it exists and is
    /// ours. Only a created one is removed on drop (see [`KeyFile::set_remove`]).
    pub fn create_or_open(path: &Path) -> Result<Self> {
        let base = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let what = format!("key file {}", path.display());
        loop {
            // open O_CREAT|O_EXCL 0600: ours if new; never through a planted link.
            match open(path, base | OFlag::O_CREAT | OFlag::O_EXCL, Mode::from_bits_truncate(MODE))
            {
                Ok(fd) => return Self::checked(fd, path, true),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::errno(format!("open {}", path.display()), e)),
            }
            if check_existing(path, &what)?.is_none() {
                continue; // removed since: try to create it again
            }
            match open(path, base, Mode::empty()) {
                Ok(fd) => return Self::checked(fd, path, false),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(Error::errno(format!("open {}", path.display()), e)),
            }
        }
    }

    fn checked(fd: OwnedFd, path: &Path, created: bool) -> Result<Self> {
        // fstat the descriptor: the file we opened, whatever the path says now.
        let st = fstat(&fd).context(|| format!("fstat {}", path.display()))?;
        if paths::file_kind(&st) != SFlag::S_IFREG {
            return Err(Error::system(format!("{} is not a regular file", path.display())));
        }
        check_ours(&st, &format!("key file {}", path.display()))?;
        Ok(KeyFile { fd, path: path.to_path_buf(), st, created, remove: created })
    }

    /// Whether this run created the file (and so makes the set it names).
    pub fn created(&self) -> bool {
        self.created
    }

    /// What the creator recorded ([`KeyFile::set_record`]); empty until then.
    pub fn record(&self) -> Result<String> {
        let mut buf = [0u8; 128];
        // pread at 0: the whole (short) record.
        let n =
            pread(&self.fd, &mut buf, 0).context(|| format!("pread {}", self.path.display()))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Records `text` for later runs (one `pwrite`, so a reader sees all or nothing of it).
    pub fn set_record(&self, text: &str) -> Result<()> {
        let n = pwrite(&self.fd, text.as_bytes(), 0)
            .context(|| format!("pwrite {}", self.path.display()))?;
        if n != text.len() {
            return Err(Error::system(format!("pwrite {}: short write", self.path.display())));
        }
        Ok(())
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether dropping this removes the file.
    pub fn set_remove(&mut self, remove: bool) {
        self.remove = remove;
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        if self.remove {
            paths::remove_if_same(&self.path, self.st.st_dev, self.st.st_ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};

    /// An empty file of this test's own, removed when dropped (also on panic).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("sem-demo-unit-{tag}-{}-{n}", std::process::id()));
            std::fs::File::create_new(&path).expect("scratch file");
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// An opener that arrives between `semget` and the creator's first `semop`
    /// waits for `sem_otime`, and names the problem if it never comes.
    #[test]
    fn an_opener_waits_until_the_creator_has_initialised_the_set() {
        let file = Scratch::new("otime");
        // A creator caught between semget and SETALL: the set exists, sem_otime is 0.
        // Keys from ftok collide: take the first project id whose key is free.
        let (key, id) = (b'T'..=u8::MAX)
            .find_map(|proj| {
                let key = ftok(&file.0, proj).expect("ftok");
                // SAFETY: plain system call.
                let id = unsafe { libc::semget(key, 1, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
                (id >= 0).then_some((key, id))
            })
            .expect("a free key");
        // Dropped (so removed) even if an assertion below fails.
        let creator = SysvSet { id, key, nsems: 1, remove: true };
        let soon = Deadline::after(Some(Duration::from_millis(50)));
        let err = SysvSet::open_id(id, key, 1, &soon).expect_err("not initialised yet");
        assert!(err.message().contains("was never initialised (sem_otime is 0)"), "{err}");
        // The creator's first semop (after SETALL): now openers may use it.
        creator.op(&[Op::post(0), Op::wait(0)]).expect("semop");
        let opened =
            SysvSet::open_id(id, key, 1, &Deadline::never()).expect("open").expect("exists");
        assert_eq!(opened.id(), id);
        assert!(!opened.try_op([Op::wait(0)]).expect("P"), "count 0: IPC_NOWAIT, no sleep");
        opened.op(&[Op::post(0)]).expect("V");
        assert!(opened.try_op([Op::wait(0)]).expect("P"), "count 1: P succeeds");
        drop(opened);
        drop(creator);
        assert!(SysvSet::stat_id(id).expect("stat").is_none(), "removed");
    }

    #[test]
    fn an_unnamed_semaphore_counts_and_its_timed_wait_times_out() {
        let map = Mapping::anonymous(4096).expect("mmap");
        // SAFETY: a fresh shared mapping, page-aligned, that outlives `sem`.
        let sem = unsafe { Semaphore::init_at(map.start_as(), 2) }.expect("sem_init");
        assert!(sem.try_wait().expect("P"));
        assert!(sem.try_wait().expect("P"));
        assert!(!sem.try_wait().expect("P"), "two permits, both taken");
        assert!(!sem.timed_wait(Duration::from_millis(10)).expect("timed P"));
        sem.post().expect("V");
        assert_eq!(sem.value().expect("value"), 1);
        // SAFETY: nobody else uses it.
        unsafe { sem.destroy() }.expect("sem_destroy");
    }

    /// What `sem_open` mapped is compared with the file now at the path: the
    /// same file passes, another (a swap between the two lookups) is refused,
    /// and a file gone since means the semaphore is going away.
    #[test]
    fn an_opened_semaphore_is_checked_against_the_file_at_its_path() {
        let name = |tag: &str| format!("/sem-demo-unit-{}-{tag}", std::process::id());
        let (a, b) = (name("a"), name("b"));
        let made_a = NamedSemaphore::create(&a, 1).expect("sem_open").expect("new");
        let made_b = NamedSemaphore::create(&b, 1).expect("sem_open").expect("new");
        let opened = NamedSemaphore::open(&a).expect("open").expect("exists");
        assert!(opened.is_the_file_at(&sem_path(&a), "a").expect("same file"));
        let err = opened.is_the_file_at(&sem_path(&b), "a").expect_err("another file");
        assert!(err.message().contains("the file sem_open mapped is not /dev/shm/sem."), "{err}");
        drop(made_b); // unlinks b
        assert!(!opened.is_the_file_at(&sem_path(&b), "a").expect("gone"));
        drop((opened, made_a));
        assert!(!sem_path(&a).exists());
    }

    #[test]
    fn set_records_round_trip() {
        assert_eq!(parse_set_record("shm=/x key=0x53001234 id=7\n"), Some((0x5300_1234, 7)));
        assert_eq!(
            parse_set_record("key=0xfe000001 id=3"),
            Some((i32::from_ne_bytes(0xfe00_0001u32.to_ne_bytes()), 3))
        );
        assert_eq!(parse_set_record("shm=/x"), None);
    }

    #[test]
    fn this_process_is_alive_and_pid_0_is_not() {
        assert!(process_alive(i32::try_from(std::process::id()).expect("pid")));
        assert!(!process_alive(0));
        assert!(!process_alive(-1));
    }
}
