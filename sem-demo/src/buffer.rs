//! The bounded buffer: K fixed slots in a POSIX shared memory object, guarded
//! by two counting semaphores and a lock — the producer/consumer problem as
//! textbooks pose it.
//!
//! ```text
//! empty = K   free slots          full = 0   filled slots          lock   one writer at a time
//!
//! writer (each frame)                          reader (each frame)
//!   P(empty)   wait for a free slot              P(full)    wait for a filled slot
//!   lock       the producer index is shared      check the frame where it lies, in the slot
//!   slot in % K: state = writing, in += 1        (at the next receive) state = free, V(empty)
//!   copy the frame into it
//!   state = committed
//!   unlock
//!   V(full)    wake the reader
//! ```
//!
//! The data goes through shared memory, copied once (by the writer, into the
//! slot); the semaphores only say whose turn it is. `empty` and `full` count; a
//! writer does P on `empty` and the reader V, and the other way round for
//! `full`. The reader is the only consumer, so its index needs no lock.
//!
//! `--lock posix` uses two POSIX named semaphores (`NAME.empty`, `NAME.full`)
//! and, as the lock, a robust process-shared mutex in the object's header — not
//! a third semaphore: a POSIX semaphore has no owner, so a writer killed while
//! holding it would leave it taken and every other writer waiting for ever
//! (`sem-holder` shows it). The mutex has an owner: when one dies holding it,
//! the next writer to lock it gets `EOWNERDEAD`, takes it over
//! (`pthread_mutex_consistent`) and goes on. `--lock sysv` uses one System V
//! set of three, where the writer's P(empty) + P(lock) is one atomic `semop`
//! (so their order cannot deadlock), and so is V(lock) + V(full). There `lock`
//! is taken with `SEM_UNDO`: the kernel gives it back when its taker dies.
//! `empty` and `full` never are — each is taken by one side and given back by
//! the other.
//!
//! # Layout of the shared memory object
//! ```text
//! 0     header, three cache lines: ready, lock family, K, slot size |
//!       next_in and the robust mutex (the writers') | next_out (the reader's)
//! 192   slot 0: a state word (8 bytes), then one frame (24-byte header + payload),
//!       at most --slot-size bytes; each slot rounded up to 64 bytes
//!       slot 1 ... slot K-1
//! ```
//!
//! A slot's state word says who is writing it (pid and writer id) and whether
//! the copy is complete ("committed", stored with `Release` after the copy; the
//! reader loads it with `Acquire`). It is what tells a frame cut short by its
//! writer's death from a corrupt one: the reader reports the first as a lost
//! peer (exit 3), never as bad data.
//!
//! # Lifecycle
//! 1. the reader locks its presence file, checks for leftovers of a killed
//!    reader, creates the object (`O_EXCL`, 0600, every page reserved) and the
//!    semaphores, fills in the header, sets `ready` last, then publishes in its
//!    lock file which objects it made (for System V, the key and id);
//! 2. each writer locks a writers' presence file, waits for that record, and
//!    opens the object and the semaphores it names;
//! 3. frames flow; a waiting side wakes every 100 ms to check signals, whether
//!    its peer's presence lock is still held, and (the reader) whether the
//!    writer of the slot it waits for died in the middle of it;
//! 4. the reader removes the object and the semaphores when it exits.
//!
//! # Cleanup
//! [`BoundedBuffer`] (the reader's) removes everything on drop. After a SIGKILL
//! the next reader finds the objects while no reader holds the presence lock:
//! stale; it names them all in one message with the commands that remove them,
//! and `--force` removes them.
//!
//! # Pitfalls
//! - Shared memory and semaphores have no end of file: a writer that dies leaves
//!   the reader waiting. So each side holds a lock file the kernel releases at
//!   exit ([`ipc_common::liveness`]), and the other side looks at it on each tick.
//! - A writer killed inside its critical section leaves a half-copied slot (the
//!   reader reports it: exit 3), and a lock: the robust mutex and the System V
//!   `SEM_UNDO` lock are given back; a POSIX semaphore would not be.
//! - A writer killed after committing its slot but before V(full) leaves a
//!   filled slot nobody posted: the reader reads it once no writer is left.
//! - A writer killed between P(empty) and claiming its slot (while it waits for
//!   the lock, say) takes a free slot with it: no one knows it held one, so the
//!   buffer goes on with K − 1 slots. With `--slots 1` the other writers then
//!   wait for a slot that never comes, until Ctrl-C.
//! - Slot states name writers by pid: writers and reader must share a pid
//!   namespace.
//! - A slot holds one whole frame: payloads larger than `--slot-size` − 24 are
//!   refused by the writer at start (exit 2).

use std::fmt;
use std::mem::offset_of;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_common::driver::{FrameSink, FrameSource};
use ipc_common::error::{Error, Result};
use ipc_common::frame::{Frame, HEADER_LEN, Header};
use ipc_common::liveness::{ReaderPresence, WriterPresence};
use ipc_common::paths;
use ipc_common::say;
use ipc_common::signals;
use ipc_common::wait::{Deadline, TICK, pause, stalled};

use crate::{
    Locked, MutexGuard, NamedSemaphore, Op, RobustMutex, ShmObject, SysvSet, check_existing,
    create_with_ftok, parse_set_record, process_alive, sem_path, set_record, shm_path,
};

