//! ipc-clean finds what a killed run left in each namespace, and removes it.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::process::Stdio;

use ipc_common::testkit::{LIMIT, Outcome, Running, TestDir, unique};

const CLEAN: &str = env!("CARGO_BIN_EXE_ipc-clean");

fn clean(dir: &TestDir, args: &[&str]) -> Outcome {
    Running::spawn(dir.command(CLEAN).args(args).stdin(Stdio::null()), LIMIT).finish()
}

/// A leftover of each kind the private directory can hold.
#[test]
fn lists_and_removes_leftovers_in_the_private_directory() {
    let dir = TestDir::new("clean-dir");
    let private = dir.private();
    fs::DirBuilder::new().mode(0o700).create(&private).expect("mkdir");
    let fifo = private.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    fs::write(private.join("lock"), b"").expect("lock file");

    let listed = clean(&dir, &["--check"]);
    listed.expect(1).expect_stderr("2 objects of ours left; remove with: ipc-clean --remove");
    let text = listed.stdout_text();
    assert!(text.contains(&format!("fifo               {}", fifo.display())), "{text}");
    assert!(text.contains(&format!("(rm {})", fifo.display())), "{text}");
    clean(&dir, &[]).expect(0); // listing without --check is not a failure

    clean(&dir, &["--remove"]).expect(0).expect_stderr(&format!("removed fifo {}", fifo.display()));
    assert!(!private.exists(), "the empty private directory goes too");
    clean(&dir, &["--check"]).expect(0).expect_stderr("nothing of ours left");
}

/// A System V queue whose key `ftok` made from a file in the private directory.
#[test]
fn lists_and_removes_a_recorded_sysv_queue_and_only_that() {
    let dir = TestDir::new("clean-sysv");
    let private = dir.private();
    fs::DirBuilder::new().mode(0o700).create(&private).expect("mkdir");
    let keyfile = private.join("mq-sysv.reader.lock");
    fs::write(&keyfile, b"").expect("key file");
    let path = CString::new(keyfile.as_os_str().as_bytes()).expect("path");
    // Two queues with ftok keys of our lock file; only one is recorded in it,
    // as a reader records the queue it made. The other stands for a colliding
    // key from another directory: never ours to list or remove.
    // SAFETY: ftok reads the path; msgget creates queues we remove below (or ipc-clean does).
    let (key, id, other) = unsafe {
        let key = libc::ftok(path.as_ptr(), 0x51);
        let other_key = libc::ftok(path.as_ptr(), 0x52);
        assert!(key != -1 && other_key != -1);
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600;
        (key, libc::msgget(key, flags), libc::msgget(other_key, flags))
    };
    assert!(id >= 0 && other >= 0, "msgget: {}", std::io::Error::last_os_error());
    fs::write(&keyfile, format!("key={key:#010x} id={id}\n")).expect("record");

    let listed = clean(&dir, &["--check"]);
    listed.expect(1);
    let text = listed.stdout_text();
    assert!(text.contains(&format!("(ipcrm -q {id})")), "{text}");
    assert!(
        !text.contains(&format!("(ipcrm -q {other})")),
        "an unrecorded key is not ours: {text}"
    );
    clean(&dir, &["--remove"]).expect(0).expect_stderr("removed sysv msg queue key 0x51");
    let exists = |id: i32| {
        // SAFETY: IPC_STAT into a zeroed msqid_ds owned by this frame.
        unsafe {
            let mut ds: libc::msqid_ds = std::mem::zeroed();
            libc::msgctl(id, libc::IPC_STAT, &raw mut ds) == 0
        }
    };
    assert!(!exists(id), "queue {id} still exists");
    assert!(exists(other), "the unrecorded queue was left alone");
    // SAFETY: IPC_RMID takes no buffer.
    assert_eq!(unsafe { libc::msgctl(other, libc::IPC_RMID, std::ptr::null_mut()) }, 0);
}

/// POSIX shared memory and named semaphores show up under /dev/shm by our prefix.
#[test]
fn lists_and_removes_our_names_in_dev_shm_and_ignores_others() {
    let dir = TestDir::new("clean-shm");
    let ours = format!("/dev/shm{}", dir.posix_name("shm"));
    let sem = format!("/dev/shm/sem.{}", &dir.posix_name("sem")[1..]);
    let theirs = format!("/dev/shm/not-ours-{}", unique("test"));
    for p in [&ours, &sem, &theirs] {
        fs::write(p, b"x").expect("create in /dev/shm");
    }
    let listed = clean(&dir, &[]);
    let text = listed.stdout_text();
    assert!(text.contains(&format!("posix shm          {ours}")), "{text}");
    assert!(text.contains(&format!("posix semaphore    {sem}")), "{text}");
    assert!(!text.contains(&theirs), "{text}");
    clean(&dir, &["--remove"]).expect(0);
    assert!(!std::path::Path::new(&ours).exists() && !std::path::Path::new(&sem).exists());
    assert!(std::path::Path::new(&theirs).exists(), "not ours: untouched");
    fs::remove_file(&theirs).expect("cleanup");
}

/// A FIFO whose reader is running (it holds an flock on it) and a reader lock
/// file that is held: listed as in use, never removed.
#[test]
fn objects_in_use_are_listed_but_never_removed() {
    use std::os::fd::AsRawFd;
    let dir = TestDir::new("clean-live");
    let private = dir.private();
    fs::DirBuilder::new().mode(0o700).create(&private).expect("mkdir");
    let fifo = private.join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let held = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open fifo");
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let presence =
        ipc_common::liveness::ReaderPresence::claim(&private, "q", "queue q").expect("claim");

    let listed = clean(&dir, &[]);
    let text = listed.stdout_text();
    assert_eq!(
        text.matches("in use by a running process").count(),
        3,
        "fifo and both lock files: {text}"
    );
    clean(&dir, &["--remove"]).expect(1).expect_stderr(&format!("kept fifo {}", fifo.display()));
    assert!(fifo.exists() && ipc_common::liveness::reader_lock_path(&private, "q").exists());

    drop((held, presence));
    clean(&dir, &["--remove"]).expect(0);
    clean(&dir, &["--check"]).expect(0);
}

/// A private directory that is a symbolic link (planted in a shared /tmp, say)
/// is refused: emptying "it" would empty whatever it points at.
#[test]
fn a_symlinked_private_directory_is_refused_not_emptied() {
    let dir = TestDir::new("clean-symlink");
    let victim = dir.root().join("victim");
    fs::create_dir(&victim).expect("mkdir");
    fs::write(victim.join("precious"), b"keep me").expect("write");
    std::os::unix::fs::symlink(&victim, dir.private()).expect("symlink");
    clean(&dir, &["--remove"]).expect(1).expect_stderr("is a symbolic link, not a directory");
    assert_eq!(fs::read(victim.join("precious")).expect("still there"), b"keep me");
}
