//! System V message queues: `ftok`, `msgget`, `msgsnd`, `msgrcv`, `msgctl`.
//!
//! A System V queue is found by a numeric key, made here by `ftok` from the
//! reader's lock file (so the key is private to this directory), or given with
//! `--key`. Every message starts with a type, a positive `long`: here the
//! writer's id plus one, so a reader can pick one writer's messages
//! (`msgrcv` with `msgtyp` = T), the lowest types first (`msgtyp` = −T), or
//! everyone's but one writer's (`MSG_EXCEPT`).
//!
//! ```text
//! reader                                     writer
//! ReaderPresence::claim (lock file)          (waits for the queue and its reader)
//! key = ftok(lock file, 'M')                 WriterPresence::join
//! msgget(key, IPC_CREAT|IPC_EXCL|0600)
//! [msgctl(IPC_SET, msg_qbytes) for --depth]
//! publish "key=... id=..." in the lock file  read key and id from the lock file
//! msgrcv(type) ...        <-- message --     msgsnd({type = id + 1, frame}) ...
//! msgctl(IPC_RMID)
//! ```
//!
//! # Pitfalls
//! - `msgrcv` and `msgsnd` block with no timeout, and the kernel never restarts
//!   them after a signal handler: a SIGALRM every tick ([`Ticker`]) makes them
//!   return `EINTR`, and the loop checks for Ctrl-C and for its peer.
//! - Without `MSG_NOERROR` a message longer than the buffer stays in the queue
//!   and `msgrcv` fails with `E2BIG`: here that is bad data (exit 4), never a
//!   silent cut.
//! - A queue holds `msg_qbytes` bytes (`/proc/sys/kernel/msgmnb`, 16 KiB by
//!   default): two 8 KiB messages. A reader selecting one type can deadlock its
//!   writer when the queue is full of other types nobody takes.
//! - `ftok` keys collide: only 16 bits of the inode and 8 of the device go in,
//!   and a file system hands out inode numbers 65536 apart easily (ext4 spreads
//!   new directories over block groups). So the reader never trusts a key it
//!   did not create: a taken key is skipped (next project id), and writers
//!   learn the key and id from the reader's lock file instead of recomputing it.
//! - `IPC_RMID` (or `ipcrm -q`) removes the queue at once, even under waiting
//!   processes: they get `EIDRM` (or `EINVAL` on their next call).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ipc_common::driver::{FrameSink, FrameSource};
use ipc_common::error::{Error, Result};
use ipc_common::frame::{Frame, HEADER_LEN, Header, parse_message};
use ipc_common::liveness::{ReaderPresence, WriterPresence};
use ipc_common::paths;
use ipc_common::signals;
use ipc_common::wait::{Deadline, Ticker, pause, stalled};
use nix::errno::Errno;

use crate::check_limit;

/// Largest message, unless raised.
pub const MSGMAX_FILE: &str = "/proc/sys/kernel/msgmax";
/// Bytes a new queue holds, unless raised.
pub const MSGMNB_FILE: &str = "/proc/sys/kernel/msgmnb";
/// The `ftok` project id: 'M' for message queue.
pub const PROJ_ID: i32 = b'M' as i32;
/// Lock-file kind: `mq-sysv.reader.lock` (or `mq-sysv.0x<key>.reader.lock`).
pub const LOCK_KIND: &str = "mq-sysv";
/// How often a writer retries opening a queue that is not there yet.
pub const OPEN_RETRY: Duration = Duration::from_millis(20);
/// Permissions of a new queue.
pub const QUEUE_MODE: i32 = 0o600;

/// The lock-file base for `--key K`, or for the default `ftok` key.
#[must_use]
pub fn lock_base(key: Option<i32>) -> String {
    match key {
        None => LOCK_KIND.to_string(),
        Some(k) => format!("{LOCK_KIND}.{k:#010x}"),
    }
}

