//! `ipc-bench`: every mechanism side by side, against the machine's own limits.
//!
//! For each mechanism and API of the workspace, through its crate's own
//! library code and in two real processes (a forked child and this one):
//!
//! - **throughput**, one writer to one reader, payloads of 64 B, 4 KiB,
//!   64 KiB and 1 MiB where the mechanism takes them: MB/s and messages/s,
//!   every frame checked by the reader as in the real pair, and again with
//!   the CRC check off (`no-verify`); copying mechanisms also run `raw`: the
//!   same system calls and sizes with no frame at all;
//! - **latency**, ping-pong round trips of 64 B and 4 KiB frames: p50, p99
//!   and p99.9 of at least 10,000 round trips after a warm-up;
//! - **floors**, measured in the same run: memcpy on one core, a cache line
//!   bounced between two spinning processes, the two lines of a 64 B frame
//!   bounced the same way, a futex wait/wake round trip.
//!
//! ```text
//! $ ipc-bench                       # 3 to 7 minutes on 2 CPUs; make bench
//! ## ipc-bench: every mechanism side by side
//! - machine: Intel(R) Xeon(R) Processor, 2 CPUs, Linux 6.18.44
//! ...
//! ### Throughput, 64 KiB payloads (fastest first)
//! | mechanism | MB/s | messages/s | spread | of memcpy | no-verify | raw | framed / raw |
//! ...
//! $ ipc-bench --quick               # everything tiny: does it all still work? (make test)
//! $ ipc-bench --only shm,pipe --pin 0,1 --reps 5
//! ```
//!
//! Standard output gets the Markdown tables (fastest first); `--out`
//! (default `target/ipc-bench/`) gets `results.json`, `results.csv`,
//! `results.md`, `throughput.svg` and `latency.svg`; standard error a
//! progress bar. Every object is made under private names (see [`ns`]) and
//! removed; the run fails if anything of ours is left.
//!
//! The process stays single-threaded (it forks for every run): the progress
//! bar is redrawn between runs, never by a ticker thread.

mod chart;
mod floors;
mod hist;
mod jobs;
mod mechs;
mod ns;
mod pair;
mod report;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ipc_common::error::{Context, Error, Result};
use ipc_common::signals;

use crate::floors::{COLD_FROM, CopyBuffers};
use crate::hist::Histogram;
use crate::jobs::{Rounds, Transfer};
use crate::mechs::Mech;
use crate::ns::Namespaces;
use crate::pair::{Pin, SharedPage};
use crate::report::{
    Entry, LATENCY_SIZES, Machine, MechInfo, Options, Report, Sample, Subject, THROUGHPUT_SIZES,
    Workload,
};
use crate::run::{Ctx, Variant};

const BIN: &str = "ipc-bench";

