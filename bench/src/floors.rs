//! The machine's own limits, measured in the same run as the mechanisms, so
//! each mechanism's figure is also a fraction of what the hardware allows.
//!
//! - **memcpy**, one core, at each payload size: what moving the bytes once
//!   costs (a shared memory ring copies each frame once; a pipe, twice).
//!   *In cache*: source and destination of 64 KiB (or one payload, if
//!   larger), copied over and over. *Through memory* (64 KiB and 1 MiB
//!   only): both walk through buffers twice the size of the last-level cache,
//!   so every byte comes from and goes to memory. A mechanism's throughput
//!   is compared with the first for small payloads and with the second for
//!   large ones ([`crate::report::Report::memcpy`]).
//! - **cache line**: two processes on two CPUs take turns storing to one
//!   `AtomicU64` in a `MAP_SHARED` page, each spinning until it sees the
//!   other's store: one round trip is the line crossing over and back, the
//!   least any spinning mechanism can cost.
//! - **frame lines**: the same turns, each carrying the 88 bytes of a frame
//!   with a 64-byte payload (its 24-byte header included): the sender copies
//!   them in after its turn word, then stores the turn (`Release`); the other
//!   side spins on the turn and copies them out. Two cache lines cross each
//!   way: the least a 64 B frame can cost through shared memory, whatever the
//!   ring around it does.
//! - **futex**: the same turns, but each side sleeps in `FUTEX_WAIT` and is
//!   woken by the other's `FUTEX_WAKE` ([`FutexBell`], the doorbell of the
//!   mapped-file ring): two wake-ups per round trip, the least any blocking
//!   mechanism can cost.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_common::error::{Error, Result};
use ipc_common::ring::{Doorbell, FutexBell};
use ipc_common::signals;
use ipc_common::wait::TICK;

use crate::hist::Histogram;
use crate::jobs::{Rounds, Transfer};
use crate::pair::{Fork, Pin, SharedPage, child_side, fork, me, reap};

/// Cache lines of the shared page used by the floors.
const LINE: usize = 1;
const REQ: usize = 2;
const REP: usize = 3;
/// The frame-lines floor's two channels: a turn word and 88 bytes, two lines each.
const TO_CHILD: usize = 4;
const TO_PARENT: usize = 6;
/// A frame with a 64-byte payload, header included.
const FRAME_BYTES: usize = 64 + ipc_common::frame::HEADER_LEN;
/// "No more round trips".
const END: u64 = u64::MAX;

/// From this payload size on, memcpy is also measured through memory.
pub const COLD_FROM: usize = 64 << 10;
/// In-cache buffers (at least one payload).
const HOT_BYTES: usize = 64 << 10;

/// Bytes of the largest cache this CPU has (from sysfs), if known.
#[must_use]
pub fn last_level_cache() -> Option<usize> {
    let mut best = None;
    for i in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let Ok(size) = std::fs::read_to_string(format!("{dir}/size")) else { break };
        let size = size.trim();
        let (digits, unit) =
            size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
        let Ok(n) = digits.parse::<usize>() else { continue };
        let bytes = n
            << match unit {
                "K" => 10,
                "M" => 20,
                "G" => 30,
                _ => 0,
            };
        best = Some(best.map_or(bytes, |b: usize| b.max(bytes)));
    }
    best
}

/// Buffers for the memcpy floor, allocated and touched once.
#[derive(Debug)]
pub struct CopyBuffers {
    src: Vec<u8>,
    dst: Vec<u8>,
    /// Bytes each large-size copy walks through.
    pub cold: usize,
}

impl CopyBuffers {
    /// Two buffers of `cold` bytes (plus a megabyte of slack), filled.
    #[must_use]
    pub fn new(cold: usize) -> Self {
        let len = cold + (1 << 20);
        // Filled, not just allocated: every page is faulted in before timing.
        let src: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let dst = vec![1u8; len];
        CopyBuffers { src, dst, cold }
    }

