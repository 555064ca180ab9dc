//! Frames over a message socket (`SOCK_SEQPACKET`): one frame per message.
//!
//! The kernel keeps each `sendmsg` whole: the reader's `recv` returns exactly
//! one message, never part of one, never two. So there is no reassembly: a
//! message whose length differs from header + `len` is bad data.
//!
//! # Sizes
//! A message must fit the sender's socket buffer in one piece: `sendmsg`
//! fails with `EMSGSIZE` above `SO_SNDBUF` − 32 bytes (`unix_dgram_sendmsg`).
//! [`fit_send_buffer`] raises `SO_SNDBUF` for the largest frame the writer will
//! send — the kernel doubles the value asked for and caps it at
//! `net.core.wmem_max` — and refuses clearly, before sending anything, when
//! even that is too small. Each connection's [`MessageSource`] receives into
//! a buffer of its own, `--max-frame` + 24 bytes: an anonymous mapping made
//! once, when the connection starts, whose pages the kernel provides only as
//! messages first touch them; a size it cannot map is an error, not an abort.
//! `MSG_TRUNC` makes `recv` return a message's real length, so a longer one
//! is detected (and discarded), never cut short silently.

use std::fs;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use ipc_common::driver::{FrameSink, FrameSource};
use ipc_common::error::{Context, Error, Result};
use ipc_common::frame::{Frame, HEADER_LEN, Header, parse_message};
use ipc_common::signals;
use ipc_common::wait::{Deadline, stalled, wait_fd};
use memmap2::MmapMut;
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{
    ControlMessage, MsgFlags, UnixAddr, getsockopt, recv, sendmsg, setsockopt, sockopt,
};

/// What `unix_dgram_sendmsg` keeps of `SO_SNDBUF` for itself: the largest
/// message is `SO_SNDBUF` − 32 bytes.
pub const SNDBUF_OVERHEAD: usize = 32;
/// The sysctl that caps `SO_SNDBUF` for unprivileged setters.
pub const WMEM_MAX: &str = "/proc/sys/net/core/wmem_max";

/// Receives one frame per message. See the module documentation.
#[derive(Debug)]
pub struct MessageSource<F: AsFd> {
    fd: F,
    buf: MmapMut,
    max_frame: u32,
    what: String,
}

impl<F: AsFd> MessageSource<F> {
    /// Reads messages from `fd` (non-blocking); `what` names it in errors.
    pub fn new(fd: F, max_frame: u32, what: impl Into<String>) -> Result<Self> {
        let len = max_frame as usize + HEADER_LEN;
        // mmap MAP_ANONYMOUS: one buffer for the largest acceptable message,
        // whose pages the kernel provides only when a message first touches them.
        let buf = MmapMut::map_anon(len).map_err(|e| {
            Error::system(format!("mmap a {len}-byte receive buffer: {e}"))
                .hint("lower --max-frame")
        })?;
        Ok(MessageSource { fd, buf, max_frame, what: what.into() })
    }
}

impl<F: AsFd> FrameSource for MessageSource<F> {
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        let n = loop {
            // recv with MSG_TRUNC: returns the message's full length even if it
            // was longer than the buffer (the excess is discarded by the kernel).
            match recv(self.fd.as_fd().as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC) {
                // A zero-length read is the end of the connection (frames are
                // never shorter than 24 bytes); a reset peer is the same to us.
                Ok(0) | Err(Errno::ECONNRESET) => return Ok(None),
                Ok(n) => break n,
                Err(Errno::EAGAIN) => {
                    wait_fd(self.fd.as_fd(), PollFlags::POLLIN, &Deadline::never(), || Ok(()))?;
                }
                Err(Errno::EINTR) => signals::check()?,
                Err(e) => return Err(Error::errno(format!("recv {}", self.what), e)),
            }
        };
        if n > self.buf.len() {
            return Err(Error::bad_data(format!(
                "message of {n} bytes is above --max-frame {} plus the {HEADER_LEN}-byte header; discarded",
                self.max_frame
            )));
        }
        parse_message(&self.buf[..n], self.max_frame)
            .map(Some)
            .map_err(|e| Error::bad_data(e.to_string()))
    }
}

