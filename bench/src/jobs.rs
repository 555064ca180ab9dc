//! What each side does with a mechanism's frame endpoints: the measured loops.
//!
//! A mechanism lends its endpoints ([`FrameSink`], [`FrameSource`]) to a
//! *job*, the way a scoped callback would, so each loop below is compiled
//! for each mechanism's own types (no virtual call per frame), and whatever
//! the endpoints borrow (a queue, a mapped segment) outlives them.
//!
//! | job | side | does |
//! |---|---|---|
//! | [`SendFrames`] | child | frames until the parent raises the stop flag, then the end frame |
//! | [`ReceiveFrames`] | parent | checks every frame ([`Validator`]), times from the first to the end frame |
//! | [`Client`] | parent | round trips: send, wait for the echo, check it is the request, time it |
//! | [`Echo`] | child | checks each request as a reader does, sends it back |
//!
//! The raw variants ([`send_raw`], [`receive_raw`], [`raw_client`],
//! [`raw_echo`]) make the same system calls with the same sizes (a frame's
//! bytes, header included) and no framing at all: no header built or parsed,
//! no checksum, no check, no digest.
//!
//! The payloads come from [`Generator`], as in the writer binaries: slices of
//! one pool of random bytes, so the hot loop neither allocates nor copies.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_common::driver::{FrameSink, FrameSource, ReaderOpts, Validator};
use ipc_common::error::{Error, Result};
use ipc_common::frame::{DEFAULT_MAX_FRAME, HEADER_LEN, Header, Kind};
use ipc_common::payload::{Digest, Generator, SizeSpec};
use ipc_common::signals;

use crate::hist::Histogram;

/// The payload seed of every run.
pub const SEED: u64 = 1;
/// How long a reader waits for its first frame: a child that failed to start
/// is reported, not waited for forever (servers wait forever; the bench does not).
pub const FIRST_FRAME: Duration = Duration::from_secs(10);
/// Largest frame a reader accepts (the binaries' default).
pub const MAX_FRAME: u32 = DEFAULT_MAX_FRAME;

/// Uses a mechanism's writing end.
pub trait SinkJob {
    /// What the job returns.
    type Out;
    /// Runs with the sink.
    fn run<S: FrameSink>(self, sink: &mut S) -> Result<Self::Out>;
}

/// Uses a mechanism's reading end.
pub trait SourceJob {
    /// What the job returns.
    type Out;
    /// Runs with the source.
    fn run<S: FrameSource>(self, source: &mut S) -> Result<Self::Out>;
}

/// Uses both directions at once (round trips).
pub trait DuplexJob {
    /// What the job returns.
    type Out;
    /// Runs with the source (what comes in) and the sink (what goes out).
    fn run<R: FrameSource, W: FrameSink>(self, source: &mut R, sink: &mut W) -> Result<Self::Out>;
}

/// What a throughput run moved, timed from the first frame (or read) to the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transfer {
    /// Messages after the first one.
    pub messages: u64,
    /// Payload bytes after the first message.
    pub bytes: u64,
    /// Seconds from the first message to the end of the stream.
    pub secs: f64,
}

/// Round trips of one latency run.
#[derive(Debug, Clone, Copy)]
pub struct Rounds {
    /// Untimed round trips first: caches, page tables, the scheduler's guesses.
    pub warmup: u64,
    /// Timed round trips.
    pub timed: u64,
}

/// Whether the reader's throughput budget is spent; looked at every 64
/// messages (a clock read costs ~20 ns, a 64-byte frame through shared
/// memory not much more), or at every message of 16 KiB and up.
fn time_to_stop(messages: u64, len: usize, start: Instant, budget: Duration) -> bool {
    (messages % 64 == 0 || len >= 16 << 10) && start.elapsed() >= budget
}

/// The child's side of a throughput run: `size`-byte frames until `stop` is
/// raised, then the end frame (what `run_writer` sends, digest included,
/// minus the summary line). The digest goes to the parent through `digest`
/// before the end frame, with [`SENT`] set, for it to compare with its own.
#[derive(Debug)]
pub struct SendFrames<'a> {
    /// Payload bytes per frame.
    pub size: usize,
    /// Raised by the parent when it has measured enough.
    pub stop: &'a AtomicU32,
    /// Where the writer's digest goes (the summary line's, in the binaries).
    pub digest: &'a AtomicU64,
}