/// Default number of slots (K).
pub const DEFAULT_SLOTS: u32 = 8;
/// Most slots a buffer may have: the largest value a System V semaphore holds
/// (`SEMVMX`), since `empty` starts at K.
pub const MAX_SLOTS: u32 = 32767;
/// Default slot size: a 4 KiB payload plus the 24-byte frame header.
pub const DEFAULT_SLOT_SIZE: usize = 4096 + HEADER_LEN;
/// Smallest slot: a frame header and a few bytes.
pub const MIN_SLOT_SIZE: usize = 64;
/// Largest slot: a 16 MiB payload plus the header.
pub const MAX_SLOT_SIZE: usize = (16 << 20) + HEADER_LEN;
/// Bytes before the first slot: the header, three cache lines.
pub const HEADER_SPACE: usize = 192;
/// Slots start on cache-line boundaries.
pub const SLOT_ALIGN: usize = 64;
/// Bytes of a slot's state word, before its frame.
pub const STATE_LEN: usize = 8;
/// First `ftok` project id tried for the System V set.
pub const SYSV_PROJ: u8 = b'S';
/// Index of `empty` in the System V set (and its initial value is K).
pub const EMPTY: u16 = 0;
/// Index of `full` (initially 0).
pub const FULL: u16 = 1;
/// Index of `lock` (initially 1).
pub const LOCK: u16 = 2;
/// `ready` once the reader has filled in the header: "SEM2" (this layout).
const READY: u32 = u32::from_le_bytes(*b"SEM2");
/// Lock-file kind (see [`paths::posix_lock_base`]).
const LOCK_KIND: &str = "sem";
/// How often a writer looks again for a reader that is not there yet.
const OPEN_RETRY: Duration = Duration::from_millis(20);

/// Which semaphores guard the buffer (`--lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// POSIX named semaphores `empty` and `full`, and a robust mutex as the lock.
    Posix,
    /// One System V set of three: `empty`, `full`, `lock`.
    Sysv,
}

impl Family {
    fn code(self) -> u32 {
        match self {
            Family::Posix => 1,
            Family::Sysv => 2,
        }
    }

    fn from_code(code: u32) -> Option<Family> {
        match code {
            1 => Some(Family::Posix),
            2 => Some(Family::Sysv),
            _ => None,
        }
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "posix" => Ok(Family::Posix),
            "sysv" => Ok(Family::Sysv),
            _ => Err(format!("{s:?}: expected posix or sysv")),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Posix => "posix",
            Family::Sysv => "sysv",
        })
    }
}

/// The buffer's default name: `/ipc-demos.<uid>.sem`.
#[must_use]
pub fn default_name() -> String {
    paths::posix_name("sem")
}

/// The POSIX semaphores of buffer `name`: `NAME.empty`, `NAME.full`.
#[must_use]
pub fn sem_names(name: &str) -> [String; 2] {
    [format!("{name}.empty"), format!("{name}.full")]
}

/// Refuses a `--name` the kernel would reject, counting what is added to it
/// (`sem.` and `.empty`), before any system call (exit 2).
pub fn check_name(name: &str) -> Result<()> {
    paths::check_posix_name("--name", name)?;
    let longest = format!("/sem.{}.empty", name.trim_start_matches('/'));
    if longest.len() - 1 > paths::NAME_MAX {
        return Err(Error::usage(format!(
            "--name: {} bytes is too long: its semaphores' names ({longest}) must fit in {} bytes",
            name.len(),
            paths::NAME_MAX
        )));
    }
    Ok(())
}

/// Where everything lies in the object, from K and the slot size. Built with
/// checked arithmetic, and only from values in range: a header forged by
/// another process of ours cannot make a writer compute an offset outside the
/// object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// K.
    pub slots: u32,
    /// Bytes of a frame a slot holds, frame header included.
    pub slot_size: usize,
    /// Bytes from one slot to the next: state word and frame, rounded up to 64.
    pub stride: usize,
    /// Bytes of the whole object.
    pub len: usize,
}

impl Layout {
    /// The layout of K = `slots` slots of `slot_size` bytes; `None` if either
    /// is out of range ([`MAX_SLOTS`], [`MIN_SLOT_SIZE`]..=[`MAX_SLOT_SIZE`]) or
    /// the object would not fit in memory.
    #[must_use]
    pub fn new(slots: u32, slot_size: usize) -> Option<Layout> {
        if !(1..=MAX_SLOTS).contains(&slots)
            || !(MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&slot_size)
        {
            return None;
        }
        let stride =
            slot_size.checked_add(STATE_LEN)?.div_ceil(SLOT_ALIGN).checked_mul(SLOT_ALIGN)?;
        let len = stride.checked_mul(usize::try_from(slots).ok()?)?.checked_add(HEADER_SPACE)?;
        isize::try_from(len).ok()?; // what a mapping (and pointer offsets) can span
        Some(Layout { slots, slot_size, stride, len })
    }

    /// Offset of the slot that index `index` (`next_in`, `next_out`) falls on:
    /// its state word; the frame follows [`STATE_LEN`] bytes later.
    #[must_use]
    pub fn slot_offset(&self, index: u64) -> usize {
        // index % K < K, so the offset stays below len (checked in new).
        let slot = (index % u64::from(self.slots)) as usize;
        HEADER_SPACE + slot * self.stride
    }
}

/// What a slot's state word says (one `AtomicU64`: tag, writer id, pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Nothing in it: the reader freed it, or no writer has used it yet.
    Free,
    /// Writer `writer` (process `pid`) is copying a frame into it.
    Writing {
        /// The writer's process id.
        pid: u32,
        /// Its `--id`.
        writer: u16,
    },
    /// The frame is complete.
    Committed {
        /// The writer's process id.
        pid: u32,
        /// Its `--id`.
        writer: u16,
    },
    /// A word no writer of ours stores.
    Invalid(u64),
}

const TAG_WRITING: u64 = 1;
const TAG_COMMITTED: u64 = 2;

