//! Frames over byte streams: pipes, FIFOs and stream sockets share this code.
//!
//! A byte stream has no message boundaries, so frames go back to back and the
//! reader finds them by their headers.
//!
//! - [`StreamSink`] sends a frame as header + payload with one `writev` (no copy
//!   into a frame buffer). Small frames are gathered in one reused buffer first,
//!   so 64-byte messages do not cost a system call each ([`WritePolicy`]). In
//!   [`WritePolicy::Atomic`] mode no write ever splits a frame and none exceeds
//!   `PIPE_BUF`, which is what keeps frames from several FIFO writers whole.
//! - [`StreamSource`] reads into one reused buffer and lends each frame from it.
//!   The header is checked before the buffer grows for the payload, so a length
//!   of 0xFFFFFFF0 is refused without allocating. The buffer only grows when a
//!   frame larger than any before arrives, and then only as its bytes do: no
//!   allocation per frame, and no memory promised to a length nobody sends.
//!
//! Both make their descriptor non-blocking and wait with `poll` in ticks
//! ([`crate::wait`]), so SIGINT is noticed even while the peer is stalled, and put
//! the descriptor's old flags back when dropped (stdin may be shared with a shell).

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::PollFlags;
use nix::sys::uio::writev;
use nix::unistd::{isatty, read};

use crate::driver::{FrameSink, FrameSource};
use crate::error::{Context, Error, Exit, Result, errno_text};
use crate::frame::{Frame, HEADER_LEN, Header};
use crate::payload::Digest;
use crate::signals;
use crate::wait::{Deadline, stalled, wait_fd};

/// Bytes the reader asks the kernel for at once, and the writer gathers before writing:
/// twice the default pipe capacity, so one `read` can drain a full pipe.
pub const STREAM_BUFFER: usize = 128 << 10;

/// Sets `O_NONBLOCK` on `fd` and returns the flags it had, to put back later.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<OFlag> {
    // fcntl(F_GETFL): the open file description's status flags, shared with
    // every process holding a copy of this descriptor.
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).context(|| "fcntl F_GETFL")?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).context(|| "fcntl F_SETFL")?;
    }
    Ok(flags)
}

fn restore_flags(fd: BorrowedFd<'_>, saved: OFlag) {
    if !saved.contains(OFlag::O_NONBLOCK) {
        // Best effort on the way out: the descriptor may already be gone.
        let _ = fcntl(fd, FcntlArg::F_SETFL(saved));
    }
}

/// Writes all of `slices` to a non-blocking `fd`, waiting with `poll` when it is full.
///
/// `EPIPE` (the reading end is closed) is [`Error::peer_lost`]; Rust ignores
/// SIGPIPE, so the kernel reports it as this error instead of killing us.
pub fn write_all_vectored(
    fd: BorrowedFd<'_>,
    slices: &mut [IoSlice<'_>],
    what: &str,
) -> Result<()> {
    write_all_within(fd, slices, what, None)
}

/// [`write_all_vectored`], giving up (peer lost) if the descriptor stays full
/// for `stall`: the reader is stopped or stuck (a frozen peer, `--timeout`).
pub fn write_all_within(
    fd: BorrowedFd<'_>,
    mut slices: &mut [IoSlice<'_>],
    what: &str,
    stall: Option<Duration>,
) -> Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        // writev: header and payload leave in one system call, as one write.
        match writev(fd, slices) {
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(Errno::EAGAIN) => {
                if !wait_fd(fd, PollFlags::POLLOUT, &Deadline::after(stall), || Ok(()))? {
                    return Err(stalled("the reader", stall.unwrap_or_default()));
                }
            }
            Err(Errno::EINTR) => signals::check()?,
            // The reading end closed (EPIPE), or the connection was reset.
            Err(Errno::EPIPE | Errno::ECONNRESET) => {
                return Err(Error::peer_lost("reader went away"));
            }
            // A socket whose connection keepalive or TCP_USER_TIMEOUT found dead.
            Err(e @ (Errno::ETIMEDOUT | Errno::EHOSTUNREACH | Errno::ENETUNREACH)) => {
                return Err(Error::peer_lost(format!("reader went away ({})", errno_text(e))));
            }
            Err(e) => return Err(Error::errno(format!("write {what}"), e)),
        }
    }
    Ok(())
}

