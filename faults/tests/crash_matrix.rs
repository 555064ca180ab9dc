//! The crash matrix, measured: for every row of the catalogue, SIGKILL the
//! writer, the reader, and both, at a random point mid-stream; record what the
//! surviving side did (exit code, time to notice) and which kernel objects and
//! files survive; then run `ipc-clean --remove` for that run and prove that
//! nothing is left. Every cell is asserted against [`expected`], which says why
//! each outcome is the right one.
//!
//! ```text
//! $ make crash-matrix          # or:
//! $ cargo test --release -p ipc-faults --test crash_matrix -- --nocapture
//! $ CRASH_SEED=1234 cargo test --release -p ipc-faults --test crash_matrix -- --nocapture
//! ```
//!
//! The table is printed and written to `target/crash-matrix.md`.
//!
//! # How a cell runs
//! 1. A fresh [`TestDir`] (private directory and POSIX name prefix of its own);
//!    the pair starts as a user starts it, with a transfer far too long to end
//!    by itself (`--count` in the millions).
//! 2. "Mid-stream" is proven, not assumed: both processes must have spent CPU
//!    time (moving frames is the only work they do), and a reader that survives
//!    must name how many messages it had received when its writer vanished.
//!    Then a random delay (from the printed seed) and SIGKILL.
//! 3. The survivor's exit is awaited on a pidfd of our own, for at most
//!    [`HANG`]: longer is recorded as a hang (and fails the cell).
//! 4. Survivors are listed twice: by `ipc_common::clean::scan_with` (what
//!    `ipc-clean` sees) and independently of it (the private directory, our
//!    names in `/dev/shm`, the default POSIX queue name, and System V objects
//!    new since the cell started whose creator or last user was one of our two
//!    pids, or whose key is `ftok`-shaped from one of our files). Something the
//!    second listing finds and the first does not is a leak `ipc-clean` cannot
//!    see, and fails the cell.
//! 5. `ipc-clean --remove` with the cell's environment; then both listings must
//!    be empty.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipc_common::testkit::{TestDir, bytes_read, wait_until};
use ipc_faults::rng::Rng;
use ipc_faults::{MECHANISMS, Mechanism, bin, cpu_ticks, exited_within, in_parallel, pidfd};

/// How long a survivor may take to notice before the cell records a hang.
const HANG: Duration = Duration::from_secs(12);
/// Each process's hard limit (the testkit kills it after this).
const LIMIT: Duration = Duration::from_secs(40);
/// Cells run at once (each is a pair of busy processes on a 2-CPU machine).
const PARALLEL: usize = 4;
/// CPU time, in clock ticks (10 ms), each side must have spent before the kill.
const BUSY_TICKS: u64 = 5;
/// The random extra delay before the kill is below this.
const MAX_DELAY_MS: u64 = 200;
/// A survivor must notice within this. SPEC: "noticed within about a second
/// regardless" (byte streams at once; the rest poll their peer every 100 ms
/// tick); the margin is for a loaded two-CPU machine, not for a slower design.
const NOTICE: Duration = Duration::from_secs(3);
/// Frames a writer is asked for: far more than a cell lets it send.
const COUNT: &str = "20000000";
/// The mmap log is the one writer that needs no reader: it must be able to
/// finish on its own in a few seconds, in a file of a sensible size.
const MMAP_LOG_COUNT: &str = "2000000";
const MMAP_LOG_CAPACITY: &str = "640M";

/// `--count` and `--size` for a row.
fn counts(m: &Mechanism) -> (&'static str, &'static str) {
    match m.name {
        // 2M frames of 0..255 bytes: about 300 MB with headers, under the capacity.
        "mmap log" => (MMAP_LOG_COUNT, "0..255"),
        _ => (COUNT, "0..4K"),
    }
}

/// Who gets the SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Writer,
    Reader,
    Both,
}

impl Victim {
    const ALL: [Victim; 3] = [Victim::Writer, Victim::Reader, Victim::Both];

    fn label(self) -> &'static str {
        match self {
            Victim::Writer => "writer killed",
            Victim::Reader => "reader killed",
            Victim::Both => "both killed",
        }
    }
}

