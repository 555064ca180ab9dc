//! mq-reader and mq-writer, both APIs, run as a user runs them: volume, several
//! writers, priorities and types, limits, foreign and stale queues, faults.

use std::process::Stdio;

use ipc_common::clean::scan_with;
use ipc_common::testkit::{LIMIT, Outcome, Running, TestDir, frame_bytes, unique, wait_until};
use nix::mqueue::{MQ_OFlag, MqAttr, mq_close, mq_getattr, mq_open, mq_send, mq_unlink};
use nix::sys::stat::Mode;

const WRITER: &str = env!("CARGO_BIN_EXE_mq-writer");
const READER: &str = env!("CARGO_BIN_EXE_mq-reader");
const NOBODY: u32 = 65534;
const APIS: [&str; 2] = ["posix", "sysv"];

/// A reader, waited on until ready; returns it and its ready line.
fn reader(dir: &TestDir, api: &str, args: &[&str]) -> (Running, String) {
    let mut r = Running::spawn(
        dir.command(READER).args(["--api", api]).args(args).stdin(Stdio::null()),
        LIMIT,
    );
    let line = r.ready();
    (r, line)
}

fn writer(dir: &TestDir, api: &str, args: &[&str]) -> Running {
    Running::spawn(dir.command(WRITER).args(["--api", api]).args(args).stdin(Stdio::null()), LIMIT)
}

fn run(dir: &TestDir, bin: &str, args: &[&str]) -> Outcome {
    Running::spawn(dir.command(bin).args(args).stdin(Stdio::null()), LIMIT).finish()
}

/// `(key, id)` from a System V ready line: `... key 0x4d0000cb id 7 (...)`.
fn sysv_ids(ready: &str) -> (i32, i32) {
    let words: Vec<&str> = ready.split_whitespace().collect();
    let at =
        |w: &str| words.iter().position(|x| *x == w).map(|i| words[i + 1]).expect("in ready line");
    let key = u32::from_str_radix(at("key").trim_start_matches("0x"), 16).expect("hex key");
    (i32::from_ne_bytes(key.to_ne_bytes()), at("id").parse().expect("id"))
}

fn sysv_exists(key: i32) -> bool {
    // SAFETY: msgget without IPC_CREAT only looks the key up.
    unsafe { libc::msgget(key, 0) >= 0 }
}

fn posix_exists(name: &str) -> bool {
    let flags = MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK;
    mq_open(name, flags, Mode::empty(), None).map(mq_close).is_ok()
}

/// Everything the run made is gone: private directory, POSIX name, System V key.
fn assert_gone(dir: &TestDir, api: &str, ready: &str) {
    dir.assert_clean();
    match api {
        "posix" => assert!(!posix_exists(&dir.posix_name("mq")), "POSIX queue left behind"),
        _ => assert!(!sysv_exists(sysv_ids(ready).0), "System V queue left behind"),
    }
}

fn twenty_thousand_frames_up_to_the_message_size(api: &str) {
    let dir = TestDir::new(&format!("mq-volume-{api}"));
    let (r, ready) = reader(&dir, api, &["--count", "20000"]);
    let w = writer(&dir, api, &["--count", "20000", "--size", "1..8168", "--seed", "3"]).finish();
    let r = r.finish();
    w.expect(0);
    r.expect(0);
    assert_eq!(w.summary(), r.summary());
    assert_eq!(r.summary().messages, 20_000);
    assert_gone(&dir, api, &ready);
}

#[test]
fn posix_twenty_thousand_frames_up_to_the_message_size() {
    twenty_thousand_frames_up_to_the_message_size("posix");
}

#[test]
fn sysv_twenty_thousand_frames_up_to_the_message_size() {
    twenty_thousand_frames_up_to_the_message_size("sysv");
}

