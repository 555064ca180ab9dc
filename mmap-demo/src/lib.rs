//! Memory-mapped files: one file that a writer and its readers map
//! `MAP_SHARED`, so what one process stores the others load — and, unlike a
//! shared memory segment, the bytes belong to a file: named in the file
//! system, kept by the page cache, written back to the disk, and still there,
//! readable, after every process has exited.
//!
//! ```text
//! file:    [ header: one 4 KiB page                       ][ data: capacity bytes ...       ]
//! header:  identity (magic, version, layout, capacity, writer pid) | log words | reader words
//! log:     [frame][frame][frame]...[torn frame?]                 (frames back to back)
//!                                 ^committed: stored with Release after the frame's bytes
//! ring:    [ipc_common::ring Control][ring data ...]             (--ring: unbounded streams)
//! locks:   byte 0: the writer's OFD lock; byte 1: the ring reader's (fcntl, not data)
//! ```
//!
//! Two layouts share the header. A **log** (the default, [`log`]) appends
//! frames and never reuses a byte: a reader follows `committed` as the writer
//! moves it, and any number of readers, now or years later, can read the
//! whole stream again (`mmap-reader --replay`). A **ring** ([`ring_file`]) is
//! the very ring `shm-demo` runs in a shared memory object
//! ([`ipc_common::ring`]), here over the file's pages: unbounded streams in a
//! fixed file, each frame read once.
//!
//! # Lifecycle
//! 1. the writer creates a temporary file beside the path with
//!    `open(O_CREAT | O_EXCL | O_NOFOLLOW, 0600)`, takes a shared `flock` on it
//!    (the file is in use), and an OFD write lock on its byte 0
//!    (`fcntl(F_OFD_SETLK)`: its writer is alive — the kernel drops the lock
//!    when the writer dies, however it dies);
//! 2. `fallocate` gives it its size, header plus capacity, and reserves its
//!    blocks (a sparse file would fail later, with SIGBUS, on a full disk);
//! 3. `mmap(MAP_SHARED)` maps it ([`memmap2::MmapRaw`]); the writer fills in the
//!    header (and, for a ring, the ring's control block);
//! 4. `renameat2(RENAME_NOREPLACE)` gives it its name: a reader never sees a
//!    half-made file, and an existing file is never replaced;
//! 5. each reader waits for the path (the roles of other pairs, swapped: here
//!    the writer makes the object), checks it (`lstat`, `O_NOFOLLOW`, `fstat`
//!    owner and mode, magic, version, size; after its `flock`, that the path
//!    still names the file it opened), reads the identity with `pread`, and
//!    maps it;
//! 6. the writer copies each frame in after the last, then stores `committed`
//!    with `Release`; a reader loads it with `Acquire`, checks each frame in
//!    place, and lends it out without copying; an idle reader sleeps on a futex
//!    in the header, which the writer wakes only if a reader asked for it, and
//!    asks each quiet tick whether the writer's lock is still held
//!    (`fcntl(F_OFD_GETLK)`);
//! 7. the end frame is published by the last store of `committed`; then the
//!    `closed` flag is stored, also with `Release`, so whoever loads `closed`
//!    with `Acquire` and sees it set finds the end frame committed; both sides
//!    unmap and exit, **and the file stays**.
//!
//! # Cleanup
//! The file is the point: it is kept by default, after success, error, SIGINT
//! or SIGKILL alike. `mmap-reader --remove` deletes it after a clean finish;
//! `ipc-clean` lists it (as in use while a writer or reader holds its `flock`).
//! A writer finding a file at its path refuses it, naming it and how to
//! remove or replay it; `--force` replaces a file of ours that nobody holds
//! (unlinked while it holds `LOCK_EX`, so no reader can start on it meanwhile).
//! Only a half-made temporary file of a writer that failed is removed by it.
//!
//! # Pitfalls
//! - SIGBUS: a file truncated under a mapping kills whoever touches the lost
//!   pages (as does a page the kernel cannot read in). Waiting sides `fstat`
//!   the file each quiet tick, and the race that remains is caught
//!   ([`sigbus`]): exit 1, "file truncated under the mapping" (or "SIGBUS on a
//!   page of the mapping" if the size is intact), never a crash.
//! - A slice lent from shared memory is a promise Rust cannot keep: another
//!   process may store into it, and the SIGBUS handler maps zeros over it, so
//!   the bytes under a live `&[u8]` can change. Frames are lent only once
//!   committed (nobody writes them again by the protocol), frame headers are
//!   copied out before they are parsed, and each payload is read once — or,
//!   in text mode, copied once ([`sigbus::Guarded`]).
//! - The identity line (magic, version, layout, capacity, pid) is plain data
//!   that any process of the same user can overwrite: it is read with `pread`
//!   into a copy, checked, and never referenced in the mapping;
//!   [`MappedFile::words`] lends only the atomics.
//! - A pid in a file outlives its process and may be reused: liveness is the
//!   writer's OFD lock, which the kernel drops when the process dies; the pid
//!   is only named in messages.
//! - `MAP_SHARED` versus `MAP_PRIVATE`: only a shared mapping writes through to
//!   the file and shows other processes' stores; a private one is a
//!   copy-on-write snapshot (and memmap2's anonymous maps are private, which is
//!   why `mmap-anon` asks nix for `MAP_SHARED | MAP_ANONYMOUS`).
//! - `msync` is about the disk, not about other processes: a store is visible
//!   to every mapping of the file at once, through the page cache. Without
//!   `--sync` the kernel writes dirty pages back in its own time (about 30 s),
//!   which is enough to survive a crash of the *processes*, not of the machine.
//! - memmap2's `Mmap`/`MmapMut` deref to `&[u8]`/`&mut [u8]`, a promise that
//!   nothing else changes the bytes — untrue of a mapping another process
//!   writes. `MmapRaw` hands out pointers only; shared words are atomics.
//! - The header's words are native-endian: the file is for one machine's processes.

