//! Hostile input, as a property test: the frame decoders against random and
//! mutated streams and messages (issue 9, "Hostile input").
//!
//! Each case builds valid frames with [`frame::encode_into`] (random writers,
//! sizes from 0 bytes to past the stream buffer, proper sequence numbers and an
//! end frame), then mutates them: bit flips, truncation, splices of two streams,
//! oversized or merely large `len` fields, header bytes set at random, or plain
//! garbage. Every case is checked against a reference decoder written here from
//! SPEC §3 alone, so the properties are:
//!
//! - no panic, in [`StreamSource`] (fed through a real pipe, the way a reader
//!   gets it) or in [`frame::parse_message`];
//! - the stream decoder returns exactly the frames the reference finds, then
//!   ends the way it does: clean end of file, bad data (exit 4), or a frame cut
//!   short (exit 3);
//! - every frame the reader's checks accept ([`Validator::accept`], CRC on) has
//!   a CRC that a bitwise CRC-32 written here agrees with;
//! - every decoded frame whose CRC checks carries a payload a writer sent (a
//!   mutation never slips past the CRC), an unmutated stream decodes completely
//!   with every CRC passing, and the mutations do reach payloads (over a full
//!   run, more than 100 frames fail their CRC);
//! - no single allocation while decoding is larger than the header plus
//!   `--max-frame`, nor (for a stream) twice the bytes that actually arrived —
//!   measured by a counting global allocator — and `parse_message` allocates
//!   nothing at all.
//!
//! `IPC_DEMOS_PROP_SEED=N` replays a run; `IPC_DEMOS_PROP_CASES=N` changes its size.

use std::collections::HashSet;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::Instant;

use ipc_common::Exit;
use ipc_common::driver::{FrameSource, ReaderOpts, Validator};
use ipc_common::frame::{self, DEFAULT_MAX_FRAME, HEADER_LEN, Header, Kind};
use ipc_common::stream::{STREAM_BUFFER, StreamSource};
use ipc_faults::oracle::{Counting, crc32_ref, ref_header, tracked};
use ipc_faults::rng::Rng;

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------
// A seeded PRNG ([`Rng`], splitmix64): no dependency, and a failing case replays.

/// Payload sizes a reader meets: mostly small, sometimes past the stream buffer.
fn payload_size(rng: &mut Rng) -> usize {
    match rng.below_usize(100) {
        0..=39 => rng.below_usize(64),
        40..=89 => rng.below_usize(4096),
        90..=97 => rng.below_usize(70_000),
        _ => STREAM_BUFFER - 64 + rng.below_usize(STREAM_BUFFER * 2),
    }
}

// ---------------------------------------------------------------------------
// The reference: SPEC §3 read literally, over a slice.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// End of input at a frame boundary.
    Clean,
    /// A header the reader must refuse (exit 4).
    BadData,
    /// End of input inside a frame (exit 3).
    Truncated,
}

struct RefFrame {
    kind: u8,
    writer: u16,
    seq: u64,
    crc: u32,
    payload: std::ops::Range<usize>,
}

fn ref_stream(input: &[u8], max_frame: u32) -> (Vec<RefFrame>, End) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &input[at..];
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        if rest.len() < HEADER_LEN {
            return (frames, End::Truncated);
        }
        let Some((kind, writer, seq, len, crc)) = ref_header(rest, max_frame) else {
            return (frames, End::BadData);
        };
        let total = HEADER_LEN + len as usize;
        if rest.len() < total {
            return (frames, End::Truncated);
        }
        let p = at + HEADER_LEN;
        frames.push(RefFrame { kind, writer, seq, crc, payload: p..p + len as usize });
        at += total;
    }
}

// ---------------------------------------------------------------------------
// Inputs: valid frames, then mutations.

/// A valid stream: `writers` writers taking turns, seq 0.. each, then end frames.
/// Every frame's payload (empty for an end frame) is pushed to `sent`.
fn valid_stream(rng: &mut Rng, max_payload: usize, sent: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let writers = 1 + rng.below_usize(3) as u16;
    let base = rng.below_usize(1000) as u16;
    let frames = rng.below_usize(24);
    let mut next = vec![0u64; usize::from(writers)];
    let mut out = Vec::new();
    let mut one = Vec::new();
    for _ in 0..frames {
        let w = rng.below_usize(usize::from(writers));
        let n = payload_size(rng).min(max_payload);
        let payload = rng.bytes(n);
        let header = Header::data(base + w as u16, next[w], &payload);
        frame::encode_into(&mut one, &header, &payload);
        out.extend_from_slice(&one);
        next[w] += 1;
        sent.push(payload);
    }
    for (w, &count) in next.iter().enumerate() {
        out.extend_from_slice(&Header::end(base + w as u16, count).to_bytes());
        sent.push(Vec::new());
    }
    out
}

