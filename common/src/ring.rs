//! A single-producer, single-consumer ring of frames in shared memory.
//!
//! Any region both processes map — a POSIX or System V shared memory segment, a
//! memory-mapped file — can carry frames through this ring with no system call
//! per frame in the steady state and no copy on the reader's side: the writer
//! copies each frame in once, the reader checks it in place and lends it out.
//!
//! ```text
//! region:  [ Control: head | tail | flags, one cache line each ][ data: capacity bytes ... ]
//! data:    ... [frame 24+len, padded to 8] [frame] [WRAP] (unused to the end)
//!          ^tail % capacity (reader)              ^head % capacity (writer)
//! ```
//!
//! `head` and `tail` count bytes since the start and only grow; the bytes in
//! use are `head - tail`. The writer owns `head`, the reader owns `tail`.
//!
//! # Protocol
//! 1. The writer copies a frame into `[head, head + len)`, then stores the new
//!    `head` with `Release`: whoever loads it with `Acquire` sees the bytes.
//! 2. The reader loads `head` with `Acquire`, checks the frame in place, hands it
//!    out, and on its next call stores `tail` past it with `Release` (the
//!    writer, loading `tail` with `Acquire`, may then reuse the bytes).
//! 3. A frame never wraps: if it does not fit before the end, the writer puts a
//!    `WRAP` marker there and starts again at 0.
//! 4. A side with nothing to do spins `spin` times, then raises its "waiting"
//!    flag, looks once more, and sleeps on a [`Doorbell`] for at most a tick. The
//!    other side rings the bell only if it sees the flag up: a sequentially
//!    consistent fence between each side's store and its load guarantees that
//!    at least one of them notices the other, so no wake-up is lost, and none is
//!    paid for while both are busy.
//! 5. Every quiet tick the sleeper checks the stop signal and that its peer is
//!    alive ([`Peer`]): a dead writer ends the stream once the ring is drained;
//!    a dead reader is "reader went away".
//!
//! Steps 1–4 are model checked, every interleaving and store order, with each
//! fence and ordering above removed in turn to show what it prevents:
//! `faults/tests/ring_model.rs`.
//!
//! # Pitfalls
//! - The region is shared with another process that may be buggy or hostile:
//!   every header is checked like bytes from a socket (magic, length within the
//!   ring and within the published data) before anything is trusted.
//! - Frames are lent in place: the writer must not touch `[tail, head)`, and does
//!   not, by the protocol above; a writer that did would only produce a frame
//!   that fails its checksum.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

use crate::driver::{FrameSink, FrameSource};
use crate::error::{Error, Result};
use crate::frame::{Frame, HEADER_LEN, Header};
use crate::signals;
use crate::wait::{Deadline, TICK, stalled};

/// The bytes that mark "the rest up to the end is unused; go on at 0".
const WRAP: [u8; 8] = *b"WRAP\0\0\0\0";
/// Records are padded to this, so every header (and the marker) is aligned.
const ALIGN: usize = 8;

/// A value on its own cache line, so the writer's and reader's stores do not
/// fight over one line.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Line<T>(pub T);

/// The ring's shared control block, at the start of the region it manages.
#[repr(C)]
#[derive(Debug)]
pub struct Control {
    /// Bytes written so far; stored by the writer only (`Release`).
    pub head: Line<AtomicU64>,
    /// Bytes consumed so far; stored by the reader only (`Release`).
    pub tail: Line<AtomicU64>,
    /// Sleep flags: the reader waits for data, the writer waits for room.
    pub flags: Line<Flags>,
}

/// The flags a sleeping side raises.
#[repr(C)]
#[derive(Debug)]
pub struct Flags {
    /// 1 while the reader may be asleep waiting for data.
    pub reader_waiting: AtomicU32,
    /// 1 while the writer may be asleep waiting for room.
    pub writer_waiting: AtomicU32,
    /// 1 once the writer has sent its end frame and let go.
    pub closed: AtomicU32,
}

/// Bytes the control block takes before the data.
pub const CONTROL_LEN: usize = std::mem::size_of::<Control>();

