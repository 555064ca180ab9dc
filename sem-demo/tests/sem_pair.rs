//! sem-reader and sem-writer run as a user runs them: the bounded buffer with
//! both semaphore families, several writers, faults (writers killed outside and
//! inside their critical section, readers killed, sets removed, signals), and
//! objects that are not ours.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_common::clean::{SysvKind, remove_sysv, scan_with};
use ipc_common::liveness::WriterPresence;
use ipc_common::testkit::{LIMIT, Outcome, Running, TestDir, frame_bytes, wait_until};
use sem_demo::buffer::{
    DEFAULT_SLOT_SIZE, DEFAULT_SLOTS, Layout, NEXT_IN_AT, NEXT_OUT_AT, STATE_LEN, SlotState,
};
use sem_demo::{NamedSemaphore, SysvSet, process_alive};

const WRITER: &str = env!("CARGO_BIN_EXE_sem-writer");
const READER: &str = env!("CARGO_BIN_EXE_sem-reader");
/// uid of `nobody`, the "someone else" of these tests (they run as root).
const NOBODY: u32 = 65534;
const FAMILIES: [&str; 2] = ["posix", "sysv"];
/// What the reader says of a writer gone without its end frame.
const END_REASON: &str = "(no writer holds the buffer any more, and its end frame never came)";

fn reader(dir: &TestDir, args: &[&str]) -> (Running, String) {
    let mut r = Running::spawn(dir.command(READER).args(args).stdin(Stdio::null()), LIMIT);
    let line = r.ready();
    (r, line)
}

fn writer(dir: &TestDir, args: &[&str]) -> Running {
    Running::spawn(dir.command(WRITER).args(args).stdin(Stdio::null()), LIMIT)
}

fn run_reader(dir: &TestDir, args: &[&str]) -> Outcome {
    Running::spawn(dir.command(READER).args(args).stdin(Stdio::null()), LIMIT).finish()
}

/// The buffer's shared memory object as a file.
fn shm_file(dir: &TestDir) -> PathBuf {
    PathBuf::from(format!("/dev/shm{}", dir.posix_name("sem")))
}

fn sem_file(dir: &TestDir, which: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/sem.{}.{which}", &dir.posix_name("sem")[1..]))
}

/// The buffer's object seen from outside, as a debugger would: its indices and
/// slot states, read with `pread` on the `/dev/shm` file.
struct Watch {
    file: fs::File,
    layout: Layout,
}

impl Watch {
    fn new(dir: &TestDir, slots: u32, slot_size: usize) -> Watch {
        let file = fs::File::open(shm_file(dir)).expect("open the buffer's object");
        Watch { file, layout: Layout::new(slots, slot_size).expect("layout") }
    }

    fn default(dir: &TestDir) -> Watch {
        Watch::new(dir, DEFAULT_SLOTS, DEFAULT_SLOT_SIZE)
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, at as u64).expect("pread");
        u64::from_ne_bytes(b)
    }

    /// `next_in` (the writers') and `next_out` (the reader's).
    fn indices(&self) -> (u64, u64) {
        (self.u64_at(NEXT_IN_AT), self.u64_at(NEXT_OUT_AT))
    }

    /// Waits until the reader has taken `n` frames: proof that a stream is under
    /// way before a test injects a fault.
    fn wait_progress(&self, n: u64) {
        wait_until("frames to flow through the buffer", LIMIT, || self.indices().1 >= n);
    }

    /// Whether process `pid` is in the middle of copying a frame into a slot.
    fn copying(&self, pid: i32) -> bool {
        (0..u64::from(self.layout.slots)).any(|i| {
            let word = self.u64_at(self.layout.slot_offset(i));
            matches!(SlotState::from_word(word), SlotState::Writing { pid: p, .. } if i64::from(p) == i64::from(pid))
        })
    }
}

/// Whether `pid` is stopped (state T in /proc/PID/stat).
fn is_stopped(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
        .unwrap_or(false)
}

/// Freezes `w` (SIGSTOP) and returns once it is stopped.
fn freeze(w: &Running) {
    w.kill(libc::SIGSTOP);
    wait_until("the writer to stop", LIMIT, || is_stopped(w.pid()));
}

