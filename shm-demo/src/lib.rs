//! Shared memory: one region of memory in two processes, carrying frames
//! through a ring with no kernel copy between them.
//!
//! The reader creates a segment — POSIX (`shm_open` + `ftruncate` +
//! `posix_fallocate` + `mmap`) or System V (`shmget` + `shmat`) — lays out a
//! header and a ring of frames in it ([`ipc_common::ring`]), and the writer
//! maps the same memory. After that, a frame costs the writer one copy into the
//! ring and the reader none: it checks the frame where it lies. Shared memory
//! gives no synchronisation of its own, so semaphores (from `sem-demo`) put a
//! side to sleep when the ring is empty or full — and only then.
//!
//! ```text
//! segment: [ Header: magic, version, sizes, reader pid, writer pid, flags ]   0..64
//!          [ POSIX: data and room semaphores (sem_t, pshared)            ]  64..128
//!          [ ring control: head | tail | waiting flags (a line each)     ] 128..320
//!          [ ring data: frames, padded to 8 ...                         ] 320..
//! ```
//!
//! # Lifecycle
//! 1. the reader creates the segment exclusively (mode 0600), sizes it, fills
//!    the header, initialises the semaphores (POSIX: in the segment; System V: a
//!    set of two) and the ring, then sets `ready`;
//! 2. the writer opens it, checks magic, version and size before touching
//!    anything else, waits for `ready`, and claims the single writer slot;
//! 3. the writer removes the name (`shm_unlink` / `IPC_RMID`): both are attached,
//!    so nobody needs it, and the kernel frees the memory with the last mapping;
//! 4. frames flow; 5. the end frame; both unmap.
//!
//! # Cleanup
//! The crash-safe trick of step 3: once both sides are attached, the segment
//! has no name left, so a SIGKILL of both sides leaves nothing behind — the
//! kernel drops the memory when its last process goes. Before a writer comes,
//! the reader owns the name and removes it on exit; a reader killed while
//! waiting leaves it, and the next reader finds it stale (its reader pid is
//! gone) and says how to remove it, or `--force` does. System V semaphores
//! have no such trick: a set lives until `IPC_RMID`, so the System V variant's
//! set (and the lock file its key comes from) outlives a crash of both sides;
//! `ipc-clean` lists and removes them.
//!
//! # Pitfalls
//! - `ftruncate` alone promises memory it may not have: a full `/dev/shm` shows
//!   up as SIGBUS at the first touch. `posix_fallocate` reserves it at creation,
//!   where the error can say what happened.
//! - A stranger can create a segment of our name first: the opener checks owner,
//!   mode, magic, version and size before it reads anything else.
//! - One writer only (single producer, single consumer): the writer slot is
//!   claimed with a compare-and-swap; a second writer is refused.

use std::ffi::CString;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use ipc_common::error::{Context, Error, Result};
use ipc_common::liveness::{ReaderPresence, WriterPresence};
use ipc_common::paths::{self, check_ours};
use ipc_common::ring::{self, CONTROL_LEN, Doorbell, Peer, PidPeer};
use ipc_common::wait::{Deadline, pause};
use nix::errno::Errno;
use nix::fcntl::{OFlag, posix_fallocate};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap, shm_open, shm_unlink};
use nix::sys::stat::{Mode, fstat};
use nix::unistd::{ftruncate, getpid};
use sem_demo::{Op, Semaphore, SysvSet};

pub use ipc_common::ring::{Consumer, Producer};

/// The first eight bytes of every segment of ours.
pub const MAGIC: [u8; 8] = *b"IPCSHM\0\0";
/// Layout version: an opener refuses any other.
pub const VERSION: u32 = 1;
/// Where the ring starts in the segment.
pub const RING_OFFSET: usize = 128;
/// Default ring size: 1 MiB of frames.
pub const DEFAULT_RING: usize = 1 << 20;
/// Lock-file kind of the System V variant (its keys come from this file).
pub const LOCK_KIND: &str = "shm-sysv";
/// `ftok` project ids: the segment's key, the semaphore set's key.
pub const SEGMENT_PROJ: i32 = b'H' as i32;
/// See [`SEGMENT_PROJ`].
pub const SEMS_PROJ: i32 = b'S' as i32;
/// How often a writer retries opening a segment that is not there yet.
pub const OPEN_RETRY: Duration = Duration::from_millis(20);

