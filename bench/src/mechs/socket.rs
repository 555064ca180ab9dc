//! Sockets (`socket-demo`): Unix stream, Unix `SOCK_SEQPACKET`
//! ("unix-dgram") and TCP on loopback. The reader binds and listens before
//! the fork; the child connects, checks who listens, waits for `0 ready`,
//! and sends as `socket-writer` does; the reader accepts and reads, then
//! gives its verdict line. One connection carries a latency run both ways
//! (without the answer lines, which belong to a writer talking to a reader).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use ipc_common::error::{Context, Error, Result};
use ipc_common::paths;
use ipc_common::stream::{StreamSink, StreamSource, WritePolicy};
use ipc_common::wait::{Deadline, wait_fd};
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{MsgFlags, SockaddrStorage, getsockname, recv, send};
use socket_demo::client::{await_ready, await_verdict, check_server, connect};
use socket_demo::listener::{Accepted, Listener};
use socket_demo::message::{MessageSink, MessageSource, fit_send_buffer};
use socket_demo::{
    DEFAULT_TCP_ADDR, Endpoint, EndpointArgs, Reply, SEND_BUFFER, Transport, endpoint, send_reply,
};

use super::{Mechanism, RawStream};
use crate::jobs::{DuplexJob, FIRST_FRAME, MAX_FRAME, RawRx, RawTx, SinkJob, SourceJob};
use crate::mechs::pipe::gathered_chunk;
use crate::ns::Namespaces;

/// One transport.
#[derive(Debug, Clone)]
pub struct Socket(pub Transport);

impl Socket {
    fn what(&self) -> String {
        format!("{} socket", self.0)
    }

    /// Where the child connects: the listener's socket file, or the port the
    /// kernel chose for it.
    fn endpoint(listener: &Listener) -> Result<Endpoint> {
        if let Some(path) = listener.path() {
            return Ok(Endpoint::Path(path.to_path_buf()));
        }
        // getsockname: the port bound for 127.0.0.1:0.
        let local: SockaddrStorage =
            getsockname(listener.fd().as_raw_fd()).context(|| "getsockname")?;
        let addr = local
            .as_sockaddr_in()
            .map(|a| std::net::SocketAddr::from((a.ip(), a.port())))
            .ok_or_else(|| Error::system("the TCP listener has no IPv4 address"))?;
        Ok(Endpoint::Tcp(addr))
    }

    /// accept, waiting up to [`FIRST_FRAME`] for the child to connect.
    fn accept(listener: &Listener) -> Result<OwnedFd> {
        let deadline = Deadline::after(Some(FIRST_FRAME));
        loop {
            match listener.accept()? {
                Accepted::Client(fd, _peer) => return Ok(fd),
                Accepted::Nothing => {
                    if !wait_fd(listener.fd(), PollFlags::POLLIN, &deadline, || Ok(()))? {
                        return Err(Error::peer_lost(format!("no writer connected to {listener}")));
                    }
                }
                // The one client we wait for failed, or we cannot take it.
                Accepted::Dropped(e) | Accepted::Exhausted(e) => return Err(e),
            }
        }
    }

    /// The writer's connection: connect, check the server's uid, `0 ready`.
    fn connect(&self, listener: &Listener, ready: bool) -> Result<OwnedFd> {
        let at = Self::endpoint(listener)?;
        let fd = connect(self.0, &at, Some(FIRST_FRAME))?;
        check_server(fd.as_fd(), &at, &[])?;
        if ready {
            await_ready(fd.as_fd(), Some(FIRST_FRAME))?;
        }
        Ok(fd)
    }

