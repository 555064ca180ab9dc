//! Foreign objects: as root, put an object at one of our default names that is
//! not ours to use — owned by another user (nobody, 65534), or ours but open
//! to every user (mode 0666), or a symbolic link — and run every binary that
//! would use that name. Each must refuse (exit 1) with a message that names
//! the problem, and leave the object exactly as it was (same inode, owner and
//! mode; a link's target unread and unchanged).
//!
//! The writers of mq and sem are the exception by design: they open nothing
//! until a live reader of ours holds its lock file and has published what it
//! made, so a foreign object alone is never opened; they wait for a reader and
//! exit 3 at `--timeout` saying none came (see [`gated`]). The object is
//! untouched all the same.
//!
//! | name | kind | binaries |
//! |---|---|---|
//! | `<private>/fifo` | FIFO | fifo-reader, fifo-writer |
//! | `<private>/socket`, `socket-dgram` | socket file | socket-reader, socket-writer |
//! | `<private>/mmap.log` | file | mmap-writer (log and ring), mmap-reader |
//! | `/ipc-demos.<uid>.mq` | POSIX queue | mq-reader, mq-writer `--api posix` |
//! | `/dev/shm/ipc-demos.<uid>.shm` | POSIX shm | shm-reader, shm-writer `--api posix` |
//! | `/dev/shm/ipc-demos.<uid>.sem` | POSIX shm (the bounded buffer) | sem-reader (both locks), sem-writer |
//! | `/dev/shm/sem.ipc-demos.<uid>.sem.empty`, `.full` | named semaphores | sem-reader, sem-writer |
//! | System V queue and set at `--key K` | msg queue, semaphore set | mq-reader, mq-writer `--api sysv`; sem-reader `--lock sysv` |
//!
//! Not here, and why: a POSIX queue cannot be a symbolic link (without a
//! mounted mqueue file system there is no path to put one at); System V
//! objects have no path at all. System V *default* keys are the first free
//! `ftok` key of the reader's own lock file, so a stranger's object at one is
//! skipped, never opened. `sem-race` and `sem-holder` lock objects of another
//! user are covered by sem-demo's `a_lock_object_of_another_user_is_refused_and_untouched`.
//!
//! ```text
//! $ cargo test --release -p ipc-faults --test foreign -- --nocapture
//! ```

use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use ipc_common::testkit::{Outcome, Running, TestDir};
use ipc_faults::bin;
use nix::mqueue::{MQ_OFlag, MqAttr, mq_close, mq_open, mq_unlink};
use nix::sys::stat::{Mode, fstat};

/// nobody.
const NOBODY: u32 = 65534;
const LIMIT: Duration = Duration::from_secs(20);
/// What the precious file a planted link points at holds.
const PRECIOUS: &[u8] = b"precious: not to be read, written, truncated or removed\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Owned by nobody, mode 0600.
    Nobody,
    /// Ours, mode 0666.
    Open,
    /// A symbolic link to a file of ours.
    Symlink,
}

impl Attack {
    const ALL: [Attack; 3] = [Attack::Nobody, Attack::Open, Attack::Symlink];

    /// What the refusal must say.
    fn needle(self) -> &'static [&'static str] {
        match self {
            Attack::Nobody => &["owned by uid 65534"],
            Attack::Open => &["mode 0666", "open to other users"],
            Attack::Symlink => &["symbolic link"],
        }
    }

    fn label(self) -> &'static str {
        match self {
            Attack::Nobody => "owned by nobody",
            Attack::Open => "mode 0666",
            Attack::Symlink => "symlink",
        }
    }
}

/// How an object at a path is made.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Fifo,
    Socket,
    File,
    /// A POSIX named semaphore (the path is its file in /dev/shm).
    Semaphore,
}

/// A name the binaries use, and who uses it.
struct Target {
    what: &'static str,
    kind: Kind,
    path: PathBuf,
    /// (binary, arguments) of every binary that would use it.
    users: Vec<(&'static str, Vec<&'static str>)>,
}

