//! A latency histogram: fixed log-linear buckets, no allocation per sample.
//!
//! Round-trip times span four orders of magnitude here (100 ns for two
//! spinning processes, 100 µs and more for a blocking mechanism whose peer was
//! descheduled), and the tail is what matters. Each power of two is split
//! into 64 buckets, so a percentile read from the histogram is within 1/64
//! (1.6 %) of the true sample; values below 128 ns are exact. Recording is an
//! index computation and an increment: the loop being timed never allocates.
//!
//! Percentiles are nearest-rank, never a mean (see `ipc_common::stats` for
//! why: a blocking round trip is bimodal here, same CPU or the other one).

/// Sub-buckets per power of two (2^6): the relative precision.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Values up to 2^40 ns (18 minutes); anything longer lands in the last bucket.
const MAX_BITS: u32 = 40;
const BUCKETS: usize = (MAX_BITS - SUB_BITS) as usize * SUB + SUB;

/// Round-trip times in nanoseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, min: u64::MAX, max: 0 }
    }
}

/// The bucket of `v`: exact below 128, then 64 buckets per power of two.
fn index(v: u64) -> usize {
    let v = v.min((1 << MAX_BITS) - 1);
    if v < 2 * SUB as u64 {
        return v as usize;
    }
    let msb = v.ilog2();
    let shift = msb - SUB_BITS;
    (shift as usize + 1) * SUB + (v >> shift) as usize - SUB
}

/// The lowest value of bucket `i`, and its width.
fn bucket(i: usize) -> (u64, u64) {
    if i < 2 * SUB {
        return (i as u64, 1);
    }
    let shift = (i / SUB - 1) as u32;
    (((i % SUB + SUB) as u64) << shift, 1 << shift)
}

impl Histogram {
    /// An empty histogram.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample.
    pub fn record(&mut self, nanos: u64) {
        self.counts[index(nanos)] += 1;
        self.total += 1;
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
    }

    /// Number of samples.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.total
    }

    /// The largest sample, exactly.
    #[must_use]
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `p`-th percentile (0..=100) by nearest rank: the middle of the
    /// bucket holding that rank, kept within the smallest and largest sample.
    /// Zero without samples.
    #[must_use]
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        #[allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket(i);
                return (low + width / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut expected = 0;
        for v in 0..1 << 20 {
            let i = index(v);
            assert!(i == expected || i == expected + 1, "{v} jumps to bucket {i}");
            expected = i;
        }
        for v in (0..1 << 20).chain([(1 << 40) - 1, 1 << 39, 12_345_678_901]) {
            let i = index(v);
            let (low, width) = bucket(i);
            assert!(low <= v && v < low + width, "{v} not in bucket {i} = {low}+{width}");
            assert!(width == 1 || width * 64 <= low, "bucket {i} too wide");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_are_nearest_rank_within_the_precision() {
        let mut h = Histogram::new();
        for us in 1..=1000 {
            h.record(us * 1000);
        }
        for (p, want) in [(50.0, 500_000.0), (99.0, 990_000.0), (99.9, 999_000.0)] {
            #[allow(clippy::cast_precision_loss)]
            let got = h.percentile(p) as f64;
            assert!((got - want).abs() / want < 1.0 / 64.0, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.percentile(100.0), 1_000_000, "kept within the largest sample");
        assert!((1000..1016).contains(&h.percentile(0.0)), "{}", h.percentile(0.0));
        assert_eq!(h.len(), 1000);
        assert_eq!(Histogram::new().percentile(50.0), 0);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [3, 3, 3, 100] {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 3);
        assert_eq!(h.percentile(99.0), 100);
    }
}