fn valid_message(rng: &mut Rng, max_payload: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.chance(8) {
        let h = Header::end(rng.next_u64() as u16, rng.next_u64() % 1000);
        frame::encode_into(&mut out, &h, &[]);
    } else {
        let n = payload_size(rng).min(max_payload);
        let payload = rng.bytes(n);
        let h = Header::data(rng.next_u64() as u16, rng.next_u64() % 1000, &payload);
        frame::encode_into(&mut out, &h, &payload);
    }
    out
}

/// Offsets of the frame headers in a valid stream (for aimed mutations).
fn header_offsets(input: &[u8]) -> Vec<usize> {
    let (frames, _) = ref_stream(input, u32::MAX);
    frames.iter().map(|f| f.payload.start - HEADER_LEN).collect()
}

const MUTATIONS: [&str; 9] = [
    "valid",
    "bit flips",
    "truncated",
    "spliced",
    "oversized len",
    "large len, few bytes",
    "header byte",
    "garbage",
    "magic then garbage",
];

/// Applies mutation `m` of [`MUTATIONS`] to `valid` (and `other`, for a splice).
fn mutate(rng: &mut Rng, m: usize, mut v: Vec<u8>, other: &[u8], max_frame: u32) -> Vec<u8> {
    let heads = header_offsets(&v);
    let aim = |rng: &mut Rng| heads.get(rng.below_usize(heads.len())).copied();
    match MUTATIONS[m] {
        "bit flips" if !v.is_empty() => {
            for _ in 0..=rng.below_usize(8) {
                // Mostly in a header, where a flip changes what the decoder does.
                let at = match aim(rng) {
                    Some(h) if rng.chance(2) => h + rng.below_usize(HEADER_LEN),
                    _ => rng.below_usize(v.len()),
                };
                let at = at.min(v.len() - 1);
                v[at] ^= 1 << rng.below_usize(8);
            }
        }
        "truncated" => v.truncate(rng.below_usize(v.len() + 1)),
        "spliced" => {
            v.truncate(rng.below_usize(v.len() + 1));
            v.extend_from_slice(&other[rng.below_usize(other.len() + 1)..]);
        }
        "oversized len" | "large len, few bytes" => {
            if let Some(h) = aim(rng) {
                let len: u32 = if MUTATIONS[m] == "oversized len" {
                    let over = max_frame.saturating_add(1);
                    match rng.below_usize(3) {
                        0 => u32::MAX,
                        1 => over,
                        _ => over.saturating_add(rng.next_u64() as u32 % 1_000_000),
                    }
                } else {
                    max_frame - (rng.next_u64() as u32 % (max_frame / 4 + 1))
                };
                v[h + 16..h + 20].copy_from_slice(&len.to_le_bytes());
            }
        }
        "header byte" => {
            if let Some(h) = aim(rng) {
                v[h + rng.below_usize(HEADER_LEN)] = rng.next_u64() as u8;
            }
        }
        "garbage" => {
            let n = rng.below_usize(4096);
            v = rng.bytes(n);
        }
        "magic then garbage" => {
            v = b"IPC1".to_vec();
            let n = rng.below_usize(200);
            v.extend(rng.bytes(n));
        }
        _ => {}
    }
    v
}

// ---------------------------------------------------------------------------
// Decoding a stream through a pipe, as a reader does.

#[derive(Default)]
struct Totals {
    cases: u64,
    frames: u64,
    accepted: u64,
    bytes: u64,
    by_end: [u64; 3],
    biggest_growth: usize,
    crc_failed: u64,
}

/// What the writers of a stream case sent, to judge the frames that pass their
/// CRC by: a mutation must never turn into a frame whose CRC checks but whose
/// payload no writer sent.
struct Sent<'a> {
    /// Every payload of both valid streams the case was made from.
    payloads: HashSet<&'a [u8]>,
    /// For an unmutated stream: how many frames it holds, every one of which
    /// must decode and pass its CRC.
    intact: Option<usize>,
}

fn pipe_with(input: &[u8]) -> (OwnedFd, Option<std::thread::JoinHandle<()>>) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let mut w = std::fs::File::from(w);
    if input.len() <= 32 << 10 {
        // Fits the pipe: write it all now, close, no thread.
        w.write_all(input).expect("write pipe");
        return (r, None);
    }
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        // Random-ish chunk sizes, so frames arrive split at odd places. A reader
        // that stops early closes its end: EPIPE here (SIGPIPE is ignored).
        let mut rng = Rng(input.len() as u64);
        let mut at = 0;
        while at < input.len() {
            let n = (1 + rng.below_usize(100_000)).min(input.len() - at);
            if w.write_all(&input[at..at + n]).is_err() {
                return;
            }
            at += n;
        }
    });
    (r, Some(feeder))
}