fn targets(dir: &TestDir) -> Vec<Target> {
    let p = dir.private();
    let shm = |mech: &str| PathBuf::from(format!("/dev/shm{}", dir.posix_name(mech)));
    let sem = |suffix: &str| {
        PathBuf::from(format!("/dev/shm/sem.{}{suffix}", &dir.posix_name("sem")[1..]))
    };
    // Writers wait for a reader for at most a second (exit 3 would show they
    // did not look at the object: the test wants 1).
    let w = |args: &[&'static str]| {
        let mut v = args.to_vec();
        v.extend(["--count", "1", "--timeout", "1"]);
        v
    };
    let r = |args: &[&'static str]| {
        let mut v = args.to_vec();
        v.extend(["--timeout", "1"]);
        v
    };
    vec![
        Target {
            what: "FIFO node",
            kind: Kind::Fifo,
            path: p.join("fifo"),
            users: vec![("fifo-reader", r(&[])), ("fifo-writer", w(&[]))],
        },
        Target {
            what: "unix socket file",
            kind: Kind::Socket,
            path: p.join("socket"),
            users: vec![
                ("socket-reader", r(&["--transport", "unix"])),
                ("socket-writer", w(&["--transport", "unix"])),
            ],
        },
        Target {
            what: "unix-dgram socket file",
            kind: Kind::Socket,
            path: p.join("socket-dgram"),
            users: vec![
                ("socket-reader", r(&["--transport", "unix-dgram"])),
                ("socket-writer", w(&["--transport", "unix-dgram"])),
            ],
        },
        Target {
            what: "mmap log file",
            kind: Kind::File,
            path: p.join("mmap.log"),
            users: vec![
                ("mmap-writer", w(&[])),
                ("mmap-writer", w(&["--ring", "256K"])),
                ("mmap-reader", r(&[])),
            ],
        },
        Target {
            what: "/dev/shm object (shm posix)",
            kind: Kind::File,
            path: shm("shm"),
            users: vec![
                ("shm-reader", r(&["--api", "posix"])),
                ("shm-writer", w(&["--api", "posix"])),
            ],
        },
        Target {
            what: "/dev/shm object (sem buffer)",
            kind: Kind::File,
            path: shm("sem"),
            users: vec![
                ("sem-reader", r(&[])),
                ("sem-reader", r(&["--lock", "sysv"])),
                ("sem-writer", w(&[])),
            ],
        },
        Target {
            what: "named semaphore (empty)",
            kind: Kind::Semaphore,
            path: sem(".empty"),
            users: vec![("sem-reader", r(&[])), ("sem-writer", w(&[]))],
        },
        Target {
            what: "named semaphore (full)",
            kind: Kind::Semaphore,
            path: sem(".full"),
            users: vec![("sem-reader", r(&[])), ("sem-writer", w(&[]))],
        },
    ]
}

/// What must not change: inode, owner, mode, size, and a link's target and
/// the target's content.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    ino: u64,
    uid: u32,
    mode: u32,
    size: u64,
    link: Option<PathBuf>,
    target: Option<(u64, u32, Vec<u8>)>,
}

fn snapshot(path: &Path) -> Snapshot {
    let m =
        fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{} is gone: {e}", path.display()));
    let link = m.file_type().is_symlink().then(|| fs::read_link(path).expect("readlink"));
    let target = link.as_ref().map(|t| {
        let tm = fs::symlink_metadata(t).expect("link target");
        (tm.ino(), tm.mode(), fs::read(t).expect("read target"))
    });
    Snapshot { ino: m.ino(), uid: m.uid(), mode: m.mode(), size: m.size(), link, target }
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).expect("chown nobody");
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Puts the foreign object at `t.path`.
fn plant(dir: &TestDir, t: &Target, attack: Attack) {
    if let Some(parent) = t.path.parent() {
        if parent == dir.private() {
            fs::DirBuilder::new().mode(0o700).create(parent).ok();
        }
    }
    if attack == Attack::Symlink {
        let precious = dir.root().join("precious");
        fs::write(&precious, PRECIOUS).expect("write precious");
        chmod(&precious, 0o600);
        symlink(&precious, &t.path).expect("symlink");
        return;
    }
    match t.kind {
        Kind::Fifo => nix::unistd::mkfifo(&t.path, Mode::S_IRUSR | Mode::S_IWUSR).expect("mkfifo"),
        Kind::Socket => drop(std::os::unix::net::UnixListener::bind(&t.path).expect("bind")),
        Kind::File => fs::write(&t.path, vec![0x5a; 8192]).expect("write"),
        Kind::Semaphore => {
            // /dev/shm/sem.NAME is the semaphore /NAME.
            let file = t.path.file_name().and_then(|f| f.to_str()).expect("file name");
            let name = format!("/{}", file.strip_prefix("sem.").expect("sem. prefix"));
            let c = CString::new(name).expect("name");
            // SAFETY: sem_open with O_CREAT|O_EXCL takes a mode and a value;
            // the returned semaphore is closed at once.
            let s =
                unsafe { libc::sem_open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600, 0u32) };
            assert_ne!(s, libc::SEM_FAILED, "sem_open: {}", std::io::Error::last_os_error());
            // SAFETY: a semaphore sem_open just returned.
            unsafe { libc::sem_close(s) };
        }
    }
    match attack {
        Attack::Nobody => {
            chmod(&t.path, 0o600);
            chown_nobody(&t.path);
        }
        Attack::Open => chmod(&t.path, 0o666),
        Attack::Symlink => unreachable!(),
    }
}