/// Set in the shared digest word once the writer has stored its digest.
pub const SENT: u64 = 1 << 32;

impl SinkJob for SendFrames<'_> {
    type Out = ();
    fn run<S: FrameSink>(self, sink: &mut S) -> Result<()> {
        let generator = Generator::new(SEED, SizeSpec::fixed(self.size));
        let mut digest = Digest::new();
        let mut seq = 0;
        while self.stop.load(Ordering::Relaxed) == 0 {
            signals::check()?;
            let payload = generator.payload(seq);
            let header = Header::data(0, seq, payload);
            sink.send(&header, payload)?;
            digest.add_crc(header.crc, u64::from(header.len));
            seq += 1;
        }
        self.digest.store(SENT | u64::from(digest.value()), Ordering::Release);
        sink.send(&Header::end(0, seq), &[])?;
        sink.flush()
    }
}

/// The parent's side of a throughput run: every frame checked as
/// `run_reader` checks it ([`Validator`]: CRC unless `verify` is off,
/// sequence, end frame), timed from the first frame to the end frame.
#[derive(Debug)]
pub struct ReceiveFrames<'a> {
    /// The mechanism, for error messages.
    pub mech: &'a str,
    /// Check each payload's CRC (the `--no-verify` column turns it off).
    pub verify: bool,
    /// How long to measure before raising `stop`.
    pub budget: Duration,
    /// The writer's stop flag.
    pub stop: &'a AtomicU32,
    /// The writer's digest, stored before its end frame (see [`SendFrames`]).
    pub digest: &'a AtomicU64,
}

impl SourceJob for ReceiveFrames<'_> {
    type Out = Transfer;
    fn run<S: FrameSource>(self, source: &mut S) -> Result<Transfer> {
        let opts = ReaderOpts {
            count: None,
            writers: 1,
            max_frame: MAX_FRAME,
            print: false,
            verify: self.verify,
        };
        let mut check = Validator::new(self.mech, &opts).with_end_reason(source.end_reason());
        let (mut start, mut t) = (None, Transfer::default());
        loop {
            let frame = match source.recv() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    check.at_end_of_stream()?;
                    return Err(Error::peer_lost(format!("{}: end of stream", self.mech)));
                }
                Err(err) => return Err(check.explain(err)),
            };
            let kind = check.accept(&frame)?;
            let len = frame.payload.len();
            let Some(t0) = start else {
                start = Some(Instant::now());
                continue;
            };
            if kind == Kind::End {
                t.secs = t0.elapsed().as_secs_f64();
                // Equal digests prove the transfer, as the two summary lines do.
                let sent = self.digest.load(Ordering::Acquire);
                let got = check.received().writers.first().map(|w| w.tally.digest.value());
                if sent & SENT == 0 || got != Some(sent as u32) {
                    return Err(Error::bad_data(format!(
                        "{}: digest {} received, {:08x} sent",
                        self.mech,
                        got.map_or_else(|| "none".into(), |d| format!("{d:08x}")),
                        sent as u32
                    )));
                }
                return Ok(t);
            }
            t.messages += 1;
            t.bytes += len as u64;
            if time_to_stop(t.messages, len, t0, self.budget) {
                self.stop.store(1, Ordering::Relaxed);
            }
        }
    }
}

/// The parent's side of a latency run: `rounds` round trips of `size`-byte
/// frames, each reply checked to be the request (header, and CRC unless
/// `verify` is off), the timed ones recorded in the histogram.
#[derive(Debug)]
pub struct Client<'a> {
    /// The mechanism, for error messages.
    pub mech: &'a str,
    /// Payload bytes per frame.
    pub size: usize,
    /// How many, warm-up first.
    pub rounds: Rounds,
    /// Check each reply's CRC.
    pub verify: bool,
}

