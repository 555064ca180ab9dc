//! The writer and reader loops every pair runs, over two small traits.
//!
//! A mechanism implements [`FrameSink`] (send one frame) and [`FrameSource`]
//! (receive one frame as a borrowed view) and gets everything else from here:
//! text and generated modes, the end frame, per-writer sequence checks and
//! digests, `--count` and `--writers`, the summary lines, and round trips for
//! latency. The benchmark and the tests run on the same two traits.
//!
//! # What the reader checks, in order
//! 1. the header (magic, kind, flags, `len` against `--max-frame`), by the source,
//!    before it reads the payload;
//! 2. the payload's CRC;
//! 3. `seq` equal to that writer's previous `seq` plus one (an end frame's `seq` is
//!    the number of data frames, so the same check proves none went missing);
//! 4. `--count`: never more, and at the end exactly that many.
//!
//! Only then is a payload printed (text mode) or added to the digest.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::error::{Error, Exit, Result};
use crate::frame::{DEFAULT_MAX_FRAME, Frame, Header, Kind};
use crate::payload::{Digest, Generator, SizeSpec};
use crate::signals;
use crate::stats::Latencies;
use crate::stream::{LinePrinter, LineReader};

/// Sends frames: what a mechanism implements for its writing side.
pub trait FrameSink {
    /// Sends one frame. Byte streams may buffer it; message mechanisms send it now.
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()>;

    /// Pushes out whatever [`FrameSink::send`] buffered.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Receives frames: what a mechanism implements for its reading side.
pub trait FrameSource {
    /// The next frame, its header already checked (magic, kind, flags, length);
    /// `None` at the end of the stream (every writer closed it). The view is valid
    /// until the next call.
    fn recv(&mut self) -> Result<Option<Frame<'_>>>;

    /// Called at the end of the stream when more writers are expected: get ready
    /// for the next one (a FIFO is reopened). `false` means none can come.
    fn next_writer(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// How this mechanism's end of stream looks, for "writer 0 vanished after 812
    /// of ? messages (...)": end of file for byte streams; objects without end
    /// of file say what they saw instead.
    fn end_reason(&self) -> &'static str {
        "end of file without an end frame"
    }
}

/// What a writer sends (from the command line).
#[derive(Debug, Clone)]
pub struct WriterOpts {
    /// Generated mode: this many payloads; `None` is text mode (lines of stdin).
    pub count: Option<u64>,
    /// Generated payload sizes.
    pub size: SizeSpec,
    /// Generated payload seed.
    pub seed: u64,
    /// Writer id put in every frame.
    pub id: u16,
}

/// What a reader expects (from the command line).
#[derive(Debug, Clone)]
pub struct ReaderOpts {
    /// Exactly this many data messages in all, or any number.
    pub count: Option<u64>,
    /// End after this many writers sent their end frame.
    pub writers: u16,
    /// Largest payload accepted.
    pub max_frame: u32,
    /// Text mode: print each payload on its own line.
    pub print: bool,
    /// Check each payload's CRC (the benchmark's `--no-verify` turns it off).
    pub verify: bool,
}

/// Messages, bytes and digest of one writer's stream.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Data messages.
    pub messages: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// CRC-32 over the payloads in order.
    pub digest: Digest,
}

impl Tally {
    #[inline]
    fn add(&mut self, header: &Header) {
        self.messages += 1;
        self.bytes += u64::from(header.len);
        self.digest.add_crc(header.crc, u64::from(header.len));
    }

    fn line(&self, verb: &str) -> String {
        format!("{verb} {} messages, {} bytes, digest {}", self.messages, self.bytes, self.digest)
    }
}

/// Runs a writer: text or generated payloads, then the end frame; prints the summary.
pub fn run_writer(
    bin: &str,
    sink: &mut impl FrameSink,
    opts: &WriterOpts,
    stdin: BorrowedFd<'_>,
) -> Result<Tally> {
    let mut sent = Tally::default();
    let result = send_all(sink, opts, stdin, &mut sent);
    if let Err(err) = result {
        return Err(match err.exit() {
            Exit::PeerLost => {
                Error::peer_lost(format!("{} after {} messages", err.message(), sent.messages))
            }
            _ => err,
        });
    }
    crate::say!("{bin}: {}", sent.line("sent"));
    Ok(sent)
}