/// Writers that open nothing until a live reader of ours holds its lock file
/// and has published what it made (SPEC 5: the reader creates and owns the
/// object; the writer waits for it). A foreign object alone never gets them
/// to open it: they wait for a reader of ours, and say so at `--timeout` with
/// exit 3. What they must say instead of a refusal:
fn gated(bin_name: &str) -> Option<&'static str> {
    match bin_name {
        "mq-writer" => Some("no mq-reader created"),
        "sem-writer" => Some("no sem-reader made bounded buffer"),
        _ => None,
    }
}

/// Whether `out` is the right answer of `bin_name` to a foreign object:
/// exit 1 naming the problem (one of `needles`), or for a [`gated`] writer,
/// exit 3 naming the missing reader.
fn refused(bin_name: &str, out: &Outcome, needles: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    let (code, needles): (i32, Vec<&str>) = match gated(bin_name) {
        Some(n) => (3, vec![n]),
        None => (1, needles.to_vec()),
    };
    if out.code != Some(code) {
        bad.push(format!("exit {:?} (signal {:?}), expected {code}", out.code, out.signal));
    }
    if !needles.iter().any(|n| out.stderr.contains(n)) {
        bad.push(format!("stderr names none of {needles:?}"));
    }
    bad
}

fn run(dir: &TestDir, bin_name: &str, args: &[&str]) -> Outcome {
    let mut cmd = dir.command(bin(bin_name).to_str().expect("utf-8"));
    cmd.args(args).stdin(Stdio::null());
    Running::spawn(&mut cmd, LIMIT).finish()
}

fn last_line(o: &Outcome) -> String {
    o.stderr.trim_end().lines().last().unwrap_or_default().to_string()
}

/// One row of the report: object, attack, binary, exit code, what it said, and
/// whether all was as it must be.
type Row = (String, &'static str, String, Option<i32>, String, Vec<String>);

fn check_path_target(t_index: usize, attack: Attack) -> Vec<Row> {
    let dir = TestDir::new(&format!("foreign-{t_index}-{attack:?}").to_lowercase());
    let t = targets(&dir).remove(t_index);
    plant(&dir, &t, attack);
    let before = snapshot(&t.path);
    let mut rows = Vec::new();
    for (b, args) in &t.users {
        let out = run(&dir, b, args);
        let mut bad = refused(b, &out, attack.needle());
        let after = snapshot(&t.path);
        if after != before {
            bad.push(format!("object changed: {before:?} -> {after:?}"));
        }
        // "socket-writer --transport unix": the binary and the options that pick the variant.
        let variant: Vec<String> = args
            .windows(2)
            .filter(|w| matches!(w[0], "--api" | "--transport" | "--lock" | "--ring"))
            .map(|w| format!("{} {}", w[0], w[1]))
            .collect();
        let label = format!("{b} {}", variant.join(" "));
        rows.push((
            t.what.to_string(),
            attack.label(),
            label.trim().to_string(),
            out.code,
            last_line(&out),
            bad,
        ));
    }
    // Our own cleanup: the planted object, then whatever the runs made.
    fs::remove_file(&t.path).expect("remove the planted object");
    let left = ipc_common::clean::scan_with(&dir.private(), dir.prefix()).expect("scan");
    for l in &left {
        l.remove().expect("remove leftover");
    }
    if !left.is_empty() {
        rows.push((
            t.what.to_string(),
            attack.label(),
            "(after)".into(),
            None,
            String::new(),
            vec![format!(
                "the refusing binaries left {:?}",
                left.iter().map(|l| &l.name).collect::<Vec<_>>()
            )],
        ));
    }
    dir.assert_clean();
    rows
}

#[test]
fn foreign_objects_at_our_names_are_refused_and_left_untouched() {
    let n = targets(&TestDir::new("foreign-count")).len();
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(thread::spawn(move || {
            Attack::ALL.iter().flat_map(|a| check_path_target(i, *a)).collect::<Vec<Row>>()
        }));
    }
    let rows: Vec<Row> = handles.into_iter().flat_map(|h| h.join().expect("thread")).collect();
    let mut t = String::new();
    let _ = writeln!(t, "| object | attack | binary | exit | says |");
    let _ = writeln!(t, "|---|---|---|---|---|");
    for (what, attack, b, code, said, bad) in &rows {
        let mark = if bad.is_empty() { String::new() } else { format!(" **{}**", bad.join("; ")) };
        let _ = writeln!(t, "| {what} | {attack} | {b} | {code:?} | {said}{mark} |");
    }
    println!("{t}");
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.5.is_empty())
        .map(|(what, attack, b, _, said, bad)| {
            format!("{what} / {attack} / {b}: {} ({said})", bad.join("; "))
        })
        .collect();
    assert!(bad.is_empty(), "foreign objects:\n{}", bad.join("\n"));
}

