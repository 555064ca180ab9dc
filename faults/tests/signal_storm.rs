//! A storm of SIGUSR1 at both sides of every pair in the catalogue, during a
//! 20,000-frame transfer: nothing lost, nothing duplicated, both exit 0.
//!
//! Both binaries run with `IPC_DEMOS_EINTR_STORM=1`, which gives SIGUSR1 a
//! handler that does nothing, installed *without* `SA_RESTART` (see
//! `ipc_common::signals::EINTR_ENV`): every blocking call either side makes —
//! `read`, `write`, `poll`, `mq_send`, `msgrcv`, `sem_wait`, `futex`, `accept` —
//! may then fail with `EINTR`, and a short read or write may stop half-way. A
//! thread here sends SIGUSR1 to both processes, one at a time, every ~50 µs
//! until they exit.
//!
//! Proof that the storm lands, not just that it was sent: a process is only
//! signalled once `/proc/PID/status` shows it catches SIGUSR1 (before that, the
//! default action would kill it); a signal is only sent, and counted, when the
//! previous one was delivered (`ShdPnd` clear: standard signals do not queue),
//! and only while the process lives (its pidfd not yet readable). Each side
//! must take at least [`MIN_LANDED`] signals in one transfer; a transfer that
//! was perfect but too quick for that is run again (at most [`ATTEMPTS`]).
//!
//! Every row of [`ipc_faults::MECHANISMS`] is run (a row added later is covered);
//! the test prints one line per mechanism and fails with all failures at once.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ipc_common::signals::EINTR_ENV;
use ipc_common::testkit::{LIMIT, Running, TestDir};
use ipc_faults::{MECHANISMS, Mechanism, Meet, mechanism};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Frames per transfer.
const FRAMES: u64 = 20_000;
/// Pause between two rounds of signals (one to each side).
const PERIOD: Duration = Duration::from_micros(50);
/// Signals that must land on each side while it runs.
const MIN_LANDED: u64 = 50;
/// Transfers tried per mechanism to get a storm of [`MIN_LANDED`] (each one checked).
const ATTEMPTS: u32 = 3;

/// One process under fire.
struct Target {
    pid: i32,
    pidfd: OwnedFd,
    /// `/proc/PID/status` showed SIGUSR1 caught: safe to send.
    armed: bool,
    exited: bool,
    /// Signals sent while it was alive and catching them.
    landed: u64,
}

impl Target {
    /// Opens a pidfd right after spawn (the child cannot have been reaped yet:
    /// it has not even installed its handlers).
    fn new(pid: i32) -> Self {
        Target { pid, pidfd: ipc_faults::pidfd(pid), armed: false, exited: false, landed: 0 }
    }

    /// A pidfd becomes readable when its process exits.
    fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    fn send_sigusr1(&self) -> bool {
        // SAFETY: pidfd_send_signal with our own pidfd, no siginfo (null), no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGUSR1,
                std::ptr::null::<u8>(),
                0,
            )
        };
        rc == 0
    }

    /// One step of the storm: notice the exit, or arm, or send one signal if the
    /// last one was delivered (none pending), so each counted signal is a
    /// separate delivery (standard signals do not queue: one sent while another
    /// is pending would merge with it).
    fn hit(&mut self) {
        if self.exited {
            return;
        }
        if self.has_exited() {
            self.exited = true;
            return;
        }
        let Some((caught, pending)) = sigusr1_state(self.pid) else { return };
        self.armed |= caught;
        if self.armed && !pending && self.send_sigusr1() {
            self.landed += 1;
        }
    }
}

/// From /proc/PID/status: whether SIGUSR1 is caught (`SigCgt`: the handler is
/// in) and whether one is pending for the process (`ShdPnd`).
fn sigusr1_state(pid: i32) -> Option<(bool, bool)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let bit = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .map(|mask| mask & (1 << (libc::SIGUSR1 - 1)) != 0)
    };
    Some((bit("SigCgt:")?, bit("ShdPnd:")?))
}