fn send_all(
    sink: &mut impl FrameSink,
    opts: &WriterOpts,
    stdin: BorrowedFd<'_>,
    sent: &mut Tally,
) -> Result<()> {
    if let Some(count) = opts.count {
        let generator = Generator::new(opts.seed, opts.size);
        for seq in 0..count {
            signals::check()?;
            let payload = generator.payload(seq);
            let header = Header::data(opts.id, seq, payload);
            sink.send(&header, payload)?;
            sent.add(&header);
        }
    } else {
        let mut lines = LineReader::new(stdin, DEFAULT_MAX_FRAME as usize);
        while let Some(line) = lines.next_line()? {
            let header = Header::data(opts.id, sent.messages, line);
            sink.send(&header, line)?;
            // A person is typing: deliver each line now, not when a buffer fills.
            sink.flush()?;
            sent.add(&header);
        }
    }
    sink.send(&Header::end(opts.id, sent.messages), &[])?;
    sink.flush()
}

/// One writer as the reader sees it.
#[derive(Debug, Clone)]
pub struct WriterState {
    /// The writer's id.
    pub id: u16,
    /// What arrived from it.
    pub tally: Tally,
    /// Whether its end frame arrived.
    pub ended: bool,
}

/// What a reader received, per writer (sorted by id) and in all.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Every writer heard from.
    pub writers: Vec<WriterState>,
}

impl Received {
    /// Data messages from all writers.
    #[must_use]
    pub fn messages(&self) -> u64 {
        self.writers.iter().map(|w| w.tally.messages).sum()
    }

    /// Payload bytes from all writers.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.writers.iter().map(|w| w.tally.bytes).sum()
    }

    /// Writers whose end frame arrived.
    #[must_use]
    pub fn ended(&self) -> usize {
        self.writers.iter().filter(|w| w.ended).count()
    }

    /// A writer that started and has not ended, if any.
    #[must_use]
    pub fn active(&self) -> Option<&WriterState> {
        self.writers.iter().find(|w| !w.ended)
    }

    fn writer(&mut self, id: u16) -> &mut WriterState {
        let at = match self.writers.binary_search_by_key(&id, |w| w.id) {
            Ok(at) => at,
            Err(at) => {
                let fresh = WriterState { id, tally: Tally::default(), ended: false };
                self.writers.insert(at, fresh);
                at
            }
        };
        &mut self.writers[at]
    }
}

/// Two writers sharing an id look like one writer repeating itself.
const SAME_ID: &str = "several writers need different --id";

/// The reader's checks (see the module documentation), for [`run_reader`] and for
/// mechanisms whose topology needs a loop of their own (a server with one
/// connection per writer can keep one `Validator` per connection, say).
#[derive(Debug)]
pub struct Validator<'a> {
    mech: &'a str,
    opts: &'a ReaderOpts,
    got: Received,
    frames: u64,
    end_reason: &'a str,
}

impl<'a> Validator<'a> {
    /// A fresh validator; `mech` names the mechanism in every message.
    #[must_use]
    pub fn new(mech: &'a str, opts: &'a ReaderOpts) -> Self {
        let end_reason = "end of file without an end frame";
        Validator { mech, opts, got: Received::default(), frames: 0, end_reason }
    }

    /// What [`Validator::at_end_of_stream`] calls the end of the stream (see
    /// [`FrameSource::end_reason`]).
    #[must_use]
    pub fn with_end_reason(mut self, why: &'a str) -> Self {
        self.end_reason = why;
        self
    }

    /// What was accepted so far.
    #[must_use]
    pub fn received(&self) -> &Received {
        &self.got
    }