/// What wakes a sleeping side: a semaphore, a futex...
pub trait Doorbell {
    /// Called before the last look: a futex remembers the count it would wait on.
    fn prepare(&self) -> u32 {
        0
    }
    /// Sleeps until rung or `timeout`; `Ok(true)` if it was rung.
    fn wait(&self, ticket: u32, timeout: Duration) -> Result<bool>;
    /// Wakes the other side.
    fn ring(&self) -> Result<()>;
    /// Takes back a ring nobody slept for (a semaphore's extra count), if any.
    fn drain(&self) -> Result<()> {
        Ok(())
    }
}

/// Whether the other process is still there.
pub trait Peer {
    /// `Ok(false)` once it is gone.
    fn alive(&mut self) -> Result<bool>;
}

/// Who may sleep on one waiting flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiters {
    /// One sleeper (the other end of a ring): it lowers the flag itself when
    /// it finds what it waited for, and takes back a ring it did not sleep for.
    One,
    /// Several sleepers share the flag (the readers of a log): a waiter leaves
    /// it up, since it may be another's request too; the waker lowers it.
    Many,
}

/// How long a side is willing to wait.
#[derive(Debug, Clone, Copy, Default)]
pub struct Patience {
    /// Spins before raising the flag and sleeping (`--spin`): latency for CPU.
    pub spin: u32,
    /// Longest wait with no progress before giving up on a live but stopped
    /// or stuck peer (`--timeout` mid-stream); `None` waits as long as it takes.
    pub stall: Option<Duration>,
}

/// Waits until `ready()` holds (steps 4 and 5 of the protocol): spins
/// `patience.spin` times, then raises `flag`, looks once more, and sleeps on
/// `bell` a tick at a time, checking the stop signal and `peer` after each
/// quiet tick. `Ok(false)` if the peer is gone and `ready()` still does not
/// hold; peer lost if `patience.stall` passes first (`who` names the peer).
///
/// The other side publishes, then calls [`wake_if_waiting`]: a sequentially
/// consistent fence on each side between its store and its load makes sure at
/// least one of them sees the other's, so no wake-up is lost.
pub fn sleep_until(
    flag: &AtomicU32,
    waiters: Waiters,
    bell: &impl Doorbell,
    peer: &mut impl Peer,
    patience: Patience,
    who: &str,
    ready: &mut impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let (spin, give_up) = (patience.spin, Deadline::after(patience.stall));
    let mut spins = 0;
    loop {
        if ready()? {
            return Ok(true);
        }
        if spins < spin {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        let ticket = bell.prepare();
        // Raise the flag, fence, look again: pairs with the other side's
        // publish, fence, look at the flag.
        flag.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if ready()? {
            if waiters == Waiters::One && flag.swap(0, Ordering::AcqRel) == 0 {
                bell.drain()?; // the other side rang for a sleep we skipped
            }
            return Ok(true);
        }
        if !bell.wait(ticket, TICK)? {
            signals::check()?;
            if !peer.alive()? {
                return ready();
            }
            if give_up.expired() && !ready()? {
                return Err(stalled(who, patience.stall.unwrap_or_default()));
            }
        }
    }
}

/// The waker's half (after publishing with a store): fence, then ring `bell`
/// only if the flag says someone may sleep — and lower it, once.
pub fn wake_if_waiting(flag: &AtomicU32, bell: &impl Doorbell) -> Result<()> {
    fence(Ordering::SeqCst);
    if flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::AcqRel) != 0 {
        bell.ring()?;
    }
    Ok(())
}

/// The largest record (frame plus padding) a ring of `capacity` bytes takes.
#[must_use]
pub fn max_frame_len(capacity: usize) -> usize {
    capacity
}

fn record_len(frame_len: usize) -> usize {
    frame_len.div_ceil(ALIGN) * ALIGN
}

