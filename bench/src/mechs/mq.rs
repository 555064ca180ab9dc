//! Message queues (`mq-demo`), POSIX and System V: the reader creates the
//! queue before the fork; the child opens it as `mq-writer` does (waiting
//! for the reader's lock file), one frame per message.

use std::os::fd::AsRawFd;

use ipc_common::error::{Context, Error, Result};
use ipc_common::frame::HEADER_LEN;
use ipc_common::signals;
use ipc_common::wait::{Deadline, Ticker, wait_fd};
use mq_demo::posix::{self, QueueSink, QueueSource, Wait, WriterQueue};
use mq_demo::{read_limit, sysv};
use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqdT, mq_close, mq_open, mq_receive};
use nix::poll::PollFlags;
use nix::sys::stat::Mode;

use super::Mechanism;
use crate::jobs::{FIRST_FRAME, MAX_FRAME, RawRx, RawTx, SinkJob, SourceJob};

/// What a queue refuses: frames above the system's largest message.
fn too_big(size: usize, file: &str) -> Option<String> {
    let max = read_limit(file).unwrap_or(0);
    ((size + HEADER_LEN) as u64 > max).then(|| {
        format!(
            "a message holds at most {max} bytes ({file}), so payloads up to {}",
            max.saturating_sub(HEADER_LEN as u64)
        )
    })
}

/// POSIX: `mq_open`, `mq_send`, `mq_receive` on an `O_NONBLOCK` descriptor with `poll`.
#[derive(Debug, Clone)]
pub struct MqPosix;

impl Mechanism for MqPosix {
    type Reader = posix::Queue;

    fn name(&self) -> String {
        "mq posix".into()
    }

    fn refuses(&self, size: usize) -> Option<String> {
        too_big(size, posix::MSGSIZE_MAX_FILE)
    }

    fn copying(&self) -> bool {
        true
    }

    fn create(&self, size: usize) -> Result<posix::Queue> {
        // As deep as the system allows without privileges (mq-reader's default: 10).
        let depth = read_limit(posix::MSG_MAX_FILE).unwrap_or(10).min(10);
        posix::create_queue(
            &posix::default_name(),
            depth,
            (HEADER_LEN + size) as u64,
            Wait::Poll,
            false,
        )
    }

    fn read<J: SourceJob>(&self, q: &mut posix::Queue, job: J) -> Result<J::Out> {
        job.run(&mut QueueSource::new(q, MAX_FRAME, Wait::Poll, Some(FIRST_FRAME), None))
    }

    fn write<J: SinkJob>(&self, q: &mut posix::Queue, _size: usize, job: J) -> Result<J::Out> {
        let wq = posix::open_queue(q.name(), Some(FIRST_FRAME))?;
        job.run(&mut QueueSink::new(&wq, 0))
    }

    fn raw_rx<'a>(&self, q: &'a mut posix::Queue, _size: usize) -> Result<Box<dyn RawRx + 'a>> {
        // A descriptor of our own on the reader's queue, as QueueSource's: O_NONBLOCK.
        let flags = MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC;
        let mqd = mq_open(q.name(), flags, Mode::empty(), None)
            .context(|| format!("mq_open {}", q.name()))?;
        let buf = vec![0; usize::try_from(q.msgsize()).unwrap_or(0)];
        Ok(Box::new(PosixRx { mqd: Some(mqd), buf }))
    }

    fn raw_tx<'a>(&self, q: &'a mut posix::Queue, _size: usize) -> Result<Box<dyn RawTx + 'a>> {
        Ok(Box::new(PosixTx { q: posix::open_queue(q.name(), Some(FIRST_FRAME))? }))
    }
}

/// Raw POSIX receiving: `mq_receive`, `poll` while empty; an empty message ends.
struct PosixRx {
    mqd: Option<MqdT>,
    buf: Vec<u8>,
}

impl RawRx for PosixRx {
    fn recv(&mut self) -> Result<&[u8]> {
        let mqd = self.mqd.as_ref().ok_or_else(|| Error::system("queue closed"))?;
        loop {
            let mut prio = 0;
            // mq_receive on the O_NONBLOCK descriptor: a message, or EAGAIN.
            match mq_receive(mqd, &mut self.buf, &mut prio) {
                Ok(n) => return Ok(&self.buf[..n]),
                Err(Errno::EAGAIN) => {
                    // SAFETY: a queue descriptor is a file descriptor on Linux,
                    // open for as long as `mqd`; borrowed only for this poll.
                    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(mqd.as_raw_fd()) };
                    wait_fd(fd, PollFlags::POLLIN, &Deadline::never(), || Ok(()))?;
                }
                Err(Errno::EINTR) => signals::check()?,
                Err(e) => return Err(Error::errno("mq_receive", e)),
            }
        }
    }
}

impl Drop for PosixRx {
    fn drop(&mut self) {
        if let Some(mqd) = self.mqd.take() {
            let _ = mq_close(mqd);
        }
    }
}

