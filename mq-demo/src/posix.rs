//! POSIX message queues: `mq_open`, `mq_send`, `mq_receive`, `mq_unlink`.
//!
//! A POSIX queue is named `/something`; on Linux its descriptor is a real file
//! descriptor, so the reader can `poll` it together with everything else, and
//! `mq_notify` can announce a message arriving in an empty queue. Messages
//! carry a priority: higher ones are received first, FIFO within one priority.
//!
//! ```text
//! reader                                   writer
//! ReaderPresence::claim (lock file)        (waits for the queue and its reader)
//! mq_open(O_RDONLY|O_CREAT|O_EXCL, 0600,   WriterPresence::join (lock file)
//!         {maxmsg, msgsize})               mq_open(O_WRONLY)
//! poll + mq_receive ... <-- message --     mq_send(frame, priority) ...
//! mq_close, mq_unlink                      mq_close
//! ```

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipc_common::driver::{FrameSink, FrameSource};
use ipc_common::error::{Context, Error, Result};
use ipc_common::frame::{Frame, Header, encode_into, parse_message};
use ipc_common::liveness::{ReaderPresence, WriterPresence};
use ipc_common::paths::{self, check_ours, posix_lock_base};
use ipc_common::signals;
use ipc_common::wait::{Deadline, TICK, pause, stalled, wait_fd};
use nix::errno::Errno;
use nix::mqueue::{
    MQ_OFlag, MqAttr, MqdT, mq_attr_member_t, mq_close, mq_getattr, mq_open, mq_receive, mq_send,
    mq_timedreceive, mq_unlink,
};
use nix::poll::PollFlags;
use nix::sys::stat::{FileStat, Mode, fstat};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime};

use crate::check_limit;

/// Most messages a queue may hold, unless raised.
pub const MSG_MAX_FILE: &str = "/proc/sys/fs/mqueue/msg_max";
/// Largest message a queue may take, unless raised.
pub const MSGSIZE_MAX_FILE: &str = "/proc/sys/fs/mqueue/msgsize_max";
/// Lock-file kind (`mq-posix.<name>.reader.lock`), which `ipc-clean` reads names from.
pub const LOCK_KIND: &str = ipc_common::clean::MQ_POSIX;
/// Permissions of a new queue.
pub const QUEUE_MODE: Mode = Mode::S_IRUSR.union(Mode::S_IWUSR);
/// How often a writer retries opening a queue that is not there yet.
pub const OPEN_RETRY: Duration = Duration::from_millis(20);

/// `/ipc-demos.<uid>.mq`.
#[must_use]
pub fn default_name() -> String {
    paths::posix_name(crate::MECH)
}

fn what(name: &str) -> String {
    format!("POSIX queue {name}")
}

/// The reader's queue: created here, removed on drop (unless kept).
#[derive(Debug)]
pub struct Queue {
    mqd: Option<MqdT>,
    name: String,
    st: FileStat,
    depth: u64,
    msgsize: u64,
    keep: bool,
    // Dropped after the queue: the lock files go last.
    presence: ReaderPresence,
}

/// How the reader waits for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `O_NONBLOCK` descriptor, `poll` when empty: Linux's queue descriptor is a
    /// file descriptor, waited on like any other.
    Poll,
    /// Blocking descriptor, `mq_timedreceive` with a deadline one tick away:
    /// the portable way to bound a wait.
    Timed,
}

impl std::str::FromStr for Wait {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "poll" => Ok(Wait::Poll),
            "timed" => Ok(Wait::Timed),
            _ => Err(format!("{s:?}: expected poll or timed")),
        }
    }
}