/// SIGKILLs writer `w` while it is inside its critical section, copying a
/// frame: stopped there first (SIGSTOP), and killed only once the slot it is
/// copying into says so. No timing involved.
fn kill_while_copying(watch: &Watch, w: &Running) {
    freeze_while_copying(watch, w);
    w.kill(libc::SIGKILL);
}

/// Leaves `w` stopped in the middle of a copy, holding the lock.
fn freeze_while_copying(watch: &Watch, w: &Running) {
    for _ in 0..1000 {
        wait_until("the writer to copy a frame", LIMIT, || watch.copying(w.pid()));
        freeze(w);
        if watch.copying(w.pid()) {
            return;
        }
        w.kill(libc::SIGCONT); // it finished that copy before it stopped: again
    }
    panic!("never caught the writer in the middle of a copy");
}

/// SIGKILLs writer `w` while it is not copying a frame (stopped first, and
/// checked), so the reader's verdict does not depend on where the kill lands.
fn kill_while_not_copying(watch: &Watch, w: &Running) {
    for _ in 0..1000 {
        freeze(w);
        if !watch.copying(w.pid()) {
            w.kill(libc::SIGKILL);
            return;
        }
        w.kill(libc::SIGCONT);
    }
    panic!("the writer was always copying");
}

/// The System V set id in a ready line: "... id 42".
fn set_id(ready: &str) -> i32 {
    ready
        .rsplit(" id ")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no set id in {ready:?}"))
}

#[test]
fn twenty_thousand_frames_through_eight_slots_with_either_family() {
    for family in FAMILIES {
        let dir = TestDir::new(&format!("sem-20k-{family}"));
        let (r, ready) = reader(&dir, &["--lock", family, "--slots", "8", "--count", "20000"]);
        assert!(ready.contains("8 slots of 4120 bytes"), "{ready}");
        let w = writer(&dir, &["--count", "20000", "--size", "0..4K"]).finish();
        let r = r.finish();
        w.expect(0);
        r.expect(0);
        assert_eq!(w.summary(), r.summary(), "{family}");
        assert_eq!(r.summary().messages, 20_000);
        dir.assert_clean();
    }
}

#[test]
fn four_writers_at_once_every_frame_intact() {
    for family in FAMILIES {
        let dir = TestDir::new(&format!("sem-four-{family}"));
        let (r, _) = reader(&dir, &["--lock", family, "--writers", "4", "--count", "20000"]);
        let ws: Vec<(u16, Running)> = (1..=4u16)
            .map(|k| {
                let (id, seed) = (k.to_string(), (100 + k).to_string());
                let args = ["--id", &id, "--seed", &seed, "--count", "5000", "--size", "0..4K"];
                (k, writer(&dir, &args))
            })
            .collect();
        let sent: Vec<(u16, Outcome)> = ws.into_iter().map(|(k, w)| (k, w.finish())).collect();
        let r = r.finish();
        r.expect(0);
        for (k, w) in &sent {
            w.expect(0);
            assert_eq!(w.summary(), r.writer_summary(*k), "{family} writer {k}");
        }
        r.expect_stderr("sem-reader: received 20000 messages, ");
        dir.assert_clean();
    }
}

#[test]
fn text_typed_into_a_writer_is_printed_by_the_reader() {
    let dir = TestDir::new("sem-text");
    let (r, _) = reader(&dir, &[]);
    let mut w = Running::spawn(dir.command(WRITER).stdin(Stdio::piped()), LIMIT);
    w.write_stdin(b"hello\nsemaphore\n");
    let (w, r) = (w.finish(), r.finish());
    w.expect(0);
    r.expect(0);
    assert_eq!(r.stdout_text(), "hello\nsemaphore\n");
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
}

#[test]
fn writers_that_come_one_after_another_are_all_read() {
    let dir = TestDir::new("sem-late");
    let (r, _) = reader(&dir, &["--writers", "2", "--quiet"]);
    let first = writer(&dir, &["--id", "1", "--count", "500"]).finish();
    first.expect(0);
    let second = writer(&dir, &["--id", "2", "--count", "700", "--seed", "9"]).finish();
    second.expect(0);
    let r = r.finish();
    r.expect(0);
    assert_eq!(r.writer_summary(1), first.summary());
    assert_eq!(r.writer_summary(2), second.summary());
    dir.assert_clean();
}