/// Decodes `input` through a pipe with a [`StreamSource`] (its buffer `buffer`
/// bytes at first, or the usual [`STREAM_BUFFER`]) and checks it all.
fn check_stream(
    input: &[u8],
    max_frame: u32,
    buffer: Option<usize>,
    sent: &Sent,
    what: &str,
    t: &mut Totals,
) {
    let (expect, expect_end) = ref_stream(input, max_frame);
    let (fd, feeder) = pipe_with(input);
    let mut source = StreamSource::new(fd, max_frame, None, "property pipe").expect("source");
    if let Some(bytes) = buffer {
        source = source.with_buffer(bytes);
    }
    let opts = ReaderOpts { count: None, writers: u16::MAX, max_frame, print: false, verify: true };
    let mut check = Validator::new("prop", &opts);
    let mut validating = true;
    let (mut got, mut crc_passed) = (0usize, 0usize);
    let ((), peak, _) = tracked(|| {
        let end = loop {
            match source.recv() {
                Ok(Some(f)) => {
                    let e = expect.get(got).unwrap_or_else(|| {
                        panic!("{what}: decoder returned frame #{got}, the reference has none")
                    });
                    let h = f.header;
                    let kind = u8::from(h.kind == Kind::End);
                    assert_eq!(
                        (kind, h.writer, h.seq, h.len, h.crc, f.payload),
                        (
                            e.kind,
                            e.writer,
                            e.seq,
                            e.payload.len() as u32,
                            e.crc,
                            &input[e.payload.clone()]
                        ),
                        "{what}: frame #{got} differs from the reference"
                    );
                    if f.check_crc().is_ok() {
                        assert!(
                            sent.payloads.contains(f.payload),
                            "{what}: frame #{got} passed its CRC with a payload no writer sent"
                        );
                        crc_passed += 1;
                    } else {
                        t.crc_failed += 1;
                    }
                    got += 1;
                    if validating {
                        match check.accept(&f) {
                            Ok(_) => {
                                assert_eq!(
                                    crc32_ref(f.payload),
                                    h.crc,
                                    "{what}: frame #{got} accepted with a wrong checksum"
                                );
                                t.accepted += 1;
                            }
                            Err(e) => {
                                assert_eq!(e.exit(), Exit::BadData, "{what}: {}", e.message());
                                // A reader stops here; the decoder is still checked on.
                                validating = false;
                            }
                        }
                    }
                }
                Ok(None) => break End::Clean,
                Err(e) if e.exit() == Exit::BadData => break End::BadData,
                Err(e) if e.exit() == Exit::PeerLost => break End::Truncated,
                Err(e) => panic!("{what}: unexpected error {:?}: {}", e.exit(), e.message()),
            }
        };
        assert_eq!(got, expect.len(), "{what}: frame count");
        assert_eq!(end, expect_end, "{what}: how the stream ended");
        if let Some(frames) = sent.intact {
            assert_eq!(
                (got, crc_passed, end),
                (frames, frames, End::Clean),
                "{what}: an unmutated stream of {frames} frames did not decode completely"
            );
        }
        t.by_end[end as usize] += 1;
    });
    drop(source);
    if let Some(f) = feeder {
        f.join().expect("feeder");
    }
    // The buffer was made at STREAM_BUFFER before tracking; anything allocated
    // while decoding is an error message or growth for one frame.
    let bound = HEADER_LEN + max_frame as usize;
    assert!(
        peak <= bound.max(1024),
        "{what}: an allocation of {peak} bytes while decoding, above {HEADER_LEN} + --max-frame \
         {max_frame}"
    );
    if peak > 1024 {
        assert!(
            peak <= 2 * input.len(),
            "{what}: an allocation of {peak} bytes for a {}-byte input",
            input.len()
        );
        t.biggest_growth = t.biggest_growth.max(peak);
    }
    t.cases += 1;
    t.frames += got as u64;
    t.bytes += input.len() as u64;
}