fn four_writers_at_once(api: &str) {
    let dir = TestDir::new(&format!("mq-four-{api}"));
    let (r, ready) = reader(&dir, api, &["--writers", "4", "--count", "4000"]);
    let ws: Vec<(u16, Running)> = (1..=4u16)
        .map(|k| {
            let (id, seed) = (k.to_string(), (10 + k).to_string());
            (
                k,
                writer(
                    &dir,
                    api,
                    &["--id", &id, "--seed", &seed, "--count", "1000", "--size", "0..4000"],
                ),
            )
        })
        .collect();
    let sent: Vec<(u16, Outcome)> = ws.into_iter().map(|(k, w)| (k, w.finish())).collect();
    let r = r.finish();
    r.expect(0).expect_stderr("mq-reader: received 4000 messages, ");
    for (k, w) in &sent {
        w.expect(0);
        assert_eq!(w.summary(), r.writer_summary(*k), "writer {k}");
    }
    assert_gone(&dir, api, &ready);
}

#[test]
fn posix_four_writers_at_once_every_frame_intact() {
    four_writers_at_once("posix");
}

#[test]
fn sysv_four_writers_at_once_every_frame_intact() {
    four_writers_at_once("sysv");
}

/// Four writers of 20 small frames each fit the default 16 KiB queue together,
/// so a reader selecting one type never leaves the others stuck.
fn four_small_writers(dir: &TestDir) -> Vec<(u16, Outcome)> {
    let ws: Vec<(u16, Running)> = (1..=4u16)
        .map(|k| {
            (
                k,
                writer(
                    dir,
                    "sysv",
                    &["--id", &k.to_string(), "--seed", &k.to_string(), "--count", "20"],
                ),
            )
        })
        .collect();
    ws.into_iter().map(|(k, w)| (k, w.finish())).collect()
}

#[test]
fn sysv_type_selects_exactly_one_writers_frames() {
    let dir = TestDir::new("mq-type");
    // Type 3 is writer 2's (type = id + 1).
    let (r, ready) = reader(&dir, "sysv", &["--type", "3", "--quiet"]);
    let sent = four_small_writers(&dir);
    let r = r.finish();
    r.expect(0);
    let two = &sent.iter().find(|(k, _)| *k == 2).expect("writer 2").1;
    two.expect(0);
    assert_eq!(r.summary(), two.summary(), "exactly writer 2's frames");
    assert!(!r.stderr.contains("writer 1:") && !r.stderr.contains("writer 3:"));
    for (_, w) in &sent {
        // The others either finished, or found the queue gone when the reader left.
        assert!(matches!(w.code, Some(0 | 3)), "{}", w.stderr);
    }
    assert_gone(&dir, "sysv", &ready);
}

#[test]
fn sysv_except_takes_every_writer_but_one() {
    let dir = TestDir::new("mq-except");
    let (r, ready) = reader(&dir, "sysv", &["--except", "3", "--writers", "3", "--quiet"]);
    let sent = four_small_writers(&dir);
    let r = r.finish();
    r.expect(0);
    for (k, w) in &sent {
        if *k == 2 {
            assert!(!r.stderr.contains("writer 2:"), "writer 2's type was excluded");
        } else {
            assert_eq!(r.writer_summary(*k), w.summary(), "writer {k}");
        }
    }
    assert_gone(&dir, "sysv", &ready);
}

#[test]
fn posix_higher_priorities_overtake_queued_lower_ones() {
    let dir = TestDir::new("mq-priority");
    let (r, ready) = reader(&dir, "posix", &["--writers", "2"]);
    // Stop the reader so both writers' messages wait in the queue together.
    r.kill(libc::SIGSTOP);
    let mut low =
        Running::spawn(dir.command(WRITER).args(["--id", "1"]).stdin(Stdio::piped()), LIMIT);
    low.write_stdin(b"low 1\nlow 2\nlow 3\nlow 4\n");
    low.finish().expect(0);
    let mut high = Running::spawn(
        dir.command(WRITER).args(["--id", "2", "--priority", "9"]).stdin(Stdio::piped()),
        LIMIT,
    );
    high.write_stdin(b"high 1\nhigh 2\nhigh 3\nhigh 4\n");
    high.finish().expect(0);
    r.kill(libc::SIGCONT);
    let r = r.finish();
    r.expect(0);
    assert_eq!(r.stdout_text(), "high 1\nhigh 2\nhigh 3\nhigh 4\nlow 1\nlow 2\nlow 3\nlow 4\n");
    assert_gone(&dir, "posix", &ready);
}

