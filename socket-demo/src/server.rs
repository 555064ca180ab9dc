//! The server loop: many clients at once, each checked on its own; one bad
//! client never stops the others.
//!
//! # A thread per client, and why not poll/epoll
//! Each accepted connection gets a thread (scoped: all are joined before the
//! listener is dropped) that reads its frames with the shared byte-stream
//! decoder ([`StreamSource`]), one frame per message ([`MessageSource`]) or by
//! descriptor ([`FdSource`]), and checks them with its own [`Validator`].
//! Those sources *wait inside `recv`* until a whole frame has arrived: driven
//! from a single poll/epoll loop, one client that sent half a frame and stopped
//! would stall every other client. A poll loop would need a decoder that
//! returns "not yet" instead of waiting; a thread per client reuses the
//! decoders as they are, and the kernel does the multiplexing. With the few
//! writers a reader serves (`--writers K`), threads cost nothing measurable;
//! the per-frame CRC checks even run on both CPUs. A server for thousands of
//! idle connections would want epoll.
//!
//! # Writers, strays, and `--writers K`
//! The main thread only accepts, checks the peer (`SO_PEERCRED`), watches for
//! silent clients, and collects the results. Each connection's thread answers
//! `0 ready`, then looks at the client's first bytes without taking them
//! (`recv` with `MSG_PEEK`):
//!
//! - a frame magic (`IPC1`, or `FDP1` for a descriptor frame) makes the
//!   connection a *writer* at once, before its first frame is complete. A
//!   writer ends cleanly with its end frame, or fails — killed even inside its
//!   first frame, corrupt, claiming a writer id another connection has,
//!   silent: one line, and the server goes on;
//! - anything else (garbage, an HTTP request), or nothing at all, makes it a
//!   *stray*: dropped with one line, never counted, never changing the exit
//!   code;
//! - `--writers K` counts writers that have *ended*, cleanly or not. Once K
//!   have, the server admits no new client (it answers `3` and why), cuts off
//!   the connections that are not writers, and lets every writer already
//!   sending finish: a writer is never cut off mid-stream. Then it prints the
//!   summaries and exits 0 if every writer ended cleanly, otherwise with the
//!   first failure's code (3 or 4);
//! - `--timeout` waits for the first *writer*: clients that connect and close,
//!   say nothing, or are refused do not stop the clock.
//!
//! # Silent clients (`--idle-timeout`)
//! The main thread counts each connection's completed frames; one that
//! completes none for `--idle-timeout` seconds gets `shutdown(SHUT_RD)`: its
//! thread's next read returns end of file, and it reports the client as
//! silent. Counting whole frames, not bytes, also catches a client that
//! dribbles a byte at a time — and drops a writer whose single frame takes
//! longer than the timeout to arrive (16 MiB over a 1 Mbit/s link takes two
//! minutes): set the timeout above the slowest frame. Unless told, there is no
//! idle timeout, except for TCP on an address other machines can reach
//! ([`crate::REMOTE_IDLE_TIMEOUT`]).
//!
//! # Limits: one client never stops the server
//! - At most [`MAX_CONNECTIONS`] connections at once; more are answered
//!   `1 busy: ...`. A connection's buffers grow only as a frame's bytes
//!   arrive, up to `--max-frame` + 128 KiB, so all of them together hold at
//!   most 64 × (16 MiB + 128 KiB), about 1 GiB, at the default `--max-frame`:
//!   lower it for a server that strangers can reach.
//! - A connection that fails as it is accepted (its client reset it while it
//!   waited in the backlog) is dropped with one line.
//! - Running out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
//!   `ENOMEM`) is noted (at most every 10 s); the waiting client stays in the
//!   backlog, and the server leaves the listener out of its `poll` for a tick
//!   (it stays readable, so `poll` would return at once, forever) or until a
//!   connection ends.
//! - A thread that cannot be started refuses that one client (`1 busy: ...`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

use ipc_common::driver::{
    self, FrameSource, ReaderOpts, Received, Validator, WriterState, print_received,
};
use ipc_common::error::{Context, Error, Exit, Result};
use ipc_common::frame::{Frame, HEADER_LEN, Header, Kind, MAGIC};
use ipc_common::paths;
use ipc_common::signals;
use ipc_common::stream::{LinePrinter, StreamSource, pump_raw};
use ipc_common::wait::{Deadline, TICK, pause, stalled, wait_fd};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, Shutdown, recv, shutdown};
use nix::unistd::{pipe2, read, write};