/// What one cell measured.
#[derive(Debug, Clone)]
struct Cell {
    mech: &'static str,
    victim: Victim,
    delay_ms: u64,
    /// Both sides were still running when the kill came.
    running: bool,
    /// The survivor's exit code (`None`: both killed, or killed by a signal).
    code: Option<i32>,
    /// The survivor's signal, if one ended it.
    signal: Option<i32>,
    /// From the kill to the survivor's exit.
    notice: Option<Duration>,
    /// The survivor hung: still running [`HANG`] after the kill.
    hang: bool,
    /// The survivor's last line of stderr.
    said: String,
    /// What `ipc-clean` lists (kind name-without-dir).
    listed: Vec<String>,
    /// What the independent listing finds (kind name).
    independent: Vec<String>,
    /// Found independently but not listed by `ipc-clean`.
    unseen: Vec<String>,
    /// `ipc-clean --remove`'s exit code.
    clean_code: Option<i32>,
    /// What either listing still finds after `ipc-clean --remove`.
    after_clean: Vec<String>,
}

// ---------------------------------------------------------------------------
// Randomness: splitmix64 ([`Rng`]), seeded from CRASH_SEED or the clock
// (printed). Each value is the first draw of a fresh `Rng`, i.e. the
// splitmix64 mix of its input, so CRASH_SEED replays the same kill points.

fn seed() -> u64 {
    std::env::var("CRASH_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) % 1_000_000
    })
}

// ---------------------------------------------------------------------------
// The independent listing.

/// One row of /proc/sysvipc/*: (kind, key, id, pids named in it, owner uid).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SysvRow {
    kind: &'static str,
    key: u32,
    id: i32,
    pids: Vec<i64>,
    uid: i64,
}

fn sysv_rows() -> Vec<SysvRow> {
    let mut rows = Vec::new();
    for (kind, file, pid_cols) in [
        ("sysv msg queue", "/proc/sysvipc/msg", &["lspid", "lrpid"][..]),
        ("sysv shm segment", "/proc/sysvipc/shm", &["cpid", "lpid"][..]),
        ("sysv semaphore set", "/proc/sysvipc/sem", &[][..]),
    ] {
        let text = fs::read_to_string(file).unwrap_or_default();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
        let col = |n: &str| header.iter().position(|h| *h == n);
        for line in lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num =
                |c: Option<usize>| c.and_then(|c| f.get(c)).and_then(|s| s.parse::<i64>().ok());
            let (Some(key), Some(id), Some(uid)) = (num(col("key")), num(Some(1)), num(col("uid")))
            else {
                continue;
            };
            rows.push(SysvRow {
                kind,
                key: u32::from_ne_bytes((key as i32).to_ne_bytes()),
                id: i32::try_from(id).unwrap_or(-1),
                pids: pid_cols.iter().filter_map(|c| num(col(c))).collect(),
                uid,
            });
        }
    }
    rows
}

/// The `ftok` key bits a file contributes (device and inode), without the project byte.
fn ftok_bits(meta: &fs::Metadata) -> u32 {
    (((meta.dev() & 0xff) as u32) << 16) | ((meta.ino() & 0xffff) as u32)
}

/// What is ours, found without `ipc_common::clean`.
#[derive(Debug, Default)]
struct Independent {
    items: Vec<String>,
    sysv: Vec<SysvRow>,
}

fn independent(
    dir: &TestDir,
    before: &HashSet<SysvRow>,
    pids: &[i32],
    ftok: &mut BTreeSet<u32>,
) -> Independent {
    let mut out = Independent::default();
    let private = dir.private();
    if let Ok(rd) = fs::read_dir(&private) {
        for e in rd.flatten() {
            if let Ok(m) = fs::symlink_metadata(e.path()) {
                ftok.insert(ftok_bits(&m));
            }
            out.items.push(format!("file {}", e.file_name().to_string_lossy()));
        }
    }
    if let Ok(rd) = fs::read_dir("/dev/shm") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(dir.prefix()) {
                out.items.push(format!("/dev/shm {name}"));
            }
        }
    }
    let mq = dir.posix_name("mq");
    let flags = nix::mqueue::MQ_OFlag::O_RDONLY | nix::mqueue::MQ_OFlag::O_NONBLOCK;
    if let Ok(q) = nix::mqueue::mq_open(mq.as_str(), flags, nix::sys::stat::Mode::empty(), None) {
        let _ = nix::mqueue::mq_close(q);
        out.items.push(format!("posix queue {mq}"));
    }
    for row in sysv_rows() {
        if before.contains(&row) {
            continue;
        }
        let by_pid = row.pids.iter().any(|p| pids.iter().any(|q| i64::from(*q) == *p));
        let by_key = ftok.contains(&(row.key & 0x00ff_ffff)) && row.key != 0;
        if by_pid || by_key {
            out.items.push(format!("{} key {:#010x} id {}", row.kind, row.key, row.id));
            out.sysv.push(row);
        }
    }
    out
}