    /// Copies `size`-byte blocks for about `budget`, within cache-sized
    /// buffers or (`through_memory`) through the large ones.
    #[must_use]
    pub fn memcpy(&mut self, size: usize, through_memory: bool, budget: Duration) -> Transfer {
        let span = if through_memory { self.cold } else { HOT_BYTES.max(size) };
        if through_memory {
            // One touch per page first, untimed: pages the kernel reclaimed
            // since the last run (they sit idle between runs) come back now,
            // not as page faults inside the measurement.
            let mut sum = 0u8;
            for at in (0..span + size).step_by(4096) {
                sum ^= self.src[at];
                self.dst[at] = sum;
            }
            black_box(sum);
        }
        let end = (span / size).max(1) * size;
        let (mut t, mut at) = (Transfer::default(), 0);
        let start = Instant::now();
        loop {
            self.dst[at..at + size].copy_from_slice(&self.src[at..at + size]);
            black_box(&mut self.dst);
            at += size;
            if at == end {
                at = 0;
            }
            t.messages += 1;
            if (t.messages % 256 == 0 || size >= HOT_BYTES) && start.elapsed() >= budget {
                t.bytes = t.messages * size as u64;
                t.secs = start.elapsed().as_secs_f64();
                return t;
            }
        }
    }
}

/// Spins until `word` holds `want` (or END): `false` if the other side never
/// answers within 10 s (it died: a live one on a loaded machine can be
/// descheduled for a while), checking for Ctrl-C now and then.
fn spin_until(word: &AtomicU64, want: u64) -> Result<u64> {
    let mut spins = 0u64;
    let mut since = None;
    loop {
        let v = word.load(Ordering::Acquire);
        if v == want || v == END {
            return Ok(v);
        }
        std::hint::spin_loop();
        spins += 1;
        if spins % (1 << 16) == 0 {
            signals::check()?;
            let t0 = *since.get_or_insert_with(Instant::now);
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(Error::peer_lost("cache-line floor: the other side stopped answering"));
            }
        }
    }
}

/// Round trips of two processes spinning on one shared cache line.
pub fn cache_line(page: &SharedPage, pin: Option<Pin>, rounds: Rounds) -> Result<Histogram> {
    let word = page.word(LINE);
    word.store(0, Ordering::Release);
    let parent = me();
    match fork()? {
        Fork::Child => child_side(pin, parent, || {
            // Odd values are the parent's turns; answer each with the next even one.
            let mut turn = 1;
            while spin_until(word, turn)? != END {
                word.store(turn + 1, Ordering::Release);
                turn += 2;
            }
            Ok(())
        }),
        Fork::Parent(child) => {
            let ours = (|| {
                let mut times = Histogram::new();
                for i in 0..rounds.warmup + rounds.timed {
                    let start = Instant::now();
                    word.store(2 * i + 1, Ordering::Release);
                    spin_until(word, 2 * i + 2)?;
                    let elapsed = start.elapsed();
                    if i >= rounds.warmup {
                        times.record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
                    }
                }
                word.store(END, Ordering::Release);
                Ok(times)
            })();
            if ours.is_err() {
                word.store(END, Ordering::Release);
            }
            reap(child, ours)
        }
    }
}

/// One direction of the frame-lines floor: a turn word at the start of two
/// cache lines, the frame's bytes after it.
struct Channel<'p> {
    turn: &'p AtomicU64,
    bytes: *mut u8,
}

impl<'p> Channel<'p> {
    fn new(page: &'p SharedPage, line: usize) -> Self {
        Channel { turn: page.word(line), bytes: page.bytes(line, 8, FRAME_BYTES) }
    }

    /// Copies `frame` in, then publishes `turn`.
    fn send(&self, frame: &[u8; FRAME_BYTES], turn: u64) {
        // SAFETY: `bytes` is FRAME_BYTES inside the shared page; the other side
        // reads them only after it sees `turn`, and does not touch them after
        // answering, which we waited for before this turn.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), self.bytes, FRAME_BYTES) };
        self.turn.store(turn, Ordering::Release);
    }