/// How a [`StreamSink`] turns frames into `write` calls.
///
/// On a pipe, the size of each write matters more than the number of writes: a
/// write as large as the pipe fills it, so the writer sleeps and must be woken
/// once per pipe-full (~25 µs a wake-up across CPUs in this VM). Gathering into a
/// quarter of the pipe lets the reader drain while the writer fills: 4 KiB frames
/// move about 3× faster here in 16 KiB writes than in 64 KiB ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePolicy {
    /// Gather frames into a buffer of this many bytes; a frame that does not fit
    /// goes out with the buffer in one `writev`.
    Buffered(usize),
    /// Gather whole frames into writes of at most this many bytes (`PIPE_BUF`),
    /// each of which the kernel keeps whole; a larger frame is one write alone.
    Atomic(usize),
    /// Exactly one `writev` per frame, sent at once (request/reply).
    FramePerWrite,
}

/// Sends frames over a byte stream. See the module documentation.
#[derive(Debug)]
pub struct StreamSink<F: AsFd> {
    fd: F,
    saved_flags: OFlag,
    buf: Vec<u8>,
    policy: WritePolicy,
    what: String,
    stall: Option<Duration>,
}

impl<F: AsFd> StreamSink<F> {
    /// Wraps `fd` (made non-blocking); `what` names it in errors ("pipe", "FIFO /x").
    pub fn new(fd: F, policy: WritePolicy, what: impl Into<String>) -> Result<Self> {
        let saved_flags = set_nonblocking(fd.as_fd())?;
        let buf = match policy {
            WritePolicy::Buffered(cap) | WritePolicy::Atomic(cap) => Vec::with_capacity(cap),
            WritePolicy::FramePerWrite => Vec::new(),
        };
        Ok(StreamSink { fd, saved_flags, buf, policy, what: what.into(), stall: None })
    }

    /// Gives up (peer lost) when the reader takes nothing for `stall` mid-stream
    /// (a frozen peer); `None`, the default, waits as long as it takes.
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }

    /// The descriptor, for mechanism-specific calls (`F_SETPIPE_SZ`, say).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl<F: AsFd> FrameSink for StreamSink<F> {
    #[inline]
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        let len = HEADER_LEN + payload.len();
        match self.policy {
            WritePolicy::Buffered(cap) | WritePolicy::Atomic(cap)
                if self.buf.len() + len <= cap =>
            {
                // Small frame: gather it; the copy is cheaper than a system call.
                // (The header is encoded straight into the buffer: no copy
                // of it on the stack that the writev below would need.)
                self.buf.extend_from_slice(&header.to_bytes());
                self.buf.extend_from_slice(payload);
                return Ok(());
            }
            WritePolicy::Atomic(cap) => {
                // The gathered whole frames go as one atomic write; this frame
                // starts the next batch, or goes alone if even that is too big.
                self.flush()?;
                if len <= cap {
                    return self.send(header, payload);
                }
            }
            WritePolicy::Buffered(_) | WritePolicy::FramePerWrite => {}
        }
        // Whatever was gathered, then this frame, in one writev: no copy of the payload.
        let head = header.to_bytes();
        let mut slices = [IoSlice::new(&self.buf), IoSlice::new(&head), IoSlice::new(payload)];
        write_all_within(self.fd.as_fd(), &mut slices, &self.what, self.stall)?;
        self.buf.clear();
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&self.buf)];
        write_all_within(self.fd.as_fd(), &mut slices, &self.what, self.stall)?;
        self.buf.clear();
        Ok(())
    }
}

impl<F: AsFd> Drop for StreamSink<F> {
    fn drop(&mut self) {
        restore_flags(self.fd.as_fd(), self.saved_flags);
    }
}

/// Receives frames from a byte stream. See the module documentation.
#[derive(Debug)]
pub struct StreamSource<F: AsFd> {
    fd: F,
    saved_flags: OFlag,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: u32,
    first_deadline: Deadline,
    first_timeout: Option<Duration>,
    started: bool,
    what: String,
    stall: Option<Duration>,
}

