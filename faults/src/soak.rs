//! The soak: random pairs from [`crate::MECHANISMS`], random sizes and counts,
//! random faults, checked one by one against what SPEC §2 documents.
//!
//! Each run is a [`Plan`] drawn from a seeded generator, so `--seed` replays the
//! same sequence of plans (the timing of a fault within a stream varies with the
//! machine; the outcome accepted for it does not depend on timing). A run:
//!
//! 1. starts the pair in a fresh [`TestDir`] (both sides with `--timeout`, so a
//!    frozen or missing peer is a deadline, never a hang);
//! 2. injects its fault: SIGKILL of the writer, the reader or both after a
//!    random delay; SIGSTOP of one side (the other must exit 3 at its
//!    deadline); a SIGUSR1 storm at both sides (handler without `SA_RESTART`,
//!    [`ipc_common::signals::EINTR_ENV`]); or a hand-made stream into a reader
//!    (valid, a flipped bit, a bad magic, an oversized length, a sequence gap, a
//!    duplicate, garbage, cut short, no end frame);
//! 3. judges both exit statuses. Every run, faulted or not, may end in only the
//!    outcomes documented for what was injected, and a side that exits 0 must
//!    show exactly the expected count, bytes and digest (computed here from the
//!    same seed, not taken from the other side). A fault that lands after its
//!    victim finished is told apart by the victim's own status (exit 0 rather
//!    than killed by the signal), and then the run must be clean;
//! 4. checks for leftovers with [`ipc_common::clean::scan_with`]: a run in which
//!    nothing was killed must leave nothing at all; after a kill, whatever
//!    survives must be listed and removed by `ipc-clean --remove`, and after
//!    that nothing may remain.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_common::frame::{HEADER_LEN, crc32};
use ipc_common::payload::{Digest, Generator, SizeSpec};
use ipc_common::testkit::{Outcome, Running, TestDir, end_bytes, frame_bytes, proc_state};

use crate::rng::Rng;
use crate::{Mechanism, bin};

/// A hand-made stream fed to a reader in place of its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Nothing wrong: the reader must receive it all (exit 0).
    None,
    /// One payload bit flipped: checksum mismatch (exit 4).
    FlippedBit,
    /// One header's magic broken (exit 4).
    BadMagic,
    /// One header claims 0xfffffff0 bytes (exit 4, refused before allocating).
    Oversize,
    /// One frame left out: a sequence gap (exit 4).
    SeqGap,
    /// One frame sent twice (exit 4).
    Duplicate,
    /// Random bytes that do not start with `I` (exit 4; to the TCP reader, a
    /// stranger it drops, then exit 3 when no writer came by `--timeout`).
    Garbage,
    /// Cut inside a frame (exit 3: a frame cut short by end of file).
    CutShort,
    /// Every data frame, no end frame (exit 3: the writer vanished).
    NoEndFrame,
}

impl Corruption {
    const ALL: [Corruption; 9] = [
        Corruption::None,
        Corruption::FlippedBit,
        Corruption::BadMagic,
        Corruption::Oversize,
        Corruption::SeqGap,
        Corruption::Duplicate,
        Corruption::Garbage,
        Corruption::CutShort,
        Corruption::NoEndFrame,
    ];

    /// The reader's documented exit status for this stream.
    fn expected_exit(self) -> i32 {
        match self {
            Corruption::None => 0,
            Corruption::CutShort | Corruption::NoEndFrame => 3,
            _ => 4,
        }
    }
}

/// What a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: a clean transfer.
    None,
    /// SIGKILL the writer after the delay.
    KillWriter,
    /// SIGKILL the reader after the delay.
    KillReader,
    /// SIGKILL both after the delay.
    KillBoth,
    /// SIGSTOP the writer after the delay; the reader must give up at `--timeout`.
    StopWriter,
    /// SIGSTOP the reader after the delay; the writer must give up at `--timeout`.
    StopReader,
    /// SIGUSR1 at both sides every 200 µs until both exit: nothing lost.
    Storm,
    /// A hand-made stream into `pipe-reader` (through its standard input) or
    /// the TCP reader (through a connection of our own).
    Corrupt(Corruption),
}

