//! Generated payloads and the running digest.
//!
//! `--count N --size MIN..MAX --seed S` makes the writer send N pseudo-random
//! payloads that depend only on the seed and the sequence number. The generator
//! fills one pool of random bytes once, at start; payload `seq` is a slice of that
//! pool whose length and offset come from hashing `(seed, seq)`. So the hot loop
//! neither allocates nor copies: the sink writes straight from the pool.
//!
//! The [`Digest`] is CRC-32 over all payloads in order. Each side already has each
//! payload's CRC (the writer computes it for the header, the reader checks it), so
//! the digest folds those CRCs together with `crc32_combine` instead of reading the
//! payload a second time.

use std::fmt;
use std::str::FromStr;

/// A payload size or range, from `--size 4096`, `--size 4K` or `--size 0..70000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeSpec {
    /// Smallest payload in bytes.
    pub min: usize,
    /// Largest payload in bytes (inclusive).
    pub max: usize,
}

impl SizeSpec {
    /// Every payload exactly `bytes` long.
    #[must_use]
    pub fn fixed(bytes: usize) -> Self {
        SizeSpec { min: bytes, max: bytes }
    }
}

impl Default for SizeSpec {
    fn default() -> Self {
        SizeSpec::fixed(64)
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

/// Largest payload the 32-bit `len` field can carry.
const MAX_PAYLOAD: usize = u32::MAX as usize;

impl FromStr for SizeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let spec = match s.split_once("..") {
            None => SizeSpec::fixed(parse_bytes(s)?),
            Some((lo, hi)) => {
                let (min, max) = (parse_bytes(lo)?, parse_bytes(hi)?);
                if min > max {
                    return Err(format!("{s}: MIN {min} is above MAX {max}"));
                }
                SizeSpec { min, max }
            }
        };
        if spec.max > MAX_PAYLOAD {
            return Err(format!("{s}: a payload is at most {MAX_PAYLOAD} bytes"));
        }
        Ok(spec)
    }
}

/// Parses a byte count: `4096`, `4K` (KiB), `16M` (MiB), `1G` (GiB).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => s.split_at(at),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => {
            return Err(format!("{s:?} is not a byte count (use 4096, 4K, 16M or 1G)"));
        }
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (use 4096, 4K, 16M or 1G)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// `SplitMix64`: one multiply-xorshift step; good enough to scatter lengths and bytes.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Extra pool bytes beyond the largest payload, so offsets vary even at `--size MAX`.
const POOL_SLACK: usize = 64 << 10;

/// Deterministic payloads from a seed: payload `seq` is the same on every run.
#[derive(Debug)]
pub struct Generator {
    pool: Vec<u8>,
    seed: u64,
    size: SizeSpec,
}

impl Generator {
    /// Fills the pool (`size.max` + 64 KiB of pseudo-random bytes) once.
    #[must_use]
    pub fn new(seed: u64, size: SizeSpec) -> Self {
        let len = size.max + POOL_SLACK;
        let mut pool = Vec::with_capacity(len + 8);
        let mut state = splitmix64(seed);
        while pool.len() < len {
            state = splitmix64(state);
            pool.extend_from_slice(&state.to_le_bytes());
        }
        pool.truncate(len);
        Generator { pool, seed, size }
    }

    /// Payload number `seq`: a slice of the pool, no copy.
    #[must_use]
    #[inline]
    pub fn payload(&self, seq: u64) -> &[u8] {
        let h = splitmix64(self.seed ^ splitmix64(seq));
        let span = (self.size.max - self.size.min) as u64 + 1;
        // A fixed size (span 1) needs no division to pick its length.
        let len = if span == 1 { self.size.min } else { self.size.min + (h % span) as usize };
        let offsets = (self.pool.len() - len) as u64 + 1;
        let at = (splitmix64(h) % offsets) as usize;
        &self.pool[at..at + len]
    }
}

/// CRC-32 over every payload of a stream, in order: the summary's `digest`.
///
/// Appending a payload by its CRC (zlib's `crc32_combine`) multiplies the
/// digest so far by x^(8·len) modulo the CRC polynomial, then adds the
/// payload's CRC. Done from scratch, that costs more than checking a 64-byte
/// payload's CRC (~100 ns a frame here); but a stream mostly repeats one
/// length (`--size 4K`), so once a length comes twice in a row the digest
/// keeps a table that multiplies by its x^(8·len) four bits at a time: 8
/// lookups a frame (~10 ns).
#[derive(Debug, Clone, Default)]
pub struct Digest {
    /// The CRC-32 so far.
    crc: u32,
    /// The last payload length added by its CRC, and its table once it repeats.
    len: u64,
    shift: Option<Box<Shift>>,
}

/// Multiplication by one x^(8·len) modulo the CRC-32 polynomial (reflected,
/// as CRCs are stored): `row[k][n]` is the product of nibble `n` at bit `4k`.
/// (Nibbles, not bytes: 512 bytes of table, within what a reader may allocate
/// while decoding; bytes would take 4 KiB for half the lookups.)
#[derive(Debug, Clone)]
struct Shift([[u32; 16]; 8]);

impl Shift {
    fn new(len: u64) -> Self {
        // x^(8·len) itself: "1" (x^0, the top bit when reflected) combined
        // with `len` zero bytes.
        let mut by = crc32fast::Hasher::new_with_initial_len(0x8000_0000, 0);
        by.combine(&crc32fast::Hasher::new_with_initial_len(0, len));
        // Bit j of a reflected value stands for x^(31-j): its product is
        // x^(8·len) times x^(31-j), each column the next one times x.
        let mut column = [0u32; 32];
        let mut v = by.finalize();
        for c in column.iter_mut().rev() {
            *c = v;
            v = (v >> 1) ^ ((v & 1).wrapping_neg() & 0xedb8_8320);
        }
        let mut rows = [[0u32; 16]; 8];
        for (k, row) in rows.iter_mut().enumerate() {
            for n in 1..16 {
                // Linear: nibble n is its lowest bit plus the rest.
                row[n] = row[n & (n - 1)] ^ column[4 * k + n.trailing_zeros() as usize];
            }
        }
        Shift(rows)
    }

