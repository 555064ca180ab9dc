//! Mutex versus semaphore when the holder dies: what the kernel does.
//!
//! One `sem-holder` takes a lock and is killed with SIGKILL while holding it (no
//! handler, no cleanup: the kernel alone decides what happens to the lock). The
//! next `sem-holder` then tries to take it:
//!
//! | lock | after the holder's SIGKILL | why |
//! |---|---|---|
//! | POSIX named semaphore | stays taken: the next one times out | a semaphore is a count, it has no owner; nothing records who took it |
//! | System V semaphore, `SEM_UNDO` | released by the kernel | the kernel kept the holder's adjustment (-1) and reverses it at exit |
//! | System V semaphore without `SEM_UNDO` (`--no-undo`) | stays taken | nothing to undo |
//! | robust mutex | the next locker gets `EOWNERDEAD`, repairs, goes on | the mutex has an owner; the kernel's robust list marks it at the owner's death |
//!
//! A mutex is a lock with an owner: only the owner unlocks it, and a robust one
//! survives its owner's death. A semaphore is a counter anyone may post: it can
//! count (K permits, free slots), which a mutex cannot, but it cannot know who
//! is "inside".
//!
//! The robust mutex guards two counters that must stay equal (`debit` and
//! `credit`, a transfer). The holder updates `debit`, then "dies" before
//! `credit`: the next locker sees `EOWNERDEAD`, finds them unequal, repairs
//! (`credit = debit`), and calls `pthread_mutex_consistent`. With `--no-repair`
//! it unlocks without that call, and the mutex is `ENOTRECOVERABLE` for good.
//!
//! # Objects
//! | lock | object | name |
//! |---|---|---|
//! | posix | named semaphore, value 1 | `/ipc-demos.<uid>.sem-holder` (`/dev/shm/sem.…`) |
//! | sysv | set of one semaphore, value 1 | key `ftok(<private dir>/sem-holder.key, 'H')`, or the next project id if taken; the key file records key and id |
//! | mutex | POSIX shm object with the mutex and the counters | `/ipc-demos.<uid>.sem-holder-mutex` |
//!
//! # Cleanup
//! The first run creates the object; every run that ends without being killed
//! removes it (unless `--keep`), so the run after a killed holder — the one
//! that shows what the kernel did — removes what the holder could not.
//! `make clean-ipc` removes what is left by hand-made experiments.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_common::error::{Error, Result};
use ipc_common::paths;
use ipc_common::say;
use ipc_common::signals;
use ipc_common::wait::{Deadline, TICK, pause};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{
    KeyFile, Locked, MutexGuard, NamedSemaphore, Op, RobustMutex, ShmObject, SysvSet,
    create_with_ftok, parse_set_record, process_alive, sem_path, set_record, shm_path,
};

/// First `ftok` project id tried for the holder's System V set.
const SYSV_PROJ: u8 = b'H';
/// Name of the key file in the private directory.
const KEY_FILE: &str = "sem-holder.key";
/// `ready` once the mutex is initialised: "MTX1".
const READY: u32 = u32::from_le_bytes(*b"MTX1");

/// Which lock (`--lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderLock {
    /// A POSIX named semaphore.
    Posix,
    /// A System V semaphore.
    Sysv,
    /// A robust process-shared mutex.
    Mutex,
}

impl FromStr for HolderLock {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "posix" => Ok(HolderLock::Posix),
            "sysv" => Ok(HolderLock::Sysv),
            "mutex" => Ok(HolderLock::Mutex),
            _ => Err(format!("{s:?}: expected posix, sysv or mutex")),
        }
    }
}

impl fmt::Display for HolderLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HolderLock::Posix => "posix",
            HolderLock::Sysv => "sysv",
            HolderLock::Mutex => "mutex",
        })
    }
}

/// The default POSIX name for `lock` (the semaphore, or the mutex's shm object).
#[must_use]
pub fn default_name(lock: HolderLock) -> String {
    match lock {
        HolderLock::Mutex => paths::posix_name("sem-holder-mutex"),
        _ => paths::posix_name("sem-holder"),
    }
}