/// Creates queue `name` holding `depth` messages of up to `msgsize` bytes.
///
/// The limits in `/proc/sys/fs/mqueue` are checked first, so the error names the
/// file to raise (root could exceed them, but a demo should not depend on that).
/// An existing queue is examined: not ours or open to others — refused; ours,
/// with no live reader — stale: named with how to remove it, or removed with
/// `force`.
pub fn create_queue(
    name: &str,
    depth: u64,
    msgsize: u64,
    wait: Wait,
    force: bool,
) -> Result<Queue> {
    check_limit("--depth", depth, MSG_MAX_FILE, "fs.mqueue.msg_max")?;
    check_limit("a message of", msgsize, MSGSIZE_MAX_FILE, "fs.mqueue.msgsize_max")?;
    // The reader lock: a second reader on this name is refused here.
    let dir = paths::private_dir()?;
    let mut presence = ReaderPresence::claim(&dir, &posix_lock_base(LOCK_KIND, name), &what(name))?;
    let attr = MqAttr::new(0, to_attr(depth), to_attr(msgsize), 0);
    let mut flags = MQ_OFlag::O_RDONLY | MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_CLOEXEC;
    if wait == Wait::Poll {
        flags |= MQ_OFlag::O_NONBLOCK;
    }
    let mqd = loop {
        // mq_open with O_CREAT|O_EXCL: a new queue, or EEXIST — never someone else's.
        match mq_open(name, flags, QUEUE_MODE, Some(&attr)) {
            Ok(mqd) => break mqd,
            Err(Errno::EEXIST) => {
                remove_stale(name, force)?;
            }
            Err(e @ (Errno::EMFILE | Errno::ENOSPC)) => {
                return Err(Error::errno(format!("mq_open {name}"), e)
                    .hint("too many queues: see /proc/sys/fs/mqueue/queues_max and ulimit -q"));
            }
            Err(e) => return Err(Error::errno(format!("mq_open {name}"), e)),
        }
    };
    let st = match fstat(&mqd) {
        Ok(st) => st,
        Err(e) => {
            let _ = (mq_close(mqd), mq_unlink(name));
            return Err(Error::errno(format!("fstat {name}"), e));
        }
    };
    // Record the name in the lock file: should we be killed, the next reader and
    // ipc-clean find the queue through it.
    presence.publish(&format!("name={name}\n"))?;
    Ok(Queue { mqd: Some(mqd), name: name.to_string(), st, depth, msgsize, keep: false, presence })
}

fn to_attr(n: u64) -> mq_attr_member_t {
    mq_attr_member_t::try_from(n).unwrap_or(mq_attr_member_t::MAX)
}

/// An existing queue where ours should be: refuse it, or (ours and stale) remove it.
/// Called with the reader lock held, so no live reader of ours is using it.
fn remove_stale(name: &str, force: bool) -> Result<()> {
    let flags = MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC;
    let old = match mq_open(name, flags, Mode::empty(), None) {
        Ok(mqd) => mqd,
        Err(Errno::ENOENT) => return Ok(()), // gone meanwhile: just try again
        Err(e) => return Err(Error::errno(format!("mq_open existing {name}"), e)),
    };
    let st = fstat(&old).context(|| format!("fstat {name}"));
    let waiting = mq_getattr(&old).map_or(0, |a| a.curmsgs());
    let _ = mq_close(old);
    check_ours(&st?, &what(name))
        .map_err(|e| e.hint("pick another --name; it is not ours to remove"))?;
    if !force {
        return Err(Error::system(format!(
            "{} is stale (left by a reader that was killed, {waiting} messages still in it)",
            what(name)
        ))
        .hint("remove it: make clean-ipc (or add --force)"));
    }
    // mq_unlink: the stale queue is ours and nobody reads it.
    match mq_unlink(name) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::errno(format!("mq_unlink {name}"), e)),
    }
}

impl Queue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Most messages it holds.
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Largest message it takes.
    pub fn msgsize(&self) -> u64 {
        self.msgsize
    }

    /// Leave the queue (and its lock files) in place on drop: `--keep`.
    pub fn keep(&mut self) {
        self.keep = true;
        self.presence.keep();
    }

    fn mqd(&self) -> &MqdT {
        self.mqd.as_ref().unwrap_or_else(|| unreachable!("open until drop"))
    }

    /// Whether `name` still names this queue (someone may have `mq_unlink`ed it,
    /// which open descriptors do not notice).
    fn still_named(&self) -> Result<bool> {
        let flags = MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC;
        match mq_open(self.name.as_str(), flags, Mode::empty(), None) {
            Ok(mqd) => {
                let same = fstat(&mqd)
                    .is_ok_and(|st| (st.st_dev, st.st_ino) == (self.st.st_dev, self.st.st_ino));
                let _ = mq_close(mqd);
                Ok(same)
            }
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::errno(format!("mq_open {}", self.name), e)),
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if let Some(mqd) = self.mqd.take() {
            // mq_close: our descriptor; the queue lives on until unlinked.
            let _ = mq_close(mqd);
        }
        if !self.keep && self.still_named().unwrap_or(false) {
            // mq_unlink: the owner removes the name; the kernel frees the queue
            // once the last writer closes it.
            let _ = mq_unlink(self.name.as_str());
        }
    }
}

