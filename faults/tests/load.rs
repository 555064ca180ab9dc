//! Load: 16 writers × 10,000 frames at once into one reader, on every mechanism
//! that takes several writers (fifo, both message queues, unix and tcp sockets,
//! the semaphore bounded buffer). Every frame arrives intact, each writer's
//! digest matches what the reader says it got from that writer, and the
//! reader's memory stays flat.
//!
//! Payloads are 0..4000 bytes (a fifo frame must fit in `PIPE_BUF` to stay whole
//! among several writers; a sem slot holds 4 KiB), about 320 MB per mechanism:
//! nearly five times the [`RSS_LIMIT`] the reader's peak resident set must stay under,
//! so a reader that kept even a fifth of what passed through it would fail.
//!
//! The peak is the kernel's own high-water mark, `VmHWM` in /proc/PID/status,
//! read every few milliseconds through a descriptor of the reader's /proc
//! directory (it names that process only, never a later one with its pid) until
//! it exits; the last value read is the peak to within those milliseconds.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ipc_common::testkit::{LIMIT, Running, TestDir};
use ipc_faults::{Meet, mechanism};

/// Writers at once.
const WRITERS: u16 = 16;
/// Frames per writer.
const FRAMES: u64 = 10_000;
/// Generated payload sizes.
const SIZE: &str = "0..4000";
/// The reader's peak resident set must stay under this.
const RSS_LIMIT: u64 = 64 << 20;
/// How often the reader's memory is sampled.
const SAMPLE: Duration = Duration::from_millis(5);

/// Follows `VmHWM` of process `pid` until it is gone; returns the last value (bytes).
fn watch_peak_rss(pid: i32) -> JoinHandle<u64> {
    // Opened now, while the reader runs: the descriptor stays bound to it.
    let dir = File::open(format!("/proc/{pid}")).expect("open /proc/PID");
    thread::spawn(move || {
        let status = format!("/proc/self/fd/{}/status", dir.as_raw_fd());
        let mut peak = 0;
        // Once the process is reaped its /proc entries fail to read: done.
        while let Ok(text) = std::fs::read_to_string(&status) {
            let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            else {
                break; // a zombie: no memory left to measure
            };
            peak = kib * 1024;
            thread::sleep(SAMPLE);
        }
        drop(dir);
        peak
    })
}

/// Runs 16 writers against one reader on catalogue row `name`, checks every
/// count and digest, and returns the reader's peak RSS in bytes.
fn sixteen_writers(name: &str) -> u64 {
    let m = mechanism(name);
    let dir = TestDir::new(&format!("load-{}", name.replace(' ', "-")));
    let t0 = Instant::now();
    let total = (u64::from(WRITERS) * FRAMES).to_string();
    let writers = WRITERS.to_string();
    let mut reader = Running::spawn(
        m.reader_command(&dir, &["--writers", &writers, "--count", &total, "--quiet"])
            .stdin(Stdio::null()),
        LIMIT,
    );
    let ready = reader.ready();
    let peak = watch_peak_rss(reader.pid());
    let count = FRAMES.to_string();
    let running: Vec<Running> = (0..WRITERS)
        .map(|id| {
            let (id, seed) = (id.to_string(), (u64::from(id) + 100).to_string());
            let mut cmd = m.writer_command(
                &dir,
                &["--id", &id, "--seed", &seed, "--count", &count, "--size", SIZE, "--quiet"],
            );
            if m.meet == Meet::Tcp {
                cmd.arg("--addr").arg(ready.rsplit(' ').next().expect("address on ready line"));
            }
            Running::spawn(cmd.stdin(Stdio::null()), LIMIT)
        })
        .collect();
    let sent: Vec<_> = running.into_iter().map(Running::finish).collect();
    let r = reader.finish();
    let peak = peak.join().expect("rss watcher");
    let elapsed = t0.elapsed();
    r.expect(0);
    let mut bytes = 0;
    for (id, w) in (0..WRITERS).zip(&sent) {
        w.expect(0);
        let ws = w.summary();
        assert_eq!(ws.messages, FRAMES, "{name}: writer {id} sent");
        assert_eq!(r.writer_summary(id), ws, "{name}: writer {id}: reader's tally vs writer's");
        bytes += ws.bytes;
    }
    // No tally from a writer that was never started (a corrupted writer id).
    let tallies = r.stderr.lines().filter(|l| l.contains(": writer ")).count();
    assert_eq!(tallies, usize::from(WRITERS), "{name}: per-writer lines:\n{}", r.stderr);
    r.expect_stderr(&format!(
        ": received {} messages, {bytes} bytes\n",
        u64::from(WRITERS) * FRAMES
    ));
    assert!(peak > 0, "{name}: no VmHWM sample of the reader");
    assert!(
        peak < RSS_LIMIT,
        "{name}: reader peak RSS {} KiB, limit {} KiB, for {bytes} bytes moved",
        peak >> 10,
        RSS_LIMIT >> 10
    );
    dir.assert_clean();
    eprintln!(
        "load {name:<9}: {WRITERS} writers x {FRAMES} frames, {} MB, reader peak RSS {} KiB, {:.2} s",
        bytes / 1_000_000,
        peak >> 10,
        elapsed.as_secs_f64()
    );
    peak
}

#[test]
fn sixteen_writers_into_one_fifo_every_frame_intact_memory_flat() {
    sixteen_writers("fifo");
}

#[test]
fn sixteen_writers_into_one_posix_queue_every_frame_intact_memory_flat() {
    sixteen_writers("mq posix");
}

#[test]
fn sixteen_writers_into_one_sysv_queue_every_frame_intact_memory_flat() {
    sixteen_writers("mq sysv");
}

#[test]
fn sixteen_writers_into_one_unix_socket_every_frame_intact_memory_flat() {
    sixteen_writers("unix");
}

#[test]
fn sixteen_writers_into_one_tcp_listener_every_frame_intact_memory_flat() {
    sixteen_writers("tcp");
}

#[test]
fn sixteen_writers_into_one_bounded_buffer_every_frame_intact_memory_flat() {
    sixteen_writers("sem posix");
}