impl SlotState {
    /// The state word: tag in bits 0–7, writer id in 16–31, pid in 32–63.
    #[must_use]
    pub fn word(self) -> u64 {
        let pack =
            |tag: u64, pid: u32, writer: u16| u64::from(pid) << 32 | u64::from(writer) << 16 | tag;
        match self {
            SlotState::Free => 0,
            SlotState::Writing { pid, writer } => pack(TAG_WRITING, pid, writer),
            SlotState::Committed { pid, writer } => pack(TAG_COMMITTED, pid, writer),
            SlotState::Invalid(word) => word,
        }
    }

    /// Reads a state word.
    #[must_use]
    pub fn from_word(word: u64) -> SlotState {
        let (pid, writer) = ((word >> 32) as u32, (word >> 16) as u16);
        match word & 0xffff {
            0 if word == 0 => SlotState::Free,
            TAG_WRITING => SlotState::Writing { pid, writer },
            TAG_COMMITTED => SlotState::Committed { pid, writer },
            _ => SlotState::Invalid(word),
        }
    }
}

/// The header at the start of the shared memory object. Every field is atomic
/// or a [`RobustMutex`] (an `UnsafeCell`): other processes change it while we
/// hold a reference to it.
#[repr(C)]
struct BufHeader {
    /// [`READY`] once every other field is set (stored last, with `Release`).
    ready: AtomicU32,
    family: AtomicU32,
    slots: AtomicU32,
    slot_size: AtomicU32,
    /// What the writers change, on a cache line of its own.
    writers: WritersLine,
    /// What the reader changes, on another.
    reader: ReaderLine,
}

#[repr(C, align(64))]
struct WritersLine {
    /// Next slot a writer fills (mod K); guarded by the lock.
    next_in: AtomicU64,
    /// The lock of `--lock posix` (unused with System V, whose lock is in the set).
    lock: RobustMutex,
}

#[repr(C, align(64))]
struct ReaderLine {
    /// Next slot the reader takes (mod K), for observers (tests, a debugger):
    /// the reader works from its own copy, in its [`BufferSource`].
    next_out: AtomicU64,
}

const _: () = assert!(size_of::<BufHeader>() <= HEADER_SPACE);

/// Offset of `next_in` in the object (for tests and tools that watch progress).
pub const NEXT_IN_AT: usize = offset_of!(BufHeader, writers) + offset_of!(WritersLine, next_in);
/// Offset of `next_out` in the object.
pub const NEXT_OUT_AT: usize = offset_of!(BufHeader, reader) + offset_of!(ReaderLine, next_out);

/// The mapped object and where things lie in it: both sides hold one.
#[derive(Debug)]
struct Ring {
    shm: ShmObject,
    layout: Layout,
}

impl Ring {
    fn header(&self) -> &BufHeader {
        // SAFETY: the mapping is at least HEADER_SPACE bytes (created so, or checked
        // by the opener), page-aligned, and lives as long as self; BufHeader's fields
        // are atomics and a mutex in an UnsafeCell, valid for any bytes.
        unsafe { &*self.shm.mapping().start_as::<BufHeader>() }
    }

    /// The state word of the slot `index` falls on.
    fn state(&self, index: u64) -> &AtomicU64 {
        let at = self.layout.slot_offset(index);
        // SAFETY: `at` + 8 lies inside the mapping (Layout, checked against its length).
        let word = unsafe { self.shm.mapping().as_ptr().add(at) };
        #[allow(clippy::cast_ptr_alignment)] // a multiple of 64 from a page-aligned start
        let word = word.cast::<AtomicU64>();
        // SAFETY: in bounds and aligned (above); any bits are a valid AtomicU64; the
        // mapping outlives the borrow.
        unsafe { &*word }
    }

    fn slot_state(&self, index: u64) -> SlotState {
        // Acquire: pairs with the writer's Release of "committed", so the frame
        // bytes it copied before are visible once we see that.
        SlotState::from_word(self.state(index).load(Ordering::Acquire))
    }

    /// Where the frame of the slot `index` falls on starts: `slot_size` bytes.
    fn frame_ptr(&self, index: u64) -> *mut u8 {
        let at = self.layout.slot_offset(index) + STATE_LEN;
        // SAFETY: at + slot_size <= slot_offset + stride <= the mapping's length (Layout).
        unsafe { self.shm.mapping().as_ptr().add(at) }
    }

    fn describe(&self) -> String {
        let l = self.layout;
        format!("bounded buffer {}: {} slots of {} bytes", self.shm.name(), l.slots, l.slot_size)
    }
}

/// The counting semaphores of one buffer (and, for System V, the lock).
#[derive(Debug)]
enum Sems {
    /// `empty` and `full`; the lock is the robust mutex in the header.
    Posix { empty: NamedSemaphore, full: NamedSemaphore },
    /// `empty`, `full` and `lock` in one set.
    Sysv(SysvSet),
}

impl Sems {
    /// Reader: P(full) without sleeping (no system call for POSIX).
    fn try_take_filled(&self) -> Result<bool> {
        match self {
            Sems::Posix { full, .. } => full.try_wait(),
            // semop IPC_NOWAIT {full -1}.
            Sems::Sysv(set) => set.try_op([Op::wait(FULL)]),
        }
    }

    /// Reader: P(full), sleeping at most `step`.
    fn take_filled(&self, step: Duration) -> Result<bool> {
        match self {
            Sems::Posix { full, .. } => full.timed_wait(step),
            Sems::Sysv(set) => set.timed_op(&[Op::wait(FULL)], step),
        }
    }

    /// Reader: V(empty).
    fn free_slot(&self) -> Result<()> {
        match self {
            Sems::Posix { empty, .. } => empty.post(),
            Sems::Sysv(set) => set.op(&[Op::post(EMPTY)]),
        }
    }

