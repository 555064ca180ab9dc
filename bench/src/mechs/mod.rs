//! One small [`Mechanism`] per IPC mechanism and API: how the bench makes,
//! opens and uses it — through its crate's own library code, the calls its
//! writer and reader binaries make.
//!
//! A mechanism says what the reader makes before the fork ([`Mechanism::create`]),
//! how the reader gets its frames ([`Mechanism::read`]) and how the writer,
//! in the child, opens the object and sends ([`Mechanism::write`]). Copying
//! mechanisms add their bare transport (`raw_rx`, `raw_tx`): the same system
//! calls and sizes with no frame. Latency takes two one-way channels by
//! default ([`Mechanism::client`], [`Mechanism::echo`]); sockets override
//! that with one connection.
//!
//! Each `write` runs in the child on its copy of the parent's `Reader`
//! (inherited by fork); see [`crate::pair`] for why it is never dropped there.

pub mod fifo;
pub mod mmap;
pub mod mq;
pub mod pipe;
pub mod sem;
pub mod shm;
pub mod socket;

use std::io::IoSlice;
use std::os::fd::AsFd;

use ipc_common::error::{Error, Result};
use ipc_common::signals;
use ipc_common::stream::{STREAM_BUFFER, set_nonblocking, write_all_vectored};
use ipc_common::wait::{Deadline, wait_fd};
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::unistd::read;

use crate::jobs::{
    DuplexJob, LendSink, LendSource, RawRx, RawTx, SinkJob, SinkThen, SourceJob, SourceThen,
};
use crate::ns::{Namespaces, Side};

/// A mechanism (or one API of it) as the bench drives it.
pub trait Mechanism: Sized {
    /// What the reading side makes before the writer exists (and removes on drop).
    type Reader;

    /// Its row label: "pipe", "mq posix", "shm sysv --spin"...
    fn name(&self) -> String;

    /// Why `size`-byte payloads cannot go through, if they cannot (a limit).
    fn refuses(&self, _size: usize) -> Option<String> {
        None
    }

    /// Whether it copies through the kernel, and so has a raw variant.
    fn copying(&self) -> bool {
        false
    }

    /// Makes the reader's object for frames of up to `size` payload bytes, in
    /// the namespace entered.
    fn create(&self, size: usize) -> Result<Self::Reader>;

    /// The reader's frames, lent to `job`.
    fn read<J: SourceJob>(&self, reader: &mut Self::Reader, job: J) -> Result<J::Out>;

    /// In the child: opens the object as the writer binary does (in the
    /// namespace entered) and lends the sink to `job`.
    fn write<J: SinkJob>(&self, copy: &mut Self::Reader, size: usize, job: J) -> Result<J::Out>;