/// Parses `--key`: `0x4d01abcd` or decimal, not 0 (`IPC_PRIVATE`, which names nothing).
pub fn parse_key(s: &str) -> std::result::Result<i32, String> {
    let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).map(|u| i32::from_ne_bytes(u.to_ne_bytes())),
        None => s.parse::<i32>(),
    }
    .map_err(|_| format!("{s:?} is not a key (use 0x4d01abcd or a decimal number)"))?;
    if n == 0 {
        return Err("0 is IPC_PRIVATE, which no other process can find".into());
    }
    Ok(n)
}

fn what(key: i32) -> String {
    format!("System V queue key {key:#010x}")
}

/// `ftok`: a key from a file's device and inode (low 8 and 16 bits only), and a project id.
pub fn ftok(path: &Path, proj: i32) -> Result<i32> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::usage("path has a NUL byte"))?;
    // SAFETY: ftok reads the NUL-terminated path we own.
    let key = unsafe { libc::ftok(c.as_ptr(), proj) };
    if key == -1 {
        return Err(Error::errno(format!("ftok {}", path.display()), Errno::last()));
    }
    Ok(key)
}

/// `msgctl(IPC_STAT)`: the queue's owner, mode, message count...
fn stat(id: i32) -> std::result::Result<libc::msqid_ds, Errno> {
    // SAFETY: msqid_ds is plain old data; the kernel fills it in.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one msqid_ds into the struct we own.
    let rc = unsafe { libc::msgctl(id, libc::IPC_STAT, &raw mut ds) };
    Errno::result(rc).map(|_| ds)
}

/// Refuses a queue that is not ours or is open to others (exit 1).
fn check_ours(ds: &libc::msqid_ds, key: i32, id: i32) -> Result<()> {
    let mode = u32::from(ds.msg_perm.mode) & 0o777;
    if ds.msg_perm.uid != paths::uid() {
        return Err(Error::system(format!(
            "{} (id {id}) is owned by uid {}, not by us (uid {}); refusing to use it",
            what(key),
            ds.msg_perm.uid,
            paths::uid()
        )));
    }
    if mode & 0o077 != 0 {
        return Err(Error::system(format!(
            "{} (id {id}) has mode {mode:04o}, open to other users; refusing to use it",
            what(key)
        )));
    }
    Ok(())
}

/// `msgctl(IPC_RMID)`.
fn remove(id: i32) -> std::result::Result<(), Errno> {
    // SAFETY: IPC_RMID takes no buffer (null).
    let rc = unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    Errno::result(rc).map(drop)
}

/// The reader's queue: created here, removed on drop (unless kept).
#[derive(Debug)]
pub struct Queue {
    id: i32,
    key: i32,
    msgmax: u64,
    qbytes: u64,
    keep: bool,
    presence: ReaderPresence,
}