/// Set by SIGUSR1, which `mq_notify` asks the kernel to send.
static NOTIFIED: AtomicBool = AtomicBool::new(false);

/// Asks the kernel (`mq_notify`) to send SIGUSR1 when a message arrives in the
/// empty queue; [`QueueSource`] then says so, once.
///
/// Only with [`Wait::Poll`]: a process blocked in `mq_receive` gets the message
/// instead, and the notification never fires.
pub fn notify_on_first_message(q: &Queue) -> Result<()> {
    signal_hook::flag::register(libc::SIGUSR1, &NOTIFIED).context(|| "sigaction SIGUSR1")?;
    // SAFETY: sigevent is plain old data; all-zero is a valid starting value.
    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
    ev.sigev_notify = libc::SIGEV_SIGNAL;
    ev.sigev_signo = libc::SIGUSR1;
    // SAFETY: mq_notify reads the sigevent we own; the descriptor is open.
    let rc = unsafe { libc::mq_notify(std::os::fd::AsRawFd::as_raw_fd(q.mqd()), &raw const ev) };
    Errno::result(rc).map(drop).context(|| format!("mq_notify {}", q.name))
}

/// Frames from the reader's queue; see the module docs for how it waits.
#[derive(Debug)]
pub struct QueueSource<'q> {
    q: &'q Queue,
    buf: Vec<u8>,
    max_frame: u32,
    wait: Wait,
    first: Deadline,
    timeout: Option<Duration>,
    started: bool,
    /// A writer has been here since the last end of stream.
    seen_writer: bool,
    /// The binary's name, to announce an `mq_notify` signal (`--notify`).
    notify: Option<&'static str>,
    /// How long a started stream may go quiet while a writer still holds the
    /// queue (a frozen writer, `--timeout`); and when the last message came.
    stall: Option<Duration>,
    last: Instant,
}

impl<'q> QueueSource<'q> {
    /// Reads `q`; `timeout` bounds the wait for the first writer; `notify` names
    /// the binary when `--notify` was asked for.
    #[must_use]
    pub fn new(
        q: &'q Queue,
        max_frame: u32,
        wait: Wait,
        timeout: Option<Duration>,
        notify: Option<&'static str>,
    ) -> Self {
        // One buffer of the queue's message size, reused: mq_receive insists on it.
        let buf = vec![0; usize::try_from(q.msgsize).unwrap_or(usize::MAX)];
        QueueSource {
            q,
            buf,
            max_frame,
            wait,
            first: Deadline::after(timeout),
            timeout,
            started: false,
            seen_writer: false,
            notify,
            stall: None,
            last: Instant::now(),
        }
    }