pub mod anon;
pub mod log;
pub mod ring_file;
pub mod sigbus;

use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};
use std::time::Duration;

use ipc_common::error::{Context, Error, Exit, Result};
use ipc_common::paths::{self, check_ours, expect_kind, remove_if_same};
use ipc_common::ring::Line;
use ipc_common::wait::{Deadline, pause};
use memmap2::{Advice, MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{
    FallocateFlags, FcntlArg, Flock, FlockArg, OFlag, RenameFlags, fallocate, fcntl, open,
    renameat2,
};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::sys::uio::pread;
use nix::unistd::{ftruncate, getpid, unlink};

/// The mechanism's name in messages.
pub const MECH: &str = "mmap";
/// File name of the mapped file in the private directory.
pub const FILE_NAME: &str = "mmap.log";
/// The first eight bytes of every file made here.
pub const MAGIC: [u8; 8] = *b"IPCMMAP\0";
/// Layout version in the header; a reader refuses any other.
pub const VERSION: u32 = 1;
/// Bytes before the data: the header, padded to one 4 KiB page.
pub const HEADER_LEN: usize = 4096;
/// Data bytes of a log unless `--capacity` says otherwise: 64 MiB (`fallocate`
/// reserves them: on a tmpfs `XDG_RUNTIME_DIR`, that is memory).
pub const DEFAULT_CAPACITY: usize = 64 << 20;
/// Ring bytes of `mmap-anon` unless `--ring` says otherwise.
pub const DEFAULT_RING: usize = 1 << 20;
/// Smallest `--capacity` or `--ring`.
pub const MIN_CAPACITY: usize = 4096;
/// Permissions of a new file: owner read and write only.
pub const FILE_MODE: Mode = Mode::S_IRUSR.union(Mode::S_IWUSR);
/// How often a reader looks again for a file that does not exist yet.
pub const OPEN_RETRY: Duration = Duration::from_millis(20);
/// Times a side with nothing to do looks again before it sleeps on the futex:
/// a few microseconds, enough to catch a peer that is mid-stream without a
/// wake-up (~25 µs here), and nothing while idle (measured on streaming
/// pairs: 200 was as fast as 0 or 2000, or faster).
pub const SPIN: u32 = 200;
/// The byte of the file whose OFD write lock the writer holds while it lives
/// (a record lock: it locks no data, it only says "the writer is here").
pub const WRITER_LOCK_BYTE: i64 = 0;
/// The byte whose OFD write lock a ring's one reader holds while it lives.
pub const READER_LOCK_BYTE: i64 = 1;

/// What follows the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Frames appended back to back, never overwritten ([`log`]).
    Log,
    /// The SPSC ring of [`ipc_common::ring`] ([`ring_file`]).
    Ring,
}

