//! What a run measured, and its three renderings: the Markdown tables on
//! standard output, JSON and CSV files, and the targets of issue 8.
//!
//! Every measurement is repeated (`--reps`); a row shows the median of its
//! repetitions and their spread, `(max - min) / median`. Throughput is MB/s
//! (10^6 bytes of payload per second, headers not counted) and messages per
//! second; latency is a round trip, as percentiles of a histogram of every
//! timed round trip of a repetition. Each row is also a fraction of its floor
//! (see [`crate::floors`]): memcpy bandwidth at the same size for throughput;
//! for latency, how many times the floor's p50 it takes — the cache line's
//! for spinning mechanisms, the futex's for blocking ones.

use std::fmt::Write as _;

use crate::jobs::Rounds;
use crate::pair::Pin;
use crate::run::Variant;

/// Payload sizes of the throughput workload.
pub const THROUGHPUT_SIZES: [usize; 4] = [64, 4 << 10, 64 << 10, 1 << 20];
/// Payload sizes of the latency workload.
pub const LATENCY_SIZES: [usize; 2] = [64, 4 << 10];

/// The machine, for the header.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// CPUs online.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
    /// Bytes of the last-level cache, if known.
    pub llc: Option<usize>,
    /// The 1-minute load average when the run started and when it ended:
    /// how much else this machine was doing (the spread's main cause).
    pub load: (String, String),
}

/// The 1-minute load average, from /proc/loadavg.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

impl Machine {
    /// Reads /proc and sysfs.
    #[must_use]
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim()))
            .unwrap_or("unknown CPU")
            .to_string();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string());
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let load = (load_average(), String::new());
        Machine { cpu, cores, kernel, llc: crate::floors::last_level_cache(), load }
    }
}

/// How the run was made.
#[derive(Debug, Clone)]
pub struct Options {
    /// Repetitions of every measurement.
    pub reps: usize,
    /// `--pin`.
    pub pin: Option<Pin>,
    /// `--quick`: everything tiny, figures meaningless.
    pub quick: bool,
    /// Seconds each throughput run measures.
    pub budget: f64,
    /// Round trips of each latency run.
    pub rounds: Rounds,
    /// Bytes the large memcpy sizes walk through.
    pub cold: usize,
}

/// Throughput or latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// One writer to one reader, as fast as it goes.
    Throughput,
    /// Ping-pong round trips.
    Latency,
}

/// What a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The memcpy floor, in cache.
    Memcpy,
    /// The memcpy floor, through memory.
    MemcpyCold,
    /// The spinning floor.
    CacheLine,
    /// A 64 B frame's two cache lines, spinning.
    FrameLines,
    /// The blocking floor.
    Futex,
    /// A mechanism, by its index in [`Report::mechs`].
    Mech(usize),
}

/// One repetition's figures.
#[derive(Debug, Clone, Copy)]
pub enum Sample {
    /// Throughput.
    Rate {
        /// Payload bytes per second.
        bytes: f64,
        /// Messages per second.
        msgs: f64,
    },
    /// Latency percentiles, in nanoseconds.
    Times {
        /// Median round trip.
        p50: f64,
        /// 99th percentile.
        p99: f64,
        /// 99.9th percentile.
        p999: f64,
        /// The slowest.
        max: f64,
        /// Timed round trips.
        count: u64,
    },
}

/// Every repetition of one measurement.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Of what.
    pub subject: Subject,
    /// Which workload.
    pub workload: Workload,
    /// Payload bytes (0 for the round-trip floors, which move none).
    pub size: usize,
    /// Framed, no-verify or raw.
    pub variant: Variant,
    /// One per repetition done.
    pub samples: Vec<Sample>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Wall-clock seconds spent on it, setup included, over all repetitions.
    pub wall: f64,
}