/// Splits a region into the control block and the data, checking size and
/// alignment.
///
/// # Safety
/// `base..base+len` must be a mapping shared with the peer, valid for the
/// lifetime `'r`, and used by nothing but this ring and its peer's.
unsafe fn split<'r>(base: *mut u8, len: usize) -> Result<(&'r Control, *mut u8, usize)> {
    if base.align_offset(64) != 0 {
        return Err(Error::system("ring region is not aligned to 64 bytes"));
    }
    let capacity = len.saturating_sub(CONTROL_LEN) / ALIGN * ALIGN;
    if capacity < 64 {
        return Err(Error::system(format!("ring region of {len} bytes is too small")));
    }
    #[allow(clippy::cast_ptr_alignment)] // alignment checked just above
    // SAFETY: aligned (checked), inside the region (len >= CONTROL_LEN), and the
    // control block holds only atomics, valid for any bit pattern.
    let control = unsafe { &*base.cast::<Control>() };
    // SAFETY: CONTROL_LEN < len, so the data pointer stays inside the region.
    let data = unsafe { base.add(CONTROL_LEN) };
    Ok((control, data, capacity))
}

/// Zeroes a fresh ring's control block; returns the data capacity.
///
/// # Safety
/// As for [`Producer::attach`]; and no peer may be using the ring yet.
pub unsafe fn init(base: *mut u8, len: usize) -> Result<usize> {
    // SAFETY: the caller's contract.
    let (control, _, capacity) = unsafe { split(base, len)? };
    control.head.0.store(0, Ordering::Relaxed);
    control.tail.0.store(0, Ordering::Relaxed);
    control.flags.0.reader_waiting.store(0, Ordering::Relaxed);
    control.flags.0.writer_waiting.store(0, Ordering::Relaxed);
    control.flags.0.closed.store(0, Ordering::Release);
    Ok(capacity)
}

/// The writing end of a ring.
#[derive(Debug)]
pub struct Producer<'r, D: Doorbell, P: Peer> {
    control: &'r Control,
    data: *mut u8,
    capacity: usize,
    head: u64,
    tail: u64,
    /// Rung when data is published and the reader waits.
    data_bell: D,
    /// Waited on when the ring is full.
    room_bell: D,
    peer: P,
    patience: Patience,
}

impl<D: Doorbell, P: Peer> Producer<'_, D, P> {
    /// The writer's side of the ring at `base..base+len`.
    ///
    /// # Safety
    /// `base..base+len` is a mapping shared with the reader, valid for `'r`,
    /// 64-byte aligned, initialised by [`init`], and written by no other writer.
    pub unsafe fn attach(
        base: *mut u8,
        len: usize,
        data_bell: D,
        room_bell: D,
        peer: P,
        spin: u32,
    ) -> Result<Self> {
        // SAFETY: the caller's contract.
        let (control, data, capacity) = unsafe { split(base, len)? };
        let head = control.head.0.load(Ordering::Acquire);
        let tail = control.tail.0.load(Ordering::Acquire);
        let patience = Patience { spin, stall: None };
        Ok(Producer { control, data, capacity, head, tail, data_bell, room_bell, peer, patience })
    }

    /// Data bytes in the ring: the largest frame it takes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Gives up (peer lost) when the ring stays full for `stall` (a frozen
    /// reader); `None`, the default, waits as long as it takes.
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.patience.stall = stall;
        self
    }

    /// Publishes `head` and wakes the reader if it may be asleep.
    fn publish(&mut self) -> Result<()> {
        self.control.head.0.store(self.head, Ordering::Release);
        wake_if_waiting(&self.control.flags.0.reader_waiting, &self.data_bell)
    }

    fn free(&self) -> usize {
        self.capacity - (self.head - self.tail) as usize
    }

    /// Waits until `need` bytes are free.
    fn wait_room(&mut self, need: usize) -> Result<()> {
        if self.free() >= need {
            return Ok(());
        }
        let (control, capacity, head) = (self.control, self.capacity, self.head);
        let tail = &mut self.tail;
        let mut room = || {
            *tail = control.tail.0.load(Ordering::Acquire);
            Ok(capacity - (head - *tail) as usize >= need)
        };
        let flag = &control.flags.0.writer_waiting;
        let (bell, patience) = (&self.room_bell, self.patience);
        if sleep_until(flag, Waiters::One, bell, &mut self.peer, patience, "the reader", &mut room)?
        {
            return Ok(());
        }
        Err(Error::peer_lost("reader went away"))
    }

    /// Marks the stream finished (after the end frame): a file-backed ring
    /// read back later tells a clean end from a crash by it.
    pub fn close(&mut self) -> Result<()> {
        self.control.flags.0.closed.store(1, Ordering::Release);
        self.publish()
    }
}