    fn describe(&self) -> String {
        match self {
            Sems::Posix { empty, full } => {
                format!("POSIX semaphores {} and {}, robust mutex lock", empty.name(), full.name())
            }
            Sems::Sysv(set) => set.what(),
        }
    }

    /// What the reader publishes in its lock file: the objects it made.
    fn record(&self, name: &str) -> String {
        match self {
            Sems::Posix { .. } => format!("shm={name} family=posix\n"),
            Sems::Sysv(set) => format!("shm={name} family=sysv {}\n", set_record(set)),
        }
    }
}

/// What the reader makes (from its command line).
#[derive(Debug, Clone)]
pub struct BufferOptions {
    /// POSIX name of the shared memory object; the semaphores add `.empty` etc.
    pub name: String,
    /// Semaphore family.
    pub family: Family,
    /// System V key; default `ftok` of the reader's lock file (the first free one).
    pub key: Option<libc::key_t>,
    /// K.
    pub slots: u32,
    /// Bytes per slot, frame header included.
    pub slot_size: usize,
    /// Remove stale objects of ours instead of refusing.
    pub force: bool,
}

/// An object a killed reader (or a `--keep` one) left.
#[derive(Debug)]
enum Leftover {
    Shm(String),
    Sem(String),
    Set { key: libc::key_t, id: i32 },
}

impl Leftover {
    fn describe(&self) -> String {
        match self {
            Leftover::Shm(name) => format!("POSIX shm {name}"),
            Leftover::Sem(name) => format!("POSIX semaphore {name}"),
            Leftover::Set { key, id } => format!("System V semaphore set key {key:#010x} id {id}"),
        }
    }

    fn remove(&self) -> Result<()> {
        match self {
            Leftover::Shm(name) => ShmObject::unlink(name),
            Leftover::Sem(name) => NamedSemaphore::unlink(name),
            Leftover::Set { id, .. } => SysvSet::remove_id(*id),
        }
    }
}

/// What a killed reader of buffer `name` left: the POSIX objects at our names
/// (a foreign or open one is refused, untouched), and the System V set our
/// previous reader recorded in its lock file — found by that record, never by
/// key alone, since `ftok` keys collide.
fn leftovers(name: &str, previous: &str) -> Result<Vec<Leftover>> {
    let mut found = Vec::new();
    if check_existing(&shm_path(name), &format!("POSIX shm {name}"))?.is_some() {
        found.push(Leftover::Shm(name.to_string()));
    }
    for sem in sem_names(name) {
        if check_existing(&sem_path(&sem), &format!("POSIX semaphore {sem}"))?.is_some() {
            found.push(Leftover::Sem(sem));
        }
    }
    if let Some((key, id)) = parse_set_record(previous) {
        // Still there, still that set (an id is reused once its set is gone)?
        if let Some(ds) = SysvSet::stat_id(id)?.filter(|ds| ds.sem_perm.__key == key) {
            let found_set = Leftover::Set { key, id };
            SysvSet::check_ours(&ds, &found_set.describe())?;
            found.push(found_set);
        }
    }
    Ok(found)
}

/// All the leftovers in one line, with the commands that remove them.
fn stale_error(name: &str, stale: &[Leftover]) -> Error {
    let list: Vec<String> = stale.iter().map(Leftover::describe).collect();
    let mut files = Vec::new();
    let mut sets = Vec::new();
    for l in stale {
        match l {
            Leftover::Shm(n) => files.push(shm_path(n).display().to_string()),
            Leftover::Sem(n) => files.push(sem_path(n).display().to_string()),
            Leftover::Set { id, .. } => sets.push(format!("ipcrm -s {id}")),
        }
    }
    let mut commands = Vec::new();
    if !files.is_empty() {
        commands.push(format!("rm {}", files.join(" ")));
    }
    commands.extend(sets);
    Error::system(format!(
        "bounded buffer {name}: stale objects, left by a sem-reader that was killed (or ran with --keep): {}",
        list.join(", ")
    ))
    .hint(format!("remove them: {} (or make clean-ipc, or add --force)", commands.join(" && ")))
}

/// `--key` is taken by a set no reader here recorded: a stranger's (refused as
/// such), or one of ours from elsewhere — not ours to touch either way.
fn key_taken(key: libc::key_t) -> Error {
    let what = format!("System V semaphore set key {key:#010x}");
    match SysvSet::lookup(key) {
        Ok(Some((id, ds))) => {
            let what = format!("{what} id {id}");
            if let Err(refused) = SysvSet::check_ours(&ds, &what) {
                return refused.hint("pick another --key");
            }
            Error::system(format!("{what} exists, and no sem-reader of this buffer made it"))
                .hint(format!("pick another --key, or remove it if it is stale: ipcrm -s {id}"))
        }
        Ok(None) => Error::system(format!("{what} is taken")).hint("pick another --key"),
        Err(err) => err,
    }
}

/// Something appeared at one of our names between the leftover check and its
/// creation: not ours to touch.
fn appeared(what: &str, command: &str) -> Error {
    Error::system(format!(
        "{what} appeared while the buffer was being made: another program uses this name"
    ))
    .hint(format!("pick another --name, or remove it if it is stale: {command}"))
}

/// The reader's buffer: it made the object and the semaphores and removes them on drop.
#[derive(Debug)]
pub struct BoundedBuffer {
    // Dropped in this order: semaphores, then the object, then the presence files.
    sems: Sems,
    ring: Ring,
    presence: ReaderPresence,
}