impl Layout {
    fn code(self) -> u32 {
        match self {
            Layout::Log => 1,
            Layout::Ring => 2,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Layout::Log),
            2 => Some(Layout::Ring),
            _ => None,
        }
    }

    /// "log" or "ring".
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Layout::Log => "log",
            Layout::Ring => "ring",
        }
    }
}

/// The header's first line: written once, before the file gets its name, and
/// read back only with `pread` (see the module's Pitfalls).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: u32,
    /// [`Layout`] code: 1 log, 2 ring.
    pub layout: u32,
    /// Data bytes after the header (a ring's include its control block).
    pub capacity: u64,
    /// The writer's process id, for messages (liveness is its lock on
    /// [`WRITER_LOCK_BYTE`]: a pid may be reused).
    pub writer_pid: i32,
    /// Zero.
    pub reserved: u32,
}

/// The log's words, stored by the writer.
#[repr(C)]
#[derive(Debug)]
pub struct LogWords {
    /// Data bytes holding whole frames; stored with `Release` after them.
    pub committed: AtomicU64,
    /// 1 once the writer has finished: stored with `Release` after the
    /// `committed` that covers its end frame.
    pub closed: AtomicU32,
    /// Futex word the writer bumps to wake sleeping readers (the ring's data bell).
    pub bell: AtomicU32,
}

/// The readers' words.
#[repr(C)]
#[derive(Debug)]
pub struct ReaderWords {
    /// 1 while a reader may be asleep on [`LogWords::bell`] (log layout).
    pub waiting: AtomicU32,
    /// The process id of the ring's one reader, once it has come (ring
    /// layout; for messages: liveness is its lock on [`READER_LOCK_BYTE`]).
    pub ring_reader: AtomicI32,
    /// Futex word the ring's reader bumps when it frees room (ring layout).
    pub room_bell: AtomicU32,
}

/// The words writer and readers share, all atomics: what [`MappedFile::words`] lends.
#[repr(C)]
#[derive(Debug)]
pub struct Words {
    /// Stored by the writer.
    pub log: Line<LogWords>,
    /// Stored by readers.
    pub readers: Line<ReaderWords>,
}

/// The header at offset 0 of the file; one cache line per writer.
///
/// A layout, never a reference: the identity line is plain data.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    /// Written once at creation.
    pub id: Line<Identity>,
    /// The shared atomics.
    pub words: Words,
}

const _: () = assert!(size_of::<Header>() <= HEADER_LEN && HEADER_LEN % 64 == 0);

/// Offset in the file of [`LogWords::committed`] (for tools and tests that `pread` it).
pub const COMMITTED_AT: usize =
    offset_of!(Header, words) + offset_of!(Words, log) + offset_of!(LogWords, committed);
/// Offset in the file of [`LogWords::closed`].
pub const CLOSED_AT: usize =
    offset_of!(Header, words) + offset_of!(Words, log) + offset_of!(LogWords, closed);
/// Offset in the file of [`ReaderWords::ring_reader`].
pub const RING_READER_AT: usize =
    offset_of!(Header, words) + offset_of!(Words, readers) + offset_of!(ReaderWords, ring_reader);
/// Offset in the file of [`Identity::writer_pid`].
pub const WRITER_PID_AT: usize = offset_of!(Header, id) + offset_of!(Identity, writer_pid);
/// Offset in the file of [`Identity::version`].
pub const VERSION_AT: usize = offset_of!(Header, id) + offset_of!(Identity, version);

/// What `pread` found at the start of an existing file (no mapping needed).
#[derive(Debug, Clone, Copy)]
pub struct HeaderCopy {
    /// The identity line.
    pub id: Identity,
    /// `committed` at the time of reading.
    pub committed: u64,
    /// `closed` at the time of reading.
    pub closed: bool,
}

impl HeaderCopy {
    /// The layout it names, or `None` for an unknown code.
    #[must_use]
    pub fn layout(&self) -> Option<Layout> {
        Layout::from_code(self.id.layout)
    }
}

fn what(path: &Path) -> String {
    format!("mapped file {}", path.display())
}

/// `<private dir>/mmap.log`, creating the private directory if needed.
pub fn default_path() -> Result<PathBuf> {
    Ok(paths::private_dir()?.join(FILE_NAME))
}