    /// Checks one frame; on success it is counted (and the caller may print it).
    pub fn accept(&mut self, frame: &Frame<'_>) -> Result<Kind> {
        self.frames += 1;
        // Read field by field where it lies: a copy of the whole header would
        // read back in wide loads what the source just stored in narrow ones.
        let h = &frame.header;
        let mech = self.mech;
        let bad = |what: String| {
            Error::bad_data(format!("{mech}: writer {} seq {}: {what}", h.writer, h.seq))
        };
        if self.opts.verify {
            frame.check_crc().map_err(|e| bad(e.to_string()))?;
        }
        // --count reached already? (The sum over writers only when it is set.)
        let full = self.opts.count.filter(|&c| self.got.messages() >= c);
        let state = self.got.writer(h.writer);
        if state.ended {
            return Err(bad("frame after this writer's end frame".into()).hint(SAME_ID));
        }
        let expected = state.tally.messages;
        if h.seq < expected {
            return Err(bad(format!(
                "duplicate: seq {} arrived again (expected {expected}; {SAME_ID})",
                h.seq
            )));
        }
        if h.seq > expected {
            let lost = h.seq - expected;
            return Err(bad(format!(
                "sequence gap: expected seq {expected}, {lost} message(s) missing"
            )));
        }
        match h.kind {
            Kind::Data => {
                if let Some(c) = full {
                    return Err(bad(format!("more than --count {c} messages")));
                }
                state.tally.add(h);
            }
            Kind::End => state.ended = true,
        }
        Ok(h.kind)
    }

    /// Whether `--writers` end frames have arrived, and every writer heard
    /// from has finished (a writer still mid-stream is never cut off).
    #[must_use]
    pub fn done(&self) -> bool {
        self.got.ended() >= usize::from(self.opts.writers) && self.got.active().is_none()
    }

    /// "writer 0 vanished after 812 of ? messages (why)".
    #[must_use]
    pub fn vanished(&self, w: &WriterState, why: &str) -> Error {
        let of = match (self.opts.count, self.opts.writers) {
            (Some(c), 1) => c.to_string(),
            _ => "?".into(),
        };
        Error::peer_lost(format!(
            "{}: writer {} vanished after {} of {of} messages ({why})",
            self.mech, w.id, w.tally.messages
        ))
    }

    /// Adds the stream position and writer to an error from the source.
    #[must_use]
    pub fn explain(&self, err: Error) -> Error {
        match err.exit() {
            Exit::BadData => Error::bad_data(format!(
                "{}: frame #{}: {}",
                self.mech,
                self.frames + 1,
                err.message()
            )),
            Exit::PeerLost => {
                if let Some(id) = err.writer() {
                    // The source knows which writer it lost (even one not heard from yet).
                    let known = self.got.writers.iter().find(|w| w.id == id).cloned();
                    let w =
                        known.unwrap_or(WriterState { id, tally: Tally::default(), ended: false });
                    return self.vanished(&w, err.message());
                }
                match self.got.active() {
                    Some(w) => self.vanished(w, err.message()),
                    None => Error::peer_lost(format!("{}: {}", self.mech, err.message())),
                }
            }
            _ => err,
        }
    }

    /// The stream ended (every writer closed it): an error if a writer vanished
    /// without its end frame, or none ever came; `Ok` if more may be awaited.
    pub fn at_end_of_stream(&self) -> Result<()> {
        if let Some(w) = self.got.active() {
            return Err(self.vanished(w, self.end_reason));
        }
        if self.got.writers.is_empty() {
            return Err(Error::peer_lost(format!(
                "{}: the writer closed the stream without sending anything",
                self.mech
            )));
        }
        Ok(())
    }

    /// Final `--count` check; the per-writer results.
    pub fn finish(self) -> Result<Received> {
        if let Some(c) = self.opts.count {
            let got = self.got.messages();
            if got != c {
                return Err(Error::bad_data(format!(
                    "{}: expected --count {c} messages, the writers sent {got}",
                    self.mech
                )));
            }
        }
        Ok(self.got)
    }
}

/// Runs a reader: receive, check, print (text mode), until `writers` end frames;
/// then prints the summary lines.
pub fn run_reader(
    bin: &str,
    mech: &str,
    source: &mut impl FrameSource,
    opts: &ReaderOpts,
) -> Result<Received> {
    let mut check = Validator::new(mech, opts).with_end_reason(source.end_reason());
    let mut out = if opts.print { Some(LinePrinter::stdout()?) } else { None };
    while !check.done() {
        signals::check()?;
        match source.recv() {
            Ok(Some(frame)) => {
                let kind = check.accept(&frame)?;
                if let (Kind::Data, Some(out)) = (kind, out.as_mut()) {
                    out.print(frame.payload)?;
                }
            }
            Ok(None) => {
                check.at_end_of_stream()?;
                if !check.done() && !source.next_writer()? {
                    return Err(Error::peer_lost(format!(
                        "{mech}: end of file after {} of {} writers finished",
                        check.got.ended(),
                        opts.writers
                    )));
                }
            }
            Err(err) => return Err(check.explain(err)),
        }
    }
    let got = check.finish()?;
    print_received(bin, &got, opts.writers);
    Ok(got)
}