/// What lives in the mutex's shared memory object: the mutex and the state it
/// guards. Every field is atomic or the mutex (an `UnsafeCell`): other
/// processes change them while we hold a `&MutexState`.
#[repr(C)]
pub struct MutexState {
    /// [`READY`] once `mutex` is initialised (stored last, `Release`).
    ready: AtomicU32,
    /// pid of the last process that locked it (guarded by the mutex).
    holder: AtomicU32,
    mutex: RobustMutex,
    /// A transfer in two steps: `debit` then `credit`; equal when consistent.
    debit: AtomicU64,
    credit: AtomicU64,
}

/// The lock object, created by this run or found from an earlier one.
#[derive(Debug)]
pub enum Object {
    /// A POSIX named semaphore.
    Posix(NamedSemaphore),
    /// A System V set of one, and the file its key comes from.
    Sysv {
        /// The set.
        set: SysvSet,
        /// `<private dir>/sem-holder.key`.
        key_file: KeyFile,
    },
    /// A shared memory object holding a [`RobustMutex`].
    Mutex(ShmObject),
}

/// Creates the lock, or opens the one an earlier run left (checked ours).
/// Either way this run removes it when it ends normally (unless `keep`).
pub fn open_or_create(
    lock: HolderLock,
    name: &str,
    deadline: &Deadline,
    keep: bool,
) -> Result<(Object, bool)> {
    let (mut object, created) = loop {
        signals::check()?;
        if let Some(found) = try_open_or_create(lock, name, deadline)? {
            break found;
        }
    };
    object.set_remove(!keep);
    Ok((object, created))
}

fn try_open_or_create(
    lock: HolderLock,
    name: &str,
    deadline: &Deadline,
) -> Result<Option<(Object, bool)>> {
    Ok(match lock {
        HolderLock::Posix => {
            if let Some(sem) = NamedSemaphore::create(name, 1)? {
                Some((Object::Posix(sem), true))
            } else {
                NamedSemaphore::open(name)?.map(|sem| (Object::Posix(sem), false))
            }
        }
        HolderLock::Sysv => open_or_create_set(deadline)?,
        HolderLock::Mutex => {
            let len = size_of::<MutexState>();
            if let Some(shm) = ShmObject::create(name, len)? {
                let st = state(&shm);
                // SAFETY: a fresh, zeroed, page-aligned mapping of at least
                // size_of::<MutexState>(); nobody uses the mutex before `ready`.
                unsafe { RobustMutex::init_at(st.mutex.as_ptr())? };
                st.ready.store(READY, Ordering::Release);
                Some((Object::Mutex(shm), true))
            } else {
                match ShmObject::open(name, len)? {
                    None => None,
                    Some(shm) => {
                        wait_mutex_ready(&shm, deadline)?;
                        Some((Object::Mutex(shm), false))
                    }
                }
            }
        }
    })
}

/// The System V lock: the key file in the private directory says which set.
///
/// Its creator makes a set under the first free `ftok` key of the file and
/// records key and id in it; later runs open the recorded set by id. A key
/// alone is never trusted: `ftok` keys collide, and the set under "our" key
/// may be another directory's.
fn open_or_create_set(deadline: &Deadline) -> Result<Option<(Object, bool)>> {
    let mut key_file = KeyFile::create_or_open(&paths::private_dir()?.join(KEY_FILE))?;
    if key_file.created() {
        // semget IPC_CREAT|IPC_EXCL under ftok(key file, 'H'), or the next free id.
        let set = create_with_ftok(key_file.path(), SYSV_PROJ, &[1])?;
        key_file.set_record(&set_record(&set))?;
        return Ok(Some((Object::Sysv { set, key_file }, true)));
    }
    match parse_set_record(&key_file.record()?) {
        // An earlier run made it: wait out the initialisation race (sem_otime).
        Some((key, id)) => {
            if let Some(set) = SysvSet::open_id(id, key, 1, deadline)? {
                return Ok(Some((Object::Sysv { set, key_file }, false)));
            }
            // Its set is gone (ipcrm, a reboot): the file is stale; start afresh.
            key_file.set_remove(true);
            Ok(None)
        }
        // Its creator has not recorded the set yet, or died before it did.
        None if deadline.expired() => Err(Error::system(format!(
            "key file {} records no System V set: its creator died before recording one",
            key_file.path().display()
        ))
        .hint(format!("remove it: rm {}", key_file.path().display()))),
        None => {
            pause(deadline, Duration::from_millis(5))?;
            Ok(None)
        }
    }
}

fn state(shm: &ShmObject) -> &MutexState {
    // SAFETY: create/open made sure the mapping holds a MutexState (zeros are a
    // valid value of every field); it lives as long as the borrow.
    unsafe { &*shm.mapping().start_as::<MutexState>() }
}