impl BoundedBuffer {
    /// Claims the reader's presence, deals with leftovers, creates the object and
    /// the semaphores, fills in the header, marks it ready, and publishes what it made.
    pub fn create(opts: &BufferOptions) -> Result<Self> {
        let name = opts.name.as_str();
        let layout = Layout::new(opts.slots, opts.slot_size).ok_or_else(|| {
            Error::usage(format!(
                "--slots {} of --slot-size {}: too large a buffer",
                opts.slots, opts.slot_size
            ))
        })?;

        // 1. Our presence: refuses a second live reader; its file records what we make.
        let dir = paths::private_dir()?;
        let mut presence = ReaderPresence::claim(
            &dir,
            &paths::posix_lock_base(LOCK_KIND, name),
            &format!("bounded buffer {name}"),
        )?;
        // 2. What a killed reader left: all named at once, or all removed (--force).
        let stale = leftovers(name, presence.previous())?;
        if !stale.is_empty() {
            if !opts.force {
                return Err(stale_error(name, &stale));
            }
            for l in &stale {
                l.remove()?;
            }
        }
        // 3. The slots: a new shared memory object (O_EXCL, 0600), all zeros, every page reserved.
        let shm = ShmObject::create(name, layout.len)?.ok_or_else(|| {
            appeared(&format!("POSIX shm {name}"), &format!("rm {}", shm_path(name).display()))
        })?;
        let ring = Ring { shm, layout };
        // 4. The lock and the counts: empty = K, full = 0, lock free.
        let sems = match opts.family {
            Family::Posix => {
                // The lock: a robust mutex in the header; no writer sees it before `ready`.
                // SAFETY: a fresh mapping of ours, aligned (repr(C), page-aligned start),
                // that no other process uses before the record is published below.
                unsafe { RobustMutex::init_at(ring.header().writers.lock.as_ptr())? };
                let [e, f] = sem_names(name);
                let make = |sem: &str, value| {
                    let command = format!("rm {}", sem_path(sem).display());
                    NamedSemaphore::create(sem, value)?
                        .ok_or_else(|| appeared(&format!("POSIX semaphore {sem}"), &command))
                };
                Sems::Posix { empty: make(&e, opts.slots)?, full: make(&f, 0)? }
            }
            Family::Sysv => {
                let values = [u16::try_from(opts.slots).unwrap_or(u16::MAX), 0, 1];
                let set = match opts.key {
                    Some(key) => SysvSet::create(key, &values)?.ok_or_else(|| key_taken(key))?,
                    // ftok of our lock file, the next project id while the key is taken.
                    None => create_with_ftok(presence.reader_path(), SYSV_PROJ, &values)?,
                };
                Sems::Sysv(set)
            }
        };
        // 5. The header, then `ready` last.
        let h = ring.header();
        h.family.store(opts.family.code(), Ordering::Relaxed);
        h.slots.store(layout.slots, Ordering::Relaxed);
        h.slot_size.store(layout.slot_size as u32, Ordering::Relaxed);
        h.ready.store(READY, Ordering::Release);
        // 6. Tell writers (and the next reader, should we be killed) what we made.
        presence.publish(&sems.record(name))?;
        Ok(BoundedBuffer { sems, ring, presence })
    }

    /// Leave everything in place on exit (`--keep`): the object, the
    /// semaphores, and the lock files that record them.
    pub fn keep(&mut self) {
        match &mut self.sems {
            Sems::Posix { empty, full } => {
                empty.set_remove(false);
                full.set_remove(false);
            }
            Sems::Sysv(set) => set.set_remove(false),
        }
        self.ring.shm.set_remove(false);
        self.presence.keep();
    }

    /// For the ready line: "bounded buffer /x: 8 slots of 4120 bytes, POSIX semaphores ...".
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{}, {}", self.ring.describe(), self.sems.describe())
    }

    /// The frames, as a [`FrameSource`]; `first_timeout` bounds the wait for the first writer.
    pub fn source(&self, max_frame: u32, first_timeout: Option<Duration>) -> BufferSource<'_> {
        BufferSource {
            buf: self,
            max_frame,
            next: 0,
            lent: false,
            seen_frame: false,
            deadline: Deadline::after(first_timeout),
            timeout: first_timeout,
            stall: None,
            last: Instant::now(),
        }
    }
}

/// What a quiet tick (no post for a tick) found.
enum Tick {
    /// Writers are there: keep waiting.
    Wait,
    /// A frame was posted after all (just before its writer left).
    Posted,
    /// A committed frame whose writer died before posting it: take it anyway.
    Unposted,
    /// Every writer has gone and nothing is left.
    End,
}

/// Frames from the buffer, lent in place: the slot is freed at the next receive.
#[derive(Debug)]
pub struct BufferSource<'b> {
    buf: &'b BoundedBuffer,
    max_frame: u32,
    /// Next slot index to take (the reader's own; mirrored in the header).
    next: u64,
    /// Whether slot `next` is lent out (freed at the next receive).
    lent: bool,
    /// A frame has come since the last end of stream.
    seen_frame: bool,
    deadline: Deadline,
    timeout: Option<Duration>,
    /// How long a started stream may go quiet while a writer still holds the
    /// buffer (a frozen writer, `--timeout`); and when the last frame came.
    stall: Option<Duration>,
    last: Instant,
}

