//! `sem-holder`: the mutex-versus-semaphore lesson. One run takes a lock and is
//! killed with SIGKILL while holding it; the next run shows what the kernel did.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ sem-holder --lock mutex --hold
//! sem-holder: created robust mutex in POSIX shm /ipc-demos.1000.sem-holder-mutex
//! sem-holder: took it (pthread_mutex_lock) after 0.0 s
//! sem-holder: holding it as pid 4242, mid-update; kill -9 4242 (Ctrl-C releases it)
//!                                               $ sem-holder --lock mutex
//!                                               sem-holder: found robust mutex ...: taking it (up to 3 s)
//! $ kill -9 4242
//!                                               sem-holder: pthread_mutex_lock: EOWNERDEAD: pid 4242 died holding ...
//!                                               sem-holder: repaired (credit = debit = 1), called pthread_mutex_consistent ...
//!
//! $ sem-holder --lock posix --die-after 200; sem-holder --lock posix --timeout 1
//! sem-holder: POSIX semaphore /ipc-demos.1000.sem-holder is still taken (value 0) after 1 s: ... no owner ...
//! $ sem-holder --lock sysv --die-after 200; sem-holder --lock sysv
//! sem-holder: pid 4250, the last to operate on it, is gone: the kernel reversed its P at its exit (SEM_UNDO) ...
//! ```
//!
//! The first run creates the lock; every run that is not killed removes it when
//! it ends, so the run after a killed holder cleans up for it. A run without
//! `--hold` or `--die-after` takes the lock, makes one whole update, gives it
//! back and exits: 0 if it got the lock, 3 if it timed out, 1 on
//! `ENOTRECOVERABLE`. See `sem_overview(7)`, semop(2) on SEM_UNDO,
//! `pthread_mutexattr_setrobust(3)`, `pthread_mutex_consistent(3)`.

use std::process::ExitCode;
use std::time::Duration;

use ipc_common::error::{Error, Result};
use ipc_common::opts::{self, VersionFlag};
use ipc_common::paths;
use ipc_common::wait::{Deadline, timeout_secs};
use ipc_common::{say, signals};
use sem_demo::holder::{self, HolderLock};

const BIN: &str = "sem-holder";

/// Take a lock (POSIX semaphore, System V semaphore or robust mutex) and hold it
/// until killed; or take the lock a killed holder left, and show what the
/// kernel did about it.
#[derive(argh::FromArgs, Debug)]
#[argh(
    example = "sem-holder --lock posix --die-after 200; sem-holder --lock posix --timeout 1\nsem-holder --lock sysv --hold      # then kill -9 it; then: sem-holder --lock sysv\nsem-holder --lock mutex --die-after 200; sem-holder --lock mutex"
)]
#[allow(clippy::struct_excessive_bools)] // command-line switches, each independent
struct Args {
    /// posix, sysv or mutex
    #[argh(option)]
    lock: HolderLock,
    /// hold the lock until killed (kill -9 PID); Ctrl-C gives it back
    #[argh(switch)]
    hold: bool,
    /// hold the lock MS milliseconds, then SIGKILL ourselves
    #[argh(option, arg_name = "MS")]
    die_after: Option<u64>,
    /// seconds to wait for the lock; 0 waits forever (default 3)
    #[argh(option, default = "3", arg_name = "SECS")]
    timeout: u64,
    /// POSIX name of the semaphore or of the mutex's shm object (default /ipc-demos.<uid>.sem-holder[-mutex])
    #[argh(option)]
    name: Option<String>,
    /// sysv: take the semaphore without SEM_UNDO (then a dead holder keeps it)
    #[argh(switch)]
    no_undo: bool,
    /// mutex: after EOWNERDEAD, unlock without repairing it first (shows ENOTRECOVERABLE)
    #[argh(switch)]
    no_repair: bool,
    /// leave the lock object in place on exit
    #[argh(switch)]
    keep: bool,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

impl VersionFlag for Args {
    fn version(&self) -> bool {
        self.version
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| holder::default_name(args.lock));
    paths::check_posix_name("--name", &name)?;
    if args.no_undo && args.lock != HolderLock::Sysv {
        return Err(Error::usage("--no-undo is about System V semaphores: give --lock sysv"));
    }
    if args.no_repair && args.lock != HolderLock::Mutex {
        return Err(Error::usage("--no-repair is about the robust mutex: give --lock mutex"));
    }
    signals::install()?;
    let timeout = timeout_secs(args.timeout);
    let deadline = Deadline::after(timeout);

    // 1. Create the lock, or find the one an earlier run left (checked ours).
    let (object, created) = holder::open_or_create(args.lock, &name, &deadline, args.keep)?;
    if created {
        say!("{BIN}: created {}", object.describe());
    } else {
        say!(
            "{BIN}: found {}: taking it (up to {})",
            object.describe(),
            timeout.map_or("forever".to_string(), |t| format!("{} s", t.as_secs()))
        );
    }

    // 2. Take it; say what the kernel did about an earlier holder.
    let held =
        object.take(BIN, &deadline, timeout.unwrap_or_default(), !args.no_undo, !args.no_repair)?;

    // 3. Hold it until killed, or make one update and give it back.
    if args.hold || args.die_after.is_some() {
        held.begin_update();
        let pid = std::process::id();
        match args.die_after {
            Some(ms) => {
                say!("{BIN}: holding it as pid {pid}, mid-update; SIGKILL to ourselves in {ms} ms");
            }
            None => say!(
                "{BIN}: holding it as pid {pid}, mid-update; kill -9 {pid} (Ctrl-C releases it)"
            ),
        }
        holder::hold(args.die_after.map(Duration::from_millis))?;
    }
    held.update();
    drop(held);
    say!("{BIN}: gave it back; removing {} ({})", object.describe(), object.removal());
    // 4. `object` drops: removed (unless --keep).
    Ok(())
}