    /// Spins until `turn` (or END), then copies the frame out.
    fn recv(&self, frame: &mut [u8; FRAME_BYTES], turn: u64) -> Result<u64> {
        let got = spin_until(self.turn, turn)?;
        // SAFETY: as in `send`: published before `turn`, which we loaded with Acquire.
        unsafe { std::ptr::copy_nonoverlapping(self.bytes, frame.as_mut_ptr(), FRAME_BYTES) };
        black_box(&frame);
        Ok(got)
    }
}

/// Round trips of two processes passing a 64 B frame's 88 bytes by spinning.
pub fn frame_lines(page: &SharedPage, pin: Option<Pin>, rounds: Rounds) -> Result<Histogram> {
    let (to_child, to_parent) = (Channel::new(page, TO_CHILD), Channel::new(page, TO_PARENT));
    to_child.turn.store(0, Ordering::Release);
    to_parent.turn.store(0, Ordering::Release);
    let parent = me();
    match fork()? {
        Fork::Child => child_side(pin, parent, || {
            let mut frame = [0u8; FRAME_BYTES];
            let mut turn = 1;
            while to_child.recv(&mut frame, turn)? != END {
                to_parent.send(&frame, turn);
                turn += 1;
            }
            Ok(())
        }),
        Fork::Parent(child) => {
            let ours = (|| {
                let mut times = Histogram::new();
                let mut frame = [7u8; FRAME_BYTES];
                for turn in 1..=rounds.warmup + rounds.timed {
                    let start = Instant::now();
                    to_child.send(&frame, turn);
                    to_parent.recv(&mut frame, turn)?;
                    let elapsed = start.elapsed();
                    if turn > rounds.warmup {
                        times.record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
                    }
                }
                to_child.turn.store(END, Ordering::Release);
                Ok(times)
            })();
            if ours.is_err() {
                to_child.turn.store(END, Ordering::Release);
            }
            reap(child, ours)
        }
    }
}

/// Waits on `bell` until `word` moves past `ticket`, a tick at a time.
fn await_ring(word: &AtomicU32, bell: &FutexBell<'_>, ticket: u32) -> Result<u32> {
    let mut quiet = 0;
    loop {
        let v = word.load(Ordering::Acquire);
        if v != ticket {
            return Ok(v);
        }
        if !bell.wait(ticket, TICK)? {
            signals::check()?;
            quiet += 1;
            if quiet > 20 {
                return Err(Error::peer_lost("futex floor: the other side stopped answering"));
            }
        }
    }
}

/// Round trips of two processes that sleep on a futex and wake each other.
pub fn futex(page: &SharedPage, pin: Option<Pin>, rounds: Rounds) -> Result<Histogram> {
    let (req, rep) = (page.word32(REQ), page.word32(REP));
    req.store(0, Ordering::Release);
    rep.store(0, Ordering::Release);
    let (to_child, to_parent) = (FutexBell::new(req), FutexBell::new(rep));
    let total = rounds.warmup + rounds.timed;
    let parent = me();
    match fork()? {
        Fork::Child => child_side(pin, parent, || {
            // Each request bumps `req` (FutexBell::ring); answer with a bump of `rep`.
            let mut seen = 0;
            for _ in 0..=total {
                seen = await_ring(req, &to_child, seen)?;
                to_parent.ring()?;
            }
            Ok(())
        }),
        Fork::Parent(child) => {
            let ours = (|| {
                let mut times = Histogram::new();
                for i in 0..=total {
                    let ticket = to_parent.prepare();
                    let start = Instant::now();
                    to_child.ring()?;
                    await_ring(rep, &to_parent, ticket)?;
                    let elapsed = start.elapsed();
                    if i >= rounds.warmup && i < total {
                        times.record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
                    }
                }
                Ok(times)
            })();
            reap(child, ours)
        }
    }
}