/// Whether the same System V object (kind, key, id) still exists.
fn sysv_still_there(row: &SysvRow) -> bool {
    sysv_rows().iter().any(|r| r.kind == row.kind && r.key == row.key && r.id == row.id)
}

fn short(name: &str, dir: &TestDir) -> String {
    let private = dir.private().display().to_string();
    name.replace(&format!("{private}/"), "").replace(dir.prefix(), "ipc-demos")
}

/// A leftover as the table and the expectations name it: kind and short name;
/// System V objects by kind alone (their keys and ids change every run).
fn normal(kind: &str, name: &str, dir: &TestDir) -> String {
    if kind.starts_with("sysv") { kind.to_string() } else { format!("{kind} {}", short(name, dir)) }
}

fn listed(dir: &TestDir) -> Vec<(String, String, bool)> {
    ipc_common::clean::scan_with(&dir.private(), dir.prefix())
        .expect("scan")
        .into_iter()
        .map(|l| (l.kind.to_string(), l.name, l.live))
        .collect()
}

// ---------------------------------------------------------------------------
// One cell.

fn run_cell(
    m: &'static Mechanism,
    victim: Victim,
    rng: u64,
    sysv_before: &HashSet<SysvRow>,
) -> Cell {
    let tag = format!("crash-{}-{}", m.name.replace(' ', "-"), victim.label().replace(' ', "-"));
    let dir = TestDir::new(&tag);
    // Long enough never to end by itself in the time a cell takes; small
    // frames for the mmap log so its file (which it keeps) stays small.
    let (count, size) = counts(m);
    let seed = (rng % 1000).to_string();
    let mut writer_args = vec!["--count", count, "--size", size, "--seed", &seed];
    if m.name == "mmap log" {
        writer_args.extend(["--capacity", MMAP_LOG_CAPACITY]);
    }
    let reader_args = ["--count", count];
    let pair = m.start(&dir, &writer_args, &reader_args, LIMIT);
    let (writer, reader) = (pair.writer, pair.reader);
    let (wpid, rpid) = (writer.pid(), reader.pid());
    let (wfd, rfd) = (pidfd(wpid), pidfd(rpid));

    // Mid-stream: both have done real work.
    let what = format!("{}: both sides to be busy moving frames", m.name);
    wait_until(&what, Duration::from_secs(20), || {
        (cpu_ticks(rpid) >= BUSY_TICKS || bytes_read(rpid) > 1 << 20)
            && cpu_ticks(wpid) >= BUSY_TICKS
    });
    let delay_ms = Rng(rng).next_u64() % MAX_DELAY_MS;
    thread::sleep(Duration::from_millis(delay_ms));

    // Still mid-stream at the kill: neither side has ended.
    let running = !exited_within(&wfd, Duration::ZERO) && !exited_within(&rfd, Duration::ZERO);
    let killed_at = Instant::now();
    let survivor = match victim {
        Victim::Writer => {
            writer.kill(libc::SIGKILL);
            Some((reader, rfd, writer))
        }
        Victim::Reader => {
            reader.kill(libc::SIGKILL);
            Some((writer, wfd, reader))
        }
        Victim::Both => {
            // Both frozen first: a side that saw the other die could end on
            // its own (EPIPE, end of stream) in the microseconds before its
            // own SIGKILL. A stopped side runs none of its code until then.
            writer.kill(libc::SIGSTOP);
            reader.kill(libc::SIGSTOP);
            reader.kill(libc::SIGKILL);
            writer.kill(libc::SIGKILL);
            let r = reader.finish();
            let w = writer.finish();
            assert_eq!((r.signal, w.signal), (Some(9), Some(9)), "{}: both killed", m.name);
            None
        }
    };
    let mut cell = Cell {
        mech: m.name,
        victim,
        delay_ms,
        running,
        code: None,
        signal: None,
        notice: None,
        hang: false,
        said: String::new(),
        listed: Vec::new(),
        independent: Vec::new(),
        unseen: Vec::new(),
        clean_code: None,
        after_clean: Vec::new(),
    };
    if let Some((alive, fd, dead)) = survivor {
        let done = exited_within(&fd, HANG);
        if done {
            cell.notice = Some(killed_at.elapsed());
        } else {
            cell.hang = true;
            alive.kill(libc::SIGKILL);
        }
        let out = alive.finish();
        let gone = dead.finish();
        assert_eq!(gone.signal, Some(9), "{}: the victim died of SIGKILL", m.name);
        cell.code = out.code;
        cell.signal = out.signal;
        cell.said = out.stderr.trim_end().lines().last().unwrap_or_default().to_string();
    }

    // Survivors: as ipc-clean sees them, and independently.
    let mut ftok = BTreeSet::new();
    let pids = [wpid, rpid];
    let ind = independent(&dir, sysv_before, &pids, &mut ftok);
    let by_clean = listed(&dir);
    cell.listed = by_clean
        .iter()
        .map(|(k, n, live)| format!("{}{}", normal(k, n, &dir), if *live { " (live)" } else { "" }))
        .collect();
    cell.listed.sort();
    cell.independent = ind.items.iter().map(|i| short(i, &dir)).collect();
    for item in &ind.items {
        let covered = by_clean.iter().any(|(k, n, _)| {
            let base = Path::new(n).file_name().map(|f| f.to_string_lossy().into_owned());
            item.ends_with(&format!("key {}", n.trim_start_matches("key ")))
                || base.is_some_and(|b| item.ends_with(&format!(" {b}")))
                || item.ends_with(&format!(" {n}"))
                || (k == "posix queue" && item.ends_with(n.as_str()))
        });
        if !covered {
            cell.unseen.push(short(item, &dir));
        }
    }

    // ipc-clean --remove, with the cell's environment.
    let clean = dir
        .command(bin("ipc-clean").to_str().expect("utf-8"))
        .arg("--remove")
        .stdin(Stdio::null())
        .output()
        .expect("run ipc-clean");
    cell.clean_code = clean.status.code();
    let after = independent(&dir, sysv_before, &pids, &mut ftok);
    cell.after_clean = after.items.iter().map(|i| short(i, &dir)).collect();
    cell.after_clean.extend(listed(&dir).into_iter().map(|(k, n, _)| normal(&k, &n, &dir)));
    for row in &ind.sysv {
        if sysv_still_there(row) {
            cell.after_clean.push(format!("{} key {:#010x} id {}", row.kind, row.key, row.id));
            // Never leave it behind, even when the cell fails.
            let kind = match row.kind {
                "sysv msg queue" => ipc_common::clean::SysvKind::Msg,
                "sysv shm segment" => ipc_common::clean::SysvKind::Shm,
                _ => ipc_common::clean::SysvKind::Sem,
            };
            let _ = ipc_common::clean::remove_sysv(kind, row.id);
        }
    }
    cell.after_clean.sort();
    cell.after_clean.dedup();
    drop(dir);
    cell
}