impl<D: Doorbell, P: Peer> FrameSink for Producer<'_, D, P> {
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        let len = HEADER_LEN + payload.len();
        let rec = record_len(len);
        if rec > self.capacity {
            return Err(Error::usage(format!(
                "a frame of {len} bytes is larger than the ring ({} bytes)",
                self.capacity
            )));
        }
        let pos = (self.head % self.capacity as u64) as usize;
        let to_end = self.capacity - pos;
        if rec > to_end {
            // Does not fit before the end: mark the rest unused, go on at 0.
            self.wait_room(to_end)?;
            // SAFETY: [pos, pos + 8) is inside the data (to_end >= 8, as both
            // pos and capacity are multiples of 8) and free, so the reader
            // does not read it until we publish.
            unsafe { std::ptr::copy_nonoverlapping(WRAP.as_ptr(), self.data.add(pos), WRAP.len()) };
            self.head += to_end as u64;
            self.publish()?;
            return self.send(header, payload);
        }
        self.wait_room(rec)?;
        // SAFETY: [pos, pos + len) is inside the data (rec <= to_end) and free:
        // the reader is past it and does not look until `head` says so.
        unsafe {
            let at = self.data.add(pos);
            std::ptr::copy_nonoverlapping(header.to_bytes().as_ptr(), at, HEADER_LEN);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), at.add(HEADER_LEN), payload.len());
        }
        self.head += rec as u64;
        self.publish()
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub struct Consumer<'r, D: Doorbell, P: Peer> {
    control: &'r Control,
    data: *const u8,
    capacity: usize,
    head: u64,
    tail: u64,
    /// Bytes of the frame last handed out, released on the next call.
    lent: u64,
    data_bell: D,
    room_bell: D,
    peer: P,
    patience: Patience,
    max_frame: u32,
}

impl<D: Doorbell, P: Peer> Consumer<'_, D, P> {
    /// The reader's side of the ring at `base..base+len`.
    ///
    /// # Safety
    /// As for [`Producer::attach`], with "read by no other reader".
    pub unsafe fn attach(
        base: *mut u8,
        len: usize,
        data_bell: D,
        room_bell: D,
        peer: P,
        spin: u32,
        max_frame: u32,
    ) -> Result<Self> {
        // SAFETY: the caller's contract.
        let (control, data, capacity) = unsafe { split(base, len)? };
        let head = control.head.0.load(Ordering::Acquire);
        let tail = control.tail.0.load(Ordering::Acquire);
        let patience = Patience { spin, stall: None };
        Ok(Consumer {
            control,
            data,
            capacity,
            head,
            tail,
            lent: 0,
            data_bell,
            room_bell,
            peer,
            patience,
            max_frame,
        })
    }

    /// Gives up (peer lost) when nothing arrives for `stall` once the stream
    /// has begun (a frozen writer); `None`, the default, waits as long as it takes.
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.patience.stall = stall;
        self
    }

    /// Whether the writer set the closed flag (after its end frame).
    pub fn closed(&self) -> bool {
        self.control.flags.0.closed.load(Ordering::Acquire) != 0
    }

    /// Releases `bytes` to the writer and wakes it if it may be asleep.
    fn release(&mut self, bytes: u64) -> Result<()> {
        self.tail += bytes;
        self.control.tail.0.store(self.tail, Ordering::Release);
        wake_if_waiting(&self.control.flags.0.writer_waiting, &self.room_bell)
    }

    /// Waits for data; `Ok(false)` once the writer is gone and the ring empty.
    fn wait_data(&mut self) -> Result<bool> {
        let (control, tail) = (self.control, self.tail);
        let head = &mut self.head;
        let mut data = || {
            *head = control.head.0.load(Ordering::Acquire);
            Ok(*head > tail)
        };
        // A writer that is gone may still have published frames: they are ours to read.
        let flag = &control.flags.0.reader_waiting;
        // The stall applies once the stream has begun: before the first frame,
        // the writer's coming is the peer's business (`--timeout` for the first).
        let patience =
            if tail > 0 { self.patience } else { Patience { stall: None, ..self.patience } };
        sleep_until(
            flag,
            Waiters::One,
            &self.data_bell,
            &mut self.peer,
            patience,
            "the writer",
            &mut data,
        )
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::bad_data(format!("ring at byte {}: {what}", self.tail))
    }
}