use crate::fdpass::{FD_MAGIC, FdSource};
use crate::listener::{Accepted, Listener, Peer};
use crate::message::MessageSource;
use crate::{Reply, Transport, connection_gone, lost_if_closed, send_reply, uid_allowed};

/// What the server is told on the command line.
#[derive(Debug)]
pub struct ServerOpts<'a> {
    /// The binary's name, for its lines.
    pub bin: &'static str,
    /// `--count`, `--writers`, `--max-frame`, text mode.
    pub reader: &'a ReaderOpts,
    /// `--timeout`: how long to wait for the first writer, and for a writer's
    /// next frame mid-stream (a frozen writer: it is cut off, exit 3).
    pub first_timeout: Option<Duration>,
    /// `--idle-timeout`: drop a client that completes no frame for this long.
    pub idle_timeout: Option<Duration>,
    /// `--allow-uid`: peers of these uids are admitted besides our own.
    pub allow_uids: &'a [u32],
    /// `--verbose`: say who connects.
    pub verbose: bool,
}

/// Connections served at once; more are refused (`1 busy: ...`) until some end.
/// A thread each, and up to `--max-frame` + 128 KiB of buffers each: this
/// bounds the threads and the memory a flood of clients can make us spend.
pub const MAX_CONNECTIONS: usize = 64;

/// How often, at most, running out of descriptors or memory is noted.
const EXHAUSTED_NOTE_EVERY: Duration = Duration::from_secs(10);

/// How soon a client that sent only part of a magic is looked at again.
const PARTIAL_MAGIC_RETRY: Duration = Duration::from_millis(10);

// Why the main thread shut a connection's reading side, if it did.
const RUNNING: u8 = 0;
const STOP_IDLE: u8 = 1;
const STOP_DONE: u8 = 2;
const STOP_EXIT: u8 = 3;
/// A writer that completed no frame for `--timeout` mid-stream (frozen or stuck).
const STOP_STALL: u8 = 4;

// What a connection is to the server.
/// No frame magic seen yet.
const PENDING: u8 = 0;
/// Its first bytes were a frame magic: it counts toward `--writers`.
const WRITER: u8 = 1;
/// Cut off by the main thread (`--writers` reached) before it became a writer.
const CUT: u8 = 2;

/// One connection, shared by its thread and the main thread.
#[derive(Debug)]
struct Shared {
    fd: OwnedFd,
    /// Frames completed so far (the watchdog's measure of progress).
    frames: AtomicU64,
    /// Why the main thread shut the connection's reading side, if it did.
    stop: AtomicU8,
    /// [`PENDING`], [`WRITER`] or [`CUT`]: decided once, by whichever thread
    /// gets there first, so a client is never both cut off and counted.
    role: AtomicU8,
}

impl Shared {
    fn new(fd: OwnedFd) -> Self {
        Shared {
            fd,
            frames: AtomicU64::new(0),
            stop: AtomicU8::new(RUNNING),
            role: AtomicU8::new(PENDING),
        }
    }

    /// Makes the thread's next read return end of file; `why` says why.
    fn stop(&self, why: u8) {
        self.stop.store(why, Ordering::Relaxed);
        // shutdown(SHUT_RD): pending and future reads see end of file; the
        // thread can still send the client its answer.
        let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Read);
    }

    /// The connection's thread saw a frame magic: a writer from now on, unless
    /// the main thread cut the connection off first (`false`).
    fn become_writer(&self) -> bool {
        self.role.compare_exchange(PENDING, WRITER, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    fn is_writer(&self) -> bool {
        self.role.load(Ordering::Acquire) == WRITER
    }

    /// The main thread: cuts the connection off, unless it is a writer.
    fn cut_unless_writer(&self, why: u8) {
        if self.role.compare_exchange(PENDING, CUT, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.stop(why);
        }
    }
}

/// The main thread's view of a live connection.
#[derive(Debug)]
struct Live {
    id: u64,
    shared: Arc<Shared>,
    seen: u64,
    since: Instant,
}

/// What a connection's thread reports when it ends.
#[derive(Debug)]
struct Report {
    id: u64,
    peer: String,
    /// Whether it was a writer (its first bytes were a frame magic).
    writer: bool,
    result: Result<WriterState>,
}

/// Read-only context every connection thread borrows.
#[derive(Debug)]
struct Ctx<'a> {
    o: &'a ServerOpts<'a>,
    transport: Transport,
    /// Writer ids taken, and by which connection: ids are unique per run.
    claims: Mutex<Vec<(u16, u64)>>,
    /// Write end of the pipe that wakes the main thread when a connection ends.
    wake: OwnedFd,
    /// Text mode: standard output, one line at a time (so lines never mix).
    printer: Option<Mutex<LinePrinter>>,
}

