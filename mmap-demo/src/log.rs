//! The log layout: frames appended back to back after the header, never overwritten.
//!
//! ```text
//! data:  [frame 0][frame 1] ... [frame n-1][frame n, being copied in]   (zeros)
//!                                          ^committed                   ^capacity
//! ```
//!
//! # Protocol
//! 1. The writer copies a whole frame (header and payload) to `committed`,
//!    then stores the new `committed` with `Release`: a reader that loads it
//!    with `Acquire` sees every byte before it. A frame beyond `committed` —
//!    the one a killed writer was copying — is never read.
//! 2. The end frame ends the stream: a follower stops when it reads it. The
//!    `closed` flag is stored after the `committed` that covers the end frame,
//!    with `Release`, so a reader that loads `closed` with `Acquire` and finds
//!    it set then finds the end frame committed (the replay's message and
//!    `mmap-writer`'s "finished" rely on that; the follower does not look).
//! 3. A reader with nothing new waits as [`ipc_common::ring`]'s sides do (steps
//!    4 and 5 of its protocol: `sleep_until` with `Waiters::Many`): spins
//!    briefly, then raises the `waiting` flag, looks once more, and sleeps on
//!    the futex word `bell` for at most a tick. The writer, after its store, fences and looks
//!    at the flag: a reader that missed the new `committed` is one the writer
//!    sees waiting, and wakes (every sleeper: a log may have several readers).
//!    While readers keep up without sleeping, a commit costs no system call.
//! 4. Every quiet tick a sleeping reader checks the stop signal, the file
//!    (truncation), and the writer's lock ([`crate::WRITER_LOCK_BYTE`], which
//!    the kernel drops when the writer dies): a dead writer ends the stream
//!    once the committed frames are read.
//!
//! A reader trusts nothing it loads: `committed` must stay within the capacity
//! and never go back, and each frame header is copied out and checked
//! ([`ipc_common::frame::Header::parse`]) before its length is used.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_common::driver::{FrameSink, FrameSource};
use ipc_common::error::{Error, Result};
use ipc_common::frame::{Frame, HEADER_LEN as FRAME_HEADER, Header, Kind};
use ipc_common::ring::{FutexBell, Patience, Peer, Waiters, sleep_until, wake_if_waiting};

use crate::sigbus::{self, Guarded};
use crate::{HEADER_LEN, MappedFile, SPIN};

fn full(file: &MappedFile, committed: u64, need: u64) -> Error {
    Error::system(format!(
        "log full: use --capacity or --ring ({} has room for {} bytes of frames, {committed} are used, the next frame needs {need})",
        file.path().display(),
        file.capacity()
    ))
}

/// The writing end of a log.
#[derive(Debug)]
pub struct LogSink<'m> {
    file: &'m MappedFile,
    data: *mut u8,
    capacity: u64,
    committed: u64,
    /// Data bytes faulted in ahead of the writer so far.
    prefaulted: u64,
    sync: bool,
}

/// How far ahead the writer faults pages in, in one `madvise` each time.
pub const PREFAULT: u64 = 2 << 20;

impl<'m> LogSink<'m> {
    /// Appends to `file`, a fresh log made by [`crate::create`]; with `sync`,
    /// each commit waits for the disk (`msync`).
    #[must_use]
    pub fn new(file: &'m MappedFile, sync: bool) -> Self {
        let committed = file.words().log.0.committed.load(Ordering::Acquire);
        let capacity = file.capacity() as u64;
        LogSink { file, data: file.data(), capacity, committed, prefaulted: committed, sync }
    }

    /// Bytes committed so far.
    #[must_use]
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Wakes the readers if one may be asleep: the waker's half of the ring's
    /// protocol (its `Producer::publish`, after the store).
    fn wake_readers(&self) -> Result<()> {
        let words = self.file.words();
        // futex(FUTEX_WAKE, every sleeper): a log may have several readers.
        wake_if_waiting(&words.readers.0.waiting, &FutexBell::broadcast(&words.log.0.bell))
    }
}

