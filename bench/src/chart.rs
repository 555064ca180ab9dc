//! One SVG chart per workload, drawn with plotters (SVG backend only):
//!
//! - `throughput.svg`: MB/s of every mechanism at every size, log scale, with
//!   the memcpy floor of each size as a line of its colour;
//! - `latency.svg`: round-trip p50, p99 and p99.9 of every mechanism, one
//!   panel per size, log scale, with the cache-line and futex floors as lines.

use std::path::Path;

use ipc_common::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{
    Figure, LATENCY_SIZES, Report, Subject, THROUGHPUT_SIZES, Workload, size_label,
};
use crate::run::Variant;

/// One colour per bar of a group (sizes, or percentiles).
const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

/// Decades around `values` for a log axis.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (1.0, 10.0);
    }
    (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()).max(lo * 10.0))
}

/// The label under bar group `x`, if `x` is a group's centre.
fn group_label(names: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    names.get(i as usize).cloned().unwrap_or_default()
}

/// Bar `k` of `of` in group `i`: its left and right edges.
fn bar(i: usize, k: usize, of: usize) -> (f64, f64) {
    #[allow(clippy::cast_precision_loss)]
    let (i, k, of) = (i as f64, k as f64, of as f64);
    let width = 0.8 / of;
    let left = i - 0.4 + k * width;
    (left, left + width * 0.9)
}

/// Writes `throughput.svg` into `dir`.
pub fn throughput(report: &Report, dir: &Path) -> Result<()> {
    let path = dir.join("throughput.svg");
    let what = path.display().to_string();
    let err = |e: String| Error::system(format!("draw {what}: {e}"));
    // Mechanisms with a framed throughput figure, fastest (at 64 KiB) first.
    let mut subjects: Vec<(Subject, f64)> = (0..report.mechs.len())
        .map(Subject::Mech)
        .filter_map(|s| {
            let any = THROUGHPUT_SIZES.iter().any(|&size| figure(report, s, size).is_some());
            any.then(|| (s, figure(report, s, 64 << 10).unwrap_or(0.0)))
        })
        .collect();
    subjects.sort_by(|a, b| b.1.total_cmp(&a.1));
    let names: Vec<String> = subjects.iter().map(|(s, _)| report.label(*s)).collect();
    let values = subjects
        .iter()
        .flat_map(|(s, _)| THROUGHPUT_SIZES.map(|size| figure(report, *s, size)))
        .chain(THROUGHPUT_SIZES.map(|size| report.memcpy(size).map(|b| b / 1e6)))
        .flatten();
    let (lo, hi) = log_range(values);
    let root = SVGBackend::new(&path, (1400, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    #[allow(clippy::cast_precision_loss)]
    let n = names.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput, one writer to one reader: MB/s of payload (log scale); lines: memcpy, one core",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5..n - 0.5, (lo..hi).log_scale())
        .map_err(|e| err(e.to_string()))?;
    let label = |x: &f64| group_label(&names, *x);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len().max(1))
        .x_label_formatter(&label)
        .y_desc("MB/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (k, size) in THROUGHPUT_SIZES.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let bars = subjects.iter().enumerate().filter_map(|(i, (s, _))| {
            let v = figure(report, *s, *size)?;
            let (x0, x1) = bar(i, k, THROUGHPUT_SIZES.len());
            Some(Rectangle::new([(x0, lo), (x1, v)], colour.filled()))
        });
        chart
            .draw_series(bars)
            .map_err(|e| err(e.to_string()))?
            .label(size_label(*size))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        if let Some(c) = report.memcpy(*size) {
            let line =
                PathElement::new(vec![(-0.5, c / 1e6), (n - 0.5, c / 1e6)], colour.stroke_width(1));
            chart.draw_series(std::iter::once(line)).map_err(|e| err(e.to_string()))?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight, &what)?;
    root.present().map_err(|e| err(e.to_string()))
}

/// Framed, verified MB/s of `s` at `size`.
fn figure(report: &Report, s: Subject, size: usize) -> Option<f64> {
    report.median(s, Workload::Throughput, size, Variant::Verified, Figure::Bytes).map(|b| b / 1e6)
}

fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    at: SeriesLabelPosition,
    what: &str,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| Error::system(format!("draw {what}: {e}")))
}

/// Writes `latency.svg` into `dir`.
pub fn latency(report: &Report, dir: &Path) -> Result<()> {
    let path = dir.join("latency.svg");
    let what = path.display().to_string();
    let root = SVGBackend::new(&path, (1400, 1100)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| Error::system(format!("draw {what}: {e}")))?;
    let panels = root.split_evenly((LATENCY_SIZES.len(), 1));
    for (panel, size) in panels.iter().zip(LATENCY_SIZES) {
        latency_panel(report, panel, size, &what)?;
    }
    root.present().map_err(|e| Error::system(format!("draw {what}: {e}")))
}

fn latency_panel<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, Shift>,
    size: usize,
    what: &str,
) -> Result<()> {
    let err = |e: String| Error::system(format!("draw {what}: {e}"));
    let figures = [(Figure::P50, "p50"), (Figure::P99, "p99"), (Figure::P999, "p99.9")];
    let us = |s: Subject, f: Figure| {
        report.median(s, Workload::Latency, size, Variant::Verified, f).map(|ns| ns / 1e3)
    };
    let mut subjects: Vec<(Subject, f64)> = (0..report.mechs.len())
        .map(Subject::Mech)
        .filter_map(|s| us(s, Figure::P50).map(|p| (s, p)))
        .collect();
    subjects.sort_by(|a, b| a.1.total_cmp(&b.1));
    let names: Vec<String> = subjects.iter().map(|(s, _)| report.label(*s)).collect();
    // The frame-lines floor is a 64 B frame's: drawn on that panel only.
    let floors: Vec<(&str, RGBColor, f64)> = [
        (Subject::CacheLine, "cache-line floor", BLACK),
        (Subject::FrameLines, "frame-lines floor", RGBColor(127, 127, 127)),
        (Subject::Futex, "futex floor", RGBColor(148, 103, 189)),
    ]
    .into_iter()
    .filter(|(s, ..)| *s != Subject::FrameLines || size == 64)
    .filter_map(|(s, name, colour)| {
        report
            .median(s, Workload::Latency, 0, Variant::Verified, Figure::P50)
            .map(|ns| (name, colour, ns / 1e3))
    })
    .collect();
    let values = subjects
        .iter()
        .flat_map(|(s, _)| figures.map(|(f, _)| us(*s, f)))
        .flatten()
        .chain(floors.iter().map(|(.., v)| *v));
    let (lo, hi) = log_range(values);
    #[allow(clippy::cast_precision_loss)]
    let n = names.len().max(1) as f64;
    let caption = format!(
        "Round trip, {} frames: p50, p99, p99.9 in µs (log scale); lines: floors' p50",
        size_label(size)
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5..n - 0.5, (lo..hi).log_scale())
        .map_err(|e| err(e.to_string()))?;
    let label = |x: &f64| group_label(&names, *x);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len().max(1))
        .x_label_formatter(&label)
        .y_desc("µs")
        .y_label_formatter(&|y| if *y >= 1.0 { format!("{y:.0}") } else { format!("{y:.2}") })
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (k, (f, name)) in figures.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let bars = subjects.iter().enumerate().filter_map(|(i, (s, _))| {
            let v = us(*s, *f)?;
            let (x0, x1) = bar(i, k, figures.len());
            Some(Rectangle::new([(x0, lo), (x1, v)], colour.filled()))
        });
        chart
            .draw_series(bars)
            .map_err(|e| err(e.to_string()))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    for &(name, colour, v) in &floors {
        let line = PathElement::new(vec![(-0.5, v), (n - 0.5, v)], colour.stroke_width(2));
        chart
            .draw_series(std::iter::once(line))
            .map_err(|e| err(e.to_string()))?
            .label(format!("{name} {v:.2} µs"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 12, y)], colour.stroke_width(2))
            });
    }
    // Upper left: the fastest (spinning) rows are short there.
    legend(&mut chart, SeriesLabelPosition::UpperLeft, what)
}