// ---------------------------------------------------------------------------
// The expectation, cell by cell.

/// What a cell must show.
#[derive(Debug)]
struct Expect {
    /// The survivor's exit code (`None` when both are killed).
    code: Option<i32>,
    /// What the survivor's last line says.
    says: &'static str,
    /// Leftovers, as [`normal`] names them; `{u}` is our uid.
    left: &'static [&'static str],
}

const NOTHING: &[&str] = &[];
// The reader owns every named object (SPEC 5) and removes it on exit; these are
// what a reader killed with SIGKILL cannot remove.
const FIFO_NODE: &[&str] = &["fifo fifo"];
const MQ_POSIX_LEFT: &[&str] = &[
    "file mq-posix.ipc-demos.{u}.mq.reader.lock",
    "file mq-posix.ipc-demos.{u}.mq.writers.lock",
    "posix queue /ipc-demos.{u}.mq",
];
const MQ_SYSV_LEFT: &[&str] =
    &["file mq-sysv.reader.lock", "file mq-sysv.writers.lock", "sysv msg queue"];
const SHM_SYSV_LEFT: &[&str] =
    &["file shm-sysv.reader.lock", "file shm-sysv.writers.lock", "sysv semaphore set"];
const SEM_POSIX_LEFT: &[&str] = &[
    "file sem.ipc-demos.{u}.sem.reader.lock",
    "file sem.ipc-demos.{u}.sem.writers.lock",
    "posix semaphore /dev/shm/sem.ipc-demos.{u}.sem.empty",
    "posix semaphore /dev/shm/sem.ipc-demos.{u}.sem.full",
    "posix shm /dev/shm/ipc-demos.{u}.sem",
];
const SEM_SYSV_LEFT: &[&str] = &[
    "file sem.ipc-demos.{u}.sem.reader.lock",
    "file sem.ipc-demos.{u}.sem.writers.lock",
    "posix shm /dev/shm/ipc-demos.{u}.sem",
    "sysv semaphore set",
];
const MMAP_FILE: &[&str] = &["file mmap.log"];
const UNIX_LEFT: &[&str] = &["file socket.lock", "socket socket"];
const DGRAM_LEFT: &[&str] = &["file socket-dgram.lock", "socket socket-dgram"];