/// Which standard's shared memory: [`Api::Posix`] is `shm_open` + `mmap`,
/// semaphores in the segment; [`Api::Sysv`] is `shmget` + `shmat`, a System V
/// semaphore set.
pub use ipc_common::opts::Api;

/// The segment's header, at offset 0. Only atomics are written after `ready`.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Header {
    magic: [u8; 8],
    version: u32,
    /// 1 while the name is still wanted (`--keep`): the writer leaves it.
    keep_name: u32,
    total_len: u64,
    ring_len: u64,
    reader_pid: AtomicI32,
    writer_pid: AtomicI32,
    /// 1 once the name has been removed.
    unlinked: AtomicU32,
    /// 1 once the reader has finished setting everything up.
    ready: AtomicU32,
}

/// `/ipc-demos.<uid>.shm`.
#[must_use]
pub fn default_name() -> String {
    paths::posix_name("shm")
}

/// Bytes of a segment whose ring has `ring` bytes of data.
#[must_use]
pub fn segment_len(ring: usize) -> usize {
    RING_OFFSET + CONTROL_LEN + ring
}

fn posix_what(name: &str) -> String {
    format!("POSIX shm {name}")
}

/// The memory of a segment, mapped (POSIX) or attached (System V).
#[derive(Debug)]
struct Memory {
    base: NonNull<u8>,
    len: usize,
    sysv: bool,
}

impl Memory {
    /// `mmap(MAP_SHARED)` of a POSIX shm descriptor.
    fn map(fd: &OwnedFd, len: usize, what: &str) -> Result<Memory> {
        let size =
            NonZeroUsize::new(len).ok_or_else(|| Error::system(format!("{what} is empty")))?;
        // SAFETY: a fresh mapping of our own descriptor at an address the kernel
        // picks: it aliases nothing in this process. SIGBUS if the object shrinks
        // under us: only our own uid can truncate it (mode 0600), and this code
        // never does.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )
        }
        .context(|| format!("mmap {what}"))?;
        Ok(Memory { base: ptr.cast(), len, sysv: false })
    }

    /// `shmat` of a System V segment.
    fn attach(id: i32, len: usize, what: &str) -> Result<Memory> {
        // SAFETY: shmat at an address the kernel picks; read-write.
        let ptr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if ptr as isize == -1 {
            return Err(Error::errno(format!("shmat {what}"), Errno::last()));
        }
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::system("shmat returned null"))?;
        Ok(Memory { base, len, sysv: true })
    }

    // Mappings and attachments start on a page boundary, so every offset used
    // below is as aligned as its type needs (64 for the header, 8 for sem_t).
    #[allow(clippy::cast_ptr_alignment)]
    fn header(&self) -> &Header {
        // SAFETY: the memory is at least RING_OFFSET bytes (checked by every
        // constructor's caller), page-aligned, and Header holds plain data
        // written before `ready` and atomics after.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    #[allow(clippy::cast_ptr_alignment)]
    fn header_mut(&mut self) -> *mut Header {
        self.base.as_ptr().cast::<Header>()
    }

    /// The POSIX semaphore `n` (0 = data, 1 = room) in the segment.
    #[allow(clippy::cast_ptr_alignment)]
    fn sem_ptr(&self, n: usize) -> *mut libc::sem_t {
        // SAFETY: 64 + 32 * n + 32 <= RING_OFFSET: inside the segment, aligned for sem_t.
        unsafe { self.base.as_ptr().add(64 + 32 * n).cast::<libc::sem_t>() }
    }

    fn ring(&self) -> (*mut u8, usize) {
        // SAFETY: RING_OFFSET < len (checked by the constructors' callers).
        (unsafe { self.base.as_ptr().add(RING_OFFSET) }, self.len - RING_OFFSET)
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if self.sysv {
            // shmdt: detach; the segment goes when marked removed and unattached.
            // SAFETY: the address shmat returned, not used after this.
            unsafe { libc::shmdt(self.base.as_ptr().cast()) };
        } else {
            // munmap: our view goes; the memory when the last view does.
            // SAFETY: the exact mapping mmap returned, not used after this.
            let _ = unsafe { munmap(self.base.cast(), self.len) };
        }
    }
}