#[test]
fn names_the_kernel_would_reject_are_usage_errors_before_any_syscall() {
    let dir = TestDir::new("mq-names");
    for bin in [READER, WRITER] {
        run(&dir, bin, &["--name", "no-slash"]).expect(2).expect_stderr("starts with '/'");
        run(&dir, bin, &["--name", "/two/slashes"])
            .expect(2)
            .expect_stderr("without further slashes");
        run(&dir, bin, &["--api", "sysv", "--name", "/q"])
            .expect(2)
            .expect_stderr("--name is for --api posix");
    }
    run(&dir, READER, &["--type", "2"]).expect(2).expect_stderr("--type is for --api sysv");
    run(&dir, READER, &["--api", "sysv", "--key", "0"]).expect(2).expect_stderr("IPC_PRIVATE");
    run(&dir, READER, &["--notify", "--wait", "timed"])
        .expect(2)
        .expect_stderr("--notify needs --wait poll");
    run(&dir, WRITER, &["--priority", "40000"]).expect(2).expect_stderr("at most 32767");
    assert!(!dir.private().exists(), "refused before creating anything");
}

fn a_payload_larger_than_the_message_is_refused_at_start(api: &str) {
    let dir = TestDir::new(&format!("mq-toolarge-{api}"));
    let (r, ready) = reader(&dir, api, &[]);
    let w = writer(&dir, api, &["--count", "1", "--size", "9000"]).finish();
    w.expect(2).expect_stderr("--size 9000: a frame of 9024 bytes does not fit");
    assert!(!w.stderr.contains(" sent "), "nothing was sent");
    r.kill(libc::SIGTERM);
    r.finish().expect(143);
    assert_gone(&dir, api, &ready);
}

#[test]
fn posix_a_payload_larger_than_the_message_is_refused_at_start() {
    a_payload_larger_than_the_message_is_refused_at_start("posix");
}

#[test]
fn sysv_a_payload_larger_than_the_message_is_refused_at_start() {
    a_payload_larger_than_the_message_is_refused_at_start("sysv");
}

#[test]
fn a_depth_above_the_system_limit_names_the_proc_file() {
    let dir = TestDir::new("mq-depth");
    let max: u64 = std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")
        .expect("read")
        .trim()
        .parse()
        .expect("n");
    let over = (max + 1).to_string();
    run(&dir, READER, &["--depth", &over])
        .expect(1)
        .expect_stderr(&format!("--depth {over} is above /proc/sys/fs/mqueue/msg_max ({max})"))
        .expect_stderr("sysctl fs.mqueue.msg_max=");
    run(&dir, READER, &["--api", "sysv", "--depth", "1000"])
        .expect(1)
        .expect_stderr("is above /proc/sys/kernel/msgmnb")
        .expect_stderr("sysctl kernel.msgmnb=");
    dir.assert_clean();
}

/// A frame with a bad checksum, as a foreign writer would send it.
fn corrupt_frame() -> Vec<u8> {
    let mut frame = frame_bytes(0, 0, b"tampered");
    let last = frame.len() - 1;
    frame[last] ^= 1;
    frame
}

#[test]
fn posix_a_foreign_writers_bad_checksum_exits_4() {
    let dir = TestDir::new("mq-crc-posix");
    let (r, ready) = reader(&dir, "posix", &[]);
    let q = mq_open(dir.posix_name("mq").as_str(), MQ_OFlag::O_WRONLY, Mode::empty(), None)
        .expect("open");
    mq_send(&q, &corrupt_frame(), 0).expect("send");
    mq_close(q).expect("close");
    let r = r.finish();
    r.expect(4).expect_stderr("posix mq: writer 0 seq 0: checksum mismatch");
    assert!(r.stdout.is_empty(), "nothing corrupt printed");
    assert_gone(&dir, "posix", &ready);
}