impl FrameSink for LogSink<'_> {
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        let len = header.frame_len() as u64;
        // Keep room for the end frame, so a full log can still be ended cleanly.
        let reserve = if header.kind == Kind::Data { FRAME_HEADER as u64 } else { 0 };
        if self.committed + len + reserve > self.capacity {
            return Err(full(self.file, self.committed, len));
        }
        let at = self.committed as usize;
        if self.committed + len > self.prefaulted {
            // Fault in the next stretch of pages with one system call, rather
            // than taking a page fault every 4 KiB in the copy below.
            let to = (self.committed + len).max(self.prefaulted + PREFAULT).min(self.capacity);
            let from = self.prefaulted.max(self.committed);
            self.file
                .prefault(HEADER_LEN + from as usize, (to - from) as usize)
                .map_err(|e| self.file.explain(e))?;
            self.prefaulted = to;
        }
        let head = header.to_bytes();
        // SAFETY: [at, at + len) is inside the data area (checked just above)
        // and past `committed`, so no reader reads it until we publish it.
        unsafe {
            let dst = self.data.add(at);
            std::ptr::copy_nonoverlapping(head.as_ptr(), dst, FRAME_HEADER);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(FRAME_HEADER), payload.len());
        }
        if sigbus::tripped() {
            // The copy went to a page the file no longer has: publish nothing.
            return Err(self.file.explain(Error::system("a store faulted")));
        }
        if self.sync {
            // msync the frame before the length that covers it: on the disk, as
            // in memory, committed never runs ahead of the data.
            self.file.sync_range(HEADER_LEN + at, len as usize)?;
        }
        let words = &self.file.words().log.0;
        self.committed += len;
        words.committed.store(self.committed, Ordering::Release);
        if header.kind == Kind::End {
            // After the committed that covers the end frame: whoever sees
            // closed (Acquire) finds the end frame committed.
            words.closed.store(1, Ordering::Release);
        }
        if self.sync {
            self.file.sync_range(0, HEADER_LEN)?;
        }
        self.wake_readers()
    }
}

/// The writer as a reader sees it: alive while it holds its lock on the file
/// ([`MappedFile::writer_alive`]), and while the file is whole.
#[derive(Debug)]
pub struct WriterPeer<'m> {
    file: &'m MappedFile,
}

impl<'m> WriterPeer<'m> {
    /// Watches the writer of `file`.
    #[must_use]
    pub fn new(file: &'m MappedFile) -> Self {
        WriterPeer { file }
    }
}

impl Peer for WriterPeer<'_> {
    fn alive(&mut self) -> Result<bool> {
        self.file.check_intact()?;
        self.file.writer_alive()
    }
}

/// Why a log ends without its end frame, for "writer 0 vanished after ...".
const GONE: &str = "the writer's process is gone, and its end frame never came";
const UNFINISHED: &str = "the log ends without an end frame: its writer did not finish";
const STILL_RUNNING: &str =
    "the log has no end frame yet: its writer is still running (leave out --replay to follow it)";

/// The reading end of a log, following a live writer or replaying a file:
/// made by [`follow`] or [`replay`], which guard it against SIGBUS.
#[derive(Debug)]
pub struct LogSource<'m> {
    file: &'m MappedFile,
    data: *const u8,
    capacity: u64,
    /// Offset of the next frame.
    pos: u64,
    /// `committed` as last loaded.
    committed: u64,
    /// Length of the frame lent out by the last `recv`.
    lent: u64,
    max_frame: u32,
    /// `None` when replaying: the end of `committed` is the end.
    follow: Option<WriterPeer<'m>>,
    end_reason: &'static str,
    last: Option<(u64, u64)>,
    /// How long a started stream may go without a commit (`--timeout`).
    stall: Option<Duration>,
}

/// A log reader: the source, checked for patched pages after each frame.
pub type LogReader<'m> = Guarded<LogSource<'m>>;

/// Follows the writer of `file`: waits for frames until its end frame, or
/// until it is gone and every committed frame is read. Payloads are lent in
/// place (a reader that prints adds [`Guarded::copying`]).
#[must_use]
pub fn follow(file: &MappedFile, max_frame: u32) -> LogReader<'_> {
    follow_within(file, max_frame, None)
}

/// [`follow`], giving up (peer lost) on a writer that commits nothing for
/// `stall` once the stream has begun (a frozen writer, `--timeout`).
#[must_use]
pub fn follow_within(file: &MappedFile, max_frame: u32, stall: Option<Duration>) -> LogReader<'_> {
    let mut source = LogSource::new(file, max_frame, Some(WriterPeer::new(file)), GONE);
    source.stall = stall;
    Guarded::new(source)
}

/// Reads `file` once more up to its committed length, without waiting.
pub fn replay(file: &MappedFile, max_frame: u32) -> Result<LogReader<'_>> {
    // Not finished: by a writer that is still at it (it holds its lock), or by one that died.
    let closed = file.words().log.0.closed.load(Ordering::Acquire) != 0;
    let reason = if !closed && file.writer_alive()? { STILL_RUNNING } else { UNFINISHED };
    Ok(Guarded::new(LogSource::new(file, max_frame, None, reason)))
}