impl Ctx<'_> {
    /// What a client hears once `--writers K` writers have ended.
    fn finishing(&self) -> String {
        let k = self.o.reader.writers;
        format!(
            "{}: {k} writers have ended (--writers {k}): the reader is finishing and admits \
             no new writers",
            self.transport
        )
    }
}

/// What the main thread has collected.
#[derive(Debug, Default)]
struct Books {
    got: Received,
    failures: Vec<Error>,
    /// Writers that have ended, cleanly or not.
    ended: usize,
}

/// Serves clients until `--writers K` writers have ended and the writers still
/// sending have finished; prints the summaries.
pub fn serve(listener: &Listener, o: &ServerOpts<'_>) -> Result<Received> {
    // A pipe whose read end the main thread polls with the listener: a thread
    // writes a byte when its connection ends, so the server notices at once.
    let (wake_r, wake_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).context(|| "pipe2")?;
    let cx = Ctx {
        o,
        transport: listener.transport(),
        claims: Mutex::new(Vec::new()),
        wake: wake_w,
        printer: if o.reader.print { Some(Mutex::new(LinePrinter::stdout()?)) } else { None },
    };
    let (tx, rx) = mpsc::channel();
    let mut server = Server {
        listener,
        cx: &cx,
        tx,
        rx,
        wake: wake_r,
        live: Vec::new(),
        books: Books::default(),
        next_id: 1,
        heard_from: false,
        backoff: false,
        exhausted_noted: None,
    };
    thread::scope(|scope| {
        let result = server.run(scope);
        if result.is_err() {
            // Stopping early (a signal, --timeout, a broken listener): whoever
            // is still connected is cut off; the scope then joins the threads.
            for l in &server.live {
                l.shared.stop(STOP_EXIT);
            }
        }
        result
    })?;
    finish(o, server.books)
}

/// `<bin>: <line>` on standard error.
fn note(o: &ServerOpts<'_>, line: std::fmt::Arguments<'_>) {
    ipc_common::say!("{}: {line}", o.bin);
}

/// The main thread's state.
struct Server<'env> {
    listener: &'env Listener,
    cx: &'env Ctx<'env>,
    tx: Sender<Report>,
    rx: Receiver<Report>,
    /// Read end of the wake-up pipe.
    wake: OwnedFd,
    live: Vec<Live>,
    books: Books,
    next_id: u64,
    /// Whether a writer has appeared (which disarms `--timeout`).
    heard_from: bool,
    /// Out of descriptors: leave the listener out of the next `poll`.
    backoff: bool,
    /// When running out of descriptors was last noted.
    exhausted_noted: Option<Instant>,
}