#[test]
fn sysv_a_foreign_writers_bad_checksum_exits_4() {
    let dir = TestDir::new("mq-crc-sysv");
    let (r, ready) = reader(&dir, "sysv", &[]);
    let (_, id) = sysv_ids(&ready);
    let mut msg = 1i64.to_ne_bytes().to_vec();
    msg.extend(corrupt_frame());
    // SAFETY: msgsnd reads the type and the frame from the buffer we own.
    let rc = unsafe { libc::msgsnd(id, msg.as_ptr().cast(), msg.len() - 8, 0) };
    assert_eq!(rc, 0, "msgsnd: {}", std::io::Error::last_os_error());
    let r = r.finish();
    r.expect(4).expect_stderr("sysv mq: writer 0 seq 0: checksum mismatch");
    assert_gone(&dir, "sysv", &ready);
}

#[test]
fn a_writer_waiting_for_a_queue_that_never_appears_gives_up_with_3() {
    let dir = TestDir::new("mq-never");
    for api in APIS {
        writer(&dir, api, &["--timeout", "1", "--count", "1"])
            .finish()
            .expect(3)
            .expect_stderr("no mq-reader created ")
            .expect_stderr("within 1 s");
    }
}

/// Waits until the reader's queue is full (the writer is then blocked on it).
fn wait_full(dir: &TestDir, api: &str, ready: &str) {
    if api == "posix" {
        let name = dir.posix_name("mq");
        let full = || {
            let flags = MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK;
            mq_open(name.as_str(), flags, Mode::empty(), None).is_ok_and(|q| {
                let full = mq_getattr(&q).is_ok_and(|a: MqAttr| a.curmsgs() == a.maxmsg());
                let _ = mq_close(q);
                full
            })
        };
        wait_until("the queue to fill", LIMIT, full);
    } else {
        let (_, id) = sysv_ids(ready);
        let full = || {
            // SAFETY: IPC_STAT into a zeroed struct we own.
            let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let ok = unsafe { libc::msgctl(id, libc::IPC_STAT, &raw mut ds) } == 0;
            // Full: no room for one more 1 KiB frame.
            ok && ds.msg_qnum > 0 && ds.__msg_cbytes + 1100 > ds.msg_qbytes
        };
        wait_until("the queue to fill", LIMIT, full);
    }
}

fn reader_killed_while_the_writer_blocks_leaves_a_stale_queue(api: &str) {
    let dir = TestDir::new(&format!("mq-stale-{api}"));
    let (r, ready) = reader(&dir, api, &["--quiet"]);
    r.kill(libc::SIGSTOP);
    let w = writer(&dir, api, &["--count", "1000000"]);
    wait_full(&dir, api, &ready);
    r.kill(libc::SIGKILL);
    drop(r.finish());
    w.finish().expect(3).expect_stderr("mq-writer: reader went away after ");
    // The queue outlived its reader: the next one names it, and how to remove it.
    let again =
        Running::spawn(dir.command(READER).args(["--api", api]).stdin(Stdio::null()), LIMIT)
            .finish();
    again.expect(1).expect_stderr("is stale (left by a reader that was killed, ");
    let hint = if api == "posix" { "make clean-ipc" } else { "remove it: ipcrm -q " };
    again.expect_stderr(hint);
    // ipc-clean lists it (with its lock files)...
    let left = scan_with(&dir.private(), dir.prefix()).expect("scan");
    let kind = if api == "posix" { "posix queue" } else { "sysv msg queue" };
    assert!(left.iter().any(|l| l.kind == kind && !l.live), "{left:?}");
    // ...and --force removes it and goes on.
    let (forced, _) = reader(&dir, api, &["--force"]);
    forced.kill(libc::SIGTERM);
    forced.finish().expect(143);
    assert_gone(&dir, api, &ready);
}