/// Sends each frame as one message: header and payload gathered by one
/// `sendmsg`, no copy into a frame buffer.
#[derive(Debug)]
pub struct MessageSink<F: AsFd> {
    fd: F,
    what: String,
    stall: Option<Duration>,
}

impl<F: AsFd> MessageSink<F> {
    /// Writes messages to `fd` (a connected, non-blocking `SOCK_SEQPACKET` socket).
    pub fn new(fd: F, what: impl Into<String>) -> Self {
        MessageSink { fd, what: what.into(), stall: None }
    }

    /// Gives up (peer lost) when the reader takes nothing for `stall` mid-stream
    /// (a frozen peer); `None`, the default, waits as long as it takes.
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }
}

impl<F: AsFd> FrameSink for MessageSink<F> {
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        let head = header.to_bytes();
        let iov = [IoSlice::new(&head), IoSlice::new(payload)];
        loop {
            // sendmsg: both slices leave as one message, or not at all.
            match sendmsg::<UnixAddr>(
                self.fd.as_fd().as_raw_fd(),
                &iov,
                &[] as &[ControlMessage<'_>],
                MsgFlags::empty(),
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN) => {
                    let deadline = Deadline::after(self.stall);
                    if !wait_fd(self.fd.as_fd(), PollFlags::POLLOUT, &deadline, || Ok(()))? {
                        return Err(stalled("the reader", self.stall.unwrap_or_default()));
                    }
                }
                Err(Errno::EINTR) => signals::check()?,
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    return Err(Error::peer_lost("reader went away"));
                }
                Err(Errno::EMSGSIZE) => {
                    return Err(too_big(self.fd.as_fd(), header.frame_len()));
                }
                Err(e) => return Err(Error::errno(format!("sendmsg {}", self.what), e)),
            }
        }
    }
}

fn wmem_max() -> Option<usize> {
    fs::read_to_string(WMEM_MAX).ok()?.trim().parse().ok()
}

fn too_big(fd: BorrowedFd<'_>, frame: usize) -> Error {
    let sndbuf = getsockopt(&fd, sockopt::SndBuf).unwrap_or(0);
    let max = wmem_max().map_or("?".to_string(), |m| m.to_string());
    Error::system(format!(
        "a frame of {frame} bytes does not fit one message: SO_SNDBUF is {sndbuf} bytes, so \
         messages are at most {} (the kernel doubles SO_SNDBUF up to 2 × net.core.wmem_max = 2 × {max})",
        sndbuf.saturating_sub(SNDBUF_OVERHEAD)
    ))
    .hint(format!(
        "send smaller frames, or raise the cap: sysctl -w net.core.wmem_max={}",
        (frame + SNDBUF_OVERHEAD).div_ceil(2)
    ))
}

/// Makes room for messages of `frame` bytes in the socket's send buffer, or
/// says why it cannot (before anything is sent).
pub fn fit_send_buffer(fd: BorrowedFd<'_>, frame: usize) -> Result<()> {
    let need = frame + SNDBUF_OVERHEAD;
    let have = getsockopt(&fd, sockopt::SndBuf).context(|| "getsockopt SO_SNDBUF")?;
    if have >= need {
        return Ok(());
    }
    // setsockopt SO_SNDBUF: the kernel stores twice the value (for its own
    // bookkeeping), capped at twice net.core.wmem_max.
    setsockopt(&fd, sockopt::SndBuf, &need.div_ceil(2)).context(|| "setsockopt SO_SNDBUF")?;
    let got = getsockopt(&fd, sockopt::SndBuf).context(|| "getsockopt SO_SNDBUF")?;
    if got >= need { Ok(()) } else { Err(too_big(fd, frame)) }
}