/// Checks a header found in memory that claims to be ours: magic, version, size.
fn check_header(h: &Header, actual_len: usize, what: &str) -> Result<()> {
    let hint = "it is not a segment of ours: remove it, or pick another name";
    if h.magic != MAGIC {
        return Err(Error::system(format!(
            "{what} is not an ipc-demos segment (magic {:02x?})",
            h.magic
        ))
        .hint(hint));
    }
    if h.version != VERSION {
        return Err(Error::system(format!(
            "{what} has layout version {}, not {VERSION}",
            h.version
        ))
        .hint(hint));
    }
    let total = usize::try_from(h.total_len).unwrap_or(usize::MAX);
    let ring = usize::try_from(h.ring_len).unwrap_or(usize::MAX);
    if total != actual_len
        || ring.checked_add(RING_OFFSET) != Some(total)
        || ring < CONTROL_LEN + 64
    {
        return Err(Error::system(format!(
            "{what} says it is {total} bytes with a {ring}-byte ring, but it is {actual_len} bytes"
        ))
        .hint(hint));
    }
    Ok(())
}

/// Removes a just-created name if setting the segment up fails half-way.
struct RemoveOnError(Option<Name>);

impl RemoveOnError {
    fn disarm(mut self) -> Name {
        self.0.take().unwrap_or_else(|| unreachable!("armed until disarmed"))
    }
}

impl Drop for RemoveOnError {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            name.remove();
        }
    }
}

/// What makes the segment findable and how it is removed.
#[derive(Debug)]
enum Name {
    Posix(String),
    Sysv { id: i32, key: i32 },
}

impl Name {
    fn remove(&self) {
        match self {
            // shm_unlink: the name goes; the memory stays for those mapping it.
            Name::Posix(name) => drop(shm_unlink(name.as_str())),
            // IPC_RMID: no new attaches; the memory goes with the last detach.
            Name::Sysv { id, .. } => {
                drop(ipc_common::clean::remove_sysv(ipc_common::clean::SysvKind::Shm, *id));
            }
        }
    }

    fn what(&self) -> String {
        match self {
            Name::Posix(name) => posix_what(name),
            Name::Sysv { id, key } => format!("System V segment key {key:#010x} id {id}"),
        }
    }
}

/// The reader's segment: created here; the name removed on drop if the writer
/// has not removed it already (unless kept).
#[derive(Debug)]
pub struct Segment {
    mem: Memory,
    name: Name,
    /// System V: the semaphore set (removed on drop) and the lock file its key comes from.
    sems: Option<SysvSet>,
    presence: Option<ReaderPresence>,
    keep: bool,
}

/// The doorbells of one side: rung when data arrives, rung when room frees up.
#[derive(Debug, Clone, Copy)]
pub enum Bell<'s> {
    /// A POSIX unnamed semaphore in the segment.
    Posix(&'s Semaphore),
    /// Semaphore `n` of a System V set.
    Sysv(&'s SysvSet, u16),
}

impl Doorbell for Bell<'_> {
    fn wait(&self, _ticket: u32, timeout: Duration) -> Result<bool> {
        match self {
            // sem_timedwait: sleep until posted, at most a tick.
            Bell::Posix(sem) => sem.timed_wait(timeout),
            // semtimedop: P on semaphore n, at most a tick.
            Bell::Sysv(set, n) => set.timed_op(&[Op::wait(*n)], timeout),
        }
    }

    fn ring(&self) -> Result<()> {
        match self {
            Bell::Posix(sem) => sem.post(),
            Bell::Sysv(set, n) => set.op(&[Op::post(*n)]),
        }
    }

    fn drain(&self) -> Result<()> {
        match self {
            Bell::Posix(sem) => sem.try_wait().map(drop),
            Bell::Sysv(set, n) => set.timed_op(&[Op::wait(*n)], Duration::ZERO).map(drop),
        }
    }
}