/// Creates the queue for messages of up to `msgsize` bytes; `depth` messages of
/// that size raise its byte limit (`msg_qbytes`). Limits are checked against
/// `/proc/sys/kernel` first.
///
/// The key is `ftok(reader lock file, 'M')`. `ftok` keeps only 16 bits of the
/// inode and 8 of the device, so two files can give the same key: a key taken
/// by a queue that is not the one our previous reader recorded is someone
/// else's, and we try the next project id ('N', 'O', ...) rather than touch it.
/// The key and id we end up with are published in the lock file, where writers
/// read them. The queue our previous reader recorded, if it still exists, is
/// stale: named with how to remove it, or removed with `force`.
pub fn create_queue(
    key: Option<i32>,
    msgsize: u64,
    depth: Option<u64>,
    force: bool,
) -> Result<Queue> {
    let msgmax = check_limit("a message of", msgsize, MSGMAX_FILE, "kernel.msgmax")?;
    let msgmax = msgmax.min(u64::from(u32::MAX));
    let qbytes = match depth {
        Some(d) => {
            let bytes = d.saturating_mul(msgsize);
            let what = format!("--depth {d}: {d} messages of {msgsize} bytes need");
            check_limit(&what, bytes, MSGMNB_FILE, "kernel.msgmnb")?;
            Some(bytes)
        }
        None => None,
    };
    let dir = paths::private_dir()?;
    let presence = ReaderPresence::claim(&dir, &lock_base(key), &what(key.unwrap_or(0)))?;
    if let Some((old_key, old_id)) = parse_published(presence.previous()) {
        remove_stale(old_key, old_id, force)?;
    }
    let (key, id) = match key {
        Some(key) => (key, create(key)?.ok_or_else(|| key_taken(key))?),
        None => create_from_ftok(presence.reader_path())?,
    };
    let mut q = Queue { id, key, msgmax, qbytes: 0, keep: false, presence };
    // Tell writers (and the next reader, should we be killed) which queue is ours.
    q.presence.publish(&format!("key={key:#010x} id={id}\n"))?;
    let mut ds = stat(id).map_err(|e| Error::errno(format!("msgctl IPC_STAT id {id}"), e))?;
    if let Some(bytes) = qbytes {
        ds.msg_qbytes = bytes;
        // msgctl IPC_SET: room for --depth messages (up to msgmnb unless privileged).
        // SAFETY: IPC_SET reads the msqid_ds we own.
        let rc = unsafe { libc::msgctl(id, libc::IPC_SET, &raw mut ds) };
        Errno::result(rc)
            .map_err(|e| Error::errno(format!("msgctl IPC_SET msg_qbytes {bytes}"), e))?;
    }
    q.qbytes = ds.msg_qbytes;
    Ok(q)
}

/// `msgget(key, IPC_CREAT|IPC_EXCL|0600)`: the new queue's id, or `None` if the
/// key is taken.
fn create(key: i32) -> Result<Option<i32>> {
    // SAFETY: msgget takes a key and flags; no memory is passed.
    let id = unsafe { libc::msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | QUEUE_MODE) };
    match Errno::result(id) {
        Ok(id) => Ok(Some(id)),
        Err(Errno::EEXIST) => Ok(None),
        Err(Errno::ENOSPC) => Err(Error::errno(format!("msgget {}", what(key)), Errno::ENOSPC)
            .hint("too many queues: see /proc/sys/kernel/msgmni")),
        Err(e) => Err(Error::errno(format!("msgget {}", what(key)), e)),
    }
}

/// A key from `ftok` on our lock file, trying project ids from 'M' on while
/// the key is taken by a queue that is not ours to reuse.
fn create_from_ftok(file: &Path) -> Result<(i32, i32)> {
    for proj in PROJ_ID..=0xff {
        let key = ftok(file, proj)?;
        if let Some(id) = create(key)? {
            return Ok((key, id));
        }
    }
    Err(Error::system(format!("every ftok key of {} is taken", file.display())).hint("pass --key"))
}

/// Why `--key` cannot be used: a stranger's queue, one open to others, or one of
/// ours that no reader here recorded (another directory's, or an old run's).
fn key_taken(key: i32) -> Error {
    let Ok(Some(id)) = lookup(key) else {
        return Error::system(format!("{} is taken by another queue", what(key)));
    };
    let checked = stat(id).map_err(|e| Error::errno(format!("msgctl IPC_STAT id {id}"), e));
    if let Err(refused) = checked.and_then(|ds| check_ours(&ds, key, id)) {
        return refused.hint("pick another --key");
    }
    Error::system(format!(
        "{} is taken by another queue of ours (id {id}) that no reader here made",
        what(key)
    ))
    .hint(format!("pick another --key, or remove it if it is yours: ipcrm -q {id}"))
}