/// A mechanism's row label and kind.
#[derive(Debug, Clone)]
pub struct MechInfo {
    /// Row label.
    pub name: String,
    /// Spins rather than sleeps: compared with the cache-line floor.
    pub spins: bool,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where.
    pub machine: Machine,
    /// How.
    pub options: Options,
    /// The rows.
    pub mechs: Vec<MechInfo>,
    /// Everything measured.
    pub entries: Vec<Entry>,
    /// Mechanism and size pairs not measured, and why (a limit of the mechanism).
    pub refused: Vec<(usize, usize, String)>,
    /// Seconds the whole run took.
    pub elapsed: f64,
}

/// Median, smallest and largest of a repetition's figures.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// The median (of an even count: the mean of the middle two).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Stat {
    /// Of `values`; `None` if there are none.
    #[must_use]
    pub fn of(mut values: Vec<f64>) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            f64::midpoint(values[n / 2 - 1], values[n / 2])
        };
        Some(Stat { median, min: values[0], max: values[n - 1] })
    }

    /// `(max - min) / median`: how far apart the repetitions were.
    #[must_use]
    pub fn spread(&self) -> f64 {
        if self.median > 0.0 { (self.max - self.min) / self.median } else { 0.0 }
    }
}

/// A figure picked out of a sample.
#[derive(Debug, Clone, Copy)]
pub enum Figure {
    /// Bytes per second.
    Bytes,
    /// Messages per second.
    Msgs,
    /// Median round trip.
    P50,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
}

impl Entry {
    /// The statistics of one figure over the repetitions.
    #[must_use]
    pub fn stat(&self, figure: Figure) -> Option<Stat> {
        if self.error.is_some() {
            return None;
        }
        Stat::of(self.values(figure))
    }

    /// One figure of every repetition, in order.
    fn values(&self, figure: Figure) -> Vec<f64> {
        self.samples
            .iter()
            .filter_map(|s| match (s, figure) {
                (Sample::Rate { bytes, .. }, Figure::Bytes) => Some(*bytes),
                (Sample::Rate { msgs, .. }, Figure::Msgs) => Some(*msgs),
                (Sample::Times { p50, .. }, Figure::P50) => Some(*p50),
                (Sample::Times { p99, .. }, Figure::P99) => Some(*p99),
                (Sample::Times { p999, .. }, Figure::P999) => Some(*p999),
                _ => None,
            })
            .collect()
    }
}

impl Report {
    /// The entry measuring this, if any.
    #[must_use]
    pub fn find(
        &self,
        subject: Subject,
        workload: Workload,
        size: usize,
        v: Variant,
    ) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.subject == subject && e.workload == workload && e.size == size && e.variant == v
        })
    }

    /// Median of one figure of one measurement.
    #[must_use]
    pub fn median(
        &self,
        s: Subject,
        w: Workload,
        size: usize,
        v: Variant,
        f: Figure,
    ) -> Option<f64> {
        self.find(s, w, size, v)?.stat(f).map(|st| st.median)
    }

    /// Framed over raw, one repetition at a time, then the median. The two ran
    /// back to back in each repetition, so a burst of load from elsewhere
    /// shifts both: the ratio of each pair is steadier than the ratio of
    /// the two medians, which may come from different repetitions.
    #[must_use]
    pub fn framed_over_raw(&self, s: Subject, w: Workload, size: usize, f: Figure) -> Option<f64> {
        let framed = self.find(s, w, size, Variant::Verified)?;
        let raw = self.find(s, w, size, Variant::Raw)?;
        if framed.error.is_some() || raw.error.is_some() {
            return None;
        }
        let ratios =
            framed.values(f).iter().zip(raw.values(f)).map(|(a, b)| a / b.max(1e-12)).collect();
        Stat::of(ratios).map(|st| st.median)
    }

    /// The mechanism called `name`.
    #[must_use]
    pub fn mech(&self, name: &str) -> Option<Subject> {
        self.mechs.iter().position(|m| m.name == name).map(Subject::Mech)
    }

    /// The label of a subject.
    #[must_use]
    pub fn label(&self, s: Subject) -> String {
        match s {
            Subject::Memcpy => "memcpy in cache".into(),
            Subject::MemcpyCold => "memcpy through memory".into(),
            Subject::CacheLine => "cache line".into(),
            Subject::FrameLines => "frame lines".into(),
            Subject::Futex => "futex".into(),
            Subject::Mech(i) => self.mechs.get(i).map_or_else(|| "?".into(), |m| m.name.clone()),
        }
    }

    /// The memcpy floor at `size`, in bytes per second: through memory for
    /// large payloads (where it was measured), in cache for small ones.
    #[must_use]
    pub fn memcpy(&self, size: usize) -> Option<f64> {
        let at = |s| self.median(s, Workload::Throughput, size, Variant::Verified, Figure::Bytes);
        at(Subject::MemcpyCold).or_else(|| at(Subject::Memcpy))
    }

    /// The latency floor (p50, ns) a mechanism is compared with, and its name.
    #[must_use]
    pub fn floor_for(&self, s: Subject) -> (Option<f64>, &'static str) {
        let spins = matches!(s, Subject::Mech(i) if self.mechs.get(i).is_some_and(|m| m.spins));
        let (subject, name) =
            if spins { (Subject::CacheLine, "cache line") } else { (Subject::Futex, "futex") };
        (self.median(subject, Workload::Latency, 0, Variant::Verified, Figure::P50), name)
    }
}