impl BufferSource<'_> {
    /// Gives up (peer lost) when a writer holds the buffer but fills no slot
    /// for `stall` once the stream has begun (a frozen writer).
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }

    /// `Err` once a started stream has been quiet for the stall limit.
    fn check_stall(&self) -> Result<()> {
        match self.stall {
            Some(limit) if self.seen_frame && self.last.elapsed() >= limit => {
                Err(stalled("the writers", limit))
            }
            _ => Ok(()),
        }
    }

    /// "writer 2 (pid 4242) died inside its critical section ...".
    fn died_copying(&self, writer: u16, pid: u32) -> Error {
        Error::peer_lost(format!(
            "pid {pid} died inside its critical section, copying a frame into slot {}: that frame is incomplete and the buffer cannot go on",
            self.next % u64::from(self.buf.ring.layout.slots)
        ))
        .for_writer(writer)
    }

    /// `Err` if the writer of slot `next` died while copying into it: the slot
    /// says "writing" by a process that is gone, and still says so after we
    /// looked (a writer that committed and exited in between changed it first;
    /// a dead one never will).
    fn check_copier(&self) -> Result<()> {
        let state = self.buf.ring.state(self.next);
        let word = state.load(Ordering::Acquire);
        if let SlotState::Writing { pid, writer } = SlotState::from_word(word) {
            let alive = process_alive(i32::try_from(pid).unwrap_or(0));
            if !alive && state.load(Ordering::Acquire) == word {
                return Err(self.died_copying(writer, pid));
            }
        }
        Ok(())
    }

    /// Waits for slot `next` to be filled: P(full), at once or in ticks.
    /// `Ok(false)` at the end of the stream.
    fn take_filled(&mut self) -> Result<bool> {
        let buf = self.buf;
        // P(full) without sleeping: no system call at all for POSIX when a slot is full.
        if !buf.sems.try_take_filled()? {
            loop {
                signals::check()?;
                // P(full), sleeping at most a tick.
                if buf.sems.take_filled(TICK)? {
                    break;
                }
                match self.quiet_tick()? {
                    Tick::Wait => {}
                    Tick::Posted => break,
                    Tick::Unposted => return Ok(true),
                    Tick::End => return Ok(false),
                }
            }
        }
        // P(full) gave us slot `next`: its writer committed it — or died copying it.
        self.await_commit()
    }

    /// After a tick without a post: is the slot's writer dead mid-copy, is any
    /// writer left, is a frame left behind, has the first writer's time run out?
    fn quiet_tick(&self) -> Result<Tick> {
        let buf = self.buf;
        self.check_copier()?;
        if buf.presence.writers_present()? {
            // A writer is there but posts nothing: frozen (SIGSTOP) or stuck?
            self.check_stall()?;
            return Ok(Tick::Wait);
        }
        // No writer left. A frame posted just before its writer exited still counts...
        if buf.sems.try_take_filled()? {
            return Ok(Tick::Posted);
        }
        // ...and so does one committed by a writer killed before its V(full).
        if matches!(buf.ring.slot_state(self.next), SlotState::Committed { .. }) {
            return Ok(Tick::Unposted);
        }
        if self.seen_frame {
            return Ok(Tick::End);
        }
        if self.deadline.expired() {
            let secs = self.timeout.unwrap_or_default().as_secs();
            return Err(Error::peer_lost(format!(
                "no sem-writer came to bounded buffer {} within {secs} s (--timeout)",
                buf.ring.shm.name()
            )));
        }
        Ok(Tick::Wait)
    }

    /// After P(full): slot `next` is committed (its frame may be read), or its
    /// writer died mid-copy and the post came from a writer of a later slot,
    /// which got the lock back (exit 3, never "bad data"). A live writer still
    /// copying, or an empty slot, means we took a slot without its post earlier
    /// (see [`Tick::Unposted`]) and this post was that one's: wait for the
    /// copy, or for the end.
    fn await_commit(&self) -> Result<bool> {
        let buf = self.buf;
        loop {
            match buf.ring.slot_state(self.next) {
                SlotState::Committed { .. } => return Ok(true),
                SlotState::Invalid(word) => {
                    return Err(Error::bad_data(format!(
                        "slot {} holds state word {word:#018x}, which no sem-writer stores",
                        self.next % u64::from(buf.ring.layout.slots)
                    )));
                }
                SlotState::Free if !buf.presence.writers_present()? => return Ok(false),
                SlotState::Free | SlotState::Writing { .. } => {
                    self.check_copier()?;
                    // A live writer frozen mid-copy never commits.
                    self.check_stall()?;
                    pause(&Deadline::never(), Duration::from_millis(1))?;
                }
            }
        }
    }
}

impl FrameSource for BufferSource<'_> {
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        let buf = self.buf;
        if self.lent {
            // The slot lent last time is free again: mark it, move on, V(empty).
            self.lent = false;
            buf.ring.state(self.next).store(SlotState::Free.word(), Ordering::Release);
            self.next += 1;
            buf.ring.header().reader.next_out.store(self.next, Ordering::Relaxed);
            buf.sems.free_slot()?;
        }
        // P(full): a filled slot, or sleep until a writer fills one.
        if !self.take_filled()? {
            return Ok(None);
        }
        self.lent = true;
        self.seen_frame = true;
        self.last = Instant::now();
        let slot = buf.ring.frame_ptr(self.next);
        // SAFETY: `slot_size` bytes inside the mapping, which outlives the returned
        // borrow (tied to &mut self). P(full) and the committed state gave the slot
        // to us: no writer touches it until our V(empty) at the next recv (a writer
        // of our uid that broke the protocol could change it under us; the checks
        // below and the CRC would catch that).
        let bytes =
            unsafe { std::slice::from_raw_parts(slot.cast_const(), buf.ring.layout.slot_size) };
        let head: &[u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap_or(&[0; HEADER_LEN]);
        let header =
            Header::parse(head, self.max_frame).map_err(|e| Error::bad_data(e.to_string()))?;
        if header.frame_len() > bytes.len() {
            return Err(Error::bad_data(format!(
                "a frame of {} bytes in a slot of {} bytes",
                header.frame_len(),
                bytes.len()
            )));
        }
        let payload = &bytes[HEADER_LEN..header.frame_len()];
        Ok(Some(Frame { header, payload }))
    }

    fn next_writer(&mut self) -> Result<bool> {
        // Every writer so far has gone: wait, without a deadline, for the next one.
        self.seen_frame = false;
        self.deadline = Deadline::never();
        Ok(true)
    }

    fn end_reason(&self) -> &'static str {
        "no writer holds the buffer any more, and its end frame never came"
    }
}