/// The reader's summary: one line, or one per writer then the total.
pub fn print_received(bin: &str, got: &Received, expected_writers: u16) {
    if got.writers.len() == 1 && expected_writers == 1 {
        crate::say!("{bin}: {}", got.writers[0].tally.line("received"));
        return;
    }
    for w in &got.writers {
        crate::say!("{bin}: writer {}: {}", w.id, w.tally.line("received"));
    }
    crate::say!("{bin}: received {} messages, {} bytes", got.messages(), got.bytes());
}

/// Round trips from the client side: send a frame, wait for its echo, time it.
///
/// Each reply must be the request itself (same header, same payload CRC). Ends
/// with an end frame, echoed too. Returns what was sent and the round-trip times.
pub fn run_echo_client(
    bin: &str,
    mech: &str,
    sink: &mut impl FrameSink,
    source: &mut impl FrameSource,
    opts: &WriterOpts,
) -> Result<(Tally, Latencies)> {
    let count = opts.count.unwrap_or(0);
    let generator = Generator::new(opts.seed, opts.size);
    let mut sent = Tally::default();
    // Room for the samples up front (so timing does not allocate), within reason.
    let mut times = Latencies::with_capacity(count.min(1 << 24) as usize);
    let lost =
        |n: u64| Error::peer_lost(format!("{mech}: the echo side went away after {n} round trips"));
    let or_lost = |n: u64| {
        move |e: Error| match e.exit() {
            Exit::PeerLost => lost(n),
            _ => e,
        }
    };
    for seq in 0..=count {
        signals::check()?;
        let payload = if seq < count { generator.payload(seq) } else { &[] };
        let header = if seq < count {
            Header::data(opts.id, seq, payload)
        } else {
            Header::end(opts.id, count)
        };
        let start = Instant::now();
        sink.send(&header, payload).and_then(|()| sink.flush()).map_err(or_lost(seq))?;
        let reply = source.recv().map_err(or_lost(seq))?;
        let elapsed = start.elapsed();
        let Some(reply) = reply else {
            return Err(lost(seq));
        };
        if reply.header != header {
            return Err(Error::bad_data(format!(
                "{mech}: reply to seq {seq} is not the request: {:?}",
                reply.header
            )));
        }
        reply
            .check_crc()
            .map_err(|e| Error::bad_data(format!("{mech}: reply to seq {seq}: {e}")))?;
        if seq < count {
            sent.add(&header);
            times.push(elapsed);
        }
    }
    crate::say!("{bin}: {}", sent.line("sent"));
    Ok((sent, times))
}

/// Round trips from the echo side: check each frame as a reader does, send it back.
pub fn run_echo_server(
    bin: &str,
    mech: &str,
    source: &mut impl FrameSource,
    sink: &mut impl FrameSink,
    opts: &ReaderOpts,
) -> Result<Received> {
    let mut check = Validator::new(mech, opts).with_end_reason(source.end_reason());
    loop {
        signals::check()?;
        match source.recv() {
            Ok(Some(frame)) => {
                let kind = check.accept(&frame)?;
                sink.send(&frame.header, frame.payload)?;
                sink.flush()?;
                if kind == Kind::End {
                    break;
                }
            }
            Ok(None) => {
                check.at_end_of_stream()?;
                return Err(Error::peer_lost(format!("{mech}: end of file before the end frame")));
            }
            Err(err) => return Err(check.explain(err)),
        }
    }
    let got = check.finish()?;
    print_received(bin, &got, 1);
    Ok(got)
}

/// Formats a duration in microseconds with one decimal, for latency lines.
#[must_use]
pub fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