/// "64 B", "4 KiB", "64 KiB", "1 MiB".
#[must_use]
pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// "1234 MB/s".
#[must_use]
pub fn mbs(bytes_per_sec: f64) -> String {
    let mb = bytes_per_sec / 1e6;
    if mb >= 100.0 { format!("{mb:.0} MB/s") } else { format!("{mb:.1} MB/s") }
}

/// "1.23 M/s", "456 k/s".
#[must_use]
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.0} k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0} /s")
    }
}

/// "0.15 µs", "48.2 µs", "1.25 ms".
#[must_use]
pub fn micros(nanos: f64) -> String {
    let us = nanos / 1e3;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us >= 10.0 {
        format!("{us:.1} µs")
    } else {
        format!("{us:.2} µs")
    }
}

fn percent(fraction: f64) -> String {
    if fraction >= 0.1 {
        format!("{:.0} %", fraction * 100.0)
    } else {
        format!("{:.1} %", fraction * 100.0)
    }
}

/// One row of a throughput table.
struct TpRow {
    name: String,
    cells: Vec<String>,
    sort: f64,
}

/// One of the targets, checked.
#[derive(Debug, Clone)]
pub struct Target {
    /// The target, in words.
    pub what: String,
    /// The figures that decide it.
    pub figure: String,
    /// Met, missed, or not measured.
    pub met: Option<bool>,
}