impl DuplexJob for Client<'_> {
    type Out = Histogram;
    fn run<R: FrameSource, W: FrameSink>(self, source: &mut R, sink: &mut W) -> Result<Histogram> {
        let generator = Generator::new(SEED, SizeSpec::fixed(self.size));
        let mut times = Histogram::new();
        let total = self.rounds.warmup + self.rounds.timed;
        let mech = self.mech;
        let lost = |n: u64| {
            move |e: Error| {
                Error::new(e.exit(), format!("{mech}: after {n} round trips: {}", e.message()))
            }
        };
        for seq in 0..=total {
            signals::check()?;
            let (header, payload) = if seq < total {
                let payload = generator.payload(seq);
                (Header::data(0, seq, payload), payload)
            } else {
                (Header::end(0, total), &[][..])
            };
            let start = Instant::now();
            sink.send(&header, payload).and_then(|()| sink.flush()).map_err(lost(seq))?;
            let reply = source.recv().map_err(lost(seq))?;
            let elapsed = start.elapsed();
            let Some(reply) = reply else {
                return Err(Error::peer_lost(format!("{mech}: the echo side went away")));
            };
            if reply.header != header {
                return Err(Error::bad_data(format!(
                    "{mech}: reply to seq {seq} is not the request: {:?}",
                    reply.header
                )));
            }
            if self.verify {
                reply
                    .check_crc()
                    .map_err(|e| Error::bad_data(format!("{mech}: reply to seq {seq}: {e}")))?;
            }
            if seq >= self.rounds.warmup && seq < total {
                times.record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
            }
        }
        Ok(times)
    }
}

/// The child's side of a latency run: check each request as a reader does,
/// send it straight back, until the end frame (echoed too).
#[derive(Debug)]
pub struct Echo<'a> {
    /// The mechanism, for error messages.
    pub mech: &'a str,
    /// Check each request's CRC.
    pub verify: bool,
}

impl DuplexJob for Echo<'_> {
    type Out = ();
    fn run<R: FrameSource, W: FrameSink>(self, source: &mut R, sink: &mut W) -> Result<()> {
        let opts = ReaderOpts {
            count: None,
            writers: 1,
            max_frame: MAX_FRAME,
            print: false,
            verify: self.verify,
        };
        let mut check = Validator::new(self.mech, &opts).with_end_reason(source.end_reason());
        loop {
            signals::check()?;
            let frame = match source.recv() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    check.at_end_of_stream()?;
                    return Err(Error::peer_lost(format!("{}: end of stream", self.mech)));
                }
                Err(err) => return Err(check.explain(err)),
            };
            let kind = check.accept(&frame)?;
            sink.send(&frame.header, frame.payload)?;
            sink.flush()?;
            if kind == Kind::End {
                return Ok(());
            }
        }
    }
}

/// Runs a [`DuplexJob`] once a sink is lent: the source comes from `then`.
/// (Two one-way channels make one duplex: see `Mechanism::client`.)
#[derive(Debug)]
pub struct SinkThen<F, J> {
    /// Lends the source to the job's second half.
    pub then: F,
    /// The duplex job.
    pub job: J,
}

/// The second half of [`SinkThen`] / [`SourceThen`]: both ends lent.
#[derive(Debug)]
pub struct WithSink<'s, W, J> {
    /// The sink lent first.
    pub sink: &'s mut W,
    /// The duplex job.
    pub job: J,
}

impl<W: FrameSink, J: DuplexJob> SourceJob for WithSink<'_, W, J> {
    type Out = J::Out;
    fn run<R: FrameSource>(self, source: &mut R) -> Result<J::Out> {
        self.job.run(source, self.sink)
    }
}

/// Lends the source for a [`WithSink`] job (a mechanism's `read`).
pub trait LendSource {
    /// Lends a source to `job`.
    fn lend<J: SourceJob>(self, job: J) -> Result<J::Out>;
}

/// Lends the sink for a [`WithSource`] job (a mechanism's `write`).
pub trait LendSink {
    /// Lends a sink to `job`.
    fn lend<J: SinkJob>(self, job: J) -> Result<J::Out>;
}

impl<F: LendSource, J: DuplexJob> SinkJob for SinkThen<F, J> {
    type Out = J::Out;
    fn run<W: FrameSink>(self, sink: &mut W) -> Result<J::Out> {
        self.then.lend(WithSink { sink, job: self.job })
    }
}

/// Runs a [`DuplexJob`] once a source is lent: the sink comes from `then`.
#[derive(Debug)]
pub struct SourceThen<F, J> {
    /// Lends the sink to the job's second half.
    pub then: F,
    /// The duplex job.
    pub job: J,
}

/// The second half of [`SourceThen`].
#[derive(Debug)]
pub struct WithSource<'s, R, J> {
    /// The source lent first.
    pub source: &'s mut R,
    /// The duplex job.
    pub job: J,
}