/// Fires SIGUSR1 at every target until all have exited (or `stop` is set, when
/// the test gives up). Returns the targets with their counts.
fn storm(mut targets: Vec<Target>, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Target>> {
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) && !targets.iter().all(|t| t.exited) {
            for t in &mut targets {
                t.hit();
            }
            thread::sleep(PERIOD);
        }
        targets
    })
}

/// `cmd` with the EINTR fault injection switched on.
fn stormed(mut cmd: Command) -> Command {
    cmd.env(EINTR_ENV, "1");
    cmd
}

/// Starts a pair as [`Mechanism::start`] does, with `IPC_DEMOS_EINTR_STORM=1` on
/// both commands and a pidfd of each taken at once. Returns (reader, writer).
fn start(m: &Mechanism, dir: &TestDir, wargs: &[&str], rargs: &[&str]) -> [(Running, Target); 2] {
    let spawn = |cmd: &mut Command| {
        let run = Running::spawn(cmd, LIMIT);
        let target = Target::new(run.pid());
        (run, target)
    };
    match m.meet {
        Meet::Pipe => {
            let (writer, stdin) =
                Running::spawn_upstream(&mut stormed(m.writer_command(dir, wargs)), LIMIT);
            let wt = Target::new(writer.pid());
            let reader = spawn(stormed(m.reader_command(dir, rargs)).stdin(stdin));
            [reader, (writer, wt)]
        }
        Meet::ReaderFirst | Meet::Tcp => {
            let mut reader = spawn(stormed(m.reader_command(dir, rargs)).stdin(Stdio::null()));
            let line = reader.0.ready();
            let mut cmd = stormed(m.writer_command(dir, wargs));
            if m.meet == Meet::Tcp {
                cmd.arg("--addr").arg(line.rsplit(' ').next().expect("address on the ready line"));
            }
            let writer = spawn(cmd.stdin(Stdio::null()));
            [reader, writer]
        }
        Meet::WriterCreates => {
            let reader = spawn(stormed(m.reader_command(dir, rargs)).stdin(Stdio::null()));
            let writer = spawn(stormed(m.writer_command(dir, wargs)).stdin(Stdio::null()));
            [reader, writer]
        }
    }
}

/// What one stormed transfer measured.
struct Figures {
    frames: u64,
    reader_landed: u64,
    writer_landed: u64,
    elapsed: Duration,
    /// Transfers run to get here (see [`stormed_transfer`]).
    attempts: u32,
}

impl Figures {
    fn thin(&self) -> bool {
        self.reader_landed.min(self.writer_landed) < MIN_LANDED
    }
}

/// Runs stormed transfers of `m` until one has had at least [`MIN_LANDED`]
/// signals on each side, at most [`ATTEMPTS`] times. Every transfer must be
/// perfect; a retry only answers a storm too thin to prove anything (a busy
/// 2-vCPU machine can leave the storm thread off-CPU for a fast transfer).
fn stormed_transfer(m: &Mechanism) -> Figures {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let f = Figures { attempts, ..run_one(m) };
        if !f.thin() {
            return f;
        }
        assert!(
            attempts < ATTEMPTS,
            "{}: storm too thin in {ATTEMPTS} transfers: last landed {} at the reader, \
             {} at the writer (want >= {MIN_LANDED} each)",
            m.name,
            f.reader_landed,
            f.writer_landed
        );
    }
}