/// Reads the header of an open file with `pread`; `None` if the file is too short.
///
/// Fails (exit 1) on anything that is not one of ours: wrong magic, another
/// version, an unknown layout.
pub fn read_header(fd: &OwnedFd, path: &Path) -> Result<Option<HeaderCopy>> {
    let mut b = [0u8; size_of::<Header>()];
    // pread at 0: the header as the page cache holds it, copied, without mapping anything.
    let n = pread(fd, &mut b, 0).context(|| format!("pread {}", path.display()))?;
    let magic = &b[..8];
    if n >= 8 && magic != MAGIC {
        let shown: Vec<String> = magic.iter().map(|x| format!("{x:02x}")).collect();
        return Err(Error::system(format!(
            "{} is not an mmap-demo file (it starts with {} instead of \"IPCMMAP\"); refusing to touch it",
            path.display(),
            shown.join(" ")
        )));
    }
    if n < b.len() {
        return Ok(None);
    }
    let u32_at = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
    let id_at = offset_of!(Header, id);
    let id = Identity {
        magic: MAGIC,
        version: u32_at(VERSION_AT),
        layout: u32_at(id_at + offset_of!(Identity, layout)),
        capacity: u64_at(id_at + offset_of!(Identity, capacity)),
        writer_pid: i32::from_ne_bytes(u32_at(WRITER_PID_AT).to_ne_bytes()),
        reserved: 0,
    };
    if id.version != VERSION {
        return Err(Error::system(format!(
            "{} has layout version {}; this build reads version {VERSION}",
            path.display(),
            id.version
        )));
    }
    let copy = HeaderCopy { id, committed: u64_at(COMMITTED_AT), closed: u32_at(CLOSED_AT) != 0 };
    if copy.layout().is_none() {
        return Err(Error::system(format!(
            "{} has an unknown layout {}; refusing to use it",
            path.display(),
            id.layout
        )));
    }
    Ok(Some(copy))
}

/// Takes a `flock` without waiting; `Err((fd, EWOULDBLOCK))` if it conflicts.
fn lock(fd: OwnedFd, arg: FlockArg) -> std::result::Result<Flock<OwnedFd>, (OwnedFd, Errno)> {
    // flock: shared by every writer and reader of the file while they use it,
    // so `ipc-clean` and `--force` can tell a file in use from a leftover.
    Flock::lock(fd, arg)
}