/// A writer killed between frames: the reader sees its presence lock go,
/// reads what it left, and reports the missing end frame (exit 3) — by itself,
/// within a few ticks of the kill, not through a timeout (it has none).
#[test]
fn a_writer_killed_mid_stream_makes_the_reader_exit_3() {
    for family in FAMILIES {
        let dir = TestDir::new(&format!("sem-wkill-{family}"));
        let (r, _) = reader(&dir, &["--lock", family, "--quiet"]);
        let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
        let watch = Watch::default(&dir);
        watch.wait_progress(1000);
        kill_while_not_copying(&watch, &w);
        let killed = Instant::now();
        let r = r.finish();
        let noticed = killed.elapsed();
        r.expect(3).expect_stderr("sem: writer 0 vanished after ").expect_stderr(END_REASON);
        assert!(noticed < Duration::from_secs(5), "{family}: noticed after {noticed:?}");
        assert_eq!(w.finish().signal, Some(libc::SIGKILL));
        dir.assert_clean();
    }
}

/// Review finding: a writer killed while copying into its slot used to hang
/// the other writers for ever (POSIX: a semaphore lock nobody gives back) or
/// turn into a checksum error (System V: the reader read the half-copied
/// slot). Now the lock comes back (robust mutex `EOWNERDEAD`, `SEM_UNDO`), the
/// survivor goes on, and the reader, finding the slot still marked "writing"
/// by a dead process, reports a lost writer (exit 3), never bad data (4).
#[test]
fn a_writer_killed_inside_its_critical_section_is_a_lost_writer_not_bad_data() {
    for family in FAMILIES {
        for writers in [1, 2] {
            let dir = TestDir::new(&format!("sem-cs-{family}-{writers}"));
            let n = writers.to_string();
            let (r, _) = reader(
                &dir,
                &[
                    "--lock",
                    family,
                    "--writers",
                    &n,
                    "--slots",
                    "2",
                    "--slot-size",
                    "8M",
                    "--quiet",
                ],
            );
            let big = ["--count", "1000000", "--size", "8000K"];
            let victim = writer(&dir, &[&["--id", "1"][..], &big[..]].concat());
            let survivor =
                (writers == 2).then(|| writer(&dir, &[&["--id", "2"][..], &big[..]].concat()));
            let watch = Watch::new(&dir, 2, 8 << 20);
            kill_while_copying(&watch, &victim);
            let r = r.finish();
            // Named by the source, whichever writer the reader heard from first.
            r.expect(3).expect_stderr("sem: writer 1 vanished after ").expect_stderr(&format!(
                "(pid {} died inside its critical section, copying a frame into slot ",
                victim.pid()
            ));
            assert!(!r.stderr.contains("crc"), "{family}: {}", r.stderr);
            assert_eq!(victim.finish().signal, Some(libc::SIGKILL));
            if let Some(s) = survivor {
                // It went on (or was about to), then lost its reader.
                s.finish().expect(3);
            }
            dir.assert_clean();
        }
    }
}