impl Report {
    /// The Markdown report: header, floors, a table per workload and size
    /// (fastest first), the targets.
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        self.floors(&mut out);
        for size in THROUGHPUT_SIZES {
            self.throughput_table(&mut out, size);
        }
        for size in LATENCY_SIZES {
            self.latency_table(&mut out, size);
        }
        self.targets_table(&mut out);
        out
    }

    fn header(&self, out: &mut String) {
        let m = &self.machine;
        let o = &self.options;
        let _ = writeln!(out, "## ipc-bench: every mechanism side by side\n");
        let _ = writeln!(
            out,
            "- machine: {}, {} CPUs, Linux {}; load average {} at the start, {} at the end",
            m.cpu, m.cores, m.kernel, m.load.0, m.load.1
        );
        let pin = o.pin.map_or_else(
            || "not pinned".to_string(),
            |p| format!("parent on CPU {}, child on CPU {}", p.parent, p.child),
        );
        let _ = writeln!(
            out,
            "- {} repetition(s) of each measurement, interleaved; median shown, spread = (max − min) / median; \
             framed / raw = the median of each repetition's ratio (the two run back to back); {pin}",
            o.reps
        );
        let _ = writeln!(
            out,
            "- throughput: {:.2} s per run, timed from the first frame received to the end frame; \
             MB/s = 10^6 payload bytes per second",
            o.budget
        );
        let _ = writeln!(
            out,
            "- latency: {} round trips per run after {} of warm-up, percentiles from a histogram (±1.6 %)",
            o.rounds.timed, o.rounds.warmup
        );
        let _ = writeln!(
            out,
            "- framed: every frame checked as the real reader checks it (CRC-32, sequence, end frame), \
             and each throughput run's digest compared with the writer's; \
             no-verify: the same without the CRC (throughput rows, and the spinning round trips, \
             where it shows; a shared-memory reader then never touches the payload at all); \
             raw: the same system calls with the same sizes (a frame's bytes, header included) and no \
             framing work at all: no header, CRC, check or digest (copying mechanisms)"
        );
        if o.pin.is_none() {
            let _ = writeln!(
                out,
                "- spinning rows (`--spin`, the cache-line floor) need the two processes on two CPUs: without `--pin` the scheduler may put both on one, and a spinner then burns its peer's time slice"
            );
        }
        if o.quick {
            let _ = writeln!(out, "- **--quick: everything tiny; these figures mean nothing**");
        }
        let _ = writeln!(out);
    }

    fn floors(&self, out: &mut String) {
        let _ = writeln!(out, "### Floors (measured in this run)\n");
        let _ = write!(out, "| memcpy, one core |");
        for size in THROUGHPUT_SIZES {
            let _ = write!(out, " {} |", size_label(size));
        }
        let _ = write!(out, "\n|---|");
        for _ in THROUGHPUT_SIZES {
            let _ = write!(out, "---:|");
        }
        for subject in [Subject::Memcpy, Subject::MemcpyCold] {
            let _ = write!(out, "\n| {} |", self.label(subject));
            for size in THROUGHPUT_SIZES {
                let e = self.find(subject, Workload::Throughput, size, Variant::Verified);
                let cell = e.and_then(|e| e.stat(Figure::Bytes)).map_or_else(
                    || "—".into(),
                    |s| format!("{} ({})", mbs(s.median), percent(s.spread())),
                );
                let _ = write!(out, " {cell} |");
            }
        }
        let llc = self.machine.llc.map_or_else(|| "?".into(), size_label);
        let _ = writeln!(
            out,
            "\n\nMedian (spread). In cache: source and destination of 64 KiB, or of one \
             payload if larger. Through memory: both walk through {} each, twice the {llc} \
             last-level cache. The \"of memcpy\" columns below compare small payloads with the \
             first and large ones with the second.\n",
            size_label(self.options.cold)
        );
        let _ = writeln!(out, "| round-trip floor | p50 | p99 | p99.9 | spread (p50) |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for (s, what) in [
            (Subject::CacheLine, "cache line: two processes spinning on one shared AtomicU64"),
            (
                Subject::FrameLines,
                "frame lines: the same, each turn carrying a 64 B frame's 88 bytes (two lines)",
            ),
            (Subject::Futex, "futex: two processes sleeping in FUTEX_WAIT, woken by FUTEX_WAKE"),
        ] {
            let e = self.find(s, Workload::Latency, 0, Variant::Verified);
            let _ = writeln!(
                out,
                "| {what} | {} |",
                e.map_or_else(|| "— | — | — | —".into(), latency_cells)
            );
        }
        let _ = writeln!(out);
    }

    fn throughput_table(&self, out: &mut String, size: usize) {
        let memcpy = self.memcpy(size);
        let mut rows = Vec::new();
        let mut failed = Vec::new();
        for (i, m) in self.mechs.iter().enumerate() {
            let s = Subject::Mech(i);
            let Some(e) = self.find(s, Workload::Throughput, size, Variant::Verified) else {
                continue;
            };
            if let Some(err) = &e.error {
                failed.push(format!("| {} | failed: {err} |||||||", m.name));
                continue;
            }
            let (Some(bytes), Some(msgs)) = (e.stat(Figure::Bytes), e.stat(Figure::Msgs)) else {
                continue;
            };
            let nv = self.median(s, Workload::Throughput, size, Variant::NoVerify, Figure::Bytes);
            let raw = self.median(s, Workload::Throughput, size, Variant::Raw, Figure::Bytes);
            let cells = vec![
                mbs(bytes.median),
                rate(msgs.median),
                percent(bytes.spread()),
                memcpy.map_or_else(|| "—".into(), |c| percent(bytes.median / c)),
                nv.map_or_else(|| "—".into(), mbs),
                raw.map_or_else(|| "—".into(), mbs),
                self.framed_over_raw(s, Workload::Throughput, size, Figure::Bytes)
                    .map_or_else(|| "—".into(), |r| format!("{r:.2}")),
            ];
            rows.push(TpRow { name: m.name.clone(), cells, sort: bytes.median });
        }
        if rows.is_empty() && failed.is_empty() {
            return;
        }
        rows.sort_by(|a, b| b.sort.total_cmp(&a.sort));
        let _ = writeln!(out, "### Throughput, {} payloads (fastest first)\n", size_label(size));
        let _ = writeln!(
            out,
            "| mechanism | MB/s | messages/s | spread | of memcpy | no-verify | raw | framed / raw |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            let _ = writeln!(out, "| {} | {} |", r.name, r.cells.join(" | "));
        }
        for f in failed {
            let _ = writeln!(out, "{f}");
        }
        for (i, s, why) in &self.refused {
            if *s == size {
                let _ = writeln!(
                    out,
                    "| {} | not possible: {why} |||||||",
                    self.label(Subject::Mech(*i))
                );
            }
        }
        let _ = writeln!(out);
    }

    fn latency_table(&self, out: &mut String, size: usize) {
        let mut rows = Vec::new();
        let mut failed = Vec::new();
        for (i, m) in self.mechs.iter().enumerate() {
            let s = Subject::Mech(i);
            let Some(e) = self.find(s, Workload::Latency, size, Variant::Verified) else {
                continue;
            };
            if let Some(err) = &e.error {
                failed.push(format!("| {} | failed: {err} ||||||||", m.name));
                continue;
            }
            let Some(p50) = e.stat(Figure::P50) else { continue };
            let (floor, floor_name) = self.floor_for(s);
            let raw = self.median(s, Workload::Latency, size, Variant::Raw, Figure::P50);
            let nv = self.median(s, Workload::Latency, size, Variant::NoVerify, Figure::P50);
            let cells = vec![
                latency_cells(e),
                floor.map_or_else(
                    || "—".into(),
                    |f| {
                        // Two digits below 1 (a row that spins before it sleeps, under
                        // the futex floor), so it never reads "0.0 ×".
                        let x = p50.median / f;
                        if x < 1.0 {
                            format!("{x:.2} × {floor_name}")
                        } else {
                            format!("{x:.1} × {floor_name}")
                        }
                    },
                ),
                nv.map_or_else(|| "—".into(), micros),
                raw.map_or_else(|| "—".into(), micros),
                self.framed_over_raw(s, Workload::Latency, size, Figure::P50)
                    .map_or_else(|| "—".into(), |r| format!("{r:.2}")),
            ];
            rows.push(TpRow { name: m.name.clone(), cells, sort: p50.median });
        }
        if rows.is_empty() && failed.is_empty() {
            return;
        }
        rows.sort_by(|a, b| a.sort.total_cmp(&b.sort));
        let _ = writeln!(
            out,
            "### Latency, {} payloads: round trip (fastest first)\n",
            size_label(size)
        );
        let _ = writeln!(
            out,
            "| mechanism | p50 | p99 | p99.9 | spread (p50) | p50 vs floor | no-verify p50 | raw p50 | framed / raw |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            let _ = writeln!(out, "| {} | {} |", r.name, r.cells.join(" | "));
        }
        for f in failed {
            let _ = writeln!(out, "{f}");
        }
        let _ = writeln!(out);
    }

    fn targets_table(&self, out: &mut String) {
        let _ = writeln!(out, "### Targets (issue 8)\n");
        let _ = writeln!(out, "| target | figures | met |");
        let _ = writeln!(out, "|---|---|:---:|");
        for t in self.targets() {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let _ = writeln!(out, "| {} | {} | {met} |", t.what, t.figure);
        }
        let _ = writeln!(out, "\nWhole run: {:.0} s.", self.elapsed);
    }

    /// For a spinning round trip `got` (ns): how the frame-lines floor (the
    /// least a 64 B frame can cost, see `floors::frame_lines`) compares with
    /// the cache line, and `got` with it; empty if either is missing.
    fn frame_lines(&self, got: Option<f64>) -> String {
        let at = |s| self.median(s, Workload::Latency, 0, Variant::Verified, Figure::P50);
        match (got, at(Subject::FrameLines), at(Subject::CacheLine)) {
            (Some(got), Some(lines), Some(line)) => format!(
                "; the frame's two lines alone: {} = {:.2} × {}, and this is {:.2} × them",
                micros(lines),
                lines / line,
                micros(line),
                got / lines
            ),
            _ => String::new(),
        }
    }

    /// The targets, each checked against this run's figures.
    #[must_use]
    pub fn targets(&self) -> Vec<Target> {
        let mut all = Vec::new();
        let tp = |s: Subject, size: usize, v: Variant| {
            self.median(s, Workload::Throughput, size, v, Figure::Bytes)
        };
        let lat = |s: Subject, size: usize, v: Variant| {
            self.median(s, Workload::Latency, size, v, Figure::P50)
        };
        let size = 64 << 10;
        let memcpy = self.memcpy(size);
        let in_cache = self.median(
            Subject::Memcpy,
            Workload::Throughput,
            size,
            Variant::Verified,
            Figure::Bytes,
        );
        let pipe = self.mech("pipe").and_then(|p| tp(p, size, Variant::Verified));
        for api in ["posix", "sysv"] {
            let shm = self.mech(&format!("shm {api}")).and_then(|s| tp(s, size, Variant::Verified));
            all.push(match (shm, memcpy) {
                (Some(shm), Some(c)) => Target {
                    what: format!("shm {api} throughput at 64 KiB ≥ 50 % of memcpy"),
                    figure: format!(
                        "{} = {} of memcpy through memory ({}){}",
                        mbs(shm),
                        percent(shm / c),
                        mbs(c),
                        in_cache.map_or_else(String::new, |h| format!(
                            "; {} of memcpy in cache ({})",
                            percent(shm / h),
                            mbs(h)
                        ))
                    ),
                    met: Some(shm >= 0.5 * c),
                },
                _ => missing(format!("shm {api} throughput at 64 KiB ≥ 50 % of memcpy")),
            });
            all.push(match (shm, pipe) {
                (Some(shm), Some(p)) => Target {
                    what: format!("shm {api} throughput at 64 KiB ≥ 3 × the pipe's"),
                    figure: format!("{} = {:.1} × {}", mbs(shm), shm / p, mbs(p)),
                    met: Some(shm >= 3.0 * p),
                },
                _ => missing(format!("shm {api} throughput at 64 KiB ≥ 3 × the pipe's")),
            });
        }
        for api in ["posix", "sysv"] {
            for (name, floor, bound) in [
                (format!("shm {api} --spin"), Subject::CacheLine, 2.0),
                (format!("shm {api}"), Subject::Futex, 1.5),
            ] {
                let what = format!(
                    "{name} round trip p50 (64 B) ≤ {bound} × the {} floor",
                    self.label(floor)
                );
                let got = self.mech(&name).and_then(|s| lat(s, 64, Variant::Verified));
                let f = self.median(floor, Workload::Latency, 0, Variant::Verified, Figure::P50);
                let lines =
                    if floor == Subject::CacheLine { self.frame_lines(got) } else { String::new() };
                all.push(match (got, f) {
                    (Some(got), Some(f)) => Target {
                        what,
                        figure: format!(
                            "{} = {:.2} × {}{}",
                            micros(got),
                            got / f,
                            micros(f),
                            lines
                        ),
                        met: Some(got <= bound * f),
                    },
                    _ => missing(what),
                });
            }
        }
        for (i, m) in self.mechs.iter().enumerate() {
            let s = Subject::Mech(i);
            let mut figures = Vec::new();
            let mut ok = true;
            for size in THROUGHPUT_SIZES {
                if let Some(r) = self.framed_over_raw(s, Workload::Throughput, size, Figure::Bytes)
                {
                    figures.push(format!("{} {r:.2}", size_label(size)));
                    ok &= r >= 0.9;
                }
            }
            let mut lat_figures = Vec::new();
            for size in LATENCY_SIZES {
                if let Some(r) = self.framed_over_raw(s, Workload::Latency, size, Figure::P50) {
                    lat_figures.push(format!("{} {r:.2}", size_label(size)));
                    ok &= r <= 1.1;
                }
            }
            if figures.is_empty() && lat_figures.is_empty() {
                continue;
            }
            let mut parts = Vec::new();
            if !figures.is_empty() {
                parts.push(format!("throughput framed/raw: {}", figures.join(", ")));
            }
            if !lat_figures.is_empty() {
                parts.push(format!("round trip framed/raw: {}", lat_figures.join(", ")));
            }
            all.push(Target {
                what: format!("{} framed within 10 % of raw", m.name),
                figure: parts.join("; "),
                met: Some(ok),
            });
        }
        all.push(Target {
            what: "the whole bench under 5 minutes".into(),
            figure: format!("{:.0} s (ipc-bench alone; make bench adds the build)", self.elapsed),
            met: Some(self.elapsed < 300.0),
        });
        all
    }
}

