//! Frozen peer: for every row of the catalogue, SIGSTOP one side mid-stream.
//! The other side, given `--timeout 2`, must give up at its deadline with exit
//! 3 and a message that says what happened — never hang. Then the frozen side
//! gets SIGCONT, after the deadline, and must end with a documented exit code
//! and a clear message: 3 (its peer is gone), or 0 only if what it did was
//! complete and right (its summary equals its partner's: same count, same
//! digest). Nothing corrupt is ever accepted, and nothing is left behind.
//!
//! ```text
//! $ cargo test --release -p ipc-faults --test frozen -- --nocapture
//! ```
//!
//! The one row where a frozen reader concerns nobody is the mmap log: its
//! writer needs no reader (a log is read now or replayed later), so it
//! finishes, and the reader, woken, reads the whole log and agrees.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_common::testkit::{Outcome, Running, TestDir, bytes_read, stop, wait_until};
use ipc_faults::{MECHANISMS, Mechanism, bin, cpu_ticks, exited_within, in_parallel, pidfd};

/// The `--timeout` given to the side that is not frozen.
const TIMEOUT: &str = "2";
const TIMEOUT_D: Duration = Duration::from_secs(2);
/// It may give up this much after its deadline (one tick, and a loaded
/// machine's scheduling), but not before it (its last progress came just
/// before the stop, so allow a little under the full two seconds).
const LATE: Duration = Duration::from_secs(3);
const EARLY: Duration = Duration::from_millis(1500);
/// Each process's hard limit (the testkit kills it after this).
const LIMIT: Duration = Duration::from_secs(40);
/// CPU time, in clock ticks (10 ms), each side must have spent before the stop.
const BUSY_TICKS: u64 = 5;
/// Cases run at once: a frozen pair costs no CPU while the clock runs.
const PARALLEL: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frozen {
    Writer,
    Reader,
}

/// What one case saw.
#[derive(Debug)]
struct Case {
    mech: &'static str,
    frozen: Frozen,
    /// The side that was not frozen, and how long after the stop it ended.
    other: Outcome,
    gave_up: Option<Duration>,
    /// The frozen side, after SIGCONT.
    woken: Outcome,
    /// The mmap log read again afterwards (`mmap-reader --replay`), when its
    /// writer, woken, finished it: the proof that it is whole and right.
    replay: Option<Outcome>,
    /// What ipc-clean lists afterwards (before it removes it).
    left: Vec<String>,
}

fn run_case(m: &'static Mechanism, frozen: Frozen) -> Case {
    let tag = format!("frozen-{}-{:?}", m.name.replace(' ', "-"), frozen);
    let dir = TestDir::new(&tag.to_lowercase());
    // The mmap log must be able to finish on its own (its writer needs no
    // reader: a second or two, about 300 MB); the others are asked for far
    // more than they get to send.
    let (count, size) =
        if m.name == "mmap log" { ("2000000", "0..255") } else { ("20000000", "0..4K") };
    let mut writer_args = vec!["--count", count, "--size", size];
    if m.name == "mmap log" {
        writer_args.extend(["--capacity", "640M"]);
    }
    let mut reader_args = vec!["--count", count];
    match frozen {
        Frozen::Writer => reader_args.extend(["--timeout", TIMEOUT]),
        Frozen::Reader => writer_args.extend(["--timeout", TIMEOUT]),
    }
    let pair = m.start(&dir, &writer_args, &reader_args, LIMIT);
    let (writer, reader) = (pair.writer, pair.reader);
    let (wpid, rpid) = (writer.pid(), reader.pid());
    let what = format!("{}: both sides to be busy moving frames", m.name);
    wait_until(&what, Duration::from_secs(20), || {
        (cpu_ticks(rpid) >= BUSY_TICKS || bytes_read(rpid) > 1 << 20)
            && cpu_ticks(wpid) >= BUSY_TICKS
    });
    let (ice, other) = match frozen {
        Frozen::Writer => (writer, reader),
        Frozen::Reader => (reader, writer),
    };
    let other_fd = pidfd(other.pid());
    stop(&ice);
    let stopped = Instant::now();
    // The other side must end on its own; a hang is a failure, reported after
    // the frozen side is woken (so nothing is left stopped).
    let gave_up = exited_within(&other_fd, TIMEOUT_D + LATE + LATE).then(|| stopped.elapsed());
    if gave_up.is_none() {
        other.kill(libc::SIGKILL);
    }
    let other = other.finish();
    ice.kill(libc::SIGCONT);
    let woken = ice.finish();
    let replay =
        (m.name == "mmap log" && frozen == Frozen::Writer && woken.code == Some(0)).then(|| {
            let mut cmd = dir.command(bin(m.reader).to_str().expect("utf-8"));
            cmd.args(["--replay", "--remove", "--count", count]).stdin(Stdio::null());
            Running::spawn(&mut cmd, LIMIT).finish()
        });
    let left: Vec<String> = ipc_common::clean::scan_with(&dir.private(), dir.prefix())
        .expect("scan")
        .into_iter()
        .map(|l| {
            let name = l.name.rsplit('/').next().unwrap_or_default().to_string();
            format!("{} {}", l.kind, name.replace(dir.prefix(), "ipc-demos"))
        })
        .collect();
    if !left.is_empty() {
        let clean = dir
            .command(bin("ipc-clean").to_str().expect("utf-8"))
            .arg("--remove")
            .stdin(Stdio::null())
            .output()
            .expect("run ipc-clean");
        assert_eq!(clean.status.code(), Some(0), "ipc-clean --remove for {tag}");
    }
    dir.assert_clean();
    Case { mech: m.name, frozen, other, gave_up, woken, replay, left }
}