    /// The reader's end of the bare transport.
    fn raw_rx<'a>(
        &self,
        _reader: &'a mut Self::Reader,
        _size: usize,
    ) -> Result<Box<dyn RawRx + 'a>> {
        Err(Error::usage(format!("{} has no raw variant", self.name())))
    }

    /// In the child: the writer's end of the bare transport.
    fn raw_tx<'a>(&self, _copy: &'a mut Self::Reader, _size: usize) -> Result<Box<dyn RawTx + 'a>> {
        Err(Error::usage(format!("{} has no raw variant", self.name())))
    }

    /// Bytes per raw write for `size`-byte payloads: exactly what the frame
    /// sink's writes hold, headers included (gathered frames on a stream; one
    /// frame per message), so both variants make the same system calls with
    /// the same sizes and differ only in the framing work.
    fn raw_chunk(&self, size: usize) -> usize {
        size + ipc_common::frame::HEADER_LEN
    }

    /// Whether one object carries both directions (a connection): then
    /// latency runs make one `Reader`, not two.
    fn one_connection(&self) -> bool {
        false
    }

    /// Latency, in the parent: requests out through `req` (read by the child,
    /// in its namespace), replies in through `rep`.
    fn client<J: DuplexJob>(
        &self,
        ns: &Namespaces,
        req: &mut Self::Reader,
        rep: Option<&mut Self::Reader>,
        size: usize,
        job: J,
    ) -> Result<J::Out> {
        let rep = rep.ok_or_else(|| Error::system("two channels needed"))?;
        ns.enter(Side::Child)?;
        self.write(req, size, SinkThen { then: ReadOf { mech: self, reader: rep }, job })
    }

    /// Latency, in the child: requests in through its copy of `req`, replies
    /// out through `rep` (opened in the parent's namespace).
    fn echo<J: DuplexJob>(
        &self,
        ns: &Namespaces,
        req: &mut Self::Reader,
        rep: Option<&mut Self::Reader>,
        size: usize,
        job: J,
    ) -> Result<J::Out> {
        let rep = rep.ok_or_else(|| Error::system("two channels needed"))?;
        ns.enter(Side::Parent)?;
        self.read(req, SourceThen { then: WriteOf { mech: self, copy: rep, size }, job })
    }

    /// Raw latency, in the parent: (requests out, replies in).
    fn raw_client<'a>(
        &self,
        ns: &Namespaces,
        req: &'a mut Self::Reader,
        rep: Option<&'a mut Self::Reader>,
        size: usize,
    ) -> Result<(Box<dyn RawTx + 'a>, Box<dyn RawRx + 'a>)> {
        let rep = rep.ok_or_else(|| Error::system("two channels needed"))?;
        ns.enter(Side::Child)?;
        let tx = self.raw_tx(req, size)?;
        Ok((tx, self.raw_rx(rep, size)?))
    }

    /// Raw latency, in the child: (requests in, replies out).
    fn raw_echo<'a>(
        &self,
        ns: &Namespaces,
        req: &'a mut Self::Reader,
        rep: Option<&'a mut Self::Reader>,
        size: usize,
    ) -> Result<(Box<dyn RawRx + 'a>, Box<dyn RawTx + 'a>)> {
        let rep = rep.ok_or_else(|| Error::system("two channels needed"))?;
        ns.enter(Side::Parent)?;
        let tx = self.raw_tx(rep, size)?;
        Ok((self.raw_rx(req, size)?, tx))
    }
}

/// Lends a mechanism's reading end (the second half of a two-channel client).
#[derive(Debug)]
pub struct ReadOf<'a, M: Mechanism> {
    mech: &'a M,
    reader: &'a mut M::Reader,
}

impl<M: Mechanism> LendSource for ReadOf<'_, M> {
    fn lend<J: SourceJob>(self, job: J) -> Result<J::Out> {
        self.mech.read(self.reader, job)
    }
}

/// Lends a mechanism's writing end (the second half of a two-channel echo).
#[derive(Debug)]
pub struct WriteOf<'a, M: Mechanism> {
    mech: &'a M,
    copy: &'a mut M::Reader,
    size: usize,
}

impl<M: Mechanism> LendSink for WriteOf<'_, M> {
    fn lend<J: SinkJob>(self, job: J) -> Result<J::Out> {
        self.mech.write(self.copy, self.size, job)
    }
}

/// The raw end of a byte stream (pipe, FIFO, stream socket): `writev` of the
/// whole chunk, and `read` of up to [`STREAM_BUFFER`] bytes, each waiting in
/// `poll` when the descriptor is not ready — what `StreamSink` and
/// `StreamSource` do, without frames.
#[derive(Debug)]
pub struct RawStream<F: AsFd> {
    fd: Option<F>,
    buf: Vec<u8>,
    what: &'static str,
}

impl<F: AsFd> RawStream<F> {
    /// Wraps `fd`, made non-blocking as the frame endpoints make it.
    pub fn new(fd: F, what: &'static str) -> Result<Self> {
        set_nonblocking(fd.as_fd())?;
        Ok(RawStream { fd: Some(fd), buf: Vec::new(), what })
    }

    /// The descriptor, until closed.
    pub fn fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd).ok_or_else(|| Error::system("raw stream closed"))
    }
}

impl<F: AsFd> RawTx for RawStream<F> {
    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let fd = self.fd.as_ref().ok_or_else(|| Error::system("raw stream closed"))?;
        write_all_vectored(fd.as_fd(), &mut [IoSlice::new(bytes)], self.what)
    }

    fn finish(&mut self) -> Result<()> {
        // close: the reader's next read returns 0, the end.
        drop(self.fd.take());
        Ok(())
    }
}

