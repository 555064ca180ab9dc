//! The ring layout (`--ring BYTES`): [`ipc_common::ring`] over the file's pages.
//!
//! The same single-producer, single-consumer ring that `shm-demo` runs in a
//! shared memory object, here in the data area of a mapped file: one ring
//! implementation, two backings. A log grows until its capacity; a ring
//! carries an unbounded stream through a fixed file, each frame read once.
//!
//! ```text
//! file:  [ header page: ... bell (data) | ring_reader | room_bell ][ Control | ring data ... ]
//!                                                                  ^ 64-byte aligned (offset 4096)
//! ```
//!
//! The ring brings its own protocol (head, tail, sleep flags); the file gives
//! it two futex words for its doorbells ([`FutexBell`]: no kernel object, so
//! the file carries everything) and two lock bytes that tell each side whether
//! the other is alive ([`Peer`]: OFD locks, which the kernel drops when their
//! holder dies, so a reused pid never passes for a live peer).
//!
//! - The writer creates the file; it waits for a reader only when the ring is
//!   full, up to `--timeout`, then watches the reader's lock.
//! - One reader claims the ring: an OFD write lock on
//!   [`crate::READER_LOCK_BYTE`] (held until it exits, or dies), then its pid in
//!   the header (for messages, and to mark the ring as taken). A ring is read
//!   once: a second reader, or one that comes after a reader died mid-stream
//!   (whose frames are gone), is refused.
//! - Both ends are [`Guarded`]: see there for what a SIGBUS patch can and
//!   cannot reach (in short: the ring's `Producer` publishes `head` before the
//!   writer's check, so a frame copied to a lost page *is* published, but its
//!   bytes never reach the file, and no reader takes them for data).

use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_common::error::{Error, Result};
use ipc_common::ring::{Consumer, FutexBell, Peer, Producer};
use ipc_common::wait::Deadline;
use nix::unistd::getpid;

use crate::log::WriterPeer;
use crate::sigbus::Guarded;
use crate::{MappedFile, SPIN};

/// The writer's ring end.
pub type RingSink<'m> = Guarded<Producer<'m, FutexBell<'m>, ReaderPeer<'m>>>;
/// The reader's ring end.
pub type RingSource<'m> = Guarded<Consumer<'m, FutexBell<'m>, WriterPeer<'m>>>;

/// The ring's reader as the writer sees it: not come yet (fine until the
/// deadline), then alive while it holds its lock on the file; and the file whole.
#[derive(Debug)]
pub struct ReaderPeer<'m> {
    file: &'m MappedFile,
    deadline: Deadline,
    timeout: Option<Duration>,
    came: bool,
}

impl Peer for ReaderPeer<'_> {
    fn alive(&mut self) -> Result<bool> {
        self.file.check_intact()?;
        if !self.came {
            // The reader locks its byte before it stores its pid: once the pid
            // is there, a lock that is not held is a reader that died.
            if self.file.words().readers.0.ring_reader.load(Ordering::Acquire) == 0 {
                if self.deadline.expired() {
                    let secs = self.timeout.unwrap_or_default().as_secs();
                    return Err(Error::peer_lost(format!(
                        "the ring is full and no mmap-reader came to read {} within {secs} s (--timeout)",
                        self.file.path().display()
                    )));
                }
                return Ok(true);
            }
            self.came = true;
        }
        self.file.reader_alive()
    }
}

/// The writer's end of the ring in `file` (made by [`crate::create`] with
/// [`crate::Layout::Ring`]); waits up to `timeout` for a reader once the ring is full.
pub fn producer(file: &MappedFile, timeout: Option<Duration>) -> Result<RingSink<'_>> {
    let words = file.words();
    let peer = ReaderPeer { file, deadline: Deadline::after(timeout), timeout, came: false };
    let data_bell = FutexBell::new(&words.log.0.bell);
    let room_bell = FutexBell::new(&words.readers.0.room_bell);
    // SAFETY: the data area is a MAP_SHARED mapping of `file`, 64-byte aligned
    // (it starts at HEADER_LEN, a multiple of 64, in a page-aligned mapping),
    // initialised by create(), valid as long as the borrow of `file`, and
    // written by no other writer (we created the file with O_EXCL).
    let sink = unsafe {
        Producer::attach(file.data(), file.capacity(), data_bell, room_bell, peer, SPIN)?
    };
    // A reader that stops taking frames (SIGSTOP) is given up on after `timeout` too.
    Ok(Guarded::new(sink.with_stall(timeout)))
}

/// Marks the ring finished after the end frame: the ring's flag, then the header's.
pub fn close(file: &MappedFile, sink: &mut RingSink<'_>) -> Result<()> {
    sink.inner_mut().close()?;
    file.words().log.0.closed.store(1, Ordering::Release);
    Ok(())
}

/// Claims the ring in `file` for this reader, or says who has it.
pub fn claim(file: &MappedFile) -> Result<()> {
    let slot = &file.words().readers.0.ring_reader;
    // fcntl F_OFD_SETLK on the reader's byte: one reader at a time, and the
    // kernel lets go of it when that reader exits or dies.
    if !file.lock_reader()? {
        let who = match slot.load(Ordering::Acquire) {
            0 => "another mmap-reader".to_string(), // it has the lock, not yet its pid in
            pid => format!("mmap-reader pid {pid}"),
        };
        return Err(Error::system(format!(
            "ring {} is being read by {who}; a ring has one reader",
            file.path().display()
        )));
    }
    match slot.compare_exchange(0, getpid().as_raw(), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(()),
        // The lock was free, so whoever stored this pid is gone.
        Err(pid) => Err(Error::system(format!(
            "ring {} was read by pid {pid}, which is gone: the frames it took are not in the ring any more",
            file.path().display()
        ))
        .hint(format!(
            "a ring is read once; remove it: rm {} and run the pair again",
            file.path().display()
        ))),
    }
}

/// The reader's end of the ring in `file`, claimed with [`claim`]; it lends
/// payloads in place (a reader that prints adds [`Guarded::copying`]).
pub fn consumer(file: &MappedFile, max_frame: u32) -> Result<RingSource<'_>> {
    consumer_within(file, max_frame, None)
}

/// [`consumer`], giving up (peer lost) on a writer that makes no progress for
/// `stall` once the stream has begun (a frozen writer, `--timeout`).
pub fn consumer_within(
    file: &MappedFile,
    max_frame: u32,
    stall: Option<Duration>,
) -> Result<RingSource<'_>> {
    let words = file.words();
    let data_bell = FutexBell::new(&words.log.0.bell);
    let room_bell = FutexBell::new(&words.readers.0.room_bell);
    let peer = WriterPeer::new(file);
    // SAFETY: as in producer(); read by no other reader (claim() succeeded).
    let source = unsafe {
        Consumer::attach(file.data(), file.capacity(), data_bell, room_bell, peer, SPIN, max_frame)?
    };
    Ok(Guarded::new(source.with_stall(stall)))
}
