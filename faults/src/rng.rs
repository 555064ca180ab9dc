//! The one seeded generator of the faults crate: splitmix64, with no
//! dependency, so that a printed seed replays the same draws on every machine.
//!
//! The soak (`ipc-soak --seed`), the crash matrix (`CRASH_SEED`) and the
//! decoder property test (`IPC_DEMOS_PROP_SEED`) all draw from it. It is not
//! the payload generator: [`ipc_common::payload`] has its own splitmix64 step,
//! which defines the bytes on the wire and must not change with this one.

/// The splitmix64 generator: `Rng(seed)`, then one draw after another.
///
/// The first draw from `Rng(x)` is the splitmix64 mix of `x`, so
/// `Rng(x).next_u64()` also serves as a one-shot hash of `x`.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `0..n` (0 if `n` is 0), for sizes and indices: the same
    /// draw as [`Rng::below`].
    pub fn below_usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True once in `one_in` draws, on average.
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// `n` random bytes: the little-endian bytes of successive draws.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn draws_match_the_published_splitmix64_sequence() {
        // Vigna's splitmix64.c, seeded with 0: a seed printed on one machine
        // replays on another only while these stay the same.
        let mut rng = Rng(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }
}