/// A writer's end of the buffer.
#[derive(Debug)]
pub struct BufferSink {
    sems: Sems,
    ring: Ring,
    presence: WriterPresence,
    family: Family,
    pid: u32,
    /// How long a slot may take to come free (a frozen reader, `--timeout`).
    stall: Option<Duration>,
}

/// What a reader published: its family, and for System V the set's key and id.
fn parse_record(text: &str) -> Option<(Family, Option<(libc::key_t, i32)>)> {
    let family = text.split_whitespace().find_map(|w| w.strip_prefix("family="))?.parse().ok()?;
    Some((family, parse_set_record(text)))
}

impl BufferSink {
    /// Waits (up to `timeout`) for a reader's buffer `name`, then opens it and
    /// its semaphores. `want` is the writer's `--lock`, if given: it must match
    /// the reader's.
    pub fn connect(name: &str, want: Option<Family>, timeout: Option<Duration>) -> Result<Self> {
        let dir = paths::private_dir()?;
        let base = paths::posix_lock_base(LOCK_KIND, name);
        let deadline = Deadline::after(timeout);
        loop {
            signals::check()?;
            if let Some(sink) = Self::try_connect(&dir, &base, name, want, &deadline)? {
                return Ok(sink);
            }
            if deadline.expired() {
                let secs = timeout.unwrap_or_default().as_secs();
                return Err(Error::peer_lost(format!(
                    "no sem-reader made bounded buffer {name} within {secs} s (--timeout)"
                ))
                .hint("start sem-reader first"));
            }
            pause(&deadline, OPEN_RETRY)?;
        }
    }

    fn try_connect(
        dir: &Path,
        base: &str,
        name: &str,
        want: Option<Family>,
        deadline: &Deadline,
    ) -> Result<Option<Self>> {
        // 1. Our presence (a read lock on the writers' file), and the reader's.
        let Some(presence) = WriterPresence::join(dir, base)? else {
            return Ok(None);
        };
        if !presence.reader_present()? {
            return Ok(None); // no reader yet, or a killed one's files
        }
        // 2. What the reader made: nothing published yet means not ready yet.
        let Some((family, set)) = parse_record(&presence.published()?) else {
            return Ok(None);
        };
        if want.is_some_and(|w| w != family) {
            return Err(Error::usage(format!(
                "sem-reader guards {name} with {family} semaphores, not --lock {}",
                want.map(|w| w.to_string()).unwrap_or_default()
            )));
        }
        // 3. The object, checked ours, and its header once ready, checked sane.
        let Some(shm) = ShmObject::open(name, HEADER_SPACE)? else {
            return Ok(None);
        };
        let what = format!("POSIX shm {name}");
        // SAFETY: open checked the mapping is at least HEADER_SPACE bytes; it is
        // page-aligned and outlives the borrow; BufHeader is valid for any bytes.
        let h = unsafe { &*shm.mapping().start_as::<BufHeader>() };
        if h.ready.load(Ordering::Acquire) != READY {
            return Ok(None);
        }
        let (slots, slot_size) =
            (h.slots.load(Ordering::Relaxed), h.slot_size.load(Ordering::Relaxed) as usize);
        let layout = Layout::new(slots, slot_size)
            .filter(|l| l.len <= shm.mapping().len())
            .ok_or_else(|| {
                Error::system(format!(
                    "{what} is not a sem-reader buffer ({slots} slots of {slot_size} bytes in {} bytes)",
                    shm.mapping().len()
                ))
            })?;
        if Family::from_code(h.family.load(Ordering::Relaxed)) != Some(family) {
            return Err(Error::system(format!(
                "{what} does not hold the {family} buffer its reader published; refusing to use it"
            )));
        }
        // 4. The semaphores the reader published.
        let sems = match (family, set) {
            (Family::Posix, _) => {
                let [e, f] = sem_names(name);
                let (Some(empty), Some(full)) =
                    (NamedSemaphore::open(&e)?, NamedSemaphore::open(&f)?)
                else {
                    return Ok(None); // the reader is going away: look again
                };
                Sems::Posix { empty, full }
            }
            (Family::Sysv, Some((key, id))) => match SysvSet::open_id(id, key, 3, deadline)? {
                Some(set) => Sems::Sysv(set),
                None => return Ok(None),
            },
            (Family::Sysv, None) => {
                return Err(Error::system(format!(
                    "the sem-reader of {name} published no System V key and id"
                )));
            }
        };
        Ok(Some(BufferSink {
            sems,
            ring: Ring { shm, layout },
            presence,
            family,
            pid: std::process::id(),
            stall: None,
        }))
    }