impl Fault {
    fn kills(self) -> bool {
        matches!(
            self,
            Fault::KillWriter
                | Fault::KillReader
                | Fault::KillBoth
                | Fault::StopWriter
                | Fault::StopReader
        )
    }
}

/// One run: which pair, how much, and what goes wrong.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its number in the sequence.
    pub n: u64,
    /// The pair.
    pub mech: &'static Mechanism,
    /// Data frames the writer sends.
    pub count: u64,
    /// Their sizes.
    pub size: SizeSpec,
    /// The payload seed.
    pub seed: u64,
    /// The fault.
    pub fault: Fault,
    /// When the fault is injected, after the writer starts.
    pub delay: Duration,
}

/// `--timeout` for every run, and the deadline of a frozen peer.
const TIMEOUT_SECS: u64 = 5;
/// How long any process of a run may live: far beyond every documented deadline.
const LIMIT: Duration = Duration::from_secs(60);
/// A survivor must notice a killed or frozen peer within this (SPEC: about a
/// second for a vanished peer, `--timeout` for a frozen one).
const NOTICE: Duration = Duration::from_secs(TIMEOUT_SECS + 10);

fn sizes_for(mech: &Mechanism, rng: &mut Rng) -> SizeSpec {
    // Queues and datagrams carry a frame per message within the kernel's
    // default limits (msgmax 8 KiB), and the semaphore buffer's slots hold
    // 4 KiB; byte streams and rings take larger ones.
    let message =
        matches!(mech.name, "mq posix" | "mq sysv" | "unix-dgram" | "sem posix" | "sem sysv");
    let big = matches!(mech.name, "pipe" | "fifo" | "unix" | "tcp");
    match rng.below(4) {
        0 => SizeSpec::fixed(rng.below(65) as usize),
        1 => SizeSpec { min: 0, max: 4000 },
        2 if big => SizeSpec { min: 1000, max: 64 << 10 },
        _ if message => SizeSpec { min: 0, max: 4000 },
        _ => SizeSpec { min: 100, max: 16 << 10 },
    }
}

impl Plan {
    /// Plan number `n` of the sequence `seed` gives.
    #[must_use]
    pub fn draw(rng: &mut Rng, n: u64) -> Plan {
        let mech = &crate::MECHANISMS[rng.below(crate::MECHANISMS.len() as u64) as usize];
        let size = sizes_for(mech, rng);
        let count = 100 + rng.below(if size.max > 4096 { 3000 } else { 20_000 });
        let fault = match rng.below(16) {
            0..=2 => Fault::None,
            3 | 4 => Fault::KillWriter,
            5 | 6 => Fault::KillReader,
            7 => Fault::KillBoth,
            8 => Fault::StopWriter,
            9 => Fault::StopReader,
            10 | 11 => Fault::Storm,
            _ => Fault::Corrupt(Corruption::ALL[rng.below(9) as usize]),
        };
        // A hand-made stream goes to pipe-reader or the TCP reader, which
        // take one from anyone (a pipe, a connection).
        let mech = match fault {
            Fault::Corrupt(_) if rng.below(2) == 0 => crate::mechanism("pipe"),
            Fault::Corrupt(_) => crate::mechanism("tcp"),
            _ => mech,
        };
        let delay = Duration::from_millis(5 + rng.below(300));
        Plan { n, mech, count, size, seed: rng.next_u64(), fault, delay }
    }

    /// One line: what this run does.
    #[must_use]
    pub fn describe(&self) -> String {
        let what = match self.fault {
            Fault::None => "no fault".to_string(),
            Fault::Corrupt(c) => format!("hand-made stream: {c:?}"),
            f => format!("{f:?} after {} ms", self.delay.as_millis()),
        };
        format!("#{} {}: {} × {}, {what}", self.n, self.mech.name, self.count, self.size)
    }

