//! `ipc-soak`: random pairs, random sizes, random faults, for as long as you
//! like; every outcome checked against the documented one, every leftover
//! counted (see [`ipc_faults::soak`] for what is injected and what is accepted).
//!
//! ```text
//! $ ipc-soak --minutes 1
//! ipc-soak: seed 1234 (--seed 1234 replays these plans), 2 pairs at a time, 60 s
//! ipc-soak: #0 tcp: 5000 × 0..4000, KillWriter after 120 ms: ok
//! ...
//! ipc-soak: 70 runs in 61 s: 31 transfers (240118 frames), 36 faults injected, 0 failures, 0 leaks
//! ```
//!
//! Runs the workspace's release binaries from its own directory (build the
//! workspace first). Exit 0 when every run ended as documented and nothing was
//! left behind; 1 otherwise, with one line per failure or leak.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argh::FromArgs;
use ipc_faults::rng::Rng;
use ipc_faults::soak::{self, Plan, Report};

/// Random pairs with random sizes and injected faults (kills, stops, signal
/// storms, corrupt streams); checks every outcome and that nothing is left.
#[derive(FromArgs)]
#[argh(
    example = "ipc-soak --minutes 1\nipc-soak --seconds 20 --seed 42\nipc-soak --seed 42 --plan 17"
)]
struct Args {
    /// minutes to run (new runs start until then)
    #[argh(option)]
    minutes: Option<u64>,
    /// seconds to run, instead of --minutes (default 60)
    #[argh(option)]
    seconds: Option<u64>,
    /// seed of the plan sequence (default: from the clock; printed)
    #[argh(option)]
    seed: Option<u64>,
    /// pairs at a time (default 2)
    #[argh(option, default = "2")]
    jobs: usize,
    /// run only plan number N of the seed's sequence, to replay a failure
    #[argh(option)]
    plan: Option<u64>,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    // A run that panics (a process outliving its limit, say) is caught and
    // reported as a failure with its message; no backtrace needed.
    std::panic::set_hook(Box::new(|_| {}));
    // Every child gets a SIGUSR1 handler without SA_RESTART, so a storm run can
    // send it SIGUSR1 safely; no other run sends that signal. Set before any
    // thread starts.
    // SAFETY: single-threaded here; nothing reads the environment concurrently.
    unsafe { std::env::set_var(ipc_common::signals::EINTR_ENV, "1") };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000)
    });
    let secs = args.seconds.unwrap_or(args.minutes.map_or(60, |m| m * 60));
    let jobs = args.jobs.max(1);
    let start = Instant::now();
    let total = Mutex::new(Report::default());
    let runs;
    if let Some(n) = args.plan {
        let mut rng = Rng(seed);
        let plan = (0..=n).map(|i| Plan::draw(&mut rng, i)).last().expect("at least one plan");
        total.lock().expect("report").merge(one(&plan));
        runs = 1;
    } else {
        eprintln!(
            "ipc-soak: seed {seed} (--seed {seed} replays these plans), {jobs} pairs at a time, {secs} s"
        );
        let deadline = start + Duration::from_secs(secs);
        let next = Mutex::new((Rng(seed), 0u64));
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| {
                    while Instant::now() < deadline {
                        let plan = {
                            let mut g = next.lock().expect("plans");
                            let n = g.1;
                            g.1 += 1;
                            Plan::draw(&mut g.0, n)
                        };
                        let rep = one(&plan);
                        total.lock().expect("report").merge(rep);
                    }
                });
            }
        });
        runs = next.lock().expect("plans").1;
    }
    let mut t = total.into_inner().expect("report");
    // Beyond each run's own scan: anything anywhere that our processes made.
    for left in soak::global_leftovers(&t.pids) {
        t.leaks.push(format!("after every run: {left}"));
    }
    for f in &t.failures {
        eprintln!("ipc-soak: FAILURE: {f}");
    }
    for l in &t.leaks {
        eprintln!("ipc-soak: LEAK: {l}");
    }
    eprintln!(
        "ipc-soak: {runs} runs in {:.0} s (seed {seed}): {} transfers ({} frames), {} faults \
         injected ({} SIGUSR1 in storms), {} failures, {} leaks; {} objects left by kills removed \
         by ipc-clean; slowest to notice a killed peer {:.2} s, a frozen one {:.2} s",
        start.elapsed().as_secs_f64(),
        t.transfers,
        t.frames,
        t.faults,
        t.storm_signals,
        t.failures.len(),
        t.leaks.len(),
        t.survivors_removed,
        t.slowest_notice.as_secs_f64(),
        t.slowest_stop.as_secs_f64(),
    );
    if t.failures.is_empty() && t.leaks.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Runs one plan and prints one line about it.
fn one(plan: &Plan) -> Report {
    let started = Instant::now();
    let rep = soak::run(plan);
    let verdict = if rep.failures.is_empty() && rep.leaks.is_empty() { "ok" } else { "FAILED" };
    eprintln!(
        "ipc-soak: {} ({:.1} s): {verdict}",
        plan.describe(),
        started.elapsed().as_secs_f64()
    );
    rep
}