/// The `struct flock` for one byte of the file (`l_pid` 0, as OFD locks require).
fn one_byte(kind: i32, byte: i64) -> libc::flock {
    // SAFETY: libc::flock is plain old data; all-zero is a valid value
    // (l_whence 0 is SEEK_SET).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = i16::try_from(kind).unwrap_or_default();
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

/// Takes an OFD write lock on `byte` without waiting; `Ok(false)` if another
/// open file holds it. Held until this open file is closed — by the kernel,
/// when the process dies, whatever kills it.
fn lock_byte(fd: impl AsFd, byte: i64, path: &Path) -> Result<bool> {
    let fl = one_byte(libc::F_WRLCK, byte);
    // fcntl F_OFD_SETLK: an open-file-description lock, which (unlike a
    // process-owned POSIX lock) no other descriptor of ours can drop by closing.
    match fcntl(fd, FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(Error::errno(format!("fcntl F_OFD_SETLK {} byte {byte}", path.display()), e)),
    }
}

/// Whether another open file holds a lock on `byte`: asked, not taken.
fn byte_locked(fd: impl AsFd, byte: i64, path: &Path) -> Result<bool> {
    let mut fl = one_byte(libc::F_WRLCK, byte);
    // fcntl F_OFD_GETLK: who would block a write lock on it, without taking anything.
    fcntl(fd, FcntlArg::F_OFD_GETLK(&mut fl))
        .context(|| format!("fcntl F_OFD_GETLK {} byte {byte}", path.display()))?;
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// Opens an existing path without following a link: `None` if it does not exist.
fn open_nofollow(path: &Path, flags: OFlag) -> Result<Option<OwnedFd>> {
    // open with O_NOFOLLOW: a symbolic link planted at the path fails with ELOOP.
    match open(path, flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP) => Err(Error::system(format!(
            "{} is a symbolic link; refusing to follow it",
            path.display()
        ))),
        Err(e) => Err(Error::errno(format!("open {}", path.display()), e)),
    }
}

/// Refuses a descriptor that is not a regular file of ours (checked on the open
/// file, so the path cannot be swapped between check and use).
fn check_fd(fd: &OwnedFd, path: &Path) -> Result<FileStat> {
    let st = fstat(fd).context(|| format!("fstat {}", path.display()))?;
    if paths::file_kind(&st) != SFlag::S_IFREG {
        return Err(Error::system(format!(
            "{} is not a regular file; refusing to use it",
            path.display()
        )));
    }
    check_ours(&st, &what(path))
        .map_err(|e| e.hint(format!("chmod 600 {0}, or remove it: rm {0}", path.display())))?;
    Ok(st)
}

/// Whether `path` still names the file `st` describes (it may have been
/// removed or replaced since it was opened).
fn still_named(path: &Path, st: &FileStat) -> Result<bool> {
    Ok(paths::lstat_opt(path)?
        .is_some_and(|now| (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)))
}

fn size_of_file(st: &FileStat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// A file of ours, mapped `MAP_SHARED`, with a shared `flock` held on it.
///
/// Dropping it unmaps and closes (releasing the writer's lock, for the
/// writer); the file itself stays (see the module docs).
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    id: Identity,
    /// Unregistered before the mapping goes (fields drop in order).
    _watch: sigbus::Watch,
    map: MmapRaw,
    fd: Flock<OwnedFd>,
    dev: u64,
    ino: u64,
}

impl MappedFile {
    fn map(
        path: &Path,
        fd: Flock<OwnedFd>,
        st: &FileStat,
        id: Identity,
        write: bool,
    ) -> Result<Self> {
        let total = HEADER_LEN + usize::try_from(id.capacity).unwrap_or(usize::MAX);
        let mut options = MmapOptions::new();
        options.len(total);
        // mmap MAP_SHARED: our stores reach the file, and we see everyone else's.
        let map = if write {
            options.map_raw(fd.as_raw_fd())
        } else {
            options.map_raw_read_only(fd.as_raw_fd())
        }
        .context(|| format!("mmap {} ({total} bytes)", path.display()))?;
        if Layout::from_code(id.layout) == Some(Layout::Log) {
            // madvise MADV_SEQUENTIAL: a log is written and read front to back.
            // (Left to its default read-ahead, the kernel zero-fills far ahead
            // of a writer filling fresh blocks, and writing costs 4x more here.)
            map.advise(Advice::Sequential).context(|| format!("madvise {}", path.display()))?;
        }
        let watch = sigbus::watch(map.as_ptr(), map.len())?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            id,
            _watch: watch,
            map,
            fd,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity line: our own copy, as checked when the file was made or
    /// opened (read with `pread`, never through the mapping).
    pub fn identity(&self) -> &Identity {
        &self.id
    }

    /// Log or ring.
    pub fn layout(&self) -> Layout {
        Layout::from_code(self.id.layout).unwrap_or(Layout::Log)
    }

    /// Data bytes after the header.
    pub fn capacity(&self) -> usize {
        self.map.len() - HEADER_LEN
    }

    /// The header's shared words: atomics only, so lending them is sound
    /// whatever other processes store.
    pub fn words(&self) -> &Words {
        // SAFETY: the mapping is page aligned and at least HEADER_LEN long (we
        // asked for that length), so `words` (64-byte aligned, inside the
        // header) is in it for as long as `self` lives. Words is repr(C) and
        // holds only atomics, valid for any bytes and shared with the other
        // processes only through atomic operations.
        unsafe {
            let at = self.map.as_ptr().add(offset_of!(Header, words));
            #[allow(clippy::cast_ptr_alignment)] // page-aligned base, 64-byte offset
            &*at.cast::<Words>()
        }
    }

    /// The first data byte (a pointer: other processes change what follows).
    pub fn data(&self) -> *mut u8 {
        // SAFETY: HEADER_LEN < the mapping's length, so this stays inside it.
        unsafe { self.map.as_mut_ptr().add(HEADER_LEN) }
    }

    /// `msync(MS_SYNC)` of `len` bytes at `offset` in the file: wait until the
    /// disk has them.
    pub fn sync_range(&self, offset: usize, len: usize) -> Result<()> {
        self.map.flush_range(offset, len).context(|| format!("msync {}", self.path.display()))
    }

    /// `madvise(MADV_POPULATE_WRITE)` on `len` bytes at `offset` in the file:
    /// fault the pages in, writable, in one call rather than one fault per
    /// page. A page the file no longer has is an error here, not a SIGBUS.
    pub fn prefault(&self, offset: usize, len: usize) -> Result<()> {
        let len = len.min(self.map.len().saturating_sub(offset));
        self.map
            .advise_range(Advice::PopulateWrite, offset, len)
            .context(|| format!("madvise MADV_POPULATE_WRITE {}", self.path.display()))
    }

    /// Whether the file's writer is still running: whether some open file
    /// holds the lock on [`WRITER_LOCK_BYTE`] that the writer takes before the
    /// file has its name. The kernel drops it when the writer dies, so a dead
    /// writer whose pid was reused is still dead here.
    pub fn writer_alive(&self) -> Result<bool> {
        byte_locked(self.fd.as_fd(), WRITER_LOCK_BYTE, &self.path)
    }

    /// Takes the ring reader's lock on [`READER_LOCK_BYTE`]; `Ok(false)` if
    /// another reader holds it.
    pub fn lock_reader(&self) -> Result<bool> {
        lock_byte(self.fd.as_fd(), READER_LOCK_BYTE, &self.path)
    }

    /// Whether the ring's reader still holds its lock (see [`MappedFile::writer_alive`]).
    pub fn reader_alive(&self) -> Result<bool> {
        byte_locked(self.fd.as_fd(), READER_LOCK_BYTE, &self.path)
    }

    /// What happened under the mapping, if anything: the file is shorter than
    /// the mapping (`fstat`: "file truncated under the mapping"), or it has its
    /// size but a page faulted anyway (the [`sigbus`] handler patched a SIGBUS:
    /// an I/O error, or a full disk under a sparse file). `Err` if `fstat` fails.
    pub fn damage(&self) -> Result<Option<Error>> {
        const SHORTENED: &str =
            "another process shortened it (truncate); what it held past the new end is lost";
        const UNREADABLE: &str =
            "look for I/O errors in the kernel log (dmesg), and for free space on its file system";
        let path = self.path.display();
        let st = fstat(self.fd.as_fd()).context(|| format!("fstat {path}"))?;
        let (size, total) = (size_of_file(&st), self.map.len() as u64);
        if size < total {
            let what = format!("it has {size} of its {total} bytes");
            let err = Error::system(format!("{path}: file truncated under the mapping ({what})"));
            return Ok(Some(err.hint(SHORTENED)));
        }
        Ok(sigbus::fault_code().map(|code| {
            Error::system(format!(
                "{path}: SIGBUS on a page of the mapping (I/O error or disk full): si_code {code}, \
                 and the file still has all its {total} bytes"
            ))
            .hint(UNREADABLE)
        }))
    }

    /// `Err` if the file was truncated or a page of it faulted; for each quiet
    /// tick of a waiting side.
    pub fn check_intact(&self) -> Result<()> {
        self.damage()?.map_or(Ok(()), Err)
    }

    /// `err`, or the damage that caused it: bytes from lost pages read as
    /// zeros, so they surface first as a bad frame, a lost peer, or `EFAULT`.
    #[must_use]
    pub fn explain(&self, err: Error) -> Error {
        if matches!(err.exit(), Exit::Interrupted(_)) {
            return err;
        }
        match self.damage() {
            Ok(Some(damage)) => damage,
            // No damage, or fstat failed: the error as it came is the best we know.
            Ok(None) | Err(_) => err,
        }
    }

    /// Removes the file, if the path still names this very file.
    pub fn remove(&self) -> bool {
        remove_if_same(&self.path, self.dev, self.ino)
    }
}

/// The writer's temporary file: removed on drop until it has its name.
struct Pending<'p> {
    path: &'p Path,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = unlink(self.path);
        }
    }
}