/// Measure every IPC mechanism of the workspace side by side (throughput,
/// latency), against the machine's own floors measured in the same run.
#[derive(argh::FromArgs, Debug)]
#[argh(example = "ipc-bench\nipc-bench --quick\nipc-bench --only shm,pipe --pin 0,1 --reps 5")]
struct Args {
    /// everything tiny, to check that the bench still works (no figure means anything)
    #[argh(switch)]
    quick: bool,
    /// repetitions of every measurement (default 3; 1 with --quick)
    #[argh(option)]
    reps: Option<usize>,
    /// pin the parent and the child to these CPUs, as PARENT,CHILD (e.g. 0,1)
    #[argh(option)]
    pin: Option<Pin>,
    /// only the mechanisms whose name contains one of these words, comma-separated
    #[argh(option)]
    only: Option<String>,
    /// only this workload: throughput or latency (floors are always measured)
    #[argh(option, from_str_fn(parse_workload))]
    workload: Option<Workload>,
    /// seconds each throughput run measures (default 0.1)
    #[argh(option)]
    secs: Option<f64>,
    /// timed round trips of each latency run (default 10000, at least 10000 unless --quick)
    #[argh(option)]
    round_trips: Option<u64>,
    /// where the JSON, CSV, Markdown and SVG files go (default target/ipc-bench)
    #[argh(option, default = "PathBuf::from(\"target/ipc-bench\")")]
    out: PathBuf,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

impl ipc_common::opts::VersionFlag for Args {
    fn version(&self) -> bool {
        self.version
    }
}

fn main() -> ExitCode {
    ipc_common::opts::main(BIN, run)
}

fn parse_workload(s: &str) -> std::result::Result<Workload, String> {
    match s {
        "throughput" => Ok(Workload::Throughput),
        "latency" => Ok(Workload::Latency),
        _ => Err(format!("{s:?}: expected throughput or latency")),
    }
}

/// One measurement to make (each is made `reps` times).
#[derive(Debug, Clone)]
enum Task {
    Memcpy(usize, bool),
    CacheLine,
    FrameLines,
    Futex,
    Throughput(usize, usize, Variant),
    Latency(usize, usize, Variant),
}

impl Task {
    fn key(&self) -> (Subject, Workload, usize, Variant) {
        match *self {
            Task::Memcpy(size, cold) => {
                let subject = if cold { Subject::MemcpyCold } else { Subject::Memcpy };
                (subject, Workload::Throughput, size, Variant::Verified)
            }
            Task::CacheLine => (Subject::CacheLine, Workload::Latency, 0, Variant::Verified),
            Task::FrameLines => (Subject::FrameLines, Workload::Latency, 0, Variant::Verified),
            Task::Futex => (Subject::Futex, Workload::Latency, 0, Variant::Verified),
            Task::Throughput(m, size, v) => (Subject::Mech(m), Workload::Throughput, size, v),
            Task::Latency(m, size, v) => (Subject::Mech(m), Workload::Latency, size, v),
        }
    }
}

/// Every task, and the sizes some mechanisms cannot take.
fn plan(mechs: &[Mech]) -> (Vec<Task>, Vec<(usize, usize, String)>) {
    let mut tasks: Vec<Task> = THROUGHPUT_SIZES.iter().map(|&s| Task::Memcpy(s, false)).collect();
    tasks.extend(
        THROUGHPUT_SIZES.iter().filter(|&&s| s >= COLD_FROM).map(|&s| Task::Memcpy(s, true)),
    );
    tasks.extend([Task::CacheLine, Task::FrameLines, Task::Futex]);
    let mut refused = Vec::new();
    for (i, m) in mechs.iter().enumerate() {
        let variants: &[Variant] = if m.copying() {
            &[Variant::Verified, Variant::NoVerify, Variant::Raw]
        } else {
            &[Variant::Verified, Variant::NoVerify]
        };
        for size in THROUGHPUT_SIZES {
            if let Some(why) = m.refuses(size) {
                refused.push((i, size, why));
                continue;
            }
            if !m.latency_only() {
                tasks.extend(variants.iter().map(|&v| Task::Throughput(i, size, v)));
            }
            if LATENCY_SIZES.contains(&size) && !m.throughput_only() {
                tasks.push(Task::Latency(i, size, Variant::Verified));
                if m.copying() {
                    tasks.push(Task::Latency(i, size, Variant::Raw));
                }
                if m.spins() {
                    // A spinning round trip is short enough for the checks to show.
                    tasks.push(Task::Latency(i, size, Variant::NoVerify));
                }
            }
        }
    }
    (tasks, refused)
}

fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    signals::install()?;
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let rounds = match (args.quick, args.round_trips) {
        (true, n) => Rounds { warmup: 20, timed: n.unwrap_or(200) },
        (false, Some(n)) if n < 10_000 => {
            return Err(Error::usage(format!(
                "--round-trips {n}: at least 10000 (percentiles up to p99.9 need them), or --quick"
            )));
        }
        (false, n) => Rounds { warmup: 500, timed: n.unwrap_or(10_000) },
    };
    let secs = args.secs.unwrap_or(if args.quick { 0.005 } else { 0.1 });
    if !(secs > 0.0 && secs <= 60.0) {
        return Err(Error::usage(format!("--secs {secs}: between 0 and 60")));
    }
    let mut machine = Machine::detect();
    if let Some(pin) = args.pin {
        for cpu in [pin.parent, pin.child] {
            if cpu >= machine.cores {
                return Err(Error::usage(format!(
                    "--pin: CPU {cpu} does not exist ({} CPUs)",
                    machine.cores
                )));
            }
        }
        pair::pin_to(pin.parent)?;
    }
    let cold = if args.quick {
        8 << 20
    } else {
        (2 * machine.llc.unwrap_or(32 << 20)).clamp(64 << 20, 1 << 30)
    };
    let options = Options { reps, pin: args.pin, quick: args.quick, budget: secs, rounds, cold };

    let mut mechs = Mech::all();
    if let Some(only) = &args.only {
        let words: Vec<&str> = only.split(',').map(str::trim).filter(|w| !w.is_empty()).collect();
        mechs.retain(|m| words.iter().any(|w| m.name().contains(w)));
        if mechs.is_empty() {
            return Err(Error::usage(format!("--only {only}: no mechanism's name contains that")));
        }
    }
    let (mut tasks, refused) = plan(&mechs);
    if let Some(only) = args.workload {
        tasks.retain(|t| {
            matches!(t, Task::Memcpy(..) | Task::CacheLine | Task::FrameLines | Task::Futex)
                || t.key().1 == only
        });
    }

    // Private names first (before anything is created), and the shared page
    // before the first fork.
    Namespaces::remove_stale(BIN)?;
    let ns = Namespaces::create()?;
    let page = SharedPage::new()?;
    let ctx = Ctx {
        ns: &ns,
        page: &page,
        pin: args.pin,
        budget: Duration::from_secs_f64(secs),
        rounds,
        parent: pair::me(),
    };
    let measured = measure(&ctx, &mechs, &tasks, reps, cold);
    drop(page);
    let cleaned = ns.remove();
    let entries = measured?;