/// Review finding: the POSIX lock (a semaphore) of a writer killed in its
/// critical section was never given back, so every other writer waited for
/// ever. Step by step, nothing timed: the victim is frozen mid-copy (holding
/// the lock), the reader drains what came before and is frozen too, a second
/// writer comes and waits for the lock; then the victim is killed. The second
/// writer must get the lock (robust mutex: `EOWNERDEAD`; System V: `SEM_UNDO`)
/// and fill the next slot while the reader is still frozen; the reader, let
/// go, reports the victim's half-copied slot (exit 3).
#[test]
fn the_lock_of_a_writer_killed_while_holding_it_comes_back_to_the_others() {
    for family in FAMILIES {
        let dir = TestDir::new(&format!("sem-lock-back-{family}"));
        let args = ["--lock", family, "--writers", "2", "--slots", "4", "--slot-size", "8M"];
        let (r, _) = reader(&dir, &[&args[..], &["--quiet"]].concat());
        let big = ["--count", "1000000", "--size", "8000K"];
        let victim = writer(&dir, &[&["--id", "1"][..], &big[..]].concat());
        let watch = Watch::new(&dir, 4, 8 << 20);
        freeze_while_copying(&watch, &victim);
        // Frozen holding the lock, in slot `s`; the reader takes all before it.
        let s = (0..4u64)
            .find(|&i| {
                let word = watch.u64_at(watch.layout.slot_offset(i));
                matches!(SlotState::from_word(word), SlotState::Writing { .. })
            })
            .expect("the victim's slot");
        wait_until("the reader to take every frame before it", LIMIT, || {
            watch.indices().1 % 4 == s
        });
        freeze(&r);
        let survivor = writer(&dir, &[&["--id", "2"][..], &big[..]].concat());
        victim.kill(libc::SIGKILL);
        assert_eq!(victim.finish().signal, Some(libc::SIGKILL));
        let pid = u32::try_from(survivor.pid()).expect("pid");
        wait_until("the other writer to fill the next slot", LIMIT, || {
            let word = watch.u64_at(watch.layout.slot_offset((s + 1) % 4));
            matches!(SlotState::from_word(word), SlotState::Committed { pid: p, .. } if p == pid)
        });
        r.kill(libc::SIGCONT);
        r.finish()
            .expect(3)
            .expect_stderr("sem: writer 1 vanished after 0 of ? messages (pid ")
            .expect_stderr("died inside its critical section");
        let survivor = survivor.finish();
        survivor.expect(3);
        if family == "posix" {
            survivor.expect_stderr(
                "EOWNERDEAD: a writer died holding the buffer's lock; taking it over",
            );
        }
        dir.assert_clean();
    }
}

/// A writer killed after committing its frame but before its V(full) leaves a
/// filled slot nobody posted. This test plays that writer by hand (its
/// presence lock, a P(empty), the frame and the "committed" state word), then
/// goes away: the reader still reads the frame, then reports the missing end
/// frame in its own words.
#[test]
fn a_frame_committed_but_never_posted_is_still_read() {
    let dir = TestDir::new("sem-unposted");
    let (r, _) = reader(&dir, &["--quiet"]);
    let name = dir.posix_name("sem");
    let presence = WriterPresence::join(&dir.private(), &format!("sem.{}", &name[1..]))
        .expect("join")
        .expect("the reader's lock files");
    let empty = NamedSemaphore::open(&format!("{name}.empty")).expect("open").expect("exists");
    assert!(empty.try_wait().expect("P(empty)"), "a free slot");
    let watch = Watch::default(&dir);
    let shm = fs::OpenOptions::new().write(true).open(shm_file(&dir)).expect("open rw");
    let slot = watch.layout.slot_offset(0);
    let frame = frame_bytes(5, 0, b"last words");
    shm.write_all_at(&frame, (slot + STATE_LEN) as u64).expect("the frame");
    let pid = std::process::id();
    let committed = SlotState::Committed { pid, writer: 5 }.word();
    shm.write_all_at(&committed.to_ne_bytes(), slot as u64).expect("committed");
    // "Dies" before V(full): its presence lock goes.
    drop(presence);
    let r = r.finish();
    // "after 1": the frame was read; then the end frame was missed, in the buffer's words.
    r.expect(3)
        .expect_stderr(&format!("sem: writer 5 vanished after 1 of ? messages {END_REASON}"));
    dir.assert_clean();
}

#[test]
fn sigterm_to_a_writer_exits_143_and_the_reader_reports_it_gone() {
    for family in FAMILIES {
        let dir = TestDir::new(&format!("sem-sigterm-w-{family}"));
        let (r, _) = reader(&dir, &["--lock", family, "--quiet"]);
        let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
        Watch::default(&dir).wait_progress(1000);
        w.kill(libc::SIGTERM);
        w.finish().expect(143).expect_stderr("sem-writer: interrupted by SIGTERM");
        r.finish()
            .expect(3)
            .expect_stderr("sem: writer 0 vanished after ")
            .expect_stderr(END_REASON);
        dir.assert_clean();
    }
}