fn last_line(o: &Outcome) -> &str {
    o.stderr.trim_end().lines().last().unwrap_or_default()
}

/// Every way a case differs from what a frozen peer must cause.
fn check(c: &Case) -> Vec<String> {
    let at = format!("{} / {:?} frozen", c.mech, c.frozen);
    let mut bad = Vec::new();
    let log_reader = c.mech == "mmap log" && c.frozen == Frozen::Reader;
    // 1. The side that was not frozen.
    if log_reader {
        // A log writer does not wait for its reader: it finished, exit 0.
        if c.other.code != Some(0) {
            bad.push(format!("{at}: log writer exit {:?}: {}", c.other.code, last_line(&c.other)));
        }
    } else {
        match c.gave_up {
            None => bad.push(format!(
                "{at}: the other side hung (killed after {:?})",
                TIMEOUT_D + LATE + LATE
            )),
            Some(d) if d < EARLY || d > TIMEOUT_D + LATE => {
                bad.push(format!(
                    "{at}: gave up after {d:?}, not at its {TIMEOUT}-second deadline"
                ));
            }
            Some(_) => {}
        }
        if c.other.code != Some(3) || !c.other.stderr.contains("made no progress for 2 s") {
            bad.push(format!(
                "{at}: other side exit {:?}, expected 3 with \"made no progress for 2 s\": {}",
                c.other.code,
                c.other.stderr.trim_end()
            ));
        }
    }
    // 2. The frozen side, woken after the deadline: 3 (peer gone) with a
    //    message, or 0 only with the partner's exact count and digest.
    match c.woken.code {
        Some(3) => {
            let line = last_line(&c.woken);
            let said = ["vanished", "went away", "gone", "was removed"];
            if !said.iter().any(|s| line.contains(s)) {
                bad.push(format!(
                    "{at}: woken side exit 3 without saying its peer is gone: {line}"
                ));
            }
        }
        Some(0) => {
            // The partner that vouches for it: the reader, or for a log whose
            // reader gave up, the log read again from the file.
            let (w, r) = match (c.frozen, &c.replay) {
                (Frozen::Writer, Some(replay)) => (&c.woken, replay),
                (Frozen::Writer, None) => (&c.woken, &c.other),
                (Frozen::Reader, _) => (&c.other, &c.woken),
            };
            let ok = r.code == Some(0) && w.code == Some(0) && w.summary() == r.summary();
            if !ok {
                bad.push(format!(
                    "{at}: woken side reports success without a matching partner: {} / {}",
                    last_line(w),
                    last_line(r)
                ));
            }
        }
        code => bad.push(format!(
            "{at}: woken side exit {code:?} (signal {:?}): {}",
            c.woken.signal,
            c.woken.stderr.trim_end()
        )),
    }
    // 3. Nothing left but what the crash matrix expects of an unfinished run:
    //    the mmap file (the writer's; kept unless the transfer finished).
    if c.left.iter().any(|l| l != "file mmap.log") {
        bad.push(format!("{at}: left behind {:?}", c.left));
    }
    bad
}

#[test]
fn a_frozen_peer_is_given_up_at_the_deadline_and_waking_it_corrupts_nothing() {
    let started = Instant::now();
    let jobs: Vec<(&'static Mechanism, Frozen)> = MECHANISMS
        .iter()
        .flat_map(|m| [Frozen::Writer, Frozen::Reader].into_iter().map(move |f| (m, f)))
        .collect();
    let cases = in_parallel(jobs, PARALLEL, |_, (m, f)| run_case(m, f));
    let mut t = String::new();
    let _ = writeln!(t, "| mechanism | frozen | other side | gave up after | woken side | left |");
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    for c in &cases {
        let _ = writeln!(
            t,
            "| {} | {:?} | exit {:?}: {} | {} | exit {:?}: {} | {} |",
            c.mech,
            c.frozen,
            c.other.code,
            last_line(&c.other),
            c.gave_up.map_or("—".into(), |d| format!("{} ms", d.as_millis())),
            c.woken.code,
            last_line(&c.woken),
            if c.left.is_empty() { "nothing".into() } else { c.left.join(", ") },
        );
    }
    println!("{t}\nin {:.1?}", started.elapsed());
    let bad: Vec<String> = cases.iter().flat_map(check).collect();
    assert!(bad.is_empty(), "frozen peers:\n{}", bad.join("\n"));
}