/// Creates the file at `path` (see the module's Lifecycle, steps 1–4): a
/// `layout` file with `capacity` data bytes, mapped read-write, with the
/// writer's lock held.
///
/// A file already at the path is examined, never followed or overwritten:
/// a link, another file type, a file not ours or open to others, or one that
/// is not an mmap-demo file is refused; a file of ours in use (a writer or
/// reader holds its lock) is refused; a leftover of ours is named with what to
/// do about it, or removed with `force`.
pub fn create(path: &Path, layout: Layout, capacity: usize, force: bool) -> Result<MappedFile> {
    let total = HEADER_LEN
        .checked_add(capacity)
        .and_then(|t| i64::try_from(t).ok())
        .ok_or_else(|| Error::usage(format!("a capacity of {capacity} bytes is too large")))?;
    while check_existing(path, force)? {}
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", getpid()));

    // 1. open O_CREAT|O_EXCL|O_NOFOLLOW, 0600: a new file, only ours; never a link.
    let flags =
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = open(&tmp, flags, FILE_MODE).context(|| format!("open {}", tmp.display()))?;
    let mut pending = Pending { path: &tmp, armed: true };
    let fd = lock(fd, FlockArg::LockSharedNonblock)
        .map_err(|(_, e)| Error::errno(format!("flock {}", tmp.display()), e))?;
    //    fcntl F_OFD_SETLK on byte 0: "the writer is alive", before anyone can see the file.
    if !lock_byte(fd.as_fd(), WRITER_LOCK_BYTE, &tmp)? {
        return Err(Error::system(format!("{} is locked by someone else", tmp.display())));
    }
    // 2. fallocate: size the file and reserve its blocks now, so a full disk is
    //    an error here rather than a SIGBUS at some store later.
    match fallocate(fd.as_fd(), FallocateFlags::empty(), 0, total) {
        Ok(()) => {}
        // A file system without it: a plain size, sparse (blocks come on first store).
        Err(Errno::EOPNOTSUPP) => {
            ftruncate(fd.as_fd(), total).context(|| format!("ftruncate {}", tmp.display()))?;
        }
        Err(e) => {
            return Err(Error::errno(format!("fallocate {} ({total} bytes)", tmp.display()), e)
                .hint("choose a smaller --capacity or --ring, or another --path"));
        }
    }
    let st = check_fd(&fd, &tmp)?;
    let id = Identity {
        magic: MAGIC,
        version: VERSION,
        layout: layout.code(),
        capacity: capacity as u64,
        writer_pid: getpid().as_raw(),
        reserved: 0,
    };
    // 3. mmap MAP_SHARED, and fill in the header (the data is already zeros).
    let file = MappedFile::map(path, fd, &st, id, true)?;
    #[allow(clippy::cast_ptr_alignment)] // mmap returns a page-aligned address
    let identity = file.map.as_mut_ptr().cast::<Identity>();
    // SAFETY: the mapping is page aligned and longer than the identity line;
    // nobody else can have mapped the file yet: it has no name but ours.
    unsafe { identity.write(id) };
    if layout == Layout::Ring {
        // SAFETY: the data area is inside the mapping, 64-byte aligned
        // (HEADER_LEN is), shared with nobody yet, and lives as long as `file`.
        unsafe { ipc_common::ring::init(file.data(), capacity)? };
    }
    // 4. renameat2 RENAME_NOREPLACE: the file appears under its name complete,
    //    and nothing already there is replaced.
    match renameat2(
        nix::fcntl::AT_FDCWD,
        &tmp,
        nix::fcntl::AT_FDCWD,
        path,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => pending.armed = false,
        Err(Errno::EEXIST) => {
            return Err(Error::system(format!(
                "{} appeared while we made ours; refusing to replace it",
                path.display()
            )));
        }
        Err(e) => {
            return Err(Error::errno(format!("renameat2 {} {}", tmp.display(), path.display()), e));
        }
    }
    Ok(file)
}