impl<'env> Server<'env> {
    /// Accepts and collects until `--writers K` writers have ended and every
    /// writer still sending has finished.
    fn run<'scope>(&mut self, scope: &'scope Scope<'scope, 'env>) -> Result<()> {
        let o = self.cx.o;
        let first = Deadline::after(o.first_timeout);
        loop {
            signals::check()?;
            // 1. Book the connections that ended.
            for report in self.rx.try_iter() {
                self.live.retain(|l| l.id != report.id);
                self.heard_from |= report.writer;
                take(o, &mut self.books, report);
            }
            self.heard_from |= self.live.iter().any(|l| l.shared.is_writer());
            // 2. K writers have ended: cut off whoever is not a writer, and
            //    finish once the writers still sending are done.
            if self.closing() {
                for l in &self.live {
                    l.shared.cut_unless_writer(STOP_DONE);
                }
                if self.live.is_empty() {
                    return Ok(());
                }
            }
            watchdog(&mut self.live, o.idle_timeout, o.first_timeout);
            if !self.heard_from && first.expired() {
                let secs = o.first_timeout.unwrap_or_default().as_secs();
                return Err(Error::peer_lost(format!(
                    "no writer connected to {} within {secs} s (--timeout)",
                    self.listener
                )));
            }
            // 3. Sleep until a client connects, a connection ends, or a tick passes.
            self.wait()?;
            // 4. Accept every pending connection.
            self.accept_all(scope)?;
        }
    }

    /// Whether `--writers K` writers have ended.
    fn closing(&self) -> bool {
        self.books.ended >= usize::from(self.cx.o.reader.writers)
    }

    fn wait(&self) -> Result<()> {
        let mut fds = [
            PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.fd(), PollFlags::POLLIN),
        ];
        // Out of descriptors, the listener stays readable: leave it out for a tick.
        let watched = if self.backoff { 1 } else { fds.len() };
        let tick = PollTimeout::from(u16::try_from(TICK.as_millis()).unwrap_or(100));
        // poll: the wake-up pipe and (usually) the listener, for at most a tick.
        match poll(&mut fds[..watched], tick) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::errno("poll", e)),
        }
        let mut drain = [0u8; 64];
        while matches!(read(self.wake.as_fd(), &mut drain), Ok(n) if n > 0) {}
        Ok(())
    }

    /// Takes every connection waiting in the backlog.
    fn accept_all<'scope>(&mut self, scope: &'scope Scope<'scope, 'env>) -> Result<()> {
        let o = self.cx.o;
        self.backoff = false;
        loop {
            match self.listener.accept()? {
                Accepted::Nothing => return Ok(()),
                Accepted::Client(fd, peer) => {
                    let id = self.new_id();
                    self.admit(scope, id, fd, &peer);
                }
                Accepted::Dropped(e) => {
                    let id = self.new_id();
                    note(o, format_args!("dropped connection {id} as it was accepted: {e}"));
                }
                Accepted::Exhausted(e) => {
                    if self.exhausted_noted.is_none_or(|at| at.elapsed() >= EXHAUSTED_NOTE_EVERY) {
                        note(o, format_args!("{e} (new clients wait until connections end)"));
                        self.exhausted_noted = Some(Instant::now());
                    }
                    self.backoff = true;
                    return Ok(());
                }
            }
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id - 1
    }

    /// Checks who connected and hands the connection to a thread of its own.
    fn admit<'scope>(
        &mut self,
        scope: &'scope Scope<'scope, 'env>,
        id: u64,
        fd: OwnedFd,
        peer: &Peer,
    ) {
        let (o, cx) = (self.cx.o, self.cx);
        let refused = if let Some(reason) = refusal(peer, o.allow_uids) {
            Some(Reply { code: 1, text: reason })
        } else if self.closing() {
            Some(Reply { code: 3, text: cx.finishing() })
        } else if self.live.len() >= MAX_CONNECTIONS {
            let text = format!("busy: {MAX_CONNECTIONS} connections are open; try again later");
            Some(Reply { code: 1, text })
        } else {
            None
        };
        if let Some(reply) = refused {
            note(o, format_args!("refused connection {id} from {peer}: {}", reply.text));
            send_reply(fd.as_fd(), &reply);
            return; // dropping `fd` closes the connection
        }
        if o.verbose {
            note(o, format_args!("connection {id} from {peer}"));
        }
        let shared = Arc::new(Shared::new(fd));
        let (mine, tx, who) = (Arc::clone(&shared), self.tx.clone(), peer.to_string());
        let spawned =
            thread::Builder::new().name(format!("conn-{id}")).spawn_scoped(scope, move || {
                send_reply(mine.fd.as_fd(), &Reply::ok("ready"));
                let result = connection(id, &mine, cx);
                // The client's verdict first, then the report: once the main
                // thread sees the last report, every client has its answer.
                let verdict = match &result {
                    Ok(w) => Reply::ok(format!(
                        "received {} messages, {} bytes, digest {}",
                        w.tally.messages, w.tally.bytes, w.tally.digest
                    )),
                    Err(e) => Reply::from_error(e),
                };
                send_reply(mine.fd.as_fd(), &verdict);
                let writer = mine.is_writer();
                let _ = tx.send(Report { id, peer: who, writer, result });
                let _ = write(&cx.wake, &[1]);
            });
        match spawned {
            Ok(_) => self.live.push(Live { id, shared, seen: 0, since: Instant::now() }),
            Err(e) => {
                let text = format!("busy: cannot start a thread for the connection: {e}");
                note(o, format_args!("refused connection {id} from {peer}: {text}"));
                send_reply(shared.fd.as_fd(), &Reply { code: 1, text });
            }
        }
    }
}

