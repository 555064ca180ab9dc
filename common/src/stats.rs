//! Latency samples and their percentiles, for round-trip measurements.
//!
//! Percentiles come from the sorted samples (nearest rank), never from a mean:
//! a blocking round trip here is bimodal (same CPU or the other one), and the
//! mean of such a distribution describes no round trip that happened.

use std::time::Duration;

/// Round-trip times, in the order measured.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    /// Room for `n` samples, allocated up front so measuring does not allocate.
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Latencies { nanos: Vec::with_capacity(n), sorted: true }
    }

    /// Records one sample.
    pub fn push(&mut self, d: Duration) {
        self.nanos.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Number of samples.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether there are no samples.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// The `p`-th percentile (0.0..=100.0) by nearest rank; zero without samples.
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.nanos.is_empty() {
            return Duration::ZERO;
        }
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
        let n = self.nanos.len();
        #[allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        Duration::from_nanos(self.nanos[rank.clamp(1, n) - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut l = Latencies::with_capacity(100);
        for us in (1..=100).rev() {
            l.push(Duration::from_micros(us));
        }
        assert_eq!(l.percentile(50.0), Duration::from_micros(50));
        assert_eq!(l.percentile(99.0), Duration::from_micros(99));
        assert_eq!(l.percentile(100.0), Duration::from_micros(100));
        assert_eq!(l.percentile(0.0), Duration::from_micros(1));
        assert_eq!(Latencies::default().percentile(50.0), Duration::ZERO);
    }
}