impl<F: AsFd> StreamSource<F> {
    /// Wraps `fd` (made non-blocking). `first_timeout` bounds the wait for the
    /// first byte (`--timeout`); `None` waits forever, as a server does.
    pub fn new(
        fd: F,
        max_frame: u32,
        first_timeout: Option<Duration>,
        what: impl Into<String>,
    ) -> Result<Self> {
        let saved_flags = set_nonblocking(fd.as_fd())?;
        Ok(StreamSource {
            fd,
            saved_flags,
            // Zero-filled once; grown only for a frame larger than any before.
            buf: vec![0; STREAM_BUFFER],
            start: 0,
            end: 0,
            max_frame,
            first_deadline: Deadline::after(first_timeout),
            first_timeout,
            started: false,
            what: what.into(),
            stall: None,
        })
    }

    /// Starts with a buffer of `bytes` (at least a header's worth) instead of
    /// [`STREAM_BUFFER`]. Call it before the first receive. The fuzz and property
    /// tests use a small one, so that short inputs take the compaction and growth
    /// paths of long streams.
    #[must_use]
    pub fn with_buffer(mut self, bytes: usize) -> Self {
        debug_assert_eq!(self.end, 0, "with_buffer after the first receive");
        self.buf = vec![0; bytes.max(HEADER_LEN)];
        (self.start, self.end) = (0, 0);
        self
    }

    /// The descriptor being read.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Swaps in a new descriptor for the same stream (a FIFO reopened for the next
    /// writer) and returns the old one. Bytes already buffered are kept.
    pub fn replace_fd(&mut self, fd: F) -> Result<F> {
        set_nonblocking(fd.as_fd())?;
        Ok(std::mem::replace(&mut self.fd, fd))
    }

    /// Bytes received but not yet handed out as frames.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Makes at least `need` bytes available from `start`; `false` at end of file.
    fn fill(&mut self, need: usize) -> Result<bool> {
        if self.end - self.start >= need {
            return Ok(true);
        }
        if self.buf.len() - self.start < need && self.start > 0 {
            // Move the partial frame to the front to make room after it.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < need {
            if self.end == self.buf.len() {
                // A frame larger than the buffer: grow, doubling, as its bytes
                // arrive — a peer that announces 16 MiB and sends 100 bytes
                // gets no 16 MiB of our memory.
                let wanted = self.start + need;
                let len = (self.buf.len() * 2).min(wanted).max(self.buf.len() + 1);
                // reserve_exact first: `resize` alone rounds the capacity up to
                // twice the old one (Vec's amortised growth), which for the last
                // step of a 16 MiB frame is 32 MiB — above --max-frame.
                self.buf.reserve_exact(len - self.buf.len());
                self.buf.resize(len, 0);
            }
            // read: as much as the kernel has, up to the free space in the buffer.
            match read(self.fd.as_fd(), &mut self.buf[self.end..]) {
                // End of file; a stream socket whose peer reset is the same to us.
                Ok(0) | Err(Errno::ECONNRESET) => return Ok(false),
                // A connection keepalive or TCP_USER_TIMEOUT found dead: the peer is lost.
                Err(e @ (Errno::ETIMEDOUT | Errno::EHOSTUNREACH | Errno::ENETUNREACH)) => {
                    return Err(Error::peer_lost(format!(
                        "read {}: {}: the connection died",
                        self.what,
                        errno_text(e)
                    )));
                }
                Ok(n) => {
                    self.end += n;
                    self.started = true;
                }
                Err(Errno::EAGAIN) => self.wait_readable()?,
                Err(Errno::EINTR) => signals::check()?,
                Err(e) => return Err(Error::errno(format!("read {}", self.what), e)),
            }
        }
        Ok(true)
    }

    /// Gives up (peer lost) when nothing arrives for `stall` once the stream
    /// has begun (a frozen writer); `None`, the default, waits as long as it
    /// takes — right for text typed by a person.
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }

    fn wait_readable(&self) -> Result<()> {
        let deadline = if self.started { Deadline::after(self.stall) } else { self.first_deadline };
        if wait_fd(self.fd.as_fd(), PollFlags::POLLIN, &deadline, || Ok(()))? {
            return Ok(());
        }
        if self.started {
            return Err(stalled("the writer", self.stall.unwrap_or_default()));
        }
        let secs = self.first_timeout.unwrap_or_default().as_secs();
        Err(Error::peer_lost(format!(
            "no writer came: nothing arrived on {} within {secs} s (--timeout)",
            self.what
        )))
    }
}