#[test]
fn a_reader_killed_mid_stream_leaves_stale_objects_named_and_removable() {
    let dir = TestDir::new("sem-rkill");
    let (r, _) = reader(&dir, &["--quiet"]);
    let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
    Watch::default(&dir).wait_progress(1000);
    r.kill(libc::SIGKILL);
    drop(r.finish());
    w.finish().expect(3).expect_stderr("sem-writer: sem-reader went away after ");
    // SIGKILL left the object and the semaphores: the next reader names them
    // all, in one line, with the command that removes them...
    let (name, shm) = (dir.posix_name("sem"), shm_file(&dir));
    let (empty, full) = (sem_file(&dir, "empty"), sem_file(&dir, "full"));
    let again = run_reader(&dir, &[]);
    again.expect(1).expect_stderr(&format!(
        "bounded buffer {name}: stale objects, left by a sem-reader that was killed (or ran with --keep): \
         POSIX shm {name}, POSIX semaphore {name}.empty, POSIX semaphore {name}.full; \
         remove them: rm {} {} {} (or make clean-ipc, or add --force)",
        shm.display(),
        empty.display(),
        full.display()
    ));
    assert_eq!(again.stderr.lines().count(), 1, "one line: {}", again.stderr);
    assert!(shm.exists() && empty.exists() && full.exists(), "refusing leaves them in place");
    // ...ipc-clean (make clean-ipc) lists every one of them...
    let left = scan_with(&dir.private(), dir.prefix()).expect("scan");
    let names: Vec<String> = left.iter().map(|l| format!("{} {}", l.kind, l.name)).collect();
    assert!(names.contains(&format!("posix shm {}", shm.display())), "{names:?}");
    for sem in [&empty, &full] {
        assert!(names.contains(&format!("posix semaphore {}", sem.display())), "{names:?}");
    }
    // ...and --force removes them all and starts afresh.
    let (forced, _) = reader(&dir, &["--force", "--count", "10"]);
    writer(&dir, &["--count", "10"]).finish().expect(0);
    forced.finish().expect(0);
    dir.assert_clean();
}

#[test]
fn a_stale_system_v_set_is_named_by_the_next_reader_and_listed_for_make_clean_ipc() {
    let dir = TestDir::new("sem-rkill-sysv");
    let (r, ready) = reader(&dir, &["--lock", "sysv", "--quiet"]);
    let id = set_id(&ready);
    r.kill(libc::SIGKILL);
    drop(r.finish());
    let again = run_reader(&dir, &["--lock", "sysv"]);
    again
        .expect(1)
        .expect_stderr("System V semaphore set key 0x")
        .expect_stderr(&format!(" id {id}"))
        .expect_stderr(&format!("ipcrm -s {id} (or make clean-ipc, or add --force)"));
    assert!(SysvSet::stat_id(id).expect("stat").is_some(), "refusing leaves it in place");
    let left = scan_with(&dir.private(), dir.prefix()).expect("scan");
    assert!(
        left.iter()
            .any(|l| l.kind == "sysv semaphore set" && l.name.ends_with(&format!("id {id}"))),
        "{left:?}"
    );
    // What `make clean-ipc` does: remove each leftover.
    for l in &left {
        l.remove().expect("remove");
    }
    dir.assert_clean();
}

/// `--keep` leaves the buffer, its semaphores and the lock files that record
/// them; the next reader names them as leftovers, and `--force` clears them.
#[test]
fn keep_leaves_everything_for_the_next_reader_to_name_and_force_to_remove() {
    for family in FAMILIES {
        let dir = TestDir::new(&format!("sem-keep-{family}"));
        let (r, ready) = reader(&dir, &["--lock", family, "--keep", "--count", "10"]);
        writer(&dir, &["--count", "10"]).finish().expect(0);
        r.finish().expect(0);
        assert!(shm_file(&dir).exists(), "{family}: the object is kept");
        let set = (family == "sysv").then(|| set_id(&ready));
        match set {
            Some(id) => assert!(SysvSet::stat_id(id).expect("stat").is_some(), "the set is kept"),
            None => assert!(sem_file(&dir, "empty").exists() && sem_file(&dir, "full").exists()),
        }
        let refused = run_reader(&dir, &["--lock", family]);
        refused.expect(1).expect_stderr("stale objects").expect_stderr("add --force");
        if let Some(id) = set {
            refused.expect_stderr(&format!("ipcrm -s {id}"));
        }
        let (forced, _) = reader(&dir, &["--lock", family, "--force", "--count", "5"]);
        writer(&dir, &["--count", "5"]).finish().expect(0);
        forced.finish().expect(0);
        if let Some(id) = set {
            assert!(SysvSet::stat_id(id).expect("stat").is_none(), "--force removed the kept set");
        }
        dir.assert_clean();
    }
}