fn check_message(msg: &[u8], max_frame: u32, what: &str, t: &mut Totals) {
    let expect = if msg.len() >= HEADER_LEN { ref_header(msg, max_frame) } else { None }
        .filter(|h| msg.len() == HEADER_LEN + h.3 as usize);
    let (result, peak, count) = tracked(|| {
        frame::parse_message(msg, max_frame).map(|f| (f.header, f.payload, f.check_crc().is_ok()))
    });
    assert_eq!(count, 0, "{what}: parse_message allocated ({peak} bytes)");
    match (result, expect) {
        (Ok((h, payload, crc_ok)), Some((kind, writer, seq, len, crc))) => {
            assert_eq!(
                (u8::from(h.kind == Kind::End), h.writer, h.seq, h.len, h.crc),
                (kind, writer, seq, len, crc),
                "{what}: header differs from the reference"
            );
            assert_eq!(payload, &msg[HEADER_LEN..], "{what}: payload");
            assert_eq!(crc_ok, crc32_ref(payload) == crc, "{what}: check_crc disagrees");
            t.frames += 1;
            t.accepted += u64::from(crc_ok);
        }
        (Err(_), None) => {}
        (Ok(_), None) => panic!("{what}: accepted a message the reference refuses"),
        (Err(e), Some(_)) => panic!("{what}: refused a valid message: {e}"),
    }
    t.cases += 1;
    t.bytes += msg.len() as u64;
}

fn seed() -> u64 {
    std::env::var("IPC_DEMOS_PROP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

fn cases(default: u64) -> u64 {
    std::env::var("IPC_DEMOS_PROP_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn max_frame(rng: &mut Rng) -> u32 {
    match rng.below_usize(6) {
        0 => 0,
        1 => 1 + rng.below_usize(100) as u32,
        2 => 4096,
        3 => 200_000,
        4 => 300_000,
        _ => DEFAULT_MAX_FRAME,
    }
}

#[test]
fn the_stream_decoder_survives_random_and_mutated_streams() {
    let seed = seed();
    let mut rng = Rng(seed);
    let mut t = Totals::default();
    let start = Instant::now();
    let n = cases(25_000);
    for i in 0..n {
        let max = max_frame(&mut rng);
        let mut payloads = Vec::new();
        let valid = valid_stream(&mut rng, max as usize, &mut payloads);
        let frames = payloads.len();
        let other = valid_stream(&mut rng, max as usize, &mut payloads);
        let m = rng.below_usize(MUTATIONS.len());
        let input = mutate(&mut rng, m, valid, &other, max);
        // Half the cases start from a small buffer, so that short streams take
        // the compaction and growth paths too.
        let buffer = rng.chance(2).then(|| rng.below_usize(4096));
        let what = format!(
            "seed {seed} case {i} ({}, --max-frame {max}, buffer {buffer:?})",
            MUTATIONS[m]
        );
        let sent = Sent {
            payloads: payloads.iter().map(Vec::as_slice).collect(),
            intact: (MUTATIONS[m] == "valid").then_some(frames),
        };
        check_stream(&input, max, buffer, &sent, &what, &mut t);
    }
    println!(
        "stream decoder: {} cases (seed {seed}), {} MB, {} frames decoded, {} failed their CRC, \
         {} accepted by the reader's checks; ended clean {}, bad data {}, cut short {}; largest \
         buffer growth {} bytes; {:.1} s",
        t.cases,
        t.bytes >> 20,
        t.frames,
        t.crc_failed,
        t.accepted,
        t.by_end[0],
        t.by_end[1],
        t.by_end[2],
        t.biggest_growth,
        start.elapsed().as_secs_f64()
    );
    // The mutations must reach payloads, or the CRC property above proves
    // nothing (a run cut down with IPC_DEMOS_PROP_CASES may be too short).
    if n >= 1_000 {
        assert!(
            t.crc_failed > 100,
            "seed {seed}: the mutations did not reach payloads ({} frames failed their CRC)",
            t.crc_failed
        );
    }
}

#[test]
fn the_message_decoder_survives_random_and_mutated_messages() {
    let seed = seed() ^ 0x5eed;
    let mut rng = Rng(seed);
    let mut t = Totals::default();
    let start = Instant::now();
    let n = cases(200_000);
    for i in 0..n {
        let max = max_frame(&mut rng);
        let valid = valid_message(&mut rng, (max as usize).min(70_000));
        let other = valid_message(&mut rng, (max as usize).min(70_000));
        let m = rng.below_usize(MUTATIONS.len());
        let msg = mutate(&mut rng, m, valid, &other, max);
        let what = format!("seed {seed} case {i} ({}, --max-frame {max})", MUTATIONS[m]);
        check_message(&msg, max, &what, &mut t);
    }
    println!(
        "message decoder: {} cases (seed {seed}), {} MB, {} parsed, {} with a right checksum; \
         no allocation; {:.1} s",
        t.cases,
        t.bytes >> 20,
        t.frames,
        t.accepted,
        start.elapsed().as_secs_f64()
    );
}