impl<D: Doorbell, P: Peer> FrameSource for Consumer<'_, D, P> {
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        if self.lent > 0 {
            let lent = std::mem::take(&mut self.lent);
            self.release(lent)?;
        }
        loop {
            if self.head <= self.tail && !self.wait_data()? {
                return Ok(None);
            }
            let pos = (self.tail % self.capacity as u64) as usize;
            let to_end = self.capacity - pos;
            let published = (self.head - self.tail) as usize;
            if published < ALIGN.min(to_end) {
                return Err(self.corrupt("published data ends inside a record"));
            }
            // SAFETY: [pos, pos + 8) is inside the data (pos and capacity are
            // multiples of 8) and published (checked just above): the writer
            // stored it before its Release of `head`, which we loaded with Acquire.
            let first = unsafe { std::slice::from_raw_parts(self.data.add(pos), ALIGN) };
            if first == WRAP {
                self.release(to_end as u64)?;
                continue;
            }
            if to_end < HEADER_LEN || published < HEADER_LEN {
                return Err(self.corrupt("a header crosses the end of the published data"));
            }
            // SAFETY: as above, for the 24 header bytes (checked to be inside).
            let head_bytes = unsafe { &*self.data.add(pos).cast::<[u8; HEADER_LEN]>() };
            let header = Header::parse(head_bytes, self.max_frame)
                .map_err(|e| self.corrupt(&e.to_string()))?;
            let rec = record_len(header.frame_len());
            if rec > to_end || rec > published {
                return Err(self.corrupt(&format!(
                    "a frame of {} bytes runs past the data written",
                    header.frame_len()
                )));
            }
            // SAFETY: [pos + 24, pos + frame_len) is inside the data and published
            // (both checked); the writer will not reuse it until we move `tail`
            // past it, on the next call, after the borrow below has ended.
            let payload = unsafe {
                std::slice::from_raw_parts(self.data.add(pos + HEADER_LEN), header.len as usize)
            };
            self.lent = rec as u64;
            return Ok(Some(Frame { header, payload }));
        }
    }

    fn end_reason(&self) -> &'static str {
        "the writer's process is gone, and its end frame never came"
    }
}

/// A doorbell made of a futex on a shared counter: no kernel object at all, so
/// a memory-mapped file can carry its own.
#[derive(Debug, Clone, Copy)]
pub struct FutexBell<'r> {
    word: &'r AtomicU32,
    wakes: i32,
}

impl<'r> FutexBell<'r> {
    /// A bell on `word`, which both processes see in shared memory; a ring
    /// wakes one sleeper (there is one: the other end of a ring).
    #[must_use]
    pub fn new(word: &'r AtomicU32) -> Self {
        FutexBell { word, wakes: 1 }
    }

    /// A bell that wakes every sleeper: for one writer and several readers
    /// (a log that many follow).
    #[must_use]
    pub fn broadcast(word: &'r AtomicU32) -> Self {
        FutexBell { word, wakes: i32::MAX }
    }
}