#[test]
fn a_set_removed_mid_run_stops_both_sides_with_exit_3() {
    let dir = TestDir::new("sem-eidrm");
    let (r, ready) = reader(&dir, &["--lock", "sysv", "--quiet"]);
    let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
    Watch::default(&dir).wait_progress(1000);
    // ipcrm -s ID: every sleeper wakes with EIDRM; later calls get EINVAL.
    remove_sysv(SysvKind::Sem, set_id(&ready)).expect("IPC_RMID");
    let (w, r) = (w.finish(), r.finish());
    w.expect(3).expect_stderr("the set was removed");
    r.expect(3).expect_stderr("the set was removed");
    dir.assert_clean();
}

#[test]
fn sigint_to_a_reader_waiting_for_writers_exits_130_and_removes_everything() {
    for family in FAMILIES {
        let dir = TestDir::new(&format!("sem-sigint-r-{family}"));
        let (r, _) = reader(&dir, &["--lock", family]);
        assert!(shm_file(&dir).exists());
        r.kill(libc::SIGINT);
        r.finish().expect(130).expect_stderr("sem-reader: interrupted by SIGINT");
        dir.assert_clean();
    }
}

#[test]
fn sigint_to_a_writer_blocked_on_a_full_buffer_exits_130() {
    for family in FAMILIES {
        let dir = TestDir::new(&format!("sem-sigint-w-{family}"));
        let (r, _) = reader(&dir, &["--lock", family, "--quiet"]);
        let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
        let watch = Watch::default(&dir);
        watch.wait_progress(100);
        // A stopped reader still holds its presence lock: the writer must wait.
        r.kill(libc::SIGSTOP);
        wait_until("the writer to fill all 8 slots", LIMIT, || {
            let (next_in, next_out) = watch.indices();
            next_in == next_out + 8
        });
        w.kill(libc::SIGINT);
        w.finish().expect(130).expect_stderr("sem-writer: interrupted by SIGINT");
        r.kill(libc::SIGCONT);
        r.finish().expect(3).expect_stderr("writer 0 vanished after ").expect_stderr(END_REASON);
        dir.assert_clean();
    }
}

#[test]
fn a_second_reader_on_a_live_buffer_is_refused() {
    let dir = TestDir::new("sem-busy");
    let (first, _) = reader(&dir, &[]);
    run_reader(&dir, &[]).expect(1).expect_stderr("is in use by another reader");
    assert!(shm_file(&dir).exists(), "the live reader's buffer is untouched");
    first.kill(libc::SIGTERM);
    first.finish().expect(143);
    dir.assert_clean();
}

#[test]
fn timeouts_give_up_with_exit_3() {
    let dir = TestDir::new("sem-timeout");
    writer(&dir, &["--timeout", "1", "--count", "1"])
        .finish()
        .expect(3)
        .expect_stderr("no sem-reader made bounded buffer ")
        .expect_stderr("start sem-reader first");
    run_reader(&dir, &["--timeout", "1"])
        .expect(3)
        .expect_stderr("no sem-writer came to ")
        .expect_stderr("within 1 s");
    dir.assert_clean();
}

#[test]
fn bad_values_are_usage_errors() {
    let dir = TestDir::new("sem-usage");
    for (args, needle) in [
        (&["--name", "no-slash"][..], "starts with '/'"),
        (&["--slots", "0"][..], "--slots 0: from 1"),
        (&["--slot-size", "10"][..], "--slot-size 10: from 64"),
        (&["--key", "0x1234"][..], "give --lock sysv too"),
        (&["--lock", "svr4"][..], "expected posix or sysv"),
    ] {
        run_reader(&dir, args).expect(2).expect_stderr(needle);
    }
    dir.assert_clean();
}