#[test]
fn posix_reader_killed_while_the_writer_blocks_leaves_a_stale_queue() {
    reader_killed_while_the_writer_blocks_leaves_a_stale_queue("posix");
}

#[test]
fn sysv_reader_killed_while_the_writer_blocks_leaves_a_stale_queue() {
    reader_killed_while_the_writer_blocks_leaves_a_stale_queue("sysv");
}

#[test]
fn posix_queue_unlinked_under_a_waiting_reader_exits_3() {
    let dir = TestDir::new("mq-unlink");
    let (r, ready) = reader(&dir, "posix", &[]);
    mq_unlink(dir.posix_name("mq").as_str()).expect("mq_unlink");
    r.finish().expect(3).expect_stderr("was removed (mq_unlink) while in use");
    assert_gone(&dir, "posix", &ready);
}

#[test]
fn sysv_queue_removed_under_a_waiting_reader_exits_3() {
    let dir = TestDir::new("mq-rmid");
    let (r, ready) = reader(&dir, "sysv", &[]);
    let (_, id) = sysv_ids(&ready);
    // SAFETY: IPC_RMID takes no buffer.
    assert_eq!(unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) }, 0);
    r.finish().expect(3).expect_stderr("was removed while in use (ipcrm?)");
    assert_gone(&dir, "sysv", &ready);
}

#[test]
fn posix_a_queue_not_ours_or_open_to_others_is_refused_and_untouched() {
    let dir = TestDir::new("mq-foreign-posix");
    let name = dir.posix_name("mq");
    let flags = MQ_OFlag::O_RDWR | MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL;
    // (With O_CREAT, nix needs the attributes too, or it calls mq_open without a mode.)
    let attr = MqAttr::new(0, 10, 100, 0);
    let q =
        mq_open(name.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR, Some(&attr)).expect("create");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&q);
    // SAFETY: fchmod on the queue descriptor we own.
    assert_eq!(unsafe { libc::fchmod(raw, 0o666) }, 0);
    run(&dir, READER, &[]).expect(1).expect_stderr("has mode 0666, open to other users");
    // SAFETY: fchmod/fchown on the queue descriptor we own.
    assert_eq!(unsafe { libc::fchmod(raw, 0o600) + libc::fchown(raw, NOBODY, NOBODY) }, 0);
    run(&dir, READER, &[]).expect(1).expect_stderr(&format!("is owned by uid {NOBODY}, not by us"));
    assert!(posix_exists(&name), "untouched");
    mq_close(q).expect("close");
    mq_unlink(name.as_str()).expect("unlink");
    dir.assert_clean();
}

#[test]
fn sysv_a_queue_not_ours_or_open_to_others_is_refused_and_untouched() {
    let dir = TestDir::new("mq-foreign-sysv");
    // A key of this test's own: pid and a counter.
    let key = 0x4d00_0000 | i32::try_from(std::process::id() & 0xffff).unwrap_or(1) << 4 | 0x5;
    let key_arg = format!("{key:#x}");
    // SAFETY: msgget creates a queue this test removes below.
    let id = unsafe { libc::msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | 0o666) };
    assert!(id >= 0, "msgget: {}", std::io::Error::last_os_error());
    run(&dir, READER, &["--api", "sysv", "--key", &key_arg])
        .expect(1)
        .expect_stderr("has mode 0666, open to other users");
    // SAFETY: IPC_STAT/IPC_SET on the queue we made, with a struct we own.
    unsafe {
        let mut ds: libc::msqid_ds = std::mem::zeroed();
        assert_eq!(libc::msgctl(id, libc::IPC_STAT, &raw mut ds), 0);
        ds.msg_perm.uid = NOBODY;
        ds.msg_perm.mode = 0o600;
        assert_eq!(libc::msgctl(id, libc::IPC_SET, &raw mut ds), 0);
    }
    run(&dir, READER, &["--api", "sysv", "--key", &key_arg])
        .expect(1)
        .expect_stderr(&format!("is owned by uid {NOBODY}"));
    assert!(sysv_exists(key), "untouched");
    // SAFETY: IPC_RMID takes no buffer.
    assert_eq!(unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) }, 0);
    dir.assert_clean();
}