    /// Gives up (peer lost) when a writer holds the queue but sends nothing
    /// for `stall` once the stream has begun (a frozen writer).
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }

    fn announce(&mut self) {
        if let (Some(bin), true) = (self.notify, NOTIFIED.swap(false, Ordering::Relaxed)) {
            ipc_common::say!(
                "{bin}: notified: a message arrived in the empty queue (mq_notify sent SIGUSR1)"
            );
            self.notify = None;
        }
    }

    /// One wait of at most a tick; `Ok(true)` if a message may be there.
    fn wait_tick(&mut self) -> Result<bool> {
        match self.wait {
            Wait::Poll => wait_fd(
                self.q.mqd().as_fd(),
                PollFlags::POLLIN,
                &Deadline::after(Some(TICK)),
                || Ok(()),
            ),
            // Timed: the receive itself waited (see recv); nothing more to wait here.
            Wait::Timed => Ok(false),
        }
    }

    /// After a quiet tick: give up on the first writer, notice a removed queue,
    /// and tell whether the stream has ended (no writer left, queue empty).
    fn quiet_tick(&mut self) -> Result<bool> {
        if let (true, Some(limit)) = (self.started, self.stall) {
            if self.last.elapsed() >= limit && self.q.presence.writers_present()? {
                return Err(stalled("the writers", limit));
            }
        }
        if !self.started && self.first.expired() {
            let secs = self.timeout.unwrap_or_default().as_secs();
            return Err(Error::peer_lost(format!(
                "no writer came to {} within {secs} s (--timeout)",
                what(&self.q.name)
            )));
        }
        if !self.q.still_named()? {
            return Err(Error::peer_lost(format!(
                "{} was removed (mq_unlink) while in use",
                what(&self.q.name)
            )));
        }
        // Writers first, then emptiness: a writer that sent and left is already
        // in the queue when its lock is seen free.
        if self.q.presence.writers_present()? {
            self.seen_writer = true;
            return Ok(false);
        }
        Ok(self.seen_writer)
    }

    /// Receives one message now if there is one: `Ok(None)` if the queue is empty.
    fn receive_now(&mut self) -> Result<Option<usize>> {
        let mut prio = 0;
        // mq_timedreceive with a deadline already past: returns at once either way.
        let past = TimeSpec::new(0, 0);
        match mq_timedreceive(self.q.mqd(), &mut self.buf, &mut prio, &past) {
            Ok(n) => Ok(Some(n)),
            Err(Errno::EAGAIN | Errno::ETIMEDOUT) => Ok(None),
            Err(e) => Err(Error::errno(format!("mq_receive {}", self.q.name), e)),
        }
    }
}

impl FrameSource for QueueSource<'_> {
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        let n = loop {
            signals::check()?;
            let mut prio = 0;
            let got = match self.wait {
                // mq_receive on an O_NONBLOCK descriptor: a message, or EAGAIN.
                Wait::Poll => mq_receive(self.q.mqd(), &mut self.buf, &mut prio),
                // mq_timedreceive: a message, or ETIMEDOUT after one tick.
                Wait::Timed => {
                    let now = clock_gettime(ClockId::CLOCK_REALTIME).context(|| "clock_gettime")?;
                    mq_timedreceive(
                        self.q.mqd(),
                        &mut self.buf,
                        &mut prio,
                        &(now + TimeSpec::from(TICK)),
                    )
                }
            };
            match got {
                Ok(n) => break n,
                Err(Errno::EAGAIN | Errno::ETIMEDOUT) => {
                    self.announce();
                    if self.wait_tick()? {
                        self.announce();
                        continue;
                    }
                    if self.quiet_tick()? {
                        if let Some(n) = self.receive_now()? {
                            break n;
                        }
                        self.seen_writer = false;
                        return Ok(None);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::errno(format!("mq_receive {}", self.q.name), e)),
            }
        };
        self.started = true;
        self.seen_writer = true;
        self.last = Instant::now();
        self.announce();
        let frame = parse_message(&self.buf[..n], self.max_frame)
            .map_err(|e| Error::bad_data(e.to_string()))?;
        Ok(Some(frame))
    }

    fn next_writer(&mut self) -> Result<bool> {
        // A queue outlives its writers: wait on for the next one.
        Ok(true)
    }

    fn end_reason(&self) -> &'static str {
        crate::END_REASON
    }
}

/// A writer's view of the queue.
#[derive(Debug)]
pub struct WriterQueue {
    mqd: Option<MqdT>,
    name: String,
    msgsize: u64,
    presence: WriterPresence,
}

/// Opens queue `name` for writing, waiting until it exists and a reader holds
/// it, up to `timeout`.
pub fn open_queue(name: &str, timeout: Option<Duration>) -> Result<WriterQueue> {
    let deadline = Deadline::after(timeout);
    let dir = paths::private_dir()?;
    let base = posix_lock_base(LOCK_KIND, name);
    loop {
        if let Some(q) = try_open(&dir, &base, name)? {
            return Ok(q);
        }
        if deadline.expired() {
            let secs = timeout.unwrap_or_default().as_secs();
            return Err(Error::peer_lost(format!(
                "no mq-reader created {} within {secs} s (--timeout)",
                what(name)
            ))
            .hint("start mq-reader first"));
        }
        pause(&deadline, OPEN_RETRY)?;
    }
}