/// `msgget(key, 0)`: the id of the queue at `key`, if any.
fn lookup(key: i32) -> Result<Option<i32>> {
    // SAFETY: msgget without IPC_CREAT only looks the key up.
    match Errno::result(unsafe { libc::msgget(key, 0) }) {
        Ok(id) => Ok(Some(id)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(Error::errno(format!("msgget {}", what(key)), e)),
    }
}

/// `key=0x... id=N`, as [`create_queue`] publishes it.
fn parse_published(text: &str) -> Option<(i32, i32)> {
    let mut key = None;
    let mut id = None;
    for word in text.split_whitespace() {
        if let Some(k) = word.strip_prefix("key=") {
            key = parse_key(k).ok();
        } else if let Some(i) = word.strip_prefix("id=") {
            id = i.parse().ok();
        }
    }
    key.zip(id)
}

/// The queue our previous reader recorded: if it still exists (same id, same
/// key, ours), it was left by a reader that was killed.
fn remove_stale(key: i32, id: i32, force: bool) -> Result<()> {
    let Ok(ds) = stat(id) else { return Ok(()) };
    if ds.msg_perm.__key != key {
        return Ok(()); // the id was reused by an unrelated queue since
    }
    check_ours(&ds, key, id).map_err(|e| e.hint("it is not ours to remove"))?;
    if !force {
        return Err(Error::system(format!(
            "{} (id {id}) is stale (left by a reader that was killed, {} messages still in it)",
            what(key),
            ds.msg_qnum
        ))
        .hint(format!("remove it: ipcrm -q {id} (or make clean-ipc, or add --force)")));
    }
    match remove(id) {
        Ok(()) | Err(Errno::EINVAL | Errno::EIDRM) => Ok(()),
        Err(e) => Err(Error::errno(format!("msgctl IPC_RMID id {id}"), e)),
    }
}

impl Queue {
    /// The key.
    pub fn key(&self) -> i32 {
        self.key
    }

    /// The queue id (what `ipcs -q` and `ipcrm -q` show).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Largest message the system takes (`msgmax`): the receive buffer's size.
    pub fn msgmax(&self) -> u64 {
        self.msgmax
    }

    /// Bytes the queue holds (`msg_qbytes`).
    pub fn qbytes(&self) -> u64 {
        self.qbytes
    }

    /// Leave the queue (and its lock files, which name its key) on drop: `--keep`.
    pub fn keep(&mut self) {
        self.keep = true;
        self.presence.keep();
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if !self.keep {
            // msgctl IPC_RMID: the owner removes the queue, messages and all.
            let _ = remove(self.id);
        }
    }
}

/// A message buffer as `msgsnd`/`msgrcv` want it: a `long` type, then the bytes.
/// Backed by `u64`s so the type field is aligned.
#[derive(Debug)]
struct MsgBuf(Vec<u64>);

impl MsgBuf {
    fn new(text: u64) -> Self {
        MsgBuf(vec![0; 1 + usize::try_from(text.div_ceil(8)).unwrap_or(0)])
    }

    fn mtype(&self) -> i64 {
        i64::from_ne_bytes(self.0[0].to_ne_bytes())
    }

    fn set_mtype(&mut self, t: i64) {
        self.0[0] = u64::from_ne_bytes(t.to_ne_bytes());
    }

    /// The text part, as bytes.
    fn text(&self) -> &[u8] {
        // SAFETY: any u64 is 8 valid bytes; the slice stays within the Vec.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.0.len() * 8) };
        &bytes[8..]
    }

    fn text_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; we hold the only reference to the Vec.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), self.0.len() * 8)
        };
        &mut bytes[8..]
    }

    fn ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }
}

/// Which messages the reader takes (`msgrcv`'s `msgtyp` and `MSG_EXCEPT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// `msgtyp` 0: every message, in order.
    All,
    /// `msgtyp` T > 0: only type T (writer T − 1); T < 0: the lowest type ≤ |T| first.
    Type(i64),
    /// `msgtyp` T with `MSG_EXCEPT`: every type but T.
    Except(i64),
}

/// Frames from the reader's queue.
#[derive(Debug)]
pub struct QueueSource<'q> {
    q: &'q Queue,
    buf: MsgBuf,
    select: Select,
    max_frame: u32,
    first: Deadline,
    timeout: Option<Duration>,
    started: bool,
    seen_writer: bool,
    /// How long a started stream may go quiet while a writer still holds the
    /// queue (a frozen writer, `--timeout`); and when the last message came.
    stall: Option<Duration>,
    last: Instant,
    _ticker: Ticker,
}