/// Review finding: a writer that connected and then quit with a usage error
/// (its `--size` does not fit the slots, its `--lock` is not the reader's)
/// ended the reader's wait, as if it had been the stream. A reader's stream
/// starts with a frame: here it waits on, and reads the next writer.
#[test]
fn writers_refused_after_connecting_do_not_end_the_readers_wait() {
    let dir = TestDir::new("sem-refused");
    let (r, _) = reader(&dir, &["--slot-size", "1K", "--count", "10", "--quiet"]);
    writer(&dir, &["--count", "10", "--size", "2K"])
        .finish()
        .expect(2)
        .expect_stderr("slots hold payloads up to 1000 bytes");
    writer(&dir, &["--count", "10", "--lock", "sysv"])
        .finish()
        .expect(2)
        .expect_stderr("with posix semaphores, not --lock sysv");
    let w = writer(&dir, &["--count", "10", "--size", "1000"]).finish();
    w.expect(0);
    let r = r.finish();
    r.expect(0);
    assert_eq!(r.summary(), w.summary());
    dir.assert_clean();
}

#[test]
fn a_buffer_that_does_not_fit_in_dev_shm_is_refused_before_anything_is_made() {
    let dir = TestDir::new("sem-no-room");
    run_reader(&dir, &["--slots", "32767", "--slot-size", "16M"])
        .expect(1)
        .expect_stderr("do not fit in /dev/shm")
        .expect_stderr("df -h /dev/shm");
    dir.assert_clean();
}

/// A header another process of ours forged (more slots than the object holds)
/// must not make a writer compute offsets past the end of the object.
#[test]
fn a_writer_refuses_a_header_that_claims_more_than_the_object_holds() {
    let dir = TestDir::new("sem-forged");
    let (r, _) = reader(&dir, &[]);
    let shm = fs::OpenOptions::new().write(true).open(shm_file(&dir)).expect("open rw");
    // The header's K, at offset 8: 32767 slots in an object made for 8.
    shm.write_all_at(&32767u32.to_ne_bytes(), 8).expect("forge");
    writer(&dir, &["--count", "1"])
        .finish()
        .expect(1)
        .expect_stderr("is not a sem-reader buffer (32767 slots of 4120 bytes in ");
    r.kill(libc::SIGTERM);
    r.finish().expect(143);
    dir.assert_clean();
}