/// Why a peer is refused, if it is: a Unix peer of another uid, unless allowed.
fn refusal(peer: &Peer, allowed: &[u32]) -> Option<String> {
    match peer {
        Peer::Unix(cred) if !uid_allowed(cred.uid, allowed) => Some(format!(
            "peer uid {} is not the server's uid {} (socket-reader --allow-uid {} admits it)",
            cred.uid,
            paths::uid(),
            cred.uid
        )),
        _ => None,
    }
}

/// Cuts off connections that completed no frame for `idle`, and writers that
/// completed none for `stall` (`--timeout` mid-stream: a frozen writer).
fn watchdog(live: &mut [Live], idle: Option<Duration>, stall: Option<Duration>) {
    if idle.is_none() && stall.is_none() {
        return;
    }
    let now = Instant::now();
    for l in live {
        let frames = l.shared.frames.load(Ordering::Relaxed);
        if frames != l.seen {
            (l.seen, l.since) = (frames, now);
            continue;
        }
        if l.shared.stop.load(Ordering::Relaxed) != RUNNING {
            continue;
        }
        let quiet = now.duration_since(l.since);
        if idle.is_some_and(|idle| quiet >= idle) {
            l.shared.stop(STOP_IDLE);
        } else if stall.is_some_and(|stall| quiet >= stall) && l.shared.is_writer() {
            l.shared.stop(STOP_STALL);
        }
    }
}

/// Books one ended connection.
fn take(o: &ServerOpts<'_>, books: &mut Books, report: Report) {
    let Report { id, peer, writer, result } = report;
    match result {
        Ok(w) => {
            if o.verbose {
                note(o, format_args!("connection {id}: writer {} done", w.id));
            }
            let at = books.got.writers.partition_point(|x| x.id < w.id);
            books.got.writers.insert(at, w);
            books.ended += 1;
        }
        Err(e) if writer => {
            // With one writer expected, its failure is the final error line;
            // say the others as they come.
            if o.reader.writers > 1 || !books.failures.is_empty() {
                note(o, format_args!("connection {id} ({peer}): {e}"));
            }
            books.failures.push(e);
            books.ended += 1;
        }
        Err(e) => note(o, format_args!("dropped connection {id} ({peer}): {e}")),
    }
}

/// The summaries, and the exit status (see the module documentation).
fn finish(o: &ServerOpts<'_>, books: Books) -> Result<Received> {
    let k = o.reader.writers;
    let Books { got, mut failures, ended } = books;
    // One line per writer whenever more than one ended (a writer under way when
    // the K-th ended is served to its end too).
    let shown = u16::try_from(ended).unwrap_or(u16::MAX).max(k);
    if failures.is_empty() {
        // With one writer, its own connection checked --count; with more, the sum.
        if let Some(c) = o.reader.count.filter(|_| k > 1 || ended > 1) {
            let n = got.messages();
            if n != c {
                return Err(Error::bad_data(format!(
                    "expected --count {c} messages, the writers sent {n}"
                )));
            }
        }
        print_received(o.bin, &got, shown);
        return Ok(got);
    }
    if ended == 1 {
        return Err(failures.remove(0));
    }
    if !got.writers.is_empty() {
        print_received(o.bin, &got, shown);
    }
    let first = failures.remove(0);
    Err(Error::new(
        first.exit(),
        format!("{} of {ended} writers failed; the first: {}", failures.len() + 1, first.message()),
    ))
}

/// How a client's connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// End of file before a single byte.
    Nothing,
    /// A frame magic: the client is a writer. `by_fd`: the magic is `FDP1`;
    /// `writer`: the id in its first header, if the whole header is there.
    Frame { by_fd: bool, writer: Option<u16> },
    /// Anything else: a stray (its decoder will say what is wrong).
    Other,
}