impl<'q> QueueSource<'q> {
    /// Reads `q`, taking the messages `select` picks; `timeout` bounds the wait
    /// for the first writer.
    pub fn new(
        q: &'q Queue,
        select: Select,
        max_frame: u32,
        timeout: Option<Duration>,
    ) -> Result<Self> {
        Ok(QueueSource {
            q,
            buf: MsgBuf::new(q.msgmax),
            select,
            max_frame,
            first: Deadline::after(timeout),
            timeout,
            started: false,
            seen_writer: false,
            stall: None,
            last: Instant::now(),
            _ticker: Ticker::start()?,
        })
    }

    /// Gives up (peer lost) when a writer holds the queue but sends nothing
    /// for `stall` once the stream has begun (a frozen writer).
    #[must_use]
    pub fn with_stall(mut self, stall: Option<Duration>) -> Self {
        self.stall = stall;
        self
    }

    /// One `msgrcv`; `flags` may add `IPC_NOWAIT`. `Ok(None)` when interrupted
    /// (the tick) or, with `IPC_NOWAIT`, when nothing is there.
    fn receive(&mut self, flags: i32) -> Result<Option<usize>> {
        let (typ, except) = match self.select {
            Select::All => (0, 0),
            Select::Type(t) => (t, 0),
            Select::Except(t) => (t, libc::MSG_EXCEPT),
        };
        let room = usize::try_from(self.q.msgmax).unwrap_or(0);
        let ptr = self.buf.ptr();
        // msgrcv: the next message we select, up to `room` bytes; no MSG_NOERROR.
        // SAFETY: the buffer holds a long and at least `room` bytes after it.
        let n = unsafe { libc::msgrcv(self.q.id, ptr, room, typ, flags | except) };
        match Errno::result(n) {
            Ok(n) => Ok(Some(usize::try_from(n).unwrap_or(0))),
            Err(Errno::EINTR | Errno::ENOMSG) => Ok(None),
            Err(Errno::E2BIG) => Err(Error::bad_data(format!(
                "a message longer than {room} bytes is waiting; refusing to truncate it (no MSG_NOERROR)"
            ))),
            Err(Errno::EIDRM | Errno::EINVAL) => Err(Error::peer_lost(format!(
                "{} (id {}) was removed while in use (ipcrm?)",
                what(self.q.key),
                self.q.id
            ))),
            Err(e) => Err(Error::errno(format!("msgrcv id {}", self.q.id), e)),
        }
    }

    /// After a quiet tick: give up on the first writer, or tell whether the
    /// stream has ended (no writer left; the caller then checks emptiness).
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
                what(self.q.key)
            )));
        }
        if self.q.presence.writers_present()? {
            self.seen_writer = true;
            return Ok(false);
        }
        Ok(self.seen_writer)
    }
}

impl FrameSource for QueueSource<'_> {
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        let n = loop {
            signals::check()?;
            if let Some(n) = self.receive(0)? {
                break n;
            }
            // Interrupted by the tick (or a signal): we were waiting.
            if self.quiet_tick()? {
                if let Some(n) = self.receive(libc::IPC_NOWAIT)? {
                    break n;
                }
                self.seen_writer = false;
                return Ok(None);
            }
        };
        self.started = true;
        self.seen_writer = true;
        self.last = Instant::now();
        let mtype = self.buf.mtype();
        let frame = parse_message(&self.buf.text()[..n], self.max_frame)
            .map_err(|e| Error::bad_data(e.to_string()))?;
        if mtype != i64::from(frame.header.writer) + 1 {
            return Err(Error::bad_data(format!(
                "message type {mtype} carries a frame of writer {} (the type must be the writer id + 1)",
                frame.header.writer
            )));
        }
        Ok(Some(frame))
    }

    fn next_writer(&mut self) -> Result<bool> {
        Ok(true)
    }

    fn end_reason(&self) -> &'static str {
        crate::END_REASON
    }
}

/// A writer's view of the queue.
#[derive(Debug)]
pub struct WriterQueue {
    id: i32,
    key: i32,
    msgmax: u64,
    presence: WriterPresence,
}