/// Makes the private directory, as a reader would.
fn private_dir(dir: &TestDir) {
    fs::create_dir(dir.private()).expect("mkdir");
    fs::set_permissions(dir.private(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
}

fn plant(path: &PathBuf, uid: u32, mode: u32) {
    fs::write(path, vec![0u8; 8192]).expect("plant");
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
}

#[test]
fn objects_of_another_user_or_open_to_others_are_refused_and_untouched() {
    let dir = TestDir::new("sem-foreign");
    private_dir(&dir);
    // A shared memory object of the same name, owned by nobody.
    let shm = shm_file(&dir);
    plant(&shm, NOBODY, 0o600);
    run_reader(&dir, &[]).expect(1).expect_stderr(&format!("is owned by uid {NOBODY}, not by us"));
    assert_eq!(fs::metadata(&shm).expect("kept").uid(), NOBODY);
    fs::remove_file(&shm).expect("rm");

    // A semaphore of the same name, ours but open to everyone.
    let sem = sem_file(&dir, "full");
    plant(&sem, 0, 0o666);
    run_reader(&dir, &[]).expect(1).expect_stderr("has mode 0666, open to other users");
    assert!(sem.exists());
    assert!(!shm.exists(), "the refused reader made nothing");
    fs::remove_file(&sem).expect("rm");
    dir.assert_clean();
}

/// A key of this test's own, unlikely to be anyone else's.
fn test_key(tag: i32) -> i32 {
    0x5e00_0000 | (tag << 16) | i32::try_from(std::process::id() & 0xffff).expect("16 bits")
}

/// Sets the owner of set `id` (IPC_SET; we are root).
fn set_owner(id: i32, uid: u32) {
    // SAFETY: semid_ds is plain data; IPC_STAT and IPC_SET read and write one.
    unsafe {
        let mut ds: libc::semid_ds = std::mem::zeroed();
        assert_eq!(libc::semctl(id, 0, libc::IPC_STAT, &raw mut ds), 0);
        ds.sem_perm.uid = uid;
        assert_eq!(libc::semctl(id, 0, libc::IPC_SET, &raw mut ds), 0);
    }
}

#[test]
fn a_system_v_set_of_another_user_is_refused_and_untouched() {
    let dir = TestDir::new("sem-foreign-sysv");
    let key = test_key(0);
    // SAFETY: plain semget.
    let id = unsafe { libc::semget(key, 3, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
    set_owner(id, NOBODY);
    let key_arg = format!("{key:#x}");
    let out = run_reader(&dir, &["--lock", "sysv", "--key", &key_arg, "--force"]);
    let still = SysvSet::stat_id(id).expect("stat").is_some();
    remove_sysv(SysvKind::Sem, id).expect("IPC_RMID");
    out.expect(1).expect_stderr(&format!("is owned by uid {NOBODY}, not by us"));
    assert!(still, "the foreign set is untouched, even with --force");
    dir.assert_clean();
}

/// A set created by another user and then given to us (IPC_SET) is refused
/// too: its creator keeps the rights of one (`cuid`).
#[test]
fn a_system_v_set_created_by_another_user_is_refused_even_if_given_to_us() {
    let dir = TestDir::new("sem-foreign-cuid");
    let key = test_key(1);
    // SAFETY: the child makes raw system calls only (async-signal-safe, as a
    // fork from a threaded test process requires), then _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            let n = libc::c_long::from(NOBODY);
            let ok = libc::syscall(libc::SYS_setresuid, n, n, n) == 0
                && libc::semget(key, 3, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) >= 0;
            libc::_exit(i32::from(!ok));
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(child, &raw mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    // SAFETY: plain semget.
    let id = unsafe { libc::semget(key, 0, 0) };
    assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
    set_owner(id, 0);
    let key_arg = format!("{key:#x}");
    let out = run_reader(&dir, &["--lock", "sysv", "--key", &key_arg, "--force"]);
    let still = SysvSet::stat_id(id).expect("stat").is_some();
    remove_sysv(SysvKind::Sem, id).expect("IPC_RMID");
    out.expect(1).expect_stderr(&format!("was created by uid {NOBODY}, not by us"));
    assert!(still, "the foreign set is untouched");
    dir.assert_clean();
}

/// Our process is alive; a killed writer is not (what the reader asks of a
/// slot's writer).
#[test]
fn a_killed_writer_is_not_alive() {
    let dir = TestDir::new("sem-alive");
    let w = writer(&dir, &["--timeout", "0", "--count", "1"]);
    assert!(process_alive(w.pid()));
    w.kill(libc::SIGKILL);
    let pid = w.pid();
    assert_eq!(w.finish().signal, Some(libc::SIGKILL));
    assert!(!process_alive(pid));
}

/// `ftok` keys collide across directories (16 bits of inode, 8 of device): in
/// parallel tests another test's live set showed up under "our" key, and was
/// taken for a stale one of ours. Here a set of ours sits at the very key
/// `ftok(reader lock file, 'S')` gives: the reader must leave it alone, take
/// the next project id, and its writer must find the set the reader recorded.
#[test]
fn a_set_at_our_ftok_key_that_we_did_not_record_is_skipped_and_untouched() {
    let dir = TestDir::new("sem-collide");
    private_dir(&dir);
    let lock_file = dir.private().join(format!("sem.{}.reader.lock", &dir.posix_name("sem")[1..]));
    fs::File::create_new(&lock_file).expect("lock file");
    fs::set_permissions(&lock_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let key = sem_demo::ftok(&lock_file, sem_demo::buffer::SYSV_PROJ).expect("ftok");
    let theirs = SysvSet::create(key, &[7, 7, 7]).expect("semget").expect("a free key");
    let (r, ready) = reader(&dir, &["--lock", "sysv", "--count", "10"]);
    let w = writer(&dir, &["--count", "10"]).finish();
    let r = r.finish();
    w.expect(0);
    r.expect(0);
    assert_eq!(w.summary(), r.summary());
    assert_ne!(set_id(&ready), theirs.id(), "{ready}");
    assert_eq!(theirs.value(0).expect("GETVAL"), 7, "untouched");
    drop(theirs);
    dir.assert_clean();
}