/// Waits for the client's first bytes and looks at them with `MSG_PEEK`,
/// leaving them, and any descriptor sent with them, for the decoder.
fn first_bytes(fd: BorrowedFd<'_>, transport: Transport) -> Result<Start> {
    let mut head = [0u8; HEADER_LEN];
    loop {
        // recv with MSG_PEEK: copy without consuming (on SOCK_SEQPACKET, the
        // start of the first message, which stays queued whole).
        let n = match recv(fd.as_raw_fd(), &mut head, MsgFlags::MSG_PEEK) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => {
                wait_fd(fd, PollFlags::POLLIN, &Deadline::never(), || Ok(()))?;
                continue;
            }
            Err(Errno::EINTR) => {
                signals::check()?;
                continue;
            }
            Err(e) if connection_gone(e) => 0,
            Err(e) => return Err(Error::errno("recv MSG_PEEK", e)),
        };
        if n == 0 {
            return Ok(Start::Nothing);
        }
        let seen = &head[..n.min(MAGIC.len())];
        let by_fd = transport == Transport::Unix && FD_MAGIC.starts_with(seen);
        if !by_fd && !MAGIC.starts_with(seen) {
            return Ok(Start::Other);
        }
        if n < MAGIC.len() {
            // Part of a magic. A message never grows, nor does a stream whose
            // reading side is shut (the client closed it, or the main thread did).
            if !transport.is_stream() || read_side_closed(fd) {
                return Ok(Start::Other);
            }
            // The rest may come any moment. poll would return at once (bytes
            // are waiting), so look again in a little while.
            pause(&Deadline::never(), PARTIAL_MAGIC_RETRY)?;
            continue;
        }
        let writer = (n == HEADER_LEN)
            .then(|| {
                head[..MAGIC.len()].copy_from_slice(&MAGIC);
                Header::parse(&head, u32::MAX).ok().map(|h| h.writer)
            })
            .flatten();
        return Ok(Start::Frame { by_fd, writer });
    }
}

/// Whether no more bytes can arrive on `fd`: the peer shut its sending side
/// or closed, or we shut our reading side (`POLLRDHUP`, `POLLHUP`).
fn read_side_closed(fd: BorrowedFd<'_>) -> bool {
    // POLLRDHUP only (nix has no name for it; libc does), so that waiting
    // bytes do not count: poll reports the descriptor only for RDHUP, or for
    // HUP and ERR, which it always reports.
    let mut fds = [PollFd::new(fd, PollFlags::from_bits_retain(libc::POLLRDHUP))];
    // poll with no timeout: a look at the socket's state, never a wait.
    !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

/// A connection's thread: is the client a writer? Then the decoder for its
/// transport reads and checks every frame.
fn connection(id: u64, shared: &Shared, cx: &Ctx<'_>) -> Result<WriterState> {
    let fd = shared.fd.as_fd();
    let max = cx.o.reader.max_frame;
    let mut conn = Conn { id, shared, cx, writer: None, first_writer: None };
    // 1. The first bytes, looked at without taking them.
    let by_fd = match first_bytes(fd, cx.transport)? {
        Start::Nothing => return Err(conn.stopped(None, nothing_sent(cx))),
        Start::Other => false,
        Start::Frame { by_fd, writer } => {
            if !shared.become_writer() {
                // The main thread cut us off first: K writers had ended.
                return Err(conn.stopped(None, Error::peer_lost(cx.finishing())));
            }
            conn.first_writer = writer;
            by_fd
        }
    };
    // 2. Its frames, from the first byte.
    let what = format!("connection {id}");
    match cx.transport {
        Transport::UnixDgram => conn.run(&mut MessageSource::new(fd, max, what)?),
        Transport::Unix if by_fd => {
            let verbose = cx.o.verbose.then(|| format!("{}: {what}", cx.o.bin));
            conn.run(&mut FdSource::new(fd, max, what, verbose))
        }
        Transport::Unix | Transport::Tcp => conn.run(&mut StreamSource::new(fd, max, None, what)?),
    }
}

fn nothing_sent(cx: &Ctx<'_>) -> Error {
    Error::peer_lost(format!(
        "{}: the client closed the connection without sending anything",
        cx.transport
    ))
}

/// One connection being read.
struct Conn<'a> {
    id: u64,
    shared: &'a Shared,
    cx: &'a Ctx<'a>,
    /// The writer id, claimed with the first frame that passed the checks.
    writer: Option<u16>,
    /// The writer id in the first header, seen before the frame arrived.
    first_writer: Option<u16>,
}