/// Opens the queue for writing, waiting until it exists and a reader holds it,
/// up to `timeout`.
pub fn open_queue(key: Option<i32>, timeout: Option<Duration>) -> Result<WriterQueue> {
    let msgmax = crate::read_limit(MSGMAX_FILE)?;
    let deadline = Deadline::after(timeout);
    let dir = paths::private_dir()?;
    loop {
        if let Some(q) = try_open(&dir, key, msgmax)? {
            return Ok(q);
        }
        if deadline.expired() {
            let secs = timeout.unwrap_or_default().as_secs();
            let which = key.map_or_else(|| "a System V queue".to_string(), what);
            return Err(Error::peer_lost(format!(
                "no mq-reader created {which} within {secs} s (--timeout)"
            ))
            .hint("start mq-reader --api sysv first"));
        }
        pause(&deadline, OPEN_RETRY)?;
    }
}

fn try_open(dir: &Path, key: Option<i32>, msgmax: u64) -> Result<Option<WriterQueue>> {
    let Some(presence) = WriterPresence::join(dir, &lock_base(key))? else { return Ok(None) };
    if !presence.reader_present()? {
        return Ok(None);
    }
    // The reader publishes the key and id it got; nothing there yet means not ready.
    let Some((key, id)) = parse_published(&presence.published()?) else { return Ok(None) };
    // msgctl IPC_STAT: still that queue (same key), and ours?
    let Ok(ds) = stat(id) else { return Ok(None) };
    if ds.msg_perm.__key != key {
        return Ok(None);
    }
    check_ours(&ds, key, id)?;
    Ok(Some(WriterQueue { id, key, msgmax, presence }))
}

impl WriterQueue {
    /// Largest message the system takes.
    pub fn msgmax(&self) -> u64 {
        self.msgmax
    }
}

/// Frames into the queue, one message each, of type writer id + 1.
#[derive(Debug)]
pub struct QueueSink<'q> {
    q: &'q WriterQueue,
    buf: MsgBuf,
    stall: Option<Duration>,
    _ticker: Ticker,
}

impl<'q> QueueSink<'q> {
    /// Sends into `q`.
    pub fn new(q: &'q WriterQueue) -> Result<Self> {
        Ok(QueueSink { q, buf: MsgBuf::new(q.msgmax), stall: None, _ticker: Ticker::start()? })
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
        let len = HEADER_LEN + payload.len();
        if len as u64 > self.q.msgmax {
            return Err(Error::usage(format!(
                "a frame of {len} bytes is above {MSGMAX_FILE} ({}); raise it: sysctl kernel.msgmax={len}",
                self.q.msgmax
            )));
        }
        // The message: type writer id + 1 (the source's "message number"), then the frame.
        self.buf.set_mtype(i64::from(header.writer) + 1);
        let text = self.buf.text_mut();
        text[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        text[HEADER_LEN..len].copy_from_slice(payload);
        let ptr = self.buf.ptr().cast_const();
        let give_up = Deadline::after(self.stall);
        loop {
            // msgsnd: blocks while the queue is full; the tick interrupts it.
            // SAFETY: the buffer holds the type and `len` bytes after it.
            let rc = unsafe { libc::msgsnd(self.q.id, ptr, len, 0) };
            match Errno::result(rc) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {
                    signals::check()?;
                    if !self.q.presence.reader_present()? {
                        return Err(Error::peer_lost("reader went away"));
                    }
                    if give_up.expired() {
                        return Err(stalled("the reader", self.stall.unwrap_or_default()));
                    }
                }
                Err(Errno::EIDRM | Errno::EINVAL) => {
                    return Err(Error::peer_lost(format!(
                        "{} (id {}) was removed while in use (ipcrm?); reader went away",
                        what(self.q.key),
                        self.q.id
                    )));
                }
                Err(e) => return Err(Error::errno(format!("msgsnd id {}", self.q.id), e)),
            }
        }
    }
}