/// Examines what is at the writer's path: `Ok(false)` if nothing (go on),
/// `Ok(true)` if a leftover was removed (`force`; look again), or the refusal.
fn check_existing(path: &Path, force: bool) -> Result<bool> {
    let Some(st) = expect_kind(path, SFlag::S_IFREG, "mapped file")? else {
        return Ok(false);
    };
    check_ours(&st, &what(path))
        .map_err(|e| e.hint(format!("chmod 600 {0}, or remove it: rm {0}", path.display())))?;
    let Some(fd) = open_nofollow(path, OFlag::O_RDONLY)? else {
        return Ok(true);
    };
    let st = check_fd(&fd, path)?;
    let Some(header) = read_header(&fd, path)? else {
        return Err(Error::system(format!(
            "{} exists and is too short to be an mmap-demo file; refusing to touch it",
            path.display()
        ))
        .hint(format!("remove it if it is yours: rm {}", path.display())));
    };
    // flock LOCK_EX|LOCK_NB: only succeeds if no writer or reader holds it.
    let held = match lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, Errno::EWOULDBLOCK)) => {
            return Err(Error::system(format!(
                "{} is in use by a running mmap-writer or mmap-reader",
                what(path)
            ))
            .hint("wait for it to finish, or pick another --path"));
        }
        Err((_, e)) => return Err(Error::errno(format!("flock {}", path.display()), e)),
    };
    let state = if header.closed { "finished" } else { "unfinished: its writer did not end it" };
    if !force {
        let (what, replay) = match header.layout() {
            Some(Layout::Ring) => (format!("a ring from an earlier run ({state})"), String::new()),
            _ => (
                format!(
                    "a log from an earlier run ({} bytes committed, {state})",
                    header.committed
                ),
                format!("replay it: mmap-reader --path {} --replay; ", path.display()),
            ),
        };
        return Err(Error::system(format!("{} already exists: {what}", path.display()))
            .hint(format!("{replay}remove it: rm {} (or add --force)", path.display())));
    }
    // unlink while still holding LOCK_EX: a reader that opened it meanwhile
    // cannot lock it until it is gone, and then finds its path names another file.
    let removed = remove_if_same(path, st.st_dev, st.st_ino);
    drop(held);
    if !removed {
        return Err(Error::system(format!("could not remove {}", path.display())));
    }
    Ok(true)
}