    /// Lends the frame endpoints over one connection to `job`.
    fn duplex<J: DuplexJob>(&self, fd: BorrowedFd<'_>, size: usize, job: J) -> Result<J::Out> {
        let what = self.what();
        if self.0 == Transport::UnixDgram {
            fit_send_buffer(fd, size + ipc_common::frame::HEADER_LEN)?;
            let mut source = MessageSource::new(fd, MAX_FRAME, what.clone())?;
            return job.run(&mut source, &mut MessageSink::new(fd, what));
        }
        // One write per frame: the other side waits for exactly this one.
        let mut source = StreamSource::new(fd, MAX_FRAME, Some(FIRST_FRAME), what.clone())?;
        job.run(&mut source, &mut StreamSink::new(fd, WritePolicy::FramePerWrite, what)?)
    }

    fn raw_pair<'a>(&self, fd: OwnedFd) -> Result<(Box<dyn RawTx + 'a>, Box<dyn RawRx + 'a>)> {
        let other = fd.try_clone().context(|| "dup socket")?;
        if self.0 == Transport::UnixDgram {
            return Ok((Box::new(RawMessages::new(fd)), Box::new(RawMessages::new(other))));
        }
        Ok((Box::new(RawStream::new(fd, "socket")?), Box::new(RawStream::new(other, "socket")?)))
    }
}

impl Mechanism for Socket {
    type Reader = Listener;

    fn name(&self) -> String {
        self.0.name().into()
    }

    fn copying(&self) -> bool {
        true
    }

    fn one_connection(&self) -> bool {
        true
    }

    fn create(&self, _size: usize) -> Result<Listener> {
        // The default path lives in the private directory: made (0700) first.
        paths::private_dir()?;
        let at = endpoint(self.0, &EndpointArgs::default(), Some(DEFAULT_TCP_ADDR))?;
        Listener::bind(self.0, &at)
    }

    fn read<J: SourceJob>(&self, listener: &mut Listener, job: J) -> Result<J::Out> {
        let fd = Self::accept(listener)?;
        send_reply(fd.as_fd(), &Reply::ok("ready"));
        let what = self.what();
        let out = if self.0 == Transport::UnixDgram {
            job.run(&mut MessageSource::new(fd.as_fd(), MAX_FRAME, what)?)?
        } else {
            job.run(&mut StreamSource::new(fd.as_fd(), MAX_FRAME, Some(FIRST_FRAME), what)?)?
        };
        // The verdict the writer waits for (socket-reader sends counts and digest).
        send_reply(fd.as_fd(), &Reply::ok("received"));
        Ok(out)
    }

    fn write<J: SinkJob>(&self, listener: &mut Listener, size: usize, job: J) -> Result<J::Out> {
        let fd = self.connect(listener, true)?;
        let what = self.what();
        let out = if self.0 == Transport::UnixDgram {
            fit_send_buffer(fd.as_fd(), size + ipc_common::frame::HEADER_LEN)?;
            job.run(&mut MessageSink::new(fd.as_fd(), what))?
        } else {
            let policy = WritePolicy::Buffered(SEND_BUFFER);
            job.run(&mut StreamSink::new(fd.as_fd(), policy, what)?)?
        };
        await_verdict(fd.as_fd())?;
        Ok(out)
    }

