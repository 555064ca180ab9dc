//! `sem-race`: P processes add 1 to one shared counter M times each — without a
//! lock (updates are lost), and with each kind of lock (none are), timing what
//! each lock/unlock pair costs.
//!
//! ```text
//! $ sem-race --lock none
//! sem-race: 4 processes x 200000 increments = 800000 expected
//! sem-race: none    got 433190: LOST 366810 updates (45.9%)    0.9 ms   1.2 ns per increment
//! $ sem-race                     # every lock, one after the other
//! $ sem-race --lock posix --permits 2
//! sem-race: posix, 2 permits: at most 2 processes inside at once (measured: 2)
//! ```
//!
//! The parent maps one anonymous shared page (counter, semaphore, mutex), makes
//! the lock, forks the processes, lets them go together, reaps them, and
//! removes what it made (the System V set and its key file); the children only
//! use it. See `sem_overview(7)`, `sem_init(3)`, semop(2), `pthread_mutexattr_setrobust(3)`.

use std::process::ExitCode;

use ipc_common::error::{Error, Result};
use ipc_common::opts::{self, VersionFlag};
use ipc_common::{say, signals};
use sem_demo::race::{
    DEFAULT_ITERATIONS, DEFAULT_PROCS, LockKind, MAX_PROCS, Race, RaceOptions, RaceResult,
};

const BIN: &str = "sem-race";

/// Race P processes on a shared counter, without a lock and with each lock, and
/// time every lock/unlock pair.
#[derive(argh::FromArgs, Debug)]
#[argh(
    example = "sem-race --lock none\nsem-race                       # all, one after the other\nsem-race --lock posix --permits 2\nsem-race --procs 1 --iterations 1000000   # uncontended cost"
)]
struct Args {
    /// none, atomic, mutex, posix, sysv, or all (default all)
    #[argh(option, default = "String::from(\"all\")")]
    lock: String,
    /// number of processes P (default 4)
    #[argh(option, short = 'p', default = "DEFAULT_PROCS")]
    procs: u32,
    /// increments per process M (default 200000)
    #[argh(option, short = 'm', default = "DEFAULT_ITERATIONS")]
    iterations: u64,
    /// make the semaphore a counting one with K permits and measure how many
    /// processes are inside at once (posix or sysv)
    #[argh(option, arg_name = "K")]
    permits: Option<u32>,
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

fn kinds(args: &Args) -> Result<Vec<LockKind>> {
    let kinds = if args.lock == "all" {
        LockKind::ALL.to_vec()
    } else {
        vec![args.lock.parse().map_err(|e| Error::usage(format!("--lock {e}")))?]
    };
    if !(1..=MAX_PROCS).contains(&args.procs) {
        return Err(Error::usage(format!("--procs {}: from 1 to {MAX_PROCS}", args.procs)));
    }
    if args.iterations == 0 {
        return Err(Error::usage("--iterations 0: give at least 1"));
    }
    if let Some(k) = args.permits {
        if !(1..=i16::MAX as u32).contains(&k) {
            return Err(Error::usage(format!("--permits {k}: from 1 to {}", i16::MAX)));
        }
        if kinds.len() != 1 || !kinds[0].counts() {
            return Err(Error::usage(
                "--permits counts with a semaphore: give --lock posix or --lock sysv",
            ));
        }
    }
    Ok(kinds)
}

fn run(args: &Args) -> Result<()> {
    let kinds = kinds(args)?;
    signals::install()?;
    let expected = u64::from(args.procs) * args.iterations;
    say!(
        "{BIN}: {} process{} x {} increments = {expected} expected",
        args.procs,
        if args.procs == 1 { "" } else { "es" },
        args.iterations
    );
    let mut failed = None;
    for lock in kinds {
        let opts = RaceOptions {
            procs: args.procs,
            iterations: args.iterations,
            lock,
            permits: args.permits,
        };
        // 1. Map the shared page and make the lock; 2. fork, go, reap;
        // 3. the Race drops: the lock destroyed or removed.
        let result = Race::new(opts)?.run()?;
        match opts.permits {
            Some(k) => failed = failed.or(report_permits(&opts, k, &result)),
            None => failed = failed.or(report(lock, &result)),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// One line per lock; an error if a real lock lost an update.
fn report(lock: LockKind, r: &RaceResult) -> Option<Error> {
    let unit = match lock {
        LockKind::None | LockKind::Atomic => "per increment",
        _ => "per lock/unlock pair",
    };
    let outcome = if r.lost() == 0 {
        "none lost".to_string()
    } else {
        format!("LOST {} updates ({:.1}%)", r.lost(), r.lost_percent())
    };
    say!(
        "{BIN}: {lock:<7} got {:>9}: {outcome:<30} {:>9.1} ms {:>10} {unit}",
        r.got,
        r.elapsed.as_secs_f64() * 1e3,
        ns(r.ns_per_pair())
    );
    if lock == LockKind::None && r.lost() == 0 {
        say!(
            "{BIN}: none    (no update lost this time: the processes did not run at the same moment; \
             one process cannot race, several may need another try or more --iterations)"
        );
    }
    (lock != LockKind::None && r.lost() > 0)
        .then(|| Error::bad_data(format!("{lock}: {} updates lost under a lock", r.lost())))
}

fn report_permits(opts: &RaceOptions, k: u32, r: &RaceResult) -> Option<Error> {
    say!(
        "{BIN}: {}, {k} permits: at most {k} processes inside at once (measured: {}); {} entries in {:.1} ms, {} each",
        opts.lock,
        r.max_inside,
        r.got,
        r.elapsed.as_secs_f64() * 1e3,
        ns(r.ns_per_pair())
    );
    (r.max_inside > k || r.got != r.expected).then(|| {
        Error::bad_data(format!(
            "{}: {} processes were inside at once with {k} permits",
            opts.lock, r.max_inside
        ))
    })
}

fn ns(ns: f64) -> String {
    if ns < 10.0 { format!("{ns:.1} ns") } else { format!("{ns:.0} ns") }
}