/// Creates the POSIX segment `name` with a ring of `ring` bytes.
///
/// An existing object of that name is examined: a stranger's, one open to
/// others, or one that is not ours by magic — refused; ours with its reader
/// alive — in use; ours with its reader gone — stale: named with how to remove
/// it, or removed with `force`.
pub fn create_posix(name: &str, ring: usize, keep: bool, force: bool) -> Result<Segment> {
    let len = segment_len(ring);
    let fd = loop {
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
        // shm_open O_CREAT|O_EXCL, 0600: a new object, or EEXIST — never a stranger's.
        match shm_open(name, flags, Mode::S_IRUSR | Mode::S_IWUSR) {
            Ok(fd) => break fd,
            Err(Errno::EEXIST) => existing_posix(name, force)?,
            Err(e) => return Err(Error::errno(format!("shm_open {name}"), e)),
        }
    };
    // Ours from here: any error below removes the name again.
    let guard = RemoveOnError(Some(Name::Posix(name.into())));
    let size = libc::off_t::try_from(len)
        .map_err(|_| Error::usage(format!("--ring {ring}: too large")))?;
    // ftruncate: the object's size; then posix_fallocate: its pages, now, so a
    // full /dev/shm fails here with ENOSPC instead of SIGBUS at the first touch.
    ftruncate(&fd, size).context(|| format!("ftruncate {name} {len}"))?;
    posix_fallocate(&fd, 0, size)
        .context(|| format!("posix_fallocate {name} {len}"))
        .map_err(|e| e.hint("is /dev/shm full? see df /dev/shm"))?;
    let mem = Memory::map(&fd, len, &posix_what(name))?;
    let mut seg = Segment { mem, name: guard.disarm(), sems: None, presence: None, keep };
    // SAFETY: a new object of our own; no other process can map it before `ready`.
    unsafe { seg.init_posix(ring, keep)? };
    Ok(seg)
}

/// An existing POSIX object where we want to create ours.
fn existing_posix(name: &str, force: bool) -> Result<()> {
    let what = posix_what(name);
    let fd = match shm_open(name, OFlag::O_RDWR, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()), // gone meanwhile: try again
        Err(e) => return Err(shm_open_failed(name, e)),
    };
    let st = fstat(&fd).context(|| format!("fstat {what}"))?;
    check_ours(&st, &what).map_err(|e| e.hint("pick another --name; it is not ours to remove"))?;
    let len = usize::try_from(st.st_size).unwrap_or(0);
    let rm = format!("rm /dev/shm/{}", name.trim_start_matches('/'));
    if len < RING_OFFSET {
        return Err(Error::system(format!("{what} is {len} bytes: not a segment of ours"))
            .hint(format!("remove it: {rm}")));
    }
    let mem = Memory::map(&fd, len, &what)?;
    check_header(mem.header(), len, &what).map_err(|e| e.hint(format!("remove it: {rm}")))?;
    let pid = mem.header().reader_pid.load(Ordering::Acquire);
    if PidPeer::new(pid)?.alive()? {
        return Err(Error::system(format!("{what} is in use by shm-reader pid {pid}"))
            .hint("stop that reader, or pick another --name"));
    }
    if !force {
        return Err(Error::system(format!(
            "{what} is stale (its reader, pid {pid}, was killed before a writer came)"
        ))
        .hint(format!("remove it: {rm} (or make clean-ipc, or add --force)")));
    }
    drop(mem);
    match shm_unlink(name) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::errno(format!("shm_unlink {name}"), e)),
    }
}