/// The reader saw its writer vanish: exit 3, "writer 0 vanished after N of M".
const READER_LOST: (Option<i32>, &str) = (Some(3), "writer 0 vanished after ");
/// The writer saw its reader go: exit 3, "reader went away after N messages".
const WRITER_LOST: (Option<i32>, &str) = (Some(3), "went away after ");

// One arm per cell, so that the table reads cell by cell, each with its reason.
#[allow(clippy::too_many_lines, clippy::match_same_arms)]
fn expected(mech: &str, victim: Victim) -> Expect {
    use Victim::{Both, Reader, Writer};
    let (code, left): ((Option<i32>, &'static str), &'static [&'static str]) = match (mech, victim)
    {
        // pipe: an anonymous pipe has no name. Writer killed: end of file without
        // an end frame, often inside a frame (3, never 4: SPEC 2). Reader killed:
        // EPIPE on the next write (SIGPIPE is ignored), 3.
        ("pipe", Writer) => (READER_LOST, NOTHING),
        ("pipe", Reader) => (WRITER_LOST, NOTHING),
        ("pipe", Both) => ((None, ""), NOTHING),
        // fifo: the reader created the node and removes it when it exits (also
        // on exit 3). Killed, it cannot: the node stays, a plain file-system name
        // in the private directory, which ipc-clean lists and removes. The writer
        // sees EPIPE like a pipe's.
        ("fifo", Writer) => (READER_LOST, NOTHING),
        ("fifo", Reader) => (WRITER_LOST, FIFO_NODE),
        ("fifo", Both) => ((None, ""), FIFO_NODE),
        // mq posix: a queue has no end of file; the reader notices a dead writer
        // when no writer lock is held and the queue is empty (a tick), then
        // unlinks the queue. A writer notices a dead reader when the reader lock
        // is free. A killed reader leaves the queue (kernel object until
        // mq_unlink) and both lock files (the reader's records the queue name).
        ("mq posix", Writer) => (READER_LOST, NOTHING),
        ("mq posix", Reader) => (WRITER_LOST, MQ_POSIX_LEFT),
        ("mq posix", Both) => ((None, ""), MQ_POSIX_LEFT),
        // mq sysv: the same, and the queue lives until IPC_RMID (reboot aside):
        // "SysV queue after reader dies: the queue, listed by ipc-clean,
        // removed by it" (issue 9). The reader's lock file records key and id.
        ("mq sysv", Writer) => (READER_LOST, NOTHING),
        ("mq sysv", Reader) => (WRITER_LOST, MQ_SYSV_LEFT),
        ("mq sysv", Both) => ((None, ""), MQ_SYSV_LEFT),
        // shm posix: once the writer is attached the name is unlinked (the
        // crash-safe trick), so any kill mid-stream leaves nothing: the kernel
        // frees the memory with the last mapping. Peers are watched by pid in
        // the segment's header: noticed within a tick.
        ("shm posix", Writer) => (READER_LOST, NOTHING),
        ("shm posix", Reader) => (WRITER_LOST, NOTHING),
        ("shm posix", Both) => ((None, ""), NOTHING),
        // shm sysv: the segment is IPC_RMID'd once both are attached (gone with
        // the last detach), but a System V semaphore set has no such trick: it
        // and the lock file its key comes from outlive a killed reader (known,
        // documented in README and shm-demo's # Cleanup); ipc-clean removes them.
        ("shm sysv", Writer) => (READER_LOST, NOTHING),
        ("shm sysv", Reader) => (WRITER_LOST, SHM_SYSV_LEFT),
        ("shm sysv", Both) => ((None, ""), SHM_SYSV_LEFT),
        // sem posix: the bounded buffer (a /dev/shm object) and its named
        // semaphores empty and full are the reader's; a writer killed inside the
        // robust-mutex critical section is named by the reader. A killed reader
        // leaves buffer, both semaphores and both lock files.
        ("sem posix", Writer) => (READER_LOST, NOTHING),
        ("sem posix", Reader) => (WRITER_LOST, SEM_POSIX_LEFT),
        ("sem posix", Both) => ((None, ""), SEM_POSIX_LEFT),
        // sem sysv: the same buffer, with one System V set of three instead of
        // the named semaphores; the set survives a killed reader.
        ("sem sysv", Writer) => (READER_LOST, NOTHING),
        ("sem sysv", Reader) => (WRITER_LOST, SEM_SYSV_LEFT),
        ("sem sysv", Both) => ((None, ""), SEM_SYSV_LEFT),
        // mmap log: the writer creates the file and the file is the point: it
        // stays after both exit (SPEC 4), replayable (`--replay` exits 3 for a
        // log whose writer never finished it). The reader's `--remove` deletes it
        // only after a clean finish. A log writer needs no reader, so killing the
        // reader does not concern it: it completes its transfer, exit 0.
        ("mmap log", Writer) => (READER_LOST, MMAP_FILE),
        ("mmap log", Reader) => ((Some(0), "sent 2000000 messages"), MMAP_FILE),
        ("mmap log", Both) => ((None, ""), MMAP_FILE),
        // mmap ring: the same file, as a ring: the writer needs its reader
        // (peer pid in the header, a tick); the file is the writer's and is kept
        // when the transfer did not finish cleanly.
        ("mmap ring", Writer) => (READER_LOST, MMAP_FILE),
        ("mmap ring", Reader) => (WRITER_LOST, MMAP_FILE),
        ("mmap ring", Both) => ((None, ""), MMAP_FILE),
        // unix stream: end of file / EPIPE at once. The socket file and the lock
        // file that proves the server alive are the reader's: a killed reader
        // leaves both (the next reader sees the lock free and rebinds).
        ("unix", Writer) => (READER_LOST, NOTHING),
        ("unix", Reader) => (WRITER_LOST, UNIX_LEFT),
        ("unix", Both) => ((None, ""), UNIX_LEFT),
        // unix-dgram (sequenced packets): the same, with its own file name.
        ("unix-dgram", Writer) => (READER_LOST, NOTHING),
        ("unix-dgram", Reader) => (WRITER_LOST, DGRAM_LEFT),
        ("unix-dgram", Both) => ((None, ""), DGRAM_LEFT),
        // tcp: no file at all; the kernel closes both ends (FIN, then RST on
        // write): end of file / ECONNRESET or EPIPE, 3 at once.
        ("tcp", Writer) => (READER_LOST, NOTHING),
        ("tcp", Reader) => (WRITER_LOST, NOTHING),
        ("tcp", Both) => ((None, ""), NOTHING),
        _ => panic!("no expectation for {mech} / {}: add one", victim.label()),
    };
    Expect { code: code.0, says: code.1, left }
}

/// Every way `c` differs from its expectation.
fn check(c: &Cell) -> Vec<String> {
    let e = expected(c.mech, c.victim);
    let mut bad = Vec::new();
    let at = format!("{} / {}", c.mech, c.victim.label());
    if !c.running {
        bad.push(format!("{at}: a side had already ended before the kill (not mid-stream)"));
    }
    if c.hang {
        bad.push(format!("{at}: the survivor still ran {HANG:?} after the kill (hang)"));
    }
    if c.victim != Victim::Both {
        if c.code != e.code {
            bad.push(format!(
                "{at}: survivor exit {:?} (signal {:?}), expected {:?}: {}",
                c.code, c.signal, e.code, c.said
            ));
        }
        if !c.said.contains(e.says) {
            bad.push(format!("{at}: survivor's last line lacks {:?}: {}", e.says, c.said));
        }
        // A survivor that lost its peer had really been moving frames: it names
        // how many (> 0). One that went on names them all in its summary.
        let n = c
            .said
            .split(e.says)
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        if e.code == Some(3) && n.is_none_or(|n| n == 0) {
            bad.push(format!("{at}: survivor names no message count above 0: {}", c.said));
        }
        if e.code == Some(3) && c.notice.is_none_or(|d| d > NOTICE) {
            bad.push(format!("{at}: noticed in {:?}, expected within {NOTICE:?}", c.notice));
        }
    }
    let uid = ipc_common::paths::uid().to_string();
    let mut want: Vec<String> = e.left.iter().map(|l| l.replace("{u}", &uid)).collect();
    want.sort();
    if c.listed != want {
        bad.push(format!("{at}: left {:?}, expected {want:?}", c.listed));
    }
    if !c.unseen.is_empty() {
        bad.push(format!("{at}: left behind and not seen by ipc-clean: {:?}", c.unseen));
    }
    if c.clean_code != Some(0) {
        bad.push(format!("{at}: ipc-clean --remove exited {:?}", c.clean_code));
    }
    if !c.after_clean.is_empty() {
        bad.push(format!("{at}: still there after ipc-clean --remove: {:?}", c.after_clean));
    }
    bad
}

// ---------------------------------------------------------------------------
// The table.

fn fmt_code(c: &Cell) -> String {
    match (c.victim, c.hang, c.code, c.signal) {
        (Victim::Both, ..) => "—".into(),
        (_, true, ..) => "HANG".into(),
        (_, _, Some(code), _) => format!("exit {code}"),
        (_, _, None, Some(sig)) => format!("signal {sig}"),
        _ => "?".into(),
    }
}

fn table(cells: &[Cell], seed: u64) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "Crash matrix (seed {seed}; CRASH_SEED={seed} repeats the kill points)\n");
    let _ = writeln!(
        t,
        "| mechanism | killed | survivor | noticed in | left behind (as ipc-clean lists it) | after ipc-clean --remove | as expected |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    for c in cells {
        let survivor = match c.victim {
            Victim::Writer => format!("reader {}", fmt_code(c)),
            Victim::Reader => format!("writer {}", fmt_code(c)),
            Victim::Both => "—".into(),
        };
        let notice = match (c.code, c.notice) {
            // A survivor that was not concerned (the mmap log's writer) noticed nothing.
            (Some(0), _) => "— (went on)".into(),
            (_, Some(d)) => format!("{} ms", d.as_millis()),
            _ => "—".into(),
        };
        let left = if c.listed.is_empty() { "nothing".into() } else { c.listed.join("<br>") };
        let after =
            if c.after_clean.is_empty() { "nothing".into() } else { c.after_clean.join(", ") };
        let killed = match c.victim {
            Victim::Writer => "writer",
            Victim::Reader => "reader",
            Victim::Both => "both",
        };
        let killed = format!("{killed} (+{} ms)", c.delay_ms);
        let ok = if check(c).is_empty() { "yes" } else { "**NO**" };
        let _ = writeln!(
            t,
            "| {} | {killed} | {survivor} | {notice} | {left} | {after} | {ok} |",
            c.mech
        );
    }
    t
}

#[test]
fn crash_matrix() {
    let seed = seed();
    eprintln!("crash matrix: seed {seed} (CRASH_SEED={seed} to repeat)");
    let started = Instant::now();
    let sysv_before: HashSet<SysvRow> = sysv_rows().into_iter().collect();
    let jobs: Vec<(&'static Mechanism, Victim)> =
        MECHANISMS.iter().flat_map(|m| Victim::ALL.into_iter().map(move |v| (m, v))).collect();
    let cells: Vec<Cell> = in_parallel(jobs, PARALLEL, |i, (m, v)| {
        let rng = Rng(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)).next_u64();
        run_cell(m, v, rng, &sysv_before)
    });
    let t = table(&cells, seed);
    println!("{t}");
    let out = target_dir().join("crash-matrix.md");
    fs::write(&out, &t).expect("write crash-matrix.md");
    println!("written to {} in {:.1?}", out.display(), started.elapsed());
    let bad: Vec<String> = cells.iter().flat_map(check).collect();
    assert!(
        bad.is_empty(),
        "crash matrix (seed {seed}): cells off their expectation:\n{}",
        bad.join("\n")
    );
}

/// `target/` (or `$CARGO_TARGET_DIR`): two levels above the test executable's directory.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).and_then(Path::parent).expect("target dir").to_path_buf()
}