    /// Gives up (peer lost) when no slot comes free for `stall` mid-stream
    /// (a frozen reader); `None`, the default, waits as long as it takes.
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }

    /// Largest payload a slot holds.
    pub fn payload_capacity(&self) -> usize {
        self.ring.layout.slot_size - HEADER_LEN
    }

    /// The reader's choice of semaphores.
    pub fn family(&self) -> Family {
        self.family
    }

    /// "bounded buffer /x: 8 slots of 4120 bytes, POSIX semaphores ...".
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{}, {}", self.ring.describe(), self.sems.describe())
    }

    /// P(empty), then the lock, each in ticks that check on the reader. The
    /// POSIX lock's guard is returned (it unlocks on drop).
    fn claim(&self) -> Result<Option<MutexGuard<'_>>> {
        let never = Deadline::never();
        // --timeout mid-stream: a reader that frees no slot is frozen or stuck.
        let give_up = Deadline::after(self.stall);
        let frozen = || stalled("the reader", self.stall.unwrap_or_default());
        let presence = &self.presence;
        let mut reader_there = || {
            if presence.reader_present()? {
                Ok(())
            } else {
                Err(Error::peer_lost("sem-reader went away"))
            }
        };
        match &self.sems {
            Sems::Posix { empty, .. } => {
                // P(empty): a free slot, or sleep until the reader frees one.
                if !empty.wait_until(&give_up, &mut reader_there)? {
                    return Err(frozen());
                }
                // The lock (pthread_mutex_trylock, then timedlock in ticks). If we
                // give up here, give the slot back.
                let lock = &self.ring.header().writers.lock;
                let mut guard = match lock.lock_until(&never, &mut reader_there) {
                    Ok(Some(guard)) => guard,
                    Ok(None) => return Err(Error::system("pthread_mutex_timedlock: gave up")),
                    Err(err) => {
                        let _ = empty.post();
                        return Err(err);
                    }
                };
                if guard.how() == Locked::OwnerDied {
                    // EOWNERDEAD: a writer died holding the lock. The index needs no
                    // repair (it moves only once the slot is marked "writing"), and a
                    // slot it left half-copied says so: the reader reports it.
                    say!(
                        "sem-writer: pthread_mutex_lock: EOWNERDEAD: a writer died holding the buffer's lock; taking it over (pthread_mutex_consistent)"
                    );
                    guard.make_consistent()?;
                }
                Ok(Some(guard))
            }
            Sems::Sysv(set) => {
                // semop {empty -1, lock -1 SEM_UNDO}: both or neither, atomically.
                let ops = [Op::wait(EMPTY), Op::wait(LOCK).undo()];
                if !set.op_until(&ops, &give_up, reader_there)? {
                    return Err(frozen());
                }
                Ok(None)
            }
        }
    }

    /// Unlock, then V(full): the slot is the reader's.
    fn publish(&self, guard: Option<MutexGuard<'_>>) -> Result<()> {
        match &self.sems {
            Sems::Posix { full, .. } => {
                // pthread_mutex_unlock: the next writer may move the index.
                drop(guard);
                // V(full): one more filled slot; wakes the reader if it sleeps.
                full.post()
            }
            // semop {lock +1 SEM_UNDO, full +1}.
            Sems::Sysv(set) => set.op(&[Op::post(LOCK).undo(), Op::post(FULL)]),
        }
    }
}

impl FrameSink for BufferSink {
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        let len = header.frame_len();
        if len > self.ring.layout.slot_size {
            return Err(Error::usage(format!(
                "a message of {} bytes does not fit a slot of {} bytes (payloads up to {}; sem-reader --slot-size)",
                payload.len(),
                self.ring.layout.slot_size,
                self.payload_capacity()
            )));
        }
        // 1. P(empty), lock: a free slot, and the producer index to ourselves.
        let guard = self.claim()?;
        // 2. Our slot: say who writes it, then move the index past it.
        let h = self.ring.header();
        let index = h.writers.next_in.load(Ordering::Relaxed);
        let state = self.ring.state(index);
        let (pid, writer) = (self.pid, header.writer);
        state.store(SlotState::Writing { pid, writer }.word(), Ordering::Relaxed);
        h.writers.next_in.store(index + 1, Ordering::Relaxed);
        // 3. The copy: the frame header, then the payload.
        let bytes = header.to_bytes();
        let slot = self.ring.frame_ptr(index);
        // SAFETY: `len <= slot_size` bytes from `slot` lie inside the mapping (Layout);
        // the slot is ours alone between P(empty) and V(full); sources and slot do not
        // overlap (ours are in private memory).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), slot, HEADER_LEN);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), slot.add(HEADER_LEN), payload.len());
        }
        // 4. Committed (Release: the copy is visible to whoever sees this).
        state.store(SlotState::Committed { pid, writer }.word(), Ordering::Release);
        // 5. Unlock, V(full).
        self.publish(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_built_with_checked_arithmetic_from_values_in_range() {
        let l = Layout::new(8, DEFAULT_SLOT_SIZE).expect("default");
        assert_eq!(l.stride, 4160, "8 + 4120 rounded up to 64");
        assert_eq!(l.len, HEADER_SPACE + 8 * 4160);
        assert_eq!(l.slot_offset(9), HEADER_SPACE + 4160, "index 9 is slot 1");
        // What a forged header could claim is refused, not wrapped around.
        for (slots, size) in [(0, 4096), (MAX_SLOTS + 1, 4096), (u32::MAX, 4096), (8, 10)] {
            assert_eq!(Layout::new(slots, size), None, "{slots} x {size}");
        }
        assert_eq!(Layout::new(8, usize::MAX), None);
        let big = Layout::new(MAX_SLOTS, MAX_SLOT_SIZE).expect("the largest is representable");
        // Any index (next_in is in shared memory) lands on a whole slot inside.
        for index in [0, u64::from(MAX_SLOTS) - 1, u64::MAX] {
            assert!(big.slot_offset(index) + big.stride <= big.len, "{index}");
        }
    }

    #[test]
    fn slot_states_round_trip_and_anything_else_is_invalid() {
        for s in [
            SlotState::Free,
            SlotState::Writing { pid: 4242, writer: 7 },
            SlotState::Committed { pid: u32::MAX, writer: u16::MAX },
        ] {
            assert_eq!(SlotState::from_word(s.word()), s);
        }
        assert_eq!(SlotState::from_word(3), SlotState::Invalid(3));
        assert_eq!(
            SlotState::from_word(1 << 32),
            SlotState::Invalid(1 << 32),
            "a pid without a tag"
        );
        assert_eq!(SlotState::from_word(0x100 | 2), SlotState::Invalid(0x102));
    }
}