/// Loads `committed`; `Ok(true)` if it moved past `pos`. `seen` is the value
/// last loaded: the new one must not be below it, nor above `capacity`.
fn load_committed(file: &MappedFile, capacity: u64, seen: &mut u64, pos: u64) -> Result<bool> {
    let now = file.words().log.0.committed.load(Ordering::Acquire);
    if now > capacity || now < *seen {
        return Err(Error::bad_data(format!(
            "log at byte {pos}: committed length went from {seen} to {now} (capacity {capacity})"
        )));
    }
    *seen = now;
    Ok(now > pos)
}

impl<'m> LogSource<'m> {
    fn new(
        file: &'m MappedFile,
        max_frame: u32,
        follow: Option<WriterPeer<'m>>,
        end_reason: &'static str,
    ) -> Self {
        LogSource {
            file,
            data: file.data(),
            capacity: file.capacity() as u64,
            pos: 0,
            committed: 0,
            lent: 0,
            max_frame,
            follow,
            end_reason,
            last: None,
            stall: None,
        }
    }

    /// The last frame handed out: its seq, and the offset where it ends.
    #[must_use]
    pub fn last_frame(&self) -> Option<(u64, u64)> {
        self.last
    }

    /// Bytes committed, as last seen.
    #[must_use]
    pub fn committed(&self) -> u64 {
        self.committed
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::bad_data(format!("log at byte {}: {what}", self.pos))
    }

    /// Loads `committed`; `Ok(true)` if it moved past `pos`.
    fn refresh(&mut self) -> Result<bool> {
        load_committed(self.file, self.capacity, &mut self.committed, self.pos)
    }

    /// Waits for the writer to commit more; `Ok(false)` when replaying, or
    /// once the writer is gone and there is nothing more.
    fn wait(&mut self) -> Result<bool> {
        let Some(writer) = self.follow.as_mut() else {
            return Ok(false);
        };
        let (file, capacity, pos) = (self.file, self.capacity, self.pos);
        let seen = &mut self.committed;
        let words = file.words();
        let bell = FutexBell::broadcast(&words.log.0.bell);
        // A writer that is gone may still have committed frames: they are ours to read.
        // Several readers share the flag: a waiter leaves it up (see Waiters::Many).
        // The stall counts once the stream has begun (something was committed).
        let stall = if pos > 0 { self.stall } else { None };
        let patience = Patience { spin: SPIN, stall };
        let flag = &words.readers.0.waiting;
        sleep_until(flag, Waiters::Many, &bell, writer, patience, "the writer", &mut || {
            load_committed(file, capacity, seen, pos)
        })
    }
}

impl FrameSource for LogSource<'_> {
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        self.pos += std::mem::take(&mut self.lent);
        if self.pos >= self.committed && !self.refresh()? && !self.wait()? {
            return Ok(None);
        }
        let avail = self.committed - self.pos;
        if avail < FRAME_HEADER as u64 {
            return Err(self.corrupt("the committed length ends inside a frame header"));
        }
        let at = self.pos as usize;
        // SAFETY: [at, at + 24) is inside the data area and below `committed`
        // (checked just above): the writer stored it before its Release of
        // `committed`, which we loaded with Acquire. Copied out (a u8 array
        // has no alignment), so what is parsed is what is used.
        let head = unsafe { self.data.add(at).cast::<[u8; FRAME_HEADER]>().read() };
        let header =
            Header::parse(&head, self.max_frame).map_err(|e| self.corrupt(&e.to_string()))?;
        let len = header.frame_len() as u64;
        if len > avail {
            return Err(self.corrupt(&format!(
                "a frame of {len} bytes runs past the committed length ({avail} bytes left)"
            )));
        }
        // SAFETY: as above, for the payload: inside the data, below `committed`,
        // and never written again by the writer, so the borrow may last until
        // the next call (a SIGBUS patch may still change it: see sigbus::Guarded).
        let payload = unsafe {
            std::slice::from_raw_parts(self.data.add(at + FRAME_HEADER), header.len as usize)
        };
        self.lent = len;
        self.last = Some((header.seq, self.pos + len));
        Ok(Some(Frame { header, payload }))
    }

    fn end_reason(&self) -> &'static str {
        self.end_reason
    }
}