    fn raw_rx<'a>(&self, listener: &'a mut Listener, _size: usize) -> Result<Box<dyn RawRx + 'a>> {
        let fd = Self::accept(listener)?;
        if self.0 == Transport::UnixDgram {
            return Ok(Box::new(RawMessages::new(fd)));
        }
        Ok(Box::new(RawStream::new(fd, "socket")?))
    }

    fn raw_tx<'a>(&self, listener: &'a mut Listener, size: usize) -> Result<Box<dyn RawTx + 'a>> {
        // Raw: no answer lines either way, as socket-writer --raw.
        let fd = self.connect(listener, false)?;
        if self.0 == Transport::UnixDgram {
            fit_send_buffer(fd.as_fd(), size + ipc_common::frame::HEADER_LEN)?;
            return Ok(Box::new(RawMessages::new(fd)));
        }
        Ok(Box::new(RawStream::new(fd, "socket")?))
    }

    fn raw_chunk(&self, size: usize) -> usize {
        match self.0 {
            Transport::UnixDgram => size + ipc_common::frame::HEADER_LEN,
            _ => gathered_chunk(size, SEND_BUFFER),
        }
    }

    fn client<J: DuplexJob>(
        &self,
        _ns: &Namespaces,
        listener: &mut Listener,
        _rep: Option<&mut Listener>,
        size: usize,
        job: J,
    ) -> Result<J::Out> {
        // No `0 ready` line here: the echo side would read it with whatever
        // follows (read_reply takes a whole buffer, trusting the server to send
        // nothing more until it answers), and our first request follows at once.
        let fd = Self::accept(listener)?;
        self.duplex(fd.as_fd(), size, job)
    }

    fn echo<J: DuplexJob>(
        &self,
        _ns: &Namespaces,
        listener: &mut Listener,
        _rep: Option<&mut Listener>,
        size: usize,
        job: J,
    ) -> Result<J::Out> {
        let fd = self.connect(listener, false)?;
        self.duplex(fd.as_fd(), size, job)
    }

    fn raw_client<'a>(
        &self,
        _ns: &Namespaces,
        listener: &'a mut Listener,
        _rep: Option<&'a mut Listener>,
        _size: usize,
    ) -> Result<(Box<dyn RawTx + 'a>, Box<dyn RawRx + 'a>)> {
        self.raw_pair(Self::accept(listener)?)
    }

    fn raw_echo<'a>(
        &self,
        _ns: &Namespaces,
        listener: &'a mut Listener,
        _rep: Option<&'a mut Listener>,
        size: usize,
    ) -> Result<(Box<dyn RawRx + 'a>, Box<dyn RawTx + 'a>)> {
        let fd = self.connect(listener, false)?;
        if self.0 == Transport::UnixDgram {
            fit_send_buffer(fd.as_fd(), size + ipc_common::frame::HEADER_LEN)?;
        }
        let (tx, rx) = self.raw_pair(fd)?;
        Ok((rx, tx))
    }
}

/// Raw `SOCK_SEQPACKET`: one `send` per message, one `recv` per message
/// (what MessageSink/MessageSource do, without the frame); closing ends.
struct RawMessages {
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
}

impl RawMessages {
    fn new(fd: OwnedFd) -> Self {
        RawMessages { fd: Some(fd), buf: Vec::new() }
    }

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd).ok_or_else(|| Error::system("socket closed"))
    }
}

fn wait(fd: BorrowedFd<'_>, events: PollFlags) -> Result<()> {
    wait_fd(fd, events, &Deadline::never(), || Ok(())).map(drop)
}

impl RawTx for RawMessages {
    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let fd = self.fd()?;
        loop {
            // send, non-blocking: the whole message or EAGAIN.
            match send(fd.as_raw_fd(), bytes, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN) => wait(fd, PollFlags::POLLOUT)?,
                Err(Errno::EINTR) => ipc_common::signals::check()?,
                Err(e) => return Err(Error::errno("send unix-dgram socket", e)),
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        drop(self.fd.take());
        Ok(())
    }
}

impl RawRx for RawMessages {
    fn recv(&mut self) -> Result<&[u8]> {
        if self.buf.is_empty() {
            self.buf = vec![0; MAX_FRAME as usize + ipc_common::frame::HEADER_LEN];
        }
        let fd = self.fd.as_ref().map(AsFd::as_fd).ok_or_else(|| Error::system("closed"))?;
        loop {
            // recv, non-blocking: one whole message, 0 at the end of the connection.
            match recv(fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Ok(&self.buf[..n]),
                Err(Errno::ECONNRESET) => return Ok(&[]),
                Err(Errno::EAGAIN) => wait(fd, PollFlags::POLLIN)?,
                Err(Errno::EINTR) => ipc_common::signals::check()?,
                Err(e) => return Err(Error::errno("recv unix-dgram socket", e)),
            }
        }
    }
}