impl<F: AsFd> FrameSource for StreamSource<F> {
    #[inline]
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        if !self.fill(HEADER_LEN)? {
            if self.buffered() == 0 {
                return Ok(None);
            }
            return Err(truncated(self.buffered(), HEADER_LEN));
        }
        let head = self.buf[self.start..self.start + HEADER_LEN]
            .first_chunk::<HEADER_LEN>()
            .copied()
            .unwrap_or([0; HEADER_LEN]);
        // Check the header before trusting its length with a buffer.
        let header =
            Header::parse(&head, self.max_frame).map_err(|e| Error::bad_data(e.to_string()))?;
        let total = header.frame_len();
        if !self.fill(total)? {
            return Err(truncated(self.buffered(), total));
        }
        let at = self.start + HEADER_LEN;
        self.start += total;
        if self.start == self.end {
            // Empty again: the next read starts at the front, no compaction needed.
            // (The bytes stay put until then, so the frame below is still valid.)
            (self.start, self.end) = (0, 0);
        }
        Ok(Some(Frame { header, payload: &self.buf[at..at + header.len as usize] }))
    }
}

fn truncated(have: usize, need: usize) -> Error {
    Error::peer_lost(format!("end of file inside a frame ({have} of {need} bytes)"))
}

impl<F: AsFd> Drop for StreamSource<F> {
    fn drop(&mut self) {
        restore_flags(self.fd.as_fd(), self.saved_flags);
    }
}

/// `--raw`: copies bytes from `input` to `output` as they are, no framing, and
/// prints the summary line. With no frames, a "message" is a line: the summary
/// counts newline-separated pieces (`echo hi` is 1 message, 3 bytes), and the
/// digest covers every byte, newlines included, so both raw ends agree.
///
/// Returns the byte count. A blocking input is waited for in `poll` first, so
/// Ctrl-C works while it is quiet; a non-blocking one (a FIFO's read end) is
/// read first and polled only on `EAGAIN`, because `read` is what reports the
/// end of a FIFO whose writer came and went before the descriptor was opened
/// (`poll` never reports that hang-up to it). The input's flags are never changed, nor a terminal's: those
/// are shared with the shell, and a process killed before putting them back
/// would leave the shell's own reads failing.
pub fn pump_raw(
    bin: &str,
    verb: &str,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    what: &str,
) -> Result<u64> {
    let saved = if isatty(output).unwrap_or(false) { None } else { Some(set_nonblocking(output)?) };
    let result = pump(input, output, what);
    if let Some(saved) = saved {
        restore_flags(output, saved);
    }
    let tally = result?;
    crate::say!(
        "{bin}: {verb} {} messages, {} bytes, digest {}",
        tally.lines,
        tally.bytes,
        tally.digest
    );
    Ok(tally.bytes)
}

/// Bytes, lines and digest of a raw copy.
struct RawTally {
    bytes: u64,
    lines: u64,
    digest: Digest,
    ends_with_newline: bool,
}