fn try_open(dir: &Path, base: &str, name: &str) -> Result<Option<WriterQueue>> {
    // The writers lock first, so the reader sees us before our first message.
    let Some(presence) = WriterPresence::join(dir, base)? else { return Ok(None) };
    if !presence.reader_present()? {
        return Ok(None); // a stale queue, or a reader not there yet
    }
    let flags = MQ_OFlag::O_WRONLY | MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC;
    // mq_open for writing: O_NONBLOCK so a full queue returns EAGAIN, and we poll.
    let mqd = match mq_open(name, flags, Mode::empty(), None) {
        Ok(mqd) => mqd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(Error::errno(format!("mq_open {name} for writing"), e)),
    };
    let mut q = WriterQueue { mqd: Some(mqd), name: name.to_string(), msgsize: 0, presence };
    let st = fstat(q.mqd()).context(|| format!("fstat {name}"))?;
    check_ours(&st, &what(name))?;
    // mq_getattr: the message size the reader chose.
    let attr = mq_getattr(q.mqd()).context(|| format!("mq_getattr {name}"))?;
    q.msgsize = u64::try_from(attr.msgsize()).unwrap_or(0);
    Ok(Some(q))
}

impl WriterQueue {
    /// Largest message the queue takes (the reader chose it).
    pub fn msgsize(&self) -> u64 {
        self.msgsize
    }

    fn mqd(&self) -> &MqdT {
        self.mqd.as_ref().unwrap_or_else(|| unreachable!("open until drop"))
    }

    /// The queue descriptor, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.mqd().as_fd()
    }
}

impl Drop for WriterQueue {
    fn drop(&mut self) {
        if let Some(mqd) = self.mqd.take() {
            let _ = mq_close(mqd);
        }
    }
}

/// Frames into a queue, one message each, at `priority`.
#[derive(Debug)]
pub struct QueueSink<'q> {
    q: &'q WriterQueue,
    buf: Vec<u8>,
    priority: u32,
    stall: Option<Duration>,
}

impl<'q> QueueSink<'q> {
    /// Sends into `q` at `priority` (0 lowest; higher ones overtake queued lower ones).
    #[must_use]
    pub fn new(q: &'q WriterQueue, priority: u32) -> Self {
        // One frame buffer, reused: mq_send takes the message as one block.
        let cap = usize::try_from(q.msgsize).unwrap_or(0);
        QueueSink { q, buf: Vec::with_capacity(cap), priority, stall: None }
    }

    /// Gives up (peer lost) when the queue stays full for `stall` while its
    /// reader is there (a frozen reader, `--timeout`).
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }
}

impl FrameSink for QueueSink<'_> {
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        encode_into(&mut self.buf, header, payload);
        let give_up = Deadline::after(self.stall);
        loop {
            // mq_send: the kernel copies the whole message in, or nothing.
            match mq_send(self.q.mqd(), &self.buf, self.priority) {
                Ok(()) => return Ok(()),
                Err(Errno::EAGAIN) => {
                    // Full: wait for room, and make sure someone still reads.
                    let room = wait_fd(
                        self.q.fd(),
                        PollFlags::POLLOUT,
                        &Deadline::after(Some(TICK)),
                        || Ok(()),
                    )?;
                    if !room && !self.q.presence.reader_present()? {
                        return Err(Error::peer_lost("reader went away"));
                    }
                    if !room && give_up.expired() {
                        return Err(stalled("the reader", self.stall.unwrap_or_default()));
                    }
                }
                Err(Errno::EINTR) => signals::check()?,
                Err(Errno::EMSGSIZE) => {
                    return Err(Error::usage(format!(
                        "a frame of {} bytes does not fit {}'s messages of {} bytes",
                        self.buf.len(),
                        what(&self.q.name),
                        self.q.msgsize
                    )));
                }
                Err(e) => return Err(Error::errno(format!("mq_send {}", self.q.name), e)),
            }
        }
    }
}