/// A POSIX queue at our default name: owned by nobody, or open to all. The
/// queue is opened read-only here only to look at it (fstat), never read.
#[test]
fn a_foreign_posix_queue_at_our_name_is_refused_and_left_untouched() {
    let mut bad = Vec::new();
    for attack in [Attack::Nobody, Attack::Open] {
        let dir = TestDir::new(&format!("foreign-mq-{attack:?}").to_lowercase());
        let name = dir.posix_name("mq");
        let flags = MQ_OFlag::O_RDWR | MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL;
        // (With O_CREAT, nix needs the attributes too, or it calls mq_open without a mode.)
        let attr = MqAttr::new(0, 4, 64, 0);
        let q = mq_open(name.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR, Some(&attr))
            .expect("mq_open");
        let raw = std::os::fd::AsRawFd::as_raw_fd(&q);
        // SAFETY: fchmod/fchown on the queue descriptor we own.
        let rc = unsafe {
            match attack {
                Attack::Nobody => libc::fchown(raw, NOBODY, NOBODY),
                _ => libc::fchmod(raw, 0o666),
            }
        };
        assert_eq!(rc, 0, "fchown/fchmod: {}", std::io::Error::last_os_error());
        let look = |q: &nix::mqueue::MqdT| {
            let st = fstat(std::os::fd::AsFd::as_fd(q)).expect("fstat");
            (st.st_ino, st.st_uid, st.st_mode)
        };
        let before = look(&q);
        for (b, args) in [
            ("mq-reader", vec!["--api", "posix", "--timeout", "1"]),
            ("mq-writer", vec!["--api", "posix", "--count", "1", "--timeout", "1"]),
        ] {
            let out = run(&dir, b, &args);
            println!(
                "posix queue / {} / {b}: exit {:?}: {}",
                attack.label(),
                out.code,
                last_line(&out)
            );
            if !refused(b, &out, attack.needle()).is_empty() {
                bad.push(format!(
                    "{} / {b}: exit {:?}: {}",
                    attack.label(),
                    out.code,
                    out.stderr.trim_end()
                ));
            }
            // Still there, the same queue (reopened by name), unchanged.
            let again = mq_open(name.as_str(), MQ_OFlag::O_RDONLY, Mode::empty(), None)
                .expect("the queue is still there");
            if look(&again) != before {
                bad.push(format!("{} / {b}: the queue changed", attack.label()));
            }
            mq_close(again).expect("close");
        }
        mq_close(q).expect("close");
        mq_unlink(name.as_str()).expect("unlink");
        for l in ipc_common::clean::scan_with(&dir.private(), dir.prefix()).expect("scan") {
            bad.push(format!("{}: left {} {}", attack.label(), l.kind, l.name));
            l.remove().expect("remove");
        }
        dir.assert_clean();
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// A key of this test's own for System V objects: pid and a counter.
fn sysv_key(base: i32, n: i32) -> i32 {
    base | i32::try_from(std::process::id() & 0xffff).unwrap_or(1) << 4 | n
}

/// (uid, mode) of a System V queue or set, from `IPC_STAT`.
fn sysv_stat(msg: bool, id: i32) -> (u32, u16) {
    // SAFETY: IPC_STAT into structs we own, on ids we created.
    unsafe {
        if msg {
            let mut ds: libc::msqid_ds = std::mem::zeroed();
            assert_eq!(libc::msgctl(id, libc::IPC_STAT, &raw mut ds), 0, "msgctl IPC_STAT");
            (ds.msg_perm.uid, ds.msg_perm.mode)
        } else {
            let mut ds: libc::semid_ds = std::mem::zeroed();
            assert_eq!(libc::semctl(id, 0, libc::IPC_STAT, &raw mut ds), 0, "semctl IPC_STAT");
            (ds.sem_perm.uid, ds.sem_perm.mode)
        }
    }
}

/// Gives a System V object to nobody, mode 0600 (`IPC_SET`).
fn sysv_give_away(msg: bool, id: i32) {
    // SAFETY: IPC_STAT then IPC_SET with structs we own, on ids we created.
    unsafe {
        if msg {
            let mut ds: libc::msqid_ds = std::mem::zeroed();
            assert_eq!(libc::msgctl(id, libc::IPC_STAT, &raw mut ds), 0);
            ds.msg_perm.uid = NOBODY;
            ds.msg_perm.mode = 0o600;
            assert_eq!(libc::msgctl(id, libc::IPC_SET, &raw mut ds), 0);
        } else {
            let mut ds: libc::semid_ds = std::mem::zeroed();
            assert_eq!(libc::semctl(id, 0, libc::IPC_STAT, &raw mut ds), 0);
            ds.sem_perm.uid = NOBODY;
            ds.sem_perm.mode = 0o600;
            assert_eq!(libc::semctl(id, 0, libc::IPC_SET, &raw mut ds), 0);
        }
    }
}

/// System V objects at the key a binary is given (`--key`): a queue and a
/// semaphore set, owned by nobody or open to all.
#[test]
fn foreign_system_v_objects_at_our_key_are_refused_and_left_untouched() {
    let mut bad = Vec::new();
    for (i, attack) in [Attack::Nobody, Attack::Open].into_iter().enumerate() {
        let n = i32::try_from(i).unwrap_or(0);
        let dir = TestDir::new(&format!("foreign-sysv-{attack:?}").to_lowercase());
        let mode = if attack == Attack::Open { 0o666 } else { 0o600 };
        let mkey = sysv_key(0x4d00_0000, 8 + n);
        // SAFETY: msgget creates a queue this test removes below.
        let mid = unsafe { libc::msgget(mkey, libc::IPC_CREAT | libc::IPC_EXCL | mode) };
        assert!(mid >= 0, "msgget: {}", std::io::Error::last_os_error());
        let skey = sysv_key(0x5300_0000, 8 + n);
        // SAFETY: semget creates a set this test removes below.
        let sid = unsafe { libc::semget(skey, 3, libc::IPC_CREAT | libc::IPC_EXCL | mode) };
        assert!(sid >= 0, "semget: {}", std::io::Error::last_os_error());
        if attack == Attack::Nobody {
            sysv_give_away(true, mid);
            sysv_give_away(false, sid);
        }
        let (mk, sk) = (format!("{mkey:#x}"), format!("{skey:#x}"));
        let (mbefore, sbefore) = (sysv_stat(true, mid), sysv_stat(false, sid));
        let runs: [(&str, Vec<&str>, bool); 3] = [
            ("mq-reader", vec!["--api", "sysv", "--key", &mk, "--timeout", "1"], true),
            (
                "mq-writer",
                vec!["--api", "sysv", "--key", &mk, "--count", "1", "--timeout", "1"],
                true,
            ),
            ("sem-reader", vec!["--lock", "sysv", "--key", &sk, "--timeout", "1"], false),
        ];
        for (b, args, msg) in &runs {
            let out = run(&dir, b, args);
            let what = if *msg { "sysv queue" } else { "sysv set" };
            println!("{what} / {} / {b}: exit {:?}: {}", attack.label(), out.code, last_line(&out));
            let needle: &[&str] = match attack {
                Attack::Nobody => &["owned by uid 65534", "is owned by uid 65534"],
                _ => &["mode 0666", "open to other users"],
            };
            if !refused(b, &out, needle).is_empty() {
                bad.push(format!(
                    "{what} / {} / {b}: exit {:?}: {}",
                    attack.label(),
                    out.code,
                    out.stderr.trim_end()
                ));
            }
        }
        if sysv_stat(true, mid) != mbefore || sysv_stat(false, sid) != sbefore {
            bad.push(format!("{}: a System V object changed", attack.label()));
        }
        // SAFETY: IPC_RMID takes no buffer; these are the objects made above.
        unsafe {
            assert_eq!(libc::msgctl(mid, libc::IPC_RMID, std::ptr::null_mut()), 0);
            assert_eq!(libc::semctl(sid, 0, libc::IPC_RMID), 0);
        }
        for l in ipc_common::clean::scan_with(&dir.private(), dir.prefix()).expect("scan") {
            bad.push(format!("{}: left {} {}", attack.label(), l.kind, l.name));
            l.remove().expect("remove");
        }
        dir.assert_clean();
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