fn pump(input: BorrowedFd<'_>, output: BorrowedFd<'_>, what: &str) -> Result<RawTally> {
    let mut buf = vec![0u8; STREAM_BUFFER];
    let mut t = RawTally { bytes: 0, lines: 0, digest: Digest::new(), ends_with_newline: true };
    // fcntl(F_GETFL): a blocking input is polled before every read; a
    // non-blocking one only after a read found nothing (EAGAIN).
    let flags =
        OFlag::from_bits_retain(fcntl(input, FcntlArg::F_GETFL).context(|| "fcntl F_GETFL")?);
    let blocking = !flags.contains(OFlag::O_NONBLOCK);
    let mut poll_first = blocking;
    loop {
        if poll_first {
            wait_fd(input, PollFlags::POLLIN, &Deadline::never(), || Ok(()))?;
        }
        poll_first = blocking;
        match read(input, &mut buf) {
            Ok(0) => {
                t.lines += u64::from(!t.ends_with_newline);
                return Ok(t);
            }
            Ok(n) => {
                let chunk = &buf[..n];
                t.digest.add_bytes(chunk);
                t.bytes += n as u64;
                // (clippy would have the bytecount crate; not worth a dependency here)
                #[allow(clippy::naive_bytecount)]
                let newlines = chunk.iter().filter(|&&b| b == b'\n').count();
                t.lines += newlines as u64;
                t.ends_with_newline = chunk[n - 1] == b'\n';
                let mut slices = [IoSlice::new(chunk)];
                write_all_vectored(output, &mut slices, what).map_err(|e| match e.exit() {
                    Exit::PeerLost => Error::peer_lost(format!("{what}: the other end went away")),
                    _ => e,
                })?;
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {
                signals::check()?;
                poll_first = true;
            }
            Err(e) => return Err(Error::errno(format!("read {what}"), e)),
        }
    }
}

/// Prints text-mode messages on standard output, one per line, interruptibly.
///
/// Standard output may be a pipe to a slow consumer: a plain blocking write
/// there would be restarted after SIGINT (`SA_RESTART`) and never see it. So,
/// unless it is a terminal (whose flags belong to the shell), it is made
/// non-blocking and waited on with `poll`, like every other descriptor here.
#[derive(Debug)]
pub struct LinePrinter {
    out: std::io::Stdout,
    saved: Option<OFlag>,
}

impl LinePrinter {
    /// Prints to this process's standard output.
    pub fn stdout() -> Result<Self> {
        let out = std::io::stdout();
        let saved = if isatty(out.as_fd()).unwrap_or(false) {
            None
        } else {
            Some(set_nonblocking(out.as_fd())?)
        };
        Ok(LinePrinter { out, saved })
    }

    /// Writes `line` and a newline, in one `writev`.
    pub fn print(&mut self, line: &[u8]) -> Result<()> {
        let mut slices = [IoSlice::new(line), IoSlice::new(b"\n")];
        write_all_vectored(self.out.as_fd(), &mut slices, "standard output").map_err(|e| {
            match e.exit() {
                Exit::PeerLost => Error::errno("write standard output", Errno::EPIPE),
                _ => e,
            }
        })
    }
}

impl Drop for LinePrinter {
    fn drop(&mut self) {
        if let Some(saved) = self.saved {
            restore_flags(self.out.as_fd(), saved);
        }
    }
}

/// Reads standard input line by line for text mode, interruptibly.
///
/// Standard input may be a terminal shared with the shell, so its flags are left
/// alone: `poll` first, then `read`, which then cannot block.
#[derive(Debug)]
pub struct LineReader<'fd> {
    fd: BorrowedFd<'fd>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    max_line: usize,
    lines: u64,
}

impl<'fd> LineReader<'fd> {
    /// Lines from `fd` (standard input, usually), each at most `max_line` bytes:
    /// a longer one is refused rather than buffered without bound.
    #[must_use]
    pub fn new(fd: BorrowedFd<'fd>, max_line: usize) -> Self {
        LineReader { fd, buf: vec![0; 64 << 10], start: 0, end: 0, eof: false, max_line, lines: 0 }
    }

    /// The next line without its `\n`; a last line without `\n` counts too.
    /// `None` at end of input.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>> {
        loop {
            if let Some(nl) = self.buf[self.start..self.end].iter().position(|&b| b == b'\n') {
                let line = self.start..self.start + nl;
                self.start += nl + 1;
                self.lines += 1;
                return Ok(Some(&self.buf[line]));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                self.lines += 1;
                return Ok(Some(&self.buf[line]));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end > self.max_line {
                return Err(Error::bad_data(format!(
                    "line {} of standard input is longer than {} bytes, the largest frame a \
                     reader takes by default; refusing it",
                    self.lines + 1,
                    self.max_line
                )));
            }
            if self.end == self.buf.len() {
                // A line longer than the buffer: grow (text mode only, not a hot loop).
                self.buf.resize((self.buf.len() * 2).min(self.max_line + 2), 0);
            }
            wait_fd(self.fd, PollFlags::POLLIN, &Deadline::never(), || Ok(()))?;
            match read(self.fd, &mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(Errno::EINTR | Errno::EAGAIN) => signals::check()?,
                Err(e) => return Err(Error::errno("read standard input", e)),
            }
        }
    }
}