impl Doorbell for FutexBell<'_> {
    fn prepare(&self) -> u32 {
        self.word.load(Ordering::Acquire)
    }

    fn wait(&self, ticket: u32, timeout: Duration) -> Result<bool> {
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
        };
        // futex(FUTEX_WAIT): sleep while the word still holds `ticket` (a ring
        // since prepare() changed it, so we return at once), at most `timeout`.
        // Shared (not FUTEX_PRIVATE): the other process wakes us.
        // SAFETY: the word is a live AtomicU32 in shared memory; the timespec is ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word.as_ptr(),
                libc::FUTEX_WAIT,
                ticket,
                &raw const ts,
                0,
                0,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::EAGAIN => Ok(true),
            nix::errno::Errno::ETIMEDOUT | nix::errno::Errno::EINTR => Ok(false),
            e => Err(Error::errno("futex FUTEX_WAIT", e)),
        }
    }

    fn ring(&self) -> Result<()> {
        self.word.fetch_add(1, Ordering::Release);
        // futex(FUTEX_WAKE): wake the waiter(s), if any sleep.
        // SAFETY: as above; FUTEX_WAKE reads no memory but the word's address.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.word.as_ptr(),
                libc::FUTEX_WAKE,
                self.wakes,
                0,
                0,
                0,
            )
        };
        nix::errno::Errno::result(rc).map(drop).map_err(|e| Error::errno("futex FUTEX_WAKE", e))
    }
}

/// A peer check that always says "alive": for rings whose peer is watched some
/// other way (tests, or a parent that reaps its child).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysThere;

impl Peer for AlwaysThere {
    fn alive(&mut self) -> Result<bool> {
        Ok(true)
    }
}

/// A peer known by process id, checked through a pidfd: it names that very
/// process, so a recycled pid can never pass for the peer.
#[derive(Debug)]
pub struct PidPeer {
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl PidPeer {
    /// Watches `pid`; if it is already gone, [`Peer::alive`] says so at once.
    pub fn new(pid: i32) -> Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return match nix::errno::Errno::last() {
                nix::errno::Errno::ESRCH => Ok(PidPeer { pidfd: None }),
                e => Err(Error::errno(format!("pidfd_open {pid}"), e)),
            };
        }
        // SAFETY: a descriptor the kernel just returned, owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) };
        Ok(PidPeer { pidfd: Some(fd) })
    }
}