    /// count, bytes and digest of the whole transfer.
    fn expected(&self) -> (u64, u64, String) {
        let g = Generator::new(self.seed, self.size);
        let mut digest = Digest::new();
        let mut bytes = 0;
        for seq in 0..self.count {
            let p = g.payload(seq);
            digest.add_crc(crc32(p), p.len() as u64);
            bytes += p.len() as u64;
        }
        (self.count, bytes, digest.to_string())
    }
}

/// What a run found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Transfers that ended with equal, expected digests on both sides.
    pub transfers: u64,
    /// Data frames those transfers moved.
    pub frames: u64,
    /// Faults that landed (a kill or stop before the victim finished, a storm
    /// signal, a corrupt stream).
    pub faults: u64,
    /// SIGUSR1 signals sent in storms.
    pub storm_signals: u64,
    /// Every process the run started, with the run's start and end (seconds
    /// since the epoch), for [`global_leftovers`].
    pub pids: Vec<(i32, u64, u64)>,
    /// Objects a kill left that `ipc-clean --remove` then removed.
    pub survivors_removed: u64,
    /// Outcomes outside the documented ones (hangs included), one line each.
    pub failures: Vec<String>,
    /// Objects left behind, one line each.
    pub leaks: Vec<String>,
    /// The slowest a survivor took to notice a killed peer.
    pub slowest_notice: Duration,
    /// The slowest a survivor took to give up on a frozen peer (`--timeout`).
    pub slowest_stop: Duration,
}

impl Report {
    /// Adds another run's counts to these.
    pub fn merge(&mut self, o: Report) {
        self.transfers += o.transfers;
        self.frames += o.frames;
        self.faults += o.faults;
        self.storm_signals += o.storm_signals;
        self.pids.extend(o.pids);
        self.survivors_removed += o.survivors_removed;
        self.failures.extend(o.failures);
        self.leaks.extend(o.leaks);
        self.slowest_notice = self.slowest_notice.max(o.slowest_notice);
        self.slowest_stop = self.slowest_stop.max(o.slowest_stop);
    }
}

/// How one side ended, as the judge sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Exit 0 with exactly the expected summary.
    Complete,
    /// Killed by the signal we sent.
    Killed,
    /// Exit 3: peer lost.
    PeerLost,
    /// Anything else (described in the failure).
    Other,
}

fn classify(o: &Outcome, expect: &(u64, u64, String)) -> End {
    match (o.code, o.signal) {
        (Some(0), _) => {
            let ok = o
                .stderr
                .lines()
                .rev()
                .filter(|l| !l.contains(": writer "))
                .find_map(ipc_common::testkit::parse_summary)
                .is_some_and(|s| (s.messages, s.bytes, s.digest) == *expect);
            if ok { End::Complete } else { End::Other }
        }
        (Some(3), _) => End::PeerLost,
        (None, Some(libc::SIGKILL)) => End::Killed,
        _ => End::Other,
    }
}

fn show(o: &Outcome) -> String {
    let last = o.stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
    format!(
        "{} exit {:?} signal {:?} after {:.2} s: {last}",
        o.name,
        o.code,
        o.signal,
        o.elapsed.as_secs_f64()
    )
}

/// Whether `pid` has exited (a zombie, or reaped already).
fn gone(pid: i32) -> bool {
    matches!(proc_state(pid), 'Z' | '?' | 'X')
}

/// Whether `pid` catches SIGUSR1 yet (`SigCgt` in /proc/PID/status).
fn catches_sigusr1(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGUSR1 - 1)) != 0)
}