fn missing(what: String) -> Target {
    Target { what, figure: "—".into(), met: None }
}

fn latency_cells(e: &Entry) -> String {
    if let Some(err) = &e.error {
        return format!("failed: {err} | | | ");
    }
    let cell = |f| e.stat(f).map_or_else(|| "—".into(), |s: Stat| micros(s.median));
    let spread = e.stat(Figure::P50).map_or_else(|| "—".into(), |s| percent(s.spread()));
    format!("{} | {} | {} | {spread}", cell(Figure::P50), cell(Figure::P99), cell(Figure::P999))
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number (finite, or null).
fn jn(x: f64) -> String {
    if x.is_finite() { format!("{x}") } else { "null".into() }
}

impl Report {
    fn workload_name(w: Workload) -> &'static str {
        match w {
            Workload::Throughput => "throughput",
            Workload::Latency => "latency",
        }
    }

    /// Everything, as JSON (written by hand: one more dependency for this
    /// would be one more reason to give).
    #[must_use]
    pub fn json(&self) -> String {
        let m = &self.machine;
        let o = &self.options;
        let mut out = String::from("{\n");
        let _ = writeln!(
            out,
            "  \"machine\": {{\"cpu\": {}, \"cores\": {}, \"kernel\": {}, \"llc_bytes\": {}, \"load_start\": {}, \"load_end\": {}}},",
            js(&m.cpu),
            m.cores,
            js(&m.kernel),
            m.llc.map_or_else(|| "null".into(), |b| b.to_string()),
            js(&m.load.0),
            js(&m.load.1)
        );
        let pin = o.pin.map_or_else(|| "null".into(), |p| format!("[{}, {}]", p.parent, p.child));
        let _ = writeln!(
            out,
            "  \"options\": {{\"reps\": {}, \"pin\": {pin}, \"quick\": {}, \"throughput_secs\": {}, \
             \"warmup\": {}, \"round_trips\": {}, \"memcpy_cold_bytes\": {}}},",
            o.reps,
            o.quick,
            jn(o.budget),
            o.rounds.warmup,
            o.rounds.timed,
            o.cold
        );
        let _ = writeln!(out, "  \"elapsed_secs\": {},", jn(self.elapsed));
        out.push_str("  \"results\": [\n");
        let rows: Vec<String> = self.entries.iter().map(|e| self.json_entry(e)).collect();
        out.push_str(&rows.join(",\n"));
        out.push_str("\n  ],\n  \"not_possible\": [");
        let refused: Vec<String> = self
            .refused
            .iter()
            .map(|(i, size, why)| {
                format!(
                    "\n    {{\"mechanism\": {}, \"size\": {size}, \"why\": {}}}",
                    js(&self.label(Subject::Mech(*i))),
                    js(why)
                )
            })
            .collect();
        out.push_str(&refused.join(","));
        out.push_str("\n  ],\n  \"targets\": [");
        let targets: Vec<String> = self
            .targets()
            .iter()
            .map(|t| {
                format!(
                    "\n    {{\"target\": {}, \"figures\": {}, \"met\": {}}}",
                    js(&t.what),
                    js(&t.figure),
                    t.met.map_or_else(|| "null".into(), |m| m.to_string())
                )
            })
            .collect();
        out.push_str(&targets.join(","));
        out.push_str("\n  ]\n}\n");
        out
    }

    fn json_entry(&self, e: &Entry) -> String {
        let samples: Vec<String> = e
            .samples
            .iter()
            .map(|s| match s {
                Sample::Rate { bytes, msgs } => {
                    format!("{{\"bytes_per_sec\": {}, \"msgs_per_sec\": {}}}", jn(*bytes), jn(*msgs))
                }
                Sample::Times { p50, p99, p999, max, count } => format!(
                    "{{\"p50_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"max_ns\": {}, \"round_trips\": {count}}}",
                    jn(*p50),
                    jn(*p99),
                    jn(*p999),
                    jn(*max)
                ),
            })
            .collect();
        format!(
            "    {{\"workload\": {}, \"subject\": {}, \"size\": {}, \"variant\": {}, \"wall_secs\": {}, \"error\": {}, \"reps\": [{}]}}",
            js(Self::workload_name(e.workload)),
            js(&self.label(e.subject)),
            e.size,
            js(e.variant.label()),
            jn(e.wall),
            e.error.as_deref().map_or_else(|| "null".into(), js),
            samples.join(", ")
        )
    }

    /// One line per measurement: medians and spreads, and the fraction of the floor.
    #[must_use]
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "workload,subject,size,variant,reps,mb_per_sec,msgs_per_sec,p50_us,p99_us,p999_us,spread,of_floor,error\n",
        );
        for e in &self.entries {
            let f = |fig| e.stat(fig).map(|s: Stat| s.median);
            let num = |x: Option<f64>, scale: f64| {
                x.map_or_else(String::new, |v| format!("{:.3}", v / scale))
            };
            let (spread, of_floor) = match e.workload {
                Workload::Throughput => (
                    e.stat(Figure::Bytes).map(|s| s.spread()),
                    f(Figure::Bytes).zip(self.memcpy(e.size)).map(|(b, c)| b / c),
                ),
                Workload::Latency => (
                    e.stat(Figure::P50).map(|s| s.spread()),
                    match e.subject {
                        Subject::Mech(_) => {
                            f(Figure::P50).zip(self.floor_for(e.subject).0).map(|(p, fl)| p / fl)
                        }
                        _ => None,
                    },
                ),
            };
            let error = e.error.as_deref().unwrap_or("").replace(['"', '\n'], "'");
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},\"{error}\"",
                Self::workload_name(e.workload),
                self.label(e.subject),
                e.size,
                e.variant.label(),
                e.samples.len(),
                num(f(Figure::Bytes), 1e6),
                num(f(Figure::Msgs), 1.0),
                num(f(Figure::P50), 1e3),
                num(f(Figure::P99), 1e3),
                num(f(Figure::P999), 1e3),
                num(spread, 1.0),
                num(of_floor, 1.0),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spread() {
        let s = Stat::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert!(s.median.to_bits() == 2f64.to_bits() && s.min.to_bits() == 1f64.to_bits());
        assert!((s.spread() - 1.0).abs() < 1e-9);
        assert!((Stat::of(vec![1.0, 3.0]).unwrap().median - 2.0).abs() < 1e-12);
        assert!(Stat::of(Vec::new()).is_none());
    }

    #[test]
    fn labels_and_units() {
        assert_eq!(size_label(64), "64 B");
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(mbs(1.5e9), "1500 MB/s");
        assert_eq!(rate(2.5e6), "2.50 M/s");
        assert_eq!(micros(150.0), "0.15 µs");
        assert_eq!(micros(48_200.0), "48.2 µs");
        assert_eq!(js("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
    }
}