    machine.load.1 = report::load_average();
    let report = Report {
        machine,
        options,
        mechs: mechs.iter().map(|m| MechInfo { name: m.name(), spins: m.spins() }).collect(),
        entries,
        refused,
        elapsed: started.elapsed().as_secs_f64(),
    };
    let text = report.markdown();
    print!("{text}");
    write_files(&report, &text, &args.out)?;
    cleaned?;
    let failed: Vec<String> = report
        .entries
        .iter()
        .filter_map(|e| e.error.as_ref().map(|err| format!("{}: {err}", report.label(e.subject))))
        .collect();
    if let Some(first) = failed.first() {
        return Err(Error::system(format!(
            "{} measurement(s) failed; the first: {first}",
            failed.len()
        )));
    }
    Ok(())
}

/// Runs every task `reps` times, repetition by repetition (so a burst of
/// noise hits one repetition of many rows, not every repetition of one).
fn measure(
    ctx: &Ctx<'_>,
    mechs: &[Mech],
    tasks: &[Task],
    reps: usize,
    cold: usize,
) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = tasks
        .iter()
        .map(|t| {
            let (subject, workload, size, variant) = t.key();
            Entry { subject, workload, size, variant, samples: Vec::new(), error: None, wall: 0.0 }
        })
        .collect();
    let bar = progress((tasks.len() * reps) as u64);
    let mut buffers: Option<CopyBuffers> = None;
    for rep in 0..reps {
        for (task, entry) in tasks.iter().zip(entries.iter_mut()) {
            bar.set_message(format!("rep {}/{reps}: {}", rep + 1, describe(task, mechs)));
            bar.inc(1);
            if entry.error.is_some() {
                continue;
            }
            let t0 = Instant::now();
            let sample = match task {
                Task::Memcpy(size, through_memory) => {
                    let copy = buffers.get_or_insert_with(|| CopyBuffers::new(cold));
                    Ok(rate(copy.memcpy(*size, *through_memory, ctx.budget)))
                }
                Task::CacheLine => {
                    floors::cache_line(ctx.page, ctx.pin, ctx.rounds).map(|h| times(&h))
                }
                Task::FrameLines => {
                    floors::frame_lines(ctx.page, ctx.pin, ctx.rounds).map(|h| times(&h))
                }
                Task::Futex => floors::futex(ctx.page, ctx.pin, ctx.rounds).map(|h| times(&h)),
                Task::Throughput(m, size, v) => {
                    run::throughput(&mechs[*m], ctx, *size, *v).map(rate)
                }
                Task::Latency(m, size, v) => {
                    run::latency(&mechs[*m], ctx, *size, *v).map(|h| times(&h))
                }
            };
            entry.wall += t0.elapsed().as_secs_f64();
            match sample {
                Ok(s) => entry.samples.push(s),
                Err(e) => {
                    // Ctrl-C stops everything; any other failure is this row's.
                    signals::check()?;
                    bar.suspend(|| ipc_common::say!("{BIN}: {}: {e}", describe(task, mechs)));
                    entry.error = Some(e.message().to_string());
                }
            }
        }
    }
    bar.finish_and_clear();
    Ok(entries)
}

fn describe(task: &Task, mechs: &[Mech]) -> String {
    let size = report::size_label;
    match task {
        Task::Memcpy(s, false) => format!("memcpy floor in cache, {}", size(*s)),
        Task::Memcpy(s, true) => format!("memcpy floor through memory, {}", size(*s)),
        Task::CacheLine => "cache-line floor".into(),
        Task::FrameLines => "frame-lines floor".into(),
        Task::Futex => "futex floor".into(),
        Task::Throughput(m, s, v) => {
            format!("{} throughput, {}, {}", mechs[*m].name(), size(*s), v.label())
        }
        Task::Latency(m, s, v) => {
            format!("{} latency, {}, {}", mechs[*m].name(), size(*s), v.label())
        }
    }
}

/// The progress bar on standard error: drawn when it changes (between runs),
/// never by a background ticker, which would be a thread in a forking process.
fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[allow(clippy::cast_precision_loss)]
fn rate(t: Transfer) -> Sample {
    let secs = t.secs.max(1e-9);
    Sample::Rate { bytes: t.bytes as f64 / secs, msgs: t.messages as f64 / secs }
}

#[allow(clippy::cast_precision_loss)]
fn times(h: &Histogram) -> Sample {
    Sample::Times {
        p50: h.percentile(50.0) as f64,
        p99: h.percentile(99.0) as f64,
        p999: h.percentile(99.9) as f64,
        max: h.max() as f64,
        count: h.len(),
    }
}

/// results.{json,csv,md}, throughput.svg, latency.svg.
fn write_files(report: &Report, markdown: &str, dir: &PathBuf) -> Result<()> {
    std::fs::create_dir_all(dir).context(|| format!("mkdir -p {}", dir.display()))?;
    for (name, text) in [
        ("results.json", report.json()),
        ("results.csv", report.csv()),
        ("results.md", markdown.to_string()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).context(|| format!("write {}", path.display()))?;
    }
    chart::throughput(report, dir)?;
    chart::latency(report, dir)?;
    ipc_common::say!(
        "{BIN}: wrote results.json, results.csv, results.md, throughput.svg, latency.svg in {}",
        dir.display()
    );
    Ok(())
}