/// How a reader opens the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Follow a writer: read-write (a reader stores its "waiting" flag, and a
    /// ring's reader its tail and its lock).
    Follow,
    /// Read the file again, read-only.
    Replay,
}

/// Waits for the file at `path` to exist (up to `timeout`; `on_wait` runs once
/// if it does not yet), checks it, and maps it.
pub fn open_file(
    path: &Path,
    access: Access,
    timeout: Option<Duration>,
    mut on_wait: impl FnMut(),
) -> Result<MappedFile> {
    let deadline = Deadline::after(timeout);
    let flags = match access {
        Access::Follow => OFlag::O_RDWR,
        Access::Replay => OFlag::O_RDONLY,
    };
    let mut waited = false;
    let (fd, st) = loop {
        // lstat first: refuse a link or another file type without opening it.
        if let Some(st) = expect_kind(path, SFlag::S_IFREG, "mapped file")? {
            check_ours(&st, &what(path)).map_err(|e| {
                e.hint(format!("chmod 600 {0}, or remove it: rm {0}", path.display()))
            })?;
            if let Some(fd) = open_nofollow(path, flags)? {
                match lock(fd, FlockArg::LockSharedNonblock) {
                    Ok(fd) => {
                        let st = check_fd(&fd, path)?;
                        // Still the file at the path? A writer's --force may have
                        // unlinked it between our open and our lock: look again.
                        if still_named(path, &st)? {
                            break (fd, st);
                        }
                    }
                    // A writer's --force is looking at it: look again shortly.
                    Err((_, Errno::EWOULDBLOCK)) => {}
                    Err((_, e)) => {
                        return Err(Error::errno(format!("flock {}", path.display()), e));
                    }
                }
            }
        }
        if deadline.expired() {
            let secs = timeout.unwrap_or_default().as_secs();
            return Err(Error::peer_lost(format!(
                "no mmap-writer created {} within {secs} s (--timeout)",
                path.display()
            ))
            .hint("start mmap-writer"));
        }
        if !waited {
            waited = true;
            on_wait();
        }
        pause(&deadline, OPEN_RETRY)?;
    };
    let Some(header) = read_header(&fd, path)? else {
        return Err(Error::system(format!(
            "{} is {} bytes, too short for an mmap-demo header; refusing to use it",
            path.display(),
            st.st_size
        )));
    };
    let total = (HEADER_LEN as u64).saturating_add(header.id.capacity);
    let size = size_of_file(&st);
    if size < total {
        return Err(Error::system(format!(
            "{} is truncated: {size} bytes, where its header says {total}",
            path.display()
        ))
        .hint(format!("it cannot be read safely; remove it: rm {}", path.display())));
    }
    if size > total || usize::try_from(total).is_err() {
        return Err(Error::system(format!(
            "{} is {size} bytes, where its header says {total}; refusing to use it",
            path.display()
        )));
    }
    MappedFile::map(path, fd, &st, header.id, access == Access::Follow)
}