/// Creates the System V segment and semaphore set, keys from `ftok` on the
/// reader's lock file (published there for writers), with a ring of `ring` bytes.
pub fn create_sysv(ring: usize, keep: bool, force: bool) -> Result<Segment> {
    let len = segment_len(ring);
    let dir = paths::private_dir()?;
    let mut presence = ReaderPresence::claim(&dir, LOCK_KIND, "System V shm segment")?;
    if let Some(old) = Published::parse(presence.previous()) {
        old.remove_stale(force)?;
    }
    let lock = presence.reader_path().to_path_buf();
    // shmget IPC_CREAT|IPC_EXCL 0600 under the first free ftok key.
    let (key, id) = first_free(&lock, SEGMENT_PROJ, |key| {
        // SAFETY: shmget takes a key, a size and flags; no memory is passed.
        let id = unsafe { libc::shmget(key, len, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        match Errno::result(id) {
            Ok(id) => Ok(Some(id)),
            Err(Errno::EEXIST) => Ok(None),
            Err(e) => Err(Error::errno(format!("shmget key {key:#010x} {len} bytes"), e)
                .hint("see /proc/sys/kernel/shmmax and shmall")),
        }
    })?;
    let guard = RemoveOnError(Some(Name::Sysv { id, key }));
    // The data and room doorbells: a set of two semaphores, both 0 (removed on drop).
    let (sem_key, sems) = first_free(&lock, SEMS_PROJ, |key| SysvSet::create(key, &[0, 0]))?;
    let sem_id = sems.id();
    let mem = Memory::attach(id, len, &format!("System V segment key {key:#010x} id {id}"))?;
    let mut seg = Segment { mem, name: guard.disarm(), sems: Some(sems), presence: None, keep };
    // SAFETY: a new segment of our own; nobody can attach before we publish.
    unsafe { seg.init_header(ring, keep) };
    // SAFETY: as above; the ring is inside the segment.
    unsafe { seg.init_ring()? };
    presence.publish(&Published { shm_key: key, shm_id: id, sem_key, sem_id }.to_string())?;
    seg.presence = Some(presence);
    seg.mem.header().ready.store(1, Ordering::Release);
    Ok(seg)
}

/// Tries `ftok(file, proj)`, `proj + 1`, ... until `make` finds the key free.
/// (`ftok` keys collide between files: a taken key is never assumed ours.)
fn first_free<T>(
    file: &Path,
    proj: i32,
    mut make: impl FnMut(i32) -> Result<Option<T>>,
) -> Result<(i32, T)> {
    let c = CString::new(file.as_os_str().as_bytes())
        .map_err(|_| Error::usage("path has a NUL byte"))?;
    for p in proj..proj + 16 {
        // SAFETY: ftok reads the NUL-terminated path we own.
        let key = unsafe { libc::ftok(c.as_ptr(), p) };
        if key == -1 {
            return Err(Error::errno(format!("ftok {}", file.display()), Errno::last()));
        }
        if let Some(made) = make(key)? {
            return Ok((key, made));
        }
    }
    Err(Error::system(format!("every ftok key of {} is taken", file.display())))
}

/// What a System V reader records in its lock file.
#[derive(Debug, Clone, Copy)]
struct Published {
    shm_key: i32,
    shm_id: i32,
    sem_key: i32,
    sem_id: i32,
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "shm_key={:#010x} shm_id={} sem_key={:#010x} sem_id={}",
            self.shm_key, self.shm_id, self.sem_key, self.sem_id
        )
    }
}

impl Published {
    fn parse(text: &str) -> Option<Published> {
        let get = |name: &str| {
            let v =
                text.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?;
            match v.strip_prefix("0x") {
                Some(hex) => {
                    u32::from_str_radix(hex, 16).ok().map(|u| i32::from_ne_bytes(u.to_ne_bytes()))
                }
                None => v.parse().ok(),
            }
        };
        Some(Published {
            shm_key: get("shm_key")?,
            shm_id: get("shm_id")?,
            sem_key: get("sem_key")?,
            sem_id: get("sem_id")?,
        })
    }

    /// What a killed reader left: its semaphore set, and its segment if no
    /// writer came to remove the name. Ours by record; removed with `force`.
    fn remove_stale(&self, force: bool) -> Result<()> {
        let seg = sysv_stat(self.shm_id).filter(|ds| ds.shm_perm.__key == self.shm_key);
        let sems = SysvSet::lookup(self.sem_key)?.filter(|(id, _)| *id == self.sem_id);
        if seg.is_none() && sems.is_none() {
            return Ok(());
        }
        if !force {
            let mut left = Vec::new();
            if seg.is_some() {
                left.push(format!("segment id {} (ipcrm -m {})", self.shm_id, self.shm_id));
            }
            if sems.is_some() {
                left.push(format!("semaphore set id {} (ipcrm -s {})", self.sem_id, self.sem_id));
            }
            return Err(Error::system(format!(
                "a killed shm-reader left System V {}",
                left.join(" and ")
            ))
            .hint("remove them: make clean-ipc (or add --force)"));
        }
        if seg.is_some() {
            ipc_common::clean::remove_sysv(ipc_common::clean::SysvKind::Shm, self.shm_id)?;
        }
        if sems.is_some() {
            SysvSet::remove_id(self.sem_id)?;
        }
        Ok(())
    }
}