impl Conn<'_> {
    /// Reads and checks frames until the end frame or a failure.
    fn run<S: FrameSource>(&mut self, source: &mut S) -> Result<WriterState> {
        let reader = self.cx.o.reader;
        // The per-connection checks: one writer each; `--count` applies to the
        // connection only when there is a single writer.
        let opts = ReaderOpts {
            count: reader.count.filter(|_| reader.writers == 1),
            writers: 1,
            ..reader.clone()
        };
        let mut check =
            Validator::new(self.cx.transport.name(), &opts).with_end_reason(source.end_reason());
        let err = loop {
            let frame = match source.recv() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    break check.at_end_of_stream().err().unwrap_or_else(|| nothing_sent(self.cx));
                }
                Err(e) => break self.explain(&check, e),
            };
            match self.take(&mut check, &frame) {
                Ok(Kind::Data) => {}
                Ok(Kind::End) => {
                    return check.finish().and_then(|got| {
                        got.writers
                            .into_iter()
                            .next()
                            .ok_or_else(|| Error::system("no writer after an end frame"))
                    });
                }
                Err(e) => break e,
            }
        };
        Err(self.stopped(Some(&check), err))
    }

    /// Checks one frame, claims the writer id on the first, prints text.
    fn take(&mut self, check: &mut Validator<'_>, frame: &Frame<'_>) -> Result<Kind> {
        let kind = check.accept(frame)?;
        let w = frame.header.writer;
        match self.writer {
            None => {
                self.claim(w)?;
                self.writer = Some(w);
                if self.cx.o.verbose {
                    note(self.cx.o, format_args!("connection {} is writer {w}", self.id));
                }
            }
            Some(mine) if mine != w => {
                return Err(Error::bad_data(format!(
                    "{}: connection {} carries writer {mine}, then a frame of writer {w} came \
                     (one writer per connection)",
                    self.cx.transport, self.id
                )));
            }
            Some(_) => {}
        }
        self.shared.frames.fetch_add(1, Ordering::Relaxed);
        if let (Kind::Data, Some(printer)) = (kind, &self.cx.printer) {
            printer
                .lock()
                .map_err(|_| Error::system("standard output lock poisoned"))?
                .print(frame.payload)?;
        }
        Ok(kind)
    }

    /// Takes writer id `w` for this connection, unless another has it.
    fn claim(&self, w: u16) -> Result<()> {
        let mut claims =
            self.cx.claims.lock().map_err(|_| Error::system("writer id table poisoned"))?;
        if let Some((_, other)) = claims.iter().find(|(id, _)| *id == w) {
            return Err(Error::bad_data(format!(
                "{}: writer id {w} is already used by connection {other}; give each writer its own --id",
                self.cx.transport
            )));
        }
        claims.push((w, self.id));
        Ok(())
    }

    /// An error from the decoder, in the writer's terms.
    fn explain(&self, check: &Validator<'_>, err: Error) -> Error {
        // A TCP connection the kernel gave up on (keepalive, TCP_USER_TIMEOUT)
        // fails a read with ETIMEDOUT: the writer's host vanished.
        let err = lost_if_closed(self.shared.fd.as_fd(), err);
        match err.exit() {
            Exit::PeerLost => self.vanished(check, err.message()),
            _ => check.explain(err),
        }
    }

    /// "writer 0 vanished after 812 of ? messages (why)", also for a writer
    /// that vanished inside its first frame.
    fn vanished(&self, check: &Validator<'_>, why: &str) -> Error {
        if let Some(w) = check.received().active() {
            return check.vanished(w, why);
        }
        match self.first_writer.filter(|_| self.shared.is_writer()) {
            Some(id) => {
                let w = WriterState { id, tally: driver::Tally::default(), ended: false };
                check.vanished(&w, why)
            }
            None => Error::peer_lost(format!("{}: {why}", self.cx.transport)),
        }
    }

    /// If the main thread cut the connection, says why instead of "end of file".
    fn stopped(&self, check: Option<&Validator<'_>>, err: Error) -> Error {
        if let Some(sig) = signals::pending() {
            // The whole server is stopping (the main thread cut us off for it).
            return Error::interrupted(sig);
        }
        if err.exit() != Exit::PeerLost {
            return err;
        }
        let why = match self.shared.stop.load(Ordering::Relaxed) {
            STOP_IDLE => format!(
                "silent for {} s, dropped (--idle-timeout)",
                self.cx.o.idle_timeout.unwrap_or_default().as_secs()
            ),
            STOP_DONE => return Error::peer_lost(self.cx.finishing()),
            STOP_EXIT => "the reader is exiting".to_string(),
            STOP_STALL => stalled("the writer", self.cx.o.first_timeout.unwrap_or_default())
                .message()
                .to_string(),
            _ => return err,
        };
        match check {
            Some(c) => self.vanished(c, &why),
            None => Error::peer_lost(format!("{}: {why}", self.cx.transport)),
        }
    }
}