fn sigint_stops_a_waiting_reader_and_removes_the_queue(api: &str) {
    let dir = TestDir::new(&format!("mq-sigint-{api}"));
    let (r, ready) = reader(&dir, api, &[]);
    r.kill(libc::SIGINT);
    r.finish().expect(130).expect_stderr("mq-reader: interrupted by SIGINT");
    assert_gone(&dir, api, &ready);
}

#[test]
fn posix_sigint_stops_a_waiting_reader_and_removes_the_queue() {
    sigint_stops_a_waiting_reader_and_removes_the_queue("posix");
}

#[test]
fn sysv_sigint_stops_a_waiting_reader_and_removes_the_queue() {
    sigint_stops_a_waiting_reader_and_removes_the_queue("sysv");
}

fn writer_killed_mid_stream_is_noticed(api: &str) {
    let dir = TestDir::new(&format!("mq-wkill-{api}"));
    let (r, ready) = reader(&dir, api, &["--quiet"]);
    // Mid-stream for sure: the reader paused, the writer blocked on a full queue.
    r.kill(libc::SIGSTOP);
    let w = writer(&dir, api, &["--count", "1000000000", "--size", "1K"]);
    wait_full(&dir, api, &ready);
    w.kill(libc::SIGKILL);
    drop(w.finish());
    r.kill(libc::SIGCONT);
    let r = r.finish();
    r.expect(3)
        .expect_stderr("mq: writer 0 vanished after ")
        .expect_stderr("no writer holds the queue any more");
    assert_gone(&dir, api, &ready);
}

#[test]
fn posix_writer_killed_mid_stream_is_noticed() {
    writer_killed_mid_stream_is_noticed("posix");
}

#[test]
fn sysv_writer_killed_mid_stream_is_noticed() {
    writer_killed_mid_stream_is_noticed("sysv");
}

#[test]
fn posix_notify_announces_the_first_message_in_an_empty_queue() {
    let dir = TestDir::new("mq-notify");
    let (r, ready) = reader(&dir, "posix", &["--notify"]);
    let mut w = Running::spawn(dir.command(WRITER).stdin(Stdio::piped()), LIMIT);
    w.write_stdin(b"first\n");
    w.finish().expect(0);
    let r = r.finish();
    r.expect(0).expect_stderr(
        "mq-reader: notified: a message arrived in the empty queue (mq_notify sent SIGUSR1)",
    );
    assert_eq!(r.stdout_text(), "first\n");
    assert_gone(&dir, "posix", &ready);
}

#[test]
fn posix_timed_receive_carries_a_transfer_too() {
    let dir = TestDir::new("mq-timed");
    let (r, ready) = reader(&dir, "posix", &["--wait", "timed", "--count", "3000"]);
    let w = writer(&dir, "posix", &["--count", "3000", "--size", "0..1000"]).finish();
    let r = r.finish();
    w.expect(0);
    r.expect(0);
    assert_eq!(w.summary(), r.summary());
    assert_gone(&dir, "posix", &ready);
}

#[test]
fn a_second_reader_on_a_live_queue_is_refused() {
    let dir = TestDir::new(&unique("mq-busy"));
    for api in APIS {
        let (first, ready) = reader(&dir, api, &[]);
        run(&dir, READER, &["--api", api]).expect(1).expect_stderr("is in use by another reader");
        first.kill(libc::SIGTERM);
        first.finish().expect(143);
        assert_gone(&dir, api, &ready);
    }
}