/// Runs one mechanism under the storm and checks everything; panics on failure.
fn run_one(m: &Mechanism) -> Figures {
    let dir = TestDir::new(&format!("storm-{}", m.name.replace(' ', "-")));
    let count = FRAMES.to_string();
    let t0 = Instant::now();
    let [(reader, rt), (writer, wt)] = start(
        m,
        &dir,
        &["--count", &count, "--size", "0..4K", "--seed", "9"],
        &["--count", &count],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let fire = storm(vec![rt, wt], Arc::clone(&stop));
    // Should either side hang, `finish` kills it at the deadline and panics:
    // stop the storm first so the thread does not outlive the test.
    let outcome = catch_unwind(AssertUnwindSafe(|| (writer.finish(), reader.finish())));
    stop.store(true, Ordering::Relaxed);
    let targets = fire.join().expect("storm thread");
    let (w, r) = outcome.unwrap_or_else(|p| std::panic::resume_unwind(p));
    let elapsed = t0.elapsed();
    w.expect(0);
    r.expect(0);
    let (ws, rs) = (w.summary(), r.summary());
    assert_eq!(ws.messages, FRAMES, "{}: writer sent", m.name);
    assert_eq!(rs.messages, FRAMES, "{}: reader received", m.name);
    assert_eq!((ws.bytes, &ws.digest), (rs.bytes, &rs.digest), "{}: digests", m.name);
    for (side, t) in ["reader", "writer"].iter().zip(&targets) {
        assert!(t.armed, "{} {side}: SigCgt never showed a SIGUSR1 handler", m.name);
    }
    dir.assert_clean();
    Figures {
        frames: rs.messages,
        reader_landed: targets[0].landed,
        writer_landed: targets[1].landed,
        elapsed,
        attempts: 1,
    }
}

/// Storms every row of `rows` in turn, prints a line each, and fails with every
/// failure at once.
fn storm_rows(rows: &[Mechanism]) {
    let mut failures = Vec::new();
    let (mut frames, mut landed) = (0, 0);
    eprintln!(
        "{:<28} {:>7} {:>15} {:>15} {:>9} {:>8}",
        "mechanism", "frames", "SIGUSR1→reader", "SIGUSR1→writer", "wall", "attempts"
    );
    for m in rows {
        match catch_unwind(|| stormed_transfer(m)) {
            Ok(f) => {
                eprintln!(
                    "{:<28} {:>7} {:>15} {:>15} {:>8.2}s {:>8}",
                    m.name,
                    f.frames,
                    f.reader_landed,
                    f.writer_landed,
                    f.elapsed.as_secs_f64(),
                    f.attempts
                );
                frames += f.frames;
                landed += f.reader_landed + f.writer_landed;
            }
            Err(p) => {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                eprintln!("{:<28} FAILED", m.name);
                failures.push(format!("{}: {why}", m.name));
            }
        }
    }
    eprintln!("total: {frames} frames moved, {landed} signals landed");
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

#[test]
fn a_sigusr1_storm_without_sa_restart_loses_and_repeats_nothing_on_any_mechanism() {
    storm_rows(MECHANISMS);
}

/// The catalogue runs each pair with its defaults; these options take other
/// blocking calls (a futex sleep instead of a spin, `mq_timedreceive`,
/// `mq_notify`, descriptors passed with `SCM_RIGHTS`) or make the ordinary ones
/// block far more often (a one-page pipe, one slot, a small ring).
#[test]
fn the_storm_also_spares_the_options_that_block_differently() {
    let variant =
        |name: &'static str, base: &str, w: &'static [&'static str], r: &'static [&'static str]| {
            Mechanism { name, writer_only: w, reader_only: r, ..*mechanism(base) }
        };
    storm_rows(&[
        variant("fifo --pipe-size 4096", "fifo", &[], &["--pipe-size", "4096"]),
        variant("mq posix --wait timed", "mq posix", &[], &["--wait", "timed"]),
        variant("mq posix --notify", "mq posix", &[], &["--notify"]),
        variant("mq sysv --depth 2", "mq sysv", &[], &["--depth", "2"]),
        variant(
            "shm posix --spin 0 16K",
            "shm posix",
            &["--spin", "0"],
            &["--spin", "0", "--ring", "16K"],
        ),
        variant(
            "shm sysv --spin 0 16K",
            "shm sysv",
            &["--spin", "0"],
            &["--spin", "0", "--ring", "16K"],
        ),
        variant("sem posix --slots 1", "sem posix", &[], &["--slots", "1"]),
        variant("sem sysv --slots 1", "sem sysv", &[], &["--lock", "sysv", "--slots", "1"]),
        variant("mmap ring --ring 16K", "mmap ring", &["--ring", "16K"], &["--remove"]),
        variant("unix --send-memfd", "unix", &["--send-memfd"], &[]),
    ]);
}