    #[inline]
    fn apply(&self, crc: u32) -> u32 {
        let nibble = |k: usize| ((crc >> (4 * k)) & 0xf) as usize;
        self.0.iter().enumerate().fold(0, |p, (k, row)| p ^ row[nibble(k)])
    }
}

impl Digest {
    /// An empty digest.
    #[must_use]
    pub fn new() -> Self {
        Digest::default()
    }

    /// Appends a payload whose own CRC-32 is already known (no re-read).
    #[inline]
    pub fn add_crc(&mut self, crc: u32, len: u64) {
        if len == self.len {
            if let Some(shift) = &self.shift {
                self.crc = shift.apply(self.crc) ^ crc;
                return;
            }
            let shift = self.shift.insert(Box::new(Shift::new(len)));
            self.crc = shift.apply(self.crc) ^ crc;
            return;
        }
        self.add_crc_new_len(crc, len);
    }

    /// [`Digest::add_crc`] for a length other than the last one: out of line,
    /// so the repeated-length path above stays a few instructions.
    #[inline(never)]
    fn add_crc_new_len(&mut self, crc: u32, len: u64) {
        // A new length: zlib's combine from scratch (O(log len)).
        let mut digest = crc32fast::Hasher::new_with_initial_len(self.crc, 0);
        digest.combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
        self.crc = digest.finalize();
        (self.len, self.shift) = (len, None);
    }

    /// Appends payload bytes (for raw streams, which have no per-frame CRC).
    pub fn add_bytes(&mut self, bytes: &[u8]) {
        let mut digest = crc32fast::Hasher::new_with_initial(self.crc);
        digest.update(bytes);
        self.crc = digest.finalize();
    }

    /// The CRC-32 so far.
    #[must_use]
    pub fn value(&self) -> u32 {
        self.crc
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_ranges() {
        assert_eq!("4096".parse(), Ok(SizeSpec::fixed(4096)));
        assert_eq!("4K".parse(), Ok(SizeSpec::fixed(4096)));
        assert_eq!("0..70000".parse(), Ok(SizeSpec { min: 0, max: 70_000 }));
        assert_eq!("1K..16M".parse(), Ok(SizeSpec { min: 1024, max: 16 << 20 }));
        assert_eq!("5..2".parse::<SizeSpec>(), Err("5..2: MIN 5 is above MAX 2".to_string()));
        assert!("12Q".parse::<SizeSpec>().is_err());
        assert!("".parse::<SizeSpec>().is_err());
        assert!("8G".parse::<SizeSpec>().is_err());
    }

    #[test]
    fn payloads_depend_only_on_seed_and_seq_and_stay_in_range() {
        let size = SizeSpec { min: 10, max: 5000 };
        let (a, b, c) = (Generator::new(7, size), Generator::new(7, size), Generator::new(8, size));
        let mut differs = false;
        for seq in 0..1000 {
            let p = a.payload(seq);
            assert!((10..=5000).contains(&p.len()));
            assert_eq!(p, b.payload(seq));
            differs |= p != c.payload(seq);
        }
        assert!(differs, "another seed gives other payloads");
        assert_ne!(a.payload(1), a.payload(2));
    }

    #[test]
    fn fixed_size_payloads_are_the_slices_the_general_rule_picks() {
        for size in [0, 64, 4096, 65_536] {
            let g = Generator::new(5, SizeSpec::fixed(size));
            for seq in 0..2000 {
                // The general rule, written out: length min + h % 1, then an offset.
                let h = splitmix64(5 ^ splitmix64(seq));
                let offsets = (g.pool.len() - size) as u64 + 1;
                let at = (splitmix64(h) % offsets) as usize;
                assert_eq!(g.payload(seq), &g.pool[at..at + size]);
            }
        }
    }

    #[test]
    fn digest_by_combining_crcs_equals_crc_of_the_concatenation() {
        let parts: [&[u8]; 4] = [b"hello ", b"", b"world", &[0xff; 4096]];
        let mut by_crc = Digest::new();
        let mut by_bytes = Digest::new();
        let mut all = Vec::new();
        for p in parts {
            by_crc.add_crc(crate::frame::crc32(p), p.len() as u64);
            by_bytes.add_bytes(p);
            all.extend_from_slice(p);
        }
        assert_eq!(by_crc.value(), crate::frame::crc32(&all));
        assert_eq!(by_bytes.value(), by_crc.value());
        assert_eq!(Digest::new().to_string(), "00000000");
    }

    #[test]
    fn digest_of_repeated_and_changing_lengths_equals_crc_of_the_concatenation() {
        let pool = Generator::new(3, SizeSpec::fixed(5000));
        let mut digest = Digest::new();
        let mut all = crc32fast::Hasher::new();
        for seq in 0..600u64 {
            // Runs of one length (the table), lone lengths (from scratch),
            // empty payloads, and a few raw byte runs in between.
            let payload = match seq % 7 {
                0 => pool.payload(seq),
                1 => &[][..],
                _ => &pool.payload(seq / 50)[..=(seq / 50 * 37 % 5000) as usize],
            };
            all.update(payload);
            if seq % 11 == 0 {
                digest.add_bytes(payload);
            } else {
                digest.add_crc(crate::frame::crc32(payload), payload.len() as u64);
            }
            assert_eq!(digest.value(), all.clone().finalize(), "after payload {seq}");
        }
    }
}