/// `--raw`: the first admitted client's bytes, unframed, to standard output.
pub fn serve_raw(listener: &Listener, o: &ServerOpts<'_>) -> Result<u64> {
    let deadline = Deadline::after(o.first_timeout);
    let mut noted = false;
    loop {
        if !wait_fd(listener.fd(), PollFlags::POLLIN, &deadline, || Ok(()))? {
            let secs = o.first_timeout.unwrap_or_default().as_secs();
            return Err(Error::peer_lost(format!(
                "no client connected to {listener} within {secs} s (--timeout)"
            )));
        }
        loop {
            let (fd, peer) = match listener.accept()? {
                Accepted::Nothing => break,
                Accepted::Client(fd, peer) => (fd, peer),
                Accepted::Dropped(e) => {
                    note(o, format_args!("dropped a connection as it was accepted: {e}"));
                    continue;
                }
                Accepted::Exhausted(e) => {
                    // The listener stays readable: wait a tick before trying again.
                    if !noted {
                        note(o, format_args!("{e} (the client waits until then)"));
                        noted = true;
                    }
                    pause(&deadline, TICK)?;
                    break;
                }
            };
            if let Some(reason) = refusal(&peer, o.allow_uids) {
                note(o, format_args!("refused connection from {peer}: {reason}"));
                continue;
            }
            if o.verbose {
                note(o, format_args!("connection from {peer}"));
            }
            let what = format!("{} connection", listener.transport());
            return pump_raw(o.bin, "received", fd.as_fd(), std::io::stdout().as_fd(), &what);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use ipc_common::testkit::frame_bytes;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, send, socketpair};

    use super::*;

    /// What `first_bytes` makes of a Unix stream whose client sent `bytes` and
    /// then closed its end (the server end's bytes stay queued).
    fn start_of(bytes: &[u8]) -> Start {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(bytes).unwrap();
        drop(client);
        first_bytes(server.as_fd(), Transport::Unix).unwrap()
    }

    #[test]
    fn a_frame_magic_makes_a_writer_before_the_frame_is_complete() {
        let frame = frame_bytes(7, 0, b"payload");
        assert_eq!(start_of(&frame), Start::Frame { by_fd: false, writer: Some(7) });
        // The header alone, cut short: a writer still, its id not yet known.
        assert_eq!(start_of(&frame[..10]), Start::Frame { by_fd: false, writer: None });
        let mut announced = frame[..HEADER_LEN].to_vec();
        announced[..4].copy_from_slice(&FD_MAGIC);
        assert_eq!(start_of(&announced), Start::Frame { by_fd: true, writer: Some(7) });
    }

    #[test]
    fn anything_else_is_a_stray_and_nothing_is_nothing() {
        assert_eq!(start_of(b"GET / HTTP/1.1\r\n\r\n"), Start::Other);
        assert_eq!(start_of(b""), Start::Nothing);
        // Part of a magic, then the client closed: no more can come.
        assert_eq!(start_of(b"IP"), Start::Other);
    }

    #[test]
    fn a_message_shorter_than_a_magic_is_a_stray_and_fdp1_needs_a_unix_stream() {
        let (client, server) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .unwrap();
        send(client.as_raw_fd(), b"IP", MsgFlags::empty()).unwrap();
        assert_eq!(first_bytes(server.as_fd(), Transport::UnixDgram).unwrap(), Start::Other);
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"FDP1").unwrap();
        assert_eq!(first_bytes(server.as_fd(), Transport::Tcp).unwrap(), Start::Other);
    }
}