impl<R: FrameSource, J: DuplexJob> SinkJob for WithSource<'_, R, J> {
    type Out = J::Out;
    fn run<W: FrameSink>(self, sink: &mut W) -> Result<J::Out> {
        self.job.run(self.source, sink)
    }
}

impl<F: LendSink, J: DuplexJob> SourceJob for SourceThen<F, J> {
    type Out = J::Out;
    fn run<R: FrameSource>(self, source: &mut R) -> Result<J::Out> {
        self.then.lend(WithSource { source, job: self.job })
    }
}

/// The bare transport's sending end (copying mechanisms): the same system
/// call the frame sink makes, with bytes instead of frames.
pub trait RawTx {
    /// Sends `bytes`: one write (streams) or one message.
    fn send(&mut self, bytes: &[u8]) -> Result<()>;
    /// Ends the stream: close (streams), or an empty message (queues).
    fn finish(&mut self) -> Result<()>;
}

/// The bare transport's receiving end.
pub trait RawRx {
    /// The next bytes: what one read returns, or one message; empty at the end.
    fn recv(&mut self) -> Result<&[u8]>;
}

/// The child's side of a raw throughput run: writes of `chunk` bytes (the
/// sizes the frame sink's writes have) until `stop`, then the end.
pub fn send_raw(tx: &mut dyn RawTx, chunk: usize, stop: &AtomicU32) -> Result<()> {
    let generator = Generator::new(SEED, SizeSpec::fixed(chunk));
    let mut seq = 0;
    while stop.load(Ordering::Relaxed) == 0 {
        signals::check()?;
        tx.send(generator.payload(seq))?;
        seq += 1;
    }
    tx.finish()
}

/// The parent's side of a raw throughput run: bytes until the end, timed
/// from the first read. The writes carried frame-sized pieces (`size` plus a
/// header's worth of bytes, see `Mechanism::raw_chunk`), so messages are
/// counted as bytes / (`size` + 24), and the bytes reported are their
/// payload's, comparable with a framed run's.
pub fn receive_raw(
    rx: &mut dyn RawRx,
    size: usize,
    budget: Duration,
    stop: &AtomicU32,
) -> Result<Transfer> {
    let first = rx.recv()?;
    if first.is_empty() {
        return Err(Error::peer_lost("raw: the writer sent nothing"));
    }
    let start = Instant::now();
    let (mut t, mut reads) = (Transfer::default(), 0u64);
    loop {
        let got = rx.recv()?.len();
        if got == 0 {
            t.secs = start.elapsed().as_secs_f64();
            t.messages = t.bytes / (size + HEADER_LEN) as u64;
            t.bytes = t.messages * size as u64;
            return Ok(t);
        }
        t.bytes += got as u64;
        reads += 1;
        if time_to_stop(reads, got, start, budget) {
            stop.store(1, Ordering::Relaxed);
        }
    }
}

/// The parent's side of a raw latency run: send a frame's worth of bytes
/// (`size` + 24, what one framed request writes), wait until as many have
/// come back, time it.
pub fn raw_client(
    tx: &mut dyn RawTx,
    rx: &mut dyn RawRx,
    size: usize,
    rounds: Rounds,
) -> Result<Histogram> {
    let size = size + HEADER_LEN;
    let generator = Generator::new(SEED, SizeSpec::fixed(size));
    let mut times = Histogram::new();
    let total = rounds.warmup + rounds.timed;
    for seq in 0..total {
        signals::check()?;
        let payload = generator.payload(seq);
        let start = Instant::now();
        tx.send(payload)?;
        let mut got = 0;
        while got < size {
            let n = rx.recv()?.len();
            if n == 0 {
                return Err(Error::peer_lost(format!("raw: the echo side went away after {seq}")));
            }
            got += n;
        }
        let elapsed = start.elapsed();
        if seq >= rounds.warmup {
            times.record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    tx.finish()?;
    Ok(times)
}

/// The child's side of a raw latency run: send back whatever arrives, as it
/// arrives, until the end.
pub fn raw_echo(rx: &mut dyn RawRx, tx: &mut dyn RawTx) -> Result<()> {
    loop {
        signals::check()?;
        let bytes = rx.recv()?;
        if bytes.is_empty() {
            return tx.finish();
        }
        tx.send(bytes)?;
    }
}