fn sysv_stat(id: i32) -> Option<libc::shmid_ds> {
    // SAFETY: shmid_ds is plain old data; IPC_STAT fills the one we own.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::shmctl(id, libc::IPC_STAT, &raw mut ds) };
    (rc == 0).then_some(ds)
}

impl Segment {
    /// Fills the header (all but `ready`).
    ///
    /// # Safety
    /// A fresh segment nobody else has mapped yet.
    unsafe fn init_header(&mut self, ring: usize, keep: bool) {
        let h = self.mem.header_mut();
        // SAFETY: the caller's contract: we are alone with this memory.
        unsafe {
            (*h).magic = MAGIC;
            (*h).version = VERSION;
            (*h).keep_name = u32::from(keep);
            (*h).total_len = self.mem.len as u64;
            (*h).ring_len = (CONTROL_LEN + ring) as u64;
        }
        self.mem.header().reader_pid.store(getpid().as_raw(), Ordering::Relaxed);
    }

    /// # Safety
    /// As for [`Segment::init_header`].
    unsafe fn init_ring(&mut self) -> Result<usize> {
        let (base, len) = self.mem.ring();
        // SAFETY: the ring region is inside the segment, 64-aligned, unused.
        unsafe { ring::init(base, len) }
    }

    /// # Safety
    /// As for [`Segment::init_header`].
    unsafe fn init_posix(&mut self, ring: usize, keep: bool) -> Result<()> {
        // SAFETY: the caller's contract.
        unsafe {
            self.init_header(ring, keep);
            // sem_init pshared=1, count 0: the data and room doorbells live in the segment.
            Semaphore::init_at(self.mem.sem_ptr(0), 0)?;
            Semaphore::init_at(self.mem.sem_ptr(1), 0)?;
            self.init_ring()?;
        }
        // Everything above happens-before a writer's Acquire load of `ready`.
        self.mem.header().ready.store(1, Ordering::Release);
        Ok(())
    }

    /// "POSIX shm /name" or "System V segment key 0x... id N".
    pub fn what(&self) -> String {
        self.name.what()
    }

    /// Bytes of frames the ring holds.
    pub fn ring_capacity(&self) -> usize {
        self.mem.len - RING_OFFSET - CONTROL_LEN
    }

    /// The doorbells: (data, room).
    pub fn bells(&self) -> (Bell<'_>, Bell<'_>) {
        bells(&self.mem, self.sems.as_ref())
    }

    /// The reader's end of the ring; `peer` watches for the writer.
    pub fn consumer<'s>(
        &'s self,
        peer: WriterSlot<'s>,
        spin: u32,
        max_frame: u32,
    ) -> Result<Consumer<'s, Bell<'s>, WriterSlot<'s>>> {
        let (data, room) = self.bells();
        let (base, len) = self.mem.ring();
        // SAFETY: the ring lies in our segment, mapped for as long as `self`;
        // initialised above; this process is its only reader.
        unsafe { Consumer::attach(base, len, data, room, peer, spin, max_frame) }
    }

    /// Watches the writer slot, for the reader's ring.
    pub fn writer_slot(&self, first_timeout: Option<Duration>) -> WriterSlot<'_> {
        WriterSlot {
            header: self.mem.header(),
            deadline: Deadline::after(first_timeout),
            timeout: first_timeout,
            peer: None,
        }
    }
}