impl<F: AsFd> RawRx for RawStream<F> {
    fn recv(&mut self) -> Result<&[u8]> {
        if self.buf.is_empty() {
            self.buf = vec![0; STREAM_BUFFER];
        }
        let fd = self.fd.as_ref().ok_or_else(|| Error::system("raw stream closed"))?;
        loop {
            // read: whatever the kernel has, up to the buffer's size.
            match read(fd.as_fd(), &mut self.buf) {
                Ok(n) => return Ok(&self.buf[..n]),
                Err(Errno::ECONNRESET) => return Ok(&[]),
                Err(Errno::EAGAIN) => {
                    wait_fd(fd.as_fd(), PollFlags::POLLIN, &Deadline::never(), || Ok(()))?;
                }
                Err(Errno::EINTR) => signals::check()?,
                Err(e) => return Err(Error::errno(format!("read {}", self.what), e)),
            }
        }
    }
}

/// Every mechanism the bench knows, as configured for one row.
#[derive(Debug, Clone)]
pub enum Mech {
    /// Anonymous pipe.
    Pipe(pipe::Pipe),
    /// Named pipe.
    Fifo(fifo::Fifo),
    /// POSIX message queue.
    MqPosix(mq::MqPosix),
    /// System V message queue.
    MqSysv(mq::MqSysv),
    /// Shared memory ring, POSIX or System V, with or without spinning.
    Shm(shm::Shm),
    /// Ring in a mapped file.
    Mmap(mmap::MmapRing),
    /// Unix stream, sequenced-packet, or TCP socket.
    Socket(socket::Socket),
    /// Semaphore bounded buffer.
    Sem(sem::Sem),
}

/// Runs `$body` with `$m` bound to the mechanism inside `$mech` (each arm is
/// compiled for its own type: the jobs are generic, not virtual).
#[macro_export]
macro_rules! with_mech {
    ($mech:expr, $m:ident => $body:expr) => {
        match $mech {
            $crate::mechs::Mech::Pipe($m) => $body,
            $crate::mechs::Mech::Fifo($m) => $body,
            $crate::mechs::Mech::MqPosix($m) => $body,
            $crate::mechs::Mech::MqSysv($m) => $body,
            $crate::mechs::Mech::Shm($m) => $body,
            $crate::mechs::Mech::Mmap($m) => $body,
            $crate::mechs::Mech::Socket($m) => $body,
            $crate::mechs::Mech::Sem($m) => $body,
        }
    };
}

impl Mech {
    /// Every row of the bench, in the order of the issue.
    #[must_use]
    pub fn all() -> Vec<Mech> {
        use shm_demo::Api;
        use socket_demo::Transport;
        vec![
            Mech::Pipe(pipe::Pipe { capacity: None }),
            Mech::Pipe(pipe::Pipe { capacity: Some(pipe::BIG_PIPE) }),
            Mech::Fifo(fifo::Fifo),
            Mech::MqPosix(mq::MqPosix),
            Mech::MqSysv(mq::MqSysv),
            Mech::Shm(shm::Shm { api: Api::Posix, spin: 0 }),
            Mech::Shm(shm::Shm { api: Api::Sysv, spin: 0 }),
            Mech::Shm(shm::Shm { api: Api::Posix, spin: shm::SPIN }),
            Mech::Shm(shm::Shm { api: Api::Sysv, spin: shm::SPIN }),
            Mech::Mmap(mmap::MmapRing),
            Mech::Socket(socket::Socket(Transport::Unix)),
            Mech::Socket(socket::Socket(Transport::UnixDgram)),
            Mech::Socket(socket::Socket(Transport::Tcp)),
            Mech::Sem(sem::Sem),
        ]
    }

    /// The row label.
    #[must_use]
    pub fn name(&self) -> String {
        with_mech!(self, m => m.name())
    }

    /// Whether it has a raw variant.
    #[must_use]
    pub fn copying(&self) -> bool {
        with_mech!(self, m => m.copying())
    }

    /// Why a size cannot go through, if it cannot.
    #[must_use]
    pub fn refuses(&self, size: usize) -> Option<String> {
        with_mech!(self, m => m.refuses(size))
    }

    /// Whether it only makes sense for latency (spinning: throughput is the
    /// same ring as without spin, measured once).
    #[must_use]
    pub fn latency_only(&self) -> bool {
        matches!(self, Mech::Shm(s) if s.spin > 0)
    }

    /// Whether it only makes sense for throughput (a larger pipe changes
    /// nothing for one frame at a time).
    #[must_use]
    pub fn throughput_only(&self) -> bool {
        matches!(self, Mech::Pipe(p) if p.capacity.is_some())
    }

    /// Whether its waits spin rather than sleep (its latency floor is the cache line's).
    #[must_use]
    pub fn spins(&self) -> bool {
        self.latency_only()
    }
}