/// Runs `plan` and judges it. Never panics on a wrong outcome: it is reported.
#[must_use]
pub fn run(plan: &Plan) -> Report {
    let dir = TestDir::new(&format!("soak-{}", plan.n));
    let mut rep = Report::default();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match plan.fault {
        Fault::Corrupt(c) => run_corrupt(plan, c, &dir, &mut rep),
        _ => run_pair(plan, &dir, &mut rep),
    }));
    if let Err(panic) = result {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_default();
        rep.failures.push(format!("{}: {why}", plan.describe()));
    }
    check_leftovers(plan, &dir, &mut rep);
    rep
}

fn run_pair(plan: &Plan, dir: &TestDir, rep: &mut Report) {
    let expect = plan.expected();
    let timeout = TIMEOUT_SECS.to_string();
    let count = plan.count.to_string();
    let (size, seed) = (plan.size.to_string(), plan.seed.to_string());
    let w_args = ["--count", &count, "--size", &size, "--seed", &seed, "--timeout", &timeout];
    let r_args = ["--count", &count, "--timeout", &timeout];
    let pair = plan.mech.start(dir, &w_args, &r_args, LIMIT);
    let (reader, writer) = (pair.reader, pair.writer);
    let began = epoch_secs();
    let ids = [reader.pid(), writer.pid()];
    let fail = |rep: &mut Report, why: &str, w: &Outcome, r: &Outcome| {
        rep.failures.push(format!("{}: {why}; {}; {}", plan.describe(), show(w), show(r)));
    };
    let mut injected = None;
    match plan.fault {
        Fault::None | Fault::Corrupt(_) => {}
        Fault::Storm => rep.storm_signals = storm(&reader, &writer),
        f => {
            std::thread::sleep(plan.delay);
            let sig = if matches!(f, Fault::StopWriter | Fault::StopReader) {
                libc::SIGSTOP
            } else {
                libc::SIGKILL
            };
            if matches!(f, Fault::KillWriter | Fault::KillBoth | Fault::StopWriter) {
                writer.kill(sig);
            }
            if matches!(f, Fault::KillReader | Fault::KillBoth | Fault::StopReader) {
                reader.kill(sig);
            }
            injected = Some(Instant::now());
        }
    }
    // A frozen side stays stopped until the other has given up; then it is
    // killed. Each side's exit is timed from the fault, to see how long the
    // survivor took to notice.
    let finish = |r: Running| {
        let o = r.finish();
        (o, injected.map(|at| at.elapsed()).unwrap_or_default())
    };
    let ((w, w_after), (r, r_after)) = match plan.fault {
        Fault::StopWriter => {
            let r = finish(reader);
            writer.kill(libc::SIGKILL);
            (finish(writer), r)
        }
        Fault::StopReader => {
            let w = finish(writer);
            reader.kill(libc::SIGKILL);
            (w, finish(reader))
        }
        _ => {
            let w = finish(writer);
            (w, finish(reader))
        }
    };
    rep.pids.extend(ids.map(|id| (id, began, epoch_secs())));
    let (we, re) = (classify(&w, &expect), classify(&r, &expect));
    let ok = match plan.fault {
        // No fault, or one nothing may notice: both complete.
        Fault::None | Fault::Storm | Fault::Corrupt(_) => {
            (we, re) == (End::Complete, End::Complete)
        }
        // The victim was killed (or had finished); the survivor completes (the
        // victim had sent or taken everything already) or reports peer lost.
        Fault::KillWriter => match we {
            End::Killed => matches!(re, End::Complete | End::PeerLost),
            End::Complete => re == End::Complete,
            _ => false,
        },
        Fault::KillReader => match re {
            End::Killed => matches!(we, End::Complete | End::PeerLost),
            End::Complete => we == End::Complete,
            _ => false,
        },
        // The writer is killed first: the reader may notice (3) before its own
        // SIGKILL lands, microseconds later.
        Fault::KillBoth => {
            matches!(we, End::Killed | End::Complete)
                && matches!(re, End::Killed | End::Complete | End::PeerLost)
        }
        // Frozen: the other side gives up at its deadline (3), unless the frozen
        // one had finished its part; the frozen one is killed afterwards.
        Fault::StopWriter => match re {
            End::PeerLost => we == End::Killed,
            End::Complete => matches!(we, End::Killed | End::Complete),
            _ => false,
        },
        Fault::StopReader => match we {
            End::PeerLost => re == End::Killed,
            End::Complete => matches!(re, End::Killed | End::Complete),
            _ => false,
        },
    };
    if !ok {
        fail(rep, "outcome not among the documented ones", &w, &r);
        return;
    }
    let notice = match (we, re) {
        (End::PeerLost, _) => w_after,
        (_, End::PeerLost) => r_after,
        _ => Duration::ZERO,
    };
    if notice > NOTICE {
        fail(rep, &format!("the survivor took {notice:?} to notice"), &w, &r);
        return;
    }
    if matches!(plan.fault, Fault::StopWriter | Fault::StopReader) {
        rep.slowest_stop = rep.slowest_stop.max(notice);
    } else {
        rep.slowest_notice = rep.slowest_notice.max(notice);
    }
    let landed = match plan.fault {
        Fault::KillWriter | Fault::StopWriter => we == End::Killed,
        Fault::KillReader | Fault::StopReader => re == End::Killed,
        Fault::KillBoth => we == End::Killed || re == End::Killed,
        Fault::Storm => rep.storm_signals > 0,
        _ => false,
    };
    rep.faults += u64::from(landed);
    if (we, re) == (End::Complete, End::Complete) {
        rep.transfers += 1;
        rep.frames += plan.count;
    }
}