/// The mutex, initialised before `ready` was set (which every opener waits for).
fn mutex(shm: &ShmObject) -> &RobustMutex {
    &state(shm).mutex
}

/// The initialisation race again: the creator made the object, then the mutex.
fn wait_mutex_ready(shm: &ShmObject, deadline: &Deadline) -> Result<()> {
    while state(shm).ready.load(Ordering::Acquire) != READY {
        if deadline.expired() {
            return Err(Error::system(format!(
                "POSIX shm {} holds no initialised mutex: its creator died before initialising it",
                shm.name()
            ))
            .hint(format!("remove it: rm {}", shm_path(shm.name()).display())));
        }
        pause(deadline, Duration::from_millis(5))?;
    }
    Ok(())
}

impl Object {
    fn set_remove(&mut self, remove: bool) {
        match self {
            Object::Posix(sem) => sem.set_remove(remove),
            Object::Sysv { set, key_file } => {
                set.set_remove(remove);
                key_file.set_remove(remove);
            }
            Object::Mutex(shm) => shm.set_remove(remove),
        }
    }

    /// "POSIX semaphore /x (value 1)", for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Object::Posix(sem) => {
                format!("POSIX semaphore {} (value {})", sem.name(), sem.value().unwrap_or(-1))
            }
            Object::Sysv { set, .. } => {
                format!("{} (value {})", set.what(), set.value(0).unwrap_or(-1))
            }
            Object::Mutex(shm) => format!("robust mutex in POSIX shm {}", shm.name()),
        }
    }

    /// The command that removes it by hand.
    #[must_use]
    pub fn removal(&self) -> String {
        match self {
            Object::Posix(sem) => format!("rm {}", sem_path(sem.name()).display()),
            Object::Sysv { set, .. } => format!("ipcrm -s {}", set.id()),
            Object::Mutex(shm) => format!("rm {}", shm_path(shm.name()).display()),
        }
    }

    /// Takes the lock, waiting until `deadline`, and says what the kernel did
    /// about an earlier holder. `undo`: System V with `SEM_UNDO`; `repair`: on
    /// `EOWNERDEAD`, repair and call `pthread_mutex_consistent`.
    pub fn take(
        &self,
        bin: &str,
        deadline: &Deadline,
        timeout: Duration,
        undo: bool,
        repair: bool,
    ) -> Result<Held<'_>> {
        let waited = Instant::now();
        match self {
            Object::Posix(sem) => {
                // sem_timedwait in ticks: P, or give up at the deadline.
                if sem.wait_until(deadline, || Ok(()))? {
                    say!("{bin}: took it (sem_wait) after {:.1} s", waited.elapsed().as_secs_f64());
                    return Ok(Held::Posix(sem));
                }
                Err(Error::peer_lost(format!(
                    "POSIX semaphore {} is still taken (value {}) after {} s: a POSIX semaphore has no owner — \
                     the kernel does not know who took it, so when the taker dies nothing gives it back \
                     (there is no SEM_UNDO for it); only a sem_post or removing it helps",
                    sem.name(),
                    sem.value().unwrap_or(-1),
                    timeout.as_secs()
                )))
            }
            Object::Sysv { set, .. } => {
                let (before, last) = (set.value(0)?, set.last_pid(0)?);
                let op = if undo { Op::wait(0).undo() } else { Op::wait(0) };
                // semtimedop in ticks: P (with SEM_UNDO unless --no-undo).
                if set.op_until(&[op], deadline, || Ok(()))? {
                    say!(
                        "{bin}: took it (semop{}) after {:.1} s",
                        if undo { " SEM_UNDO" } else { "" },
                        waited.elapsed().as_secs_f64()
                    );
                    if last != 0 && !process_alive(last) {
                        say!(
                            "{bin}: pid {last}, the last to operate on it, is gone: the kernel reversed its \
                             P at its exit (SEM_UNDO adjustment), so the semaphore was given back"
                        );
                    } else if before == 0 && last != 0 {
                        say!("{bin}: pid {last} gave it back (V)");
                    }
                    return Ok(Held::Sysv { set, undo });
                }
                let last = set.last_pid(0).unwrap_or(last);
                Err(Error::peer_lost(format!(
                    "{} is still taken (value {}) after {} s; the last operation on it was by pid {last} ({}): \
                     a P made without SEM_UNDO leaves the kernel nothing to undo when its process dies",
                    set.what(),
                    set.value(0).unwrap_or(-1),
                    timeout.as_secs(),
                    if process_alive(last) { "still running" } else { "no longer running" }
                )))
            }
            Object::Mutex(shm) => {
                let st = state(shm);
                // pthread_mutex_timedlock in ticks.
                let Some(mut guard) = mutex(shm).lock_until(deadline, || Ok(()))? else {
                    return Err(Error::peer_lost(format!(
                        "the robust mutex in {} is still locked after {} s by pid {} (alive: its owner has not died)",
                        shm.name(),
                        timeout.as_secs(),
                        st.holder.load(Ordering::Relaxed)
                    )));
                };
                if guard.how() == Locked::OwnerDied {
                    let (debit, credit) =
                        (st.debit.load(Ordering::Relaxed), st.credit.load(Ordering::Relaxed));
                    say!(
                        "{bin}: pthread_mutex_lock: EOWNERDEAD: pid {} died holding the mutex; we hold it now. \
                         The state it guards was left mid-update: debit {debit}, credit {credit}",
                        st.holder.load(Ordering::Relaxed)
                    );
                    if !repair {
                        drop(guard);
                        say!(
                            "{bin}: unlocked it WITHOUT pthread_mutex_consistent (--no-repair); locking again:"
                        );
                        let again = mutex(shm).lock().map(drop);
                        return Err(again.err().unwrap_or_else(|| {
                            Error::system("pthread_mutex_lock succeeded: expected ENOTRECOVERABLE")
                        }));
                    }
                    // Repair: finish the dead holder's transfer, then declare the state consistent.
                    st.credit.store(debit, Ordering::Relaxed);
                    guard.make_consistent()?;
                    say!(
                        "{bin}: repaired (credit = debit = {debit}), called pthread_mutex_consistent: the mutex works normally again"
                    );
                } else {
                    say!(
                        "{bin}: took it (pthread_mutex_lock) after {:.1} s",
                        waited.elapsed().as_secs_f64()
                    );
                }
                st.holder.store(std::process::id(), Ordering::Relaxed);
                Ok(Held::Mutex { guard, state: st })
            }
        }
    }
}