fn bells<'s>(mem: &Memory, sems: Option<&'s SysvSet>) -> (Bell<'s>, Bell<'s>) {
    match sems {
        Some(set) => (Bell::Sysv(set, 0), Bell::Sysv(set, 1)),
        // SAFETY: the semaphores were initialised by the reader before `ready`,
        // in memory mapped while `mem` lives; Bell borrows are bounded by the segment.
        None => unsafe {
            (
                Bell::Posix(Semaphore::from_ptr(mem.sem_ptr(0))),
                Bell::Posix(Semaphore::from_ptr(mem.sem_ptr(1))),
            )
        },
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if !self.keep && self.mem.header().unlinked.swap(1, Ordering::AcqRel) == 0 {
            self.name.remove();
        }
        // The System V set goes with `sems` (its drop removes it); POSIX
        // semaphores go with the memory.
    }
}

/// The reader's view of the writer: not come yet (its pid is 0), alive, or gone.
#[derive(Debug)]
pub struct WriterSlot<'s> {
    header: &'s Header,
    deadline: Deadline,
    timeout: Option<Duration>,
    peer: Option<PidPeer>,
}

impl Peer for WriterSlot<'_> {
    fn alive(&mut self) -> Result<bool> {
        if let Some(peer) = &mut self.peer {
            return peer.alive();
        }
        let pid = self.header.writer_pid.load(Ordering::Acquire);
        if pid == 0 {
            if self.deadline.expired() {
                let secs = self.timeout.unwrap_or_default().as_secs();
                return Err(Error::peer_lost(format!(
                    "no writer came within {secs} s (--timeout)"
                )));
            }
            return Ok(true);
        }
        self.peer = Some(PidPeer::new(pid)?);
        self.alive()
    }
}

/// The writer's view of the segment.
#[derive(Debug)]
pub struct Attached {
    mem: Memory,
    name: Name,
    sems: Option<SysvSet>,
    _presence: Option<WriterPresence>,
    reader_pid: i32,
}