/// Sends SIGUSR1 to both sides every 200 µs (once each catches it: before
/// its handler is installed, SIGUSR1 would kill it) until both have exited.
fn storm(reader: &Running, writer: &Running) -> u64 {
    let deadline = Instant::now() + LIMIT;
    let mut sent = 0;
    let sides = [reader, writer];
    let mut armed = [false, false];
    while Instant::now() < deadline {
        let mut running = false;
        for (side, armed) in sides.iter().zip(armed.iter_mut()) {
            if gone(side.pid()) {
                continue;
            }
            running = true;
            *armed = *armed || catches_sigusr1(side.pid());
            if *armed {
                side.kill(libc::SIGUSR1);
                sent += 1;
            }
        }
        if !running {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    sent
}

/// The stream `c` describes, and (for a valid one) its count, bytes and digest.
fn corrupt_stream(plan: &Plan, c: Corruption) -> (Vec<u8>, (u64, u64, String)) {
    let count = plan.count.min(500);
    let g = Generator::new(plan.seed, SizeSpec { min: 1, max: 2000 });
    let mut rng = Rng(plan.seed);
    let victim = rng.below(count);
    let mut out = Vec::new();
    let mut digest = Digest::new();
    let mut bytes = 0;
    let mut seq = 0;
    for i in 0..count {
        let p = g.payload(i);
        digest.add_crc(crc32(p), p.len() as u64);
        bytes += p.len() as u64;
        if c == Corruption::SeqGap && i == victim {
            seq += 1;
            continue;
        }
        let at = out.len();
        out.extend_from_slice(&frame_bytes(0, seq, p));
        seq += 1;
        if i == victim {
            match c {
                Corruption::FlippedBit => {
                    out[at + HEADER_LEN + rng.below(p.len() as u64) as usize] ^= 1 << rng.below(8);
                }
                Corruption::BadMagic => out[at + rng.below(4) as usize] ^= 0x20,
                Corruption::Oversize => {
                    out[at + 16..at + 20].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
                }
                Corruption::Duplicate => out.extend_from_slice(&frame_bytes(0, seq - 1, p)),
                Corruption::CutShort => {
                    out.truncate(at + 1 + rng.below((HEADER_LEN + p.len() - 1) as u64) as usize);
                    return (out, (0, 0, String::new()));
                }
                _ => {}
            }
        }
    }
    if c != Corruption::NoEndFrame {
        out.extend_from_slice(&end_bytes(0, seq));
    }
    if c == Corruption::Garbage {
        out = (0..(HEADER_LEN as u64 + rng.below(4000))).map(|_| rng.next_u64() as u8).collect();
        if out[0] == b'I' {
            out[0] = b'i';
        }
    }
    (out, (count, bytes, digest.to_string()))
}

fn run_corrupt(plan: &Plan, c: Corruption, dir: &TestDir, rep: &mut Report) {
    let (stream, expect) = corrupt_stream(plan, c);
    let timeout = TIMEOUT_SECS.to_string();
    let reader = if plan.mech.name == "pipe" {
        let mut cmd = plan.mech.reader_command(dir, &["--timeout", &timeout]);
        let mut r = Running::spawn(cmd.stdin(Stdio::piped()), LIMIT);
        // The reader may stop reading at the bad frame: a failed write is expected.
        let _ = r.try_write_stdin(&stream);
        r.close_stdin();
        r
    } else {
        let mut cmd = plan.mech.reader_command(dir, &["--timeout", &timeout]);
        let mut r = Running::spawn(cmd.stdin(Stdio::null()), LIMIT);
        let line = r.ready();
        let addr = line.rsplit(' ').next().unwrap_or_default().to_string();
        let mut conn =
            std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let _ = conn.write_all(&stream);
        // The reader answers (`0 ready`, then its verdict): read it all before
        // closing, or the unread answer makes the close a reset (RST), which
        // can discard our last bytes before the reader reads them.
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let _ = conn.set_read_timeout(Some(LIMIT));
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut conn, &mut answer);
        r
    };
    let (began, id) = (epoch_secs(), reader.pid());
    let r = reader.finish();
    rep.pids.push((id, began, epoch_secs()));
    // The TCP reader takes a connection for a writer once it shows the frame
    // magic; one that never does is dropped as a stranger, and the reader goes
    // on waiting for its writer: exit 3 at --timeout.
    let stranger = plan.mech.name == "tcp" && !stream.starts_with(b"IPC1");
    let want = if stranger { 3 } else { c.expected_exit() };
    let ok = match classify(&r, &expect) {
        End::Complete => want == 0,
        _ => r.code == Some(want),
    };
    if ok {
        rep.faults += u64::from(c != Corruption::None);
        if c == Corruption::None {
            rep.transfers += 1;
            rep.frames += expect.0;
        }
    } else {
        let mut why = String::new();
        let _ = write!(why, "{}: expected exit {want}; {}", plan.describe(), show(&r));
        rep.failures.push(why);
    }
}

/// Leftovers of the run in `dir`: none allowed unless something was killed;
/// after a kill, `ipc-clean --remove` must leave none.
fn check_leftovers(plan: &Plan, dir: &TestDir, rep: &mut Report) {
    let scan = |rep: &mut Report| match ipc_common::clean::scan_with(&dir.private(), dir.prefix()) {
        Ok(left) => left.iter().map(|l| format!("{} {}", l.kind, l.name)).collect::<Vec<_>>(),
        Err(e) => {
            rep.leaks.push(format!("{}: scan failed: {}", plan.describe(), e.message()));
            Vec::new()
        }
    };
    let left = scan(rep);
    if left.is_empty() {
        return;
    }
    if !plan.fault.kills() {
        rep.leaks.push(format!("{}: left {left:?} without any kill", plan.describe()));
    }
    let clean =
        dir.command(bin("ipc-clean").to_str().unwrap_or("ipc-clean")).arg("--remove").output();
    let after = scan(rep);
    match clean {
        Ok(out) if out.status.success() && after.is_empty() => {
            rep.survivors_removed += left.len() as u64;
        }
        Ok(out) => rep.leaks.push(format!(
            "{}: after ipc-clean --remove ({}: {}): {after:?}",
            plan.describe(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => rep.leaks.push(format!("{}: ipc-clean: {e}", plan.describe())),
    }
}

fn epoch_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A second look for leftovers, independent of the private directories (gone
/// by now, with the records in them): System V objects created (`ctime`) while
/// one of our runs was going on, by or last used by one of that run's
/// processes (shm `cpid`/`lpid`, msg `lspid`/`lrpid`, sem `GETPID` of each
/// semaphore) — the time window keeps a stranger that got one of our pids
/// later (`pid_max` may be 32768) out — and `/dev/shm` or `/dev/mqueue`
/// entries whose name carries this soak's prefix (`ipc-demos-test-soak-<pid>-`).
/// A queue or set no process of ours ever used carries no pid of ours, and
/// is only found by the per-run scan.
#[must_use]
pub fn global_leftovers(pids: &[(i32, u64, u64)]) -> Vec<String> {
    let ours = |pid: i64, ctime: u64| {
        pids.iter().any(|&(p, a, b)| i64::from(p) == pid && ctime + 1 >= a && ctime <= b + 1)
    };
    let mut left = Vec::new();
    for (kind, id_col, pid_cols) in [
        ("msg", "msqid", &["lspid", "lrpid"][..]),
        ("shm", "shmid", &["cpid", "lpid"][..]),
        ("sem", "semid", &[][..]),
    ] {
        let table = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap_or_default();
        let mut lines = table.lines();
        let head: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
        let col = |name: &str| head.iter().position(|h| *h == name);
        let (Some(id_at), Some(ctime_at)) = (col(id_col), col("ctime")) else {
            continue;
        };
        for line in lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
            let (id, ctime) = (num(id_at), u64::try_from(num(ctime_at)).unwrap_or(0));
            let mut touched: Vec<i64> = pid_cols.iter().filter_map(|c| col(c)).map(num).collect();
            if let Some(nsems_at) = col("nsems").filter(|_| kind == "sem") {
                for n in 0..num(nsems_at).max(0) {
                    // SAFETY: semctl GETPID reads one semaphore's last pid; a bad
                    // id or index is an error return, not undefined behaviour.
                    let pid = unsafe {
                        libc::semctl(i32::try_from(id).unwrap_or(-1), n as i32, libc::GETPID)
                    };
                    touched.push(i64::from(pid));
                }
            }
            if touched.iter().any(|&p| ours(p, ctime)) {
                left.push(format!("sysv {kind} id {id}"));
            }
        }
    }
    let tag = format!("ipc-demos-test-soak-{}-", std::process::id());
    for dir in ["/dev/shm", "/dev/mqueue"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(&tag) {
                left.push(format!("{dir}/{name}"));
            }
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_leftovers_finds_a_segment_one_of_our_processes_made() {
        let began = epoch_secs();
        let out = std::process::Command::new("ipcmk").args(["-M", "4096"]).output();
        let Ok(out) = out else { return }; // no util-linux here: nothing to prove with
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let id: i32 = text.split_whitespace().last().and_then(|v| v.parse().ok()).expect("shm id");
        // Who made it: the segment's cpid. Not yet one of "ours": not found.
        let table = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
        let cpid: i32 = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&id.to_string().as_str()))
            .and_then(|f| f.get(4).and_then(|v| v.parse().ok()))
            .expect("the segment in /proc/sysvipc/shm");
        let name = format!("sysv shm id {id}");
        let found_now = global_leftovers(&[(cpid, began, epoch_secs())]).contains(&name);
        let found_later = global_leftovers(&[(cpid, began + 100, began + 200)]).contains(&name);
        let _ = ipc_common::clean::remove_sysv(ipc_common::clean::SysvKind::Shm, id);
        assert!(found_now, "the segment made by pid {cpid} during the run is found");
        assert!(!found_later, "a pid of ours from another time does not claim it");
    }
}