/// A taken lock; given back on drop (the normal way, for a holder that is not killed).
#[derive(Debug)]
pub enum Held<'a> {
    /// P on a POSIX semaphore.
    Posix(&'a NamedSemaphore),
    /// P on the System V semaphore.
    Sysv {
        /// The set.
        set: &'a SysvSet,
        /// Taken with `SEM_UNDO`.
        undo: bool,
    },
    /// The mutex, and the state it guards.
    Mutex {
        /// The lock.
        guard: MutexGuard<'a>,
        /// The guarded counters.
        state: &'a MutexState,
    },
}

impl fmt::Debug for MutexState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexState")
            .field("debit", &self.debit)
            .field("credit", &self.credit)
            .finish_non_exhaustive()
    }
}

impl Held<'_> {
    /// The first half of an update (the mutex's `debit`), the state a killed
    /// holder leaves behind.
    pub fn begin_update(&self) {
        if let Held::Mutex { state, .. } = self {
            state.debit.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A whole update: both halves.
    pub fn update(&self) {
        if let Held::Mutex { state, .. } = self {
            state.debit.fetch_add(1, Ordering::Relaxed);
            state.credit.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        match self {
            // V.
            Held::Posix(sem) => {
                let _ = sem.post();
            }
            Held::Sysv { set, undo } => {
                let op = if *undo { Op::post(0).undo() } else { Op::post(0) };
                let _ = set.op(&[op]);
            }
            // Finish a half-done update, then the guard unlocks.
            Held::Mutex { state, .. } => {
                state.credit.store(state.debit.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }
}

/// Holds until killed: until `die_after` passes (then SIGKILL to ourselves), or
/// forever; a stop signal returns `Err(Interrupted)`, which releases the lock.
pub fn hold(die_after: Option<Duration>) -> Result<()> {
    let deadline = Deadline::after(die_after);
    loop {
        signals::check()?;
        if die_after.is_some() && deadline.expired() {
            // SIGKILL: no handler runs, nothing is released by us; only the kernel acts.
            let _ = kill(Pid::this(), Signal::SIGKILL);
        }
        std::thread::sleep(deadline.step(TICK));
    }
}