/// Raw POSIX sending: `mq_send` on the writer's `O_NONBLOCK` descriptor, `poll` while full.
struct PosixTx {
    q: WriterQueue,
}

impl RawTx for PosixTx {
    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let fd = self.q.fd();
        loop {
            // mq_send: the whole message, or EAGAIN while the queue is full.
            // SAFETY: the descriptor is the writer's open queue; the bytes are ours.
            let rc =
                unsafe { libc::mq_send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
            match Errno::result(rc) {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN) => {
                    wait_fd(fd, PollFlags::POLLOUT, &Deadline::never(), || Ok(()))?;
                }
                Err(Errno::EINTR) => signals::check()?,
                Err(e) => return Err(Error::errno("mq_send", e)),
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.send(&[])
    }
}

/// System V: `msgget`, `msgsnd`, `msgrcv` (blocking, a SIGALRM tick to look around).
#[derive(Debug, Clone)]
pub struct MqSysv;

impl Mechanism for MqSysv {
    type Reader = sysv::Queue;

    fn name(&self) -> String {
        "mq sysv".into()
    }

    fn refuses(&self, size: usize) -> Option<String> {
        too_big(size, sysv::MSGMAX_FILE)
    }

    fn copying(&self) -> bool {
        true
    }

    fn create(&self, size: usize) -> Result<sysv::Queue> {
        // The default depth: msgmnb bytes (16 KiB here), as mq-reader without --depth.
        sysv::create_queue(None, (HEADER_LEN + size) as u64, None, false)
    }

    fn read<J: SourceJob>(&self, q: &mut sysv::Queue, job: J) -> Result<J::Out> {
        job.run(&mut sysv::QueueSource::new(q, sysv::Select::All, MAX_FRAME, Some(FIRST_FRAME))?)
    }

    fn write<J: SinkJob>(&self, _q: &mut sysv::Queue, _size: usize, job: J) -> Result<J::Out> {
        let wq = sysv::open_queue(None, Some(FIRST_FRAME))?;
        job.run(&mut sysv::QueueSink::new(&wq)?)
    }

    fn raw_rx<'a>(&self, q: &'a mut sysv::Queue, _size: usize) -> Result<Box<dyn RawRx + 'a>> {
        SysvRaw::new(q.id(), q.msgmax()).map(|r| Box::new(r) as Box<dyn RawRx>)
    }

    fn raw_tx<'a>(&self, q: &'a mut sysv::Queue, _size: usize) -> Result<Box<dyn RawTx + 'a>> {
        // The queue id the reader made (our copy of its object knows it).
        SysvRaw::new(q.id(), q.msgmax()).map(|r| Box::new(r) as Box<dyn RawTx>)
    }
}

/// Raw System V either way: `msgsnd`/`msgrcv` of type 1, as `QueueSink`'s
/// writer 0; a message with no text ends the stream.
struct SysvRaw {
    id: i32,
    /// `long` type, then the text (u64s keep the type aligned).
    buf: Vec<u64>,
    _ticker: Ticker,
}

impl SysvRaw {
    fn new(id: i32, msgmax: u64) -> Result<Self> {
        let words = 1 + usize::try_from(msgmax.div_ceil(8)).unwrap_or(0);
        Ok(SysvRaw { id, buf: vec![0; words], _ticker: Ticker::start()? })
    }

    fn room(&self) -> usize {
        (self.buf.len() - 1) * 8
    }

    fn text(&mut self) -> &mut [u8] {
        // SAFETY: the Vec's u64s are plain bytes; the slice stays inside it.
        let all = unsafe {
            std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), self.buf.len() * 8)
        };
        &mut all[8..]
    }
}

impl RawTx for SysvRaw {
    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.room() {
            return Err(Error::usage(format!("{} bytes exceed msgmax", bytes.len())));
        }
        self.buf[0] = 1;
        self.text()[..bytes.len()].copy_from_slice(bytes);
        loop {
            // msgsnd: blocks while the queue is full; the tick interrupts it.
            // SAFETY: the buffer holds the type and `len` bytes after it.
            let rc = unsafe { libc::msgsnd(self.id, self.buf.as_ptr().cast(), bytes.len(), 0) };
            match Errno::result(rc) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => signals::check()?,
                Err(e) => return Err(Error::errno(format!("msgsnd id {}", self.id), e)),
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.send(&[])
    }
}

impl RawRx for SysvRaw {
    fn recv(&mut self) -> Result<&[u8]> {
        let room = self.room();
        loop {
            // msgrcv: the next message of any type.
            // SAFETY: the buffer holds a long and `room` bytes after it.
            let n = unsafe { libc::msgrcv(self.id, self.buf.as_mut_ptr().cast(), room, 0, 0) };
            match Errno::result(n) {
                Ok(n) => {
                    let n = usize::try_from(n).unwrap_or(0);
                    return Ok(&self.text()[..n]);
                }
                Err(Errno::EINTR) => signals::check()?,
                Err(e) => return Err(Error::errno(format!("msgrcv id {}", self.id), e)),
            }
        }
    }
}