/// Opens the POSIX segment `name`, waiting up to `timeout` for a reader to make it.
pub fn open_posix(name: &str, timeout: Option<Duration>) -> Result<Attached> {
    let what = posix_what(name);
    let deadline = Deadline::after(timeout);
    loop {
        // shm_open O_RDWR: the reader's object (glibc opens /dev/shm with O_NOFOLLOW).
        match shm_open(name, OFlag::O_RDWR, Mode::empty()) {
            Ok(fd) => {
                // fstat the descriptor: the object opened, whatever the name says now.
                let st = fstat(&fd).context(|| format!("fstat {what}"))?;
                check_ours(&st, &what)?;
                let len = usize::try_from(st.st_size).unwrap_or(0);
                // Size 0: the reader is between shm_open and ftruncate; look
                // again shortly. Otherwise wait for its `ready` (Acquire: the
                // header is complete once it reads 1), then check everything.
                if len != 0 {
                    if len < RING_OFFSET {
                        return Err(Error::system(format!(
                            "{what} is {len} bytes: not a segment of ours"
                        )));
                    }
                    let mem = Memory::map(&fd, len, &what)?;
                    wait_ready(mem.header(), &what, &deadline, timeout)?;
                    check_header(mem.header(), len, &what)?;
                    return claim(
                        mem,
                        Name::Posix(name.to_string()),
                        None,
                        None,
                        &deadline,
                        timeout,
                    );
                }
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(shm_open_failed(name, e)),
        }
        if deadline.expired() {
            return Err(no_reader(&what, timeout));
        }
        pause(&deadline, OPEN_RETRY)?;
    }
}

/// `shm_open` of an existing name failed; ELOOP (glibc opens with O_NOFOLLOW)
/// means a symbolic link was planted at the name: say so.
fn shm_open_failed(name: &str, e: Errno) -> Error {
    let err = Error::errno(format!("shm_open {name}"), e);
    if e == Errno::ELOOP {
        let path = format!("/dev/shm/{}", name.trim_start_matches('/'));
        return err.hint(format!(
            "{path} is a symbolic link; refusing to follow it (not ours: pick another --name)"
        ));
    }
    err
}

fn no_reader(what: &str, timeout: Option<Duration>) -> Error {
    let secs = timeout.unwrap_or_default().as_secs();
    Error::peer_lost(format!("no shm-reader is waiting at {what} after {secs} s (--timeout)"))
        .hint("start shm-reader first; a reader that already has its writer removes the name (one writer per segment)")
}

/// Opens the System V segment the reader published, waiting up to `timeout`.
pub fn open_sysv(timeout: Option<Duration>) -> Result<Attached> {
    let deadline = Deadline::after(timeout);
    let dir = paths::private_dir()?;
    loop {
        if let Some(presence) = WriterPresence::join(&dir, LOCK_KIND)? {
            if let (true, Some(p)) =
                (presence.reader_present()?, Published::parse(&presence.published()?))
            {
                let name = Name::Sysv { id: p.shm_id, key: p.shm_key };
                let what = name.what();
                if let Some(ds) = sysv_stat(p.shm_id).filter(|ds| ds.shm_perm.__key == p.shm_key) {
                    if ds.shm_perm.uid != paths::uid() || ds.shm_perm.mode & 0o077 != 0 {
                        return Err(Error::system(format!(
                            "{what} is not ours, or open to others; refusing to use it"
                        )));
                    }
                    if ds.shm_segsz < RING_OFFSET {
                        return Err(Error::system(format!(
                            "{what} is {} bytes: not a segment of ours",
                            ds.shm_segsz
                        )));
                    }
                    let mem = Memory::attach(p.shm_id, ds.shm_segsz, &what)?;
                    check_header(mem.header(), ds.shm_segsz, &what)?;
                    let sems =
                        SysvSet::open_id(p.sem_id, p.sem_key, 2, &deadline)?.ok_or_else(|| {
                            Error::peer_lost(format!("the semaphore set of {what} is gone"))
                        })?;
                    return claim(mem, name, Some(sems), Some(presence), &deadline, timeout);
                }
            }
        }
        if deadline.expired() {
            return Err(no_reader("a System V shm segment", timeout));
        }
        pause(&deadline, OPEN_RETRY)?;
    }
}

/// Waits until the reader has set the segment up (`ready`, stored last with Release).
fn wait_ready(
    h: &Header,
    what: &str,
    deadline: &Deadline,
    timeout: Option<Duration>,
) -> Result<()> {
    while h.ready.load(Ordering::Acquire) == 0 {
        if deadline.expired() {
            return Err(no_reader(what, timeout));
        }
        pause(deadline, Duration::from_millis(2))?;
    }
    Ok(())
}

/// Waits for the reader's `ready`, claims the single writer slot, and removes
/// the name (both sides are attached now), unless the reader keeps it.
fn claim(
    mem: Memory,
    name: Name,
    sems: Option<SysvSet>,
    presence: Option<WriterPresence>,
    deadline: &Deadline,
    timeout: Option<Duration>,
) -> Result<Attached> {
    let what = name.what();
    let h = mem.header();
    wait_ready(h, &what, deadline, timeout)?;
    let me = getpid().as_raw();
    // compare-and-swap 0 -> our pid: the one writer slot is ours, or someone's.
    if let Err(other) = h.writer_pid.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
        return Err(Error::system(format!(
            "{what} already has a writer (pid {other}); shared memory here carries one writer"
        ))
        .hint("single producer, single consumer: start another shm-reader for another writer"));
    }
    let reader_pid = h.reader_pid.load(Ordering::Acquire);
    if h.keep_name == 0 && h.unlinked.swap(1, Ordering::AcqRel) == 0 {
        // Both attached: remove the name, so a crash of both leaves nothing.
        name.remove();
    }
    Ok(Attached { mem, name, sems, _presence: presence, reader_pid })
}

impl Attached {
    /// Bytes of frames the ring holds.
    pub fn ring_capacity(&self) -> usize {
        self.mem.len - RING_OFFSET - CONTROL_LEN
    }

    /// "POSIX shm /name" or "System V segment ...".
    pub fn what(&self) -> String {
        self.name.what()
    }

    /// The writer's end of the ring; the reader's pid is watched through a pidfd.
    pub fn producer(&self, spin: u32) -> Result<Producer<'_, Bell<'_>, PidPeer>> {
        let (data, room) = bells(&self.mem, self.sems.as_ref());
        let (base, len) = self.mem.ring();
        let peer = PidPeer::new(self.reader_pid)?;
        // SAFETY: the ring lies in the segment, mapped for as long as `self`;
        // the reader initialised it before `ready`; we hold the one writer slot.
        unsafe { Producer::attach(base, len, data, room, peer, spin) }
    }
}