impl Peer for PidPeer {
    fn alive(&mut self) -> Result<bool> {
        use std::os::fd::AsFd;
        let Some(fd) = &self.pidfd else { return Ok(false) };
        let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
        // poll the pidfd without waiting: readable once its process has exited
        // (even before it is reaped, unlike kill(pid, 0), which a zombie passes).
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(n) => Ok(n == 0),
            Err(nix::errno::Errno::EINTR) => Ok(true),
            Err(e) => Err(Error::errno("poll pidfd", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The protocol under load, with the two ends on two threads (the demos
    //! prove it across processes: shm-demo, mmap-demo).
    use super::*;
    use crate::driver::{ReaderOpts, WriterOpts, run_reader, run_writer};
    use crate::payload::{Digest, Generator, SizeSpec};

    /// A 64-byte-aligned heap region standing in for a shared mapping.
    struct Region(Vec<Line<[u8; 64]>>);

    impl Region {
        fn new(bytes: usize) -> Self {
            Region((0..bytes.div_ceil(64)).map(|_| Line([0; 64])).collect())
        }
        fn base(&mut self) -> *mut u8 {
            self.0.as_mut_ptr().cast()
        }
    }

    struct Shared(*mut u8, usize);
    // SAFETY: the ring protocol is what makes sharing the region sound; the
    // test hands the pointer to exactly one producer and one consumer.
    unsafe impl Send for Shared {}

    fn transfer(ring_bytes: usize, size: SizeSpec, count: u64, spin: u32) {
        let mut region = Region::new(ring_bytes + 64);
        let base = region.base();
        let bells: &'static [AtomicU32; 2] =
            Box::leak(Box::new([AtomicU32::new(0), AtomicU32::new(0)]));
        // SAFETY: a fresh region, nobody attached yet.
        unsafe { init(base, ring_bytes).unwrap() };
        let shared = Shared(base, ring_bytes);
        let writer = std::thread::spawn(move || {
            let shared = shared;
            // SAFETY: the region outlives both threads (joined below).
            let mut sink = unsafe {
                Producer::attach(
                    shared.0,
                    shared.1,
                    FutexBell::new(&bells[0]),
                    FutexBell::new(&bells[1]),
                    AlwaysThere,
                    spin,
                )
            }
            .unwrap();
            let opts = WriterOpts { count: Some(count), size, seed: 5, id: 0 };
            let stdin = std::io::stdin();
            run_writer("test-writer", &mut sink, &opts, std::os::fd::AsFd::as_fd(&stdin)).unwrap()
        });
        // SAFETY: as above.
        let mut source = unsafe {
            Consumer::attach(
                base,
                ring_bytes,
                FutexBell::new(&bells[0]),
                FutexBell::new(&bells[1]),
                AlwaysThere,
                spin,
                1 << 20,
            )
        }
        .unwrap();
        let opts = ReaderOpts {
            count: Some(count),
            writers: 1,
            max_frame: 1 << 20,
            print: false,
            verify: true,
        };
        let got = run_reader("test-reader", "ring", &mut source, &opts).unwrap();
        let sent = writer.join().unwrap();
        let mut expected = Digest::new();
        let generator = Generator::new(5, size);
        for seq in 0..count {
            expected.add_bytes(generator.payload(seq));
        }
        assert_eq!(got.writers[0].tally.digest.value(), expected.value());
        assert_eq!(sent.digest.value(), expected.value());
        drop(region);
    }

    #[test]
    fn frames_cross_a_small_ring_intact_with_wraps_and_sleeps() {
        // A 4 KiB ring and frames up to 3000 bytes: wraps and full-ring sleeps galore.
        transfer(4096 + CONTROL_LEN, SizeSpec { min: 0, max: 3000 }, 20_000, 0);
    }

    #[test]
    fn spinning_first_changes_nothing_but_timing() {
        transfer(64 << 10, SizeSpec { min: 0, max: 200 }, 50_000, 1000);
    }

    #[test]
    fn a_frame_larger_than_the_ring_is_refused() {
        let mut region = Region::new(1024);
        let base = region.base();
        let word = AtomicU32::new(0);
        // SAFETY: a fresh region used by this thread only.
        let capacity = unsafe { init(base, 1024).unwrap() };
        // SAFETY: as above.
        let mut p = unsafe {
            Producer::attach(
                base,
                1024,
                FutexBell::new(&word),
                FutexBell::new(&word),
                AlwaysThere,
                0,
            )
        }
        .unwrap();
        let big = vec![0u8; capacity];
        let err = p.send(&Header::data(0, 0, &big), &big).unwrap_err();
        assert_eq!(err.exit(), crate::error::Exit::Usage);
    }

    #[test]
    fn a_corrupt_header_in_the_ring_is_bad_data_not_a_crash() {
        let mut region = Region::new(1024);
        let base = region.base();
        let word = AtomicU32::new(0);
        // SAFETY: a fresh region used by this thread only.
        unsafe { init(base, 1024).unwrap() };
        // SAFETY: as above.
        let (control, data, _) = unsafe { split(base, 1024).unwrap() };
        // A "writer" that publishes a header claiming more bytes than it wrote.
        let mut bogus = Header::data(0, 0, b"x").to_bytes();
        bogus[16..20].copy_from_slice(&500u32.to_le_bytes());
        // SAFETY: inside the data region.
        unsafe { std::ptr::copy_nonoverlapping(bogus.as_ptr(), data, HEADER_LEN) };
        control.head.0.store(32, Ordering::Release);
        // SAFETY: as above.
        let mut c = unsafe {
            Consumer::attach(
                base,
                1024,
                FutexBell::new(&word),
                FutexBell::new(&word),
                AlwaysThere,
                0,
                1 << 20,
            )
        }
        .unwrap();
        let err = c.recv().unwrap_err();
        assert_eq!(err.exit(), crate::error::Exit::BadData);
        assert!(err.message().contains("runs past the data written"), "{err}");
    }
}
