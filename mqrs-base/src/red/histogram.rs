//! Durations in exponential buckets: OpenTelemetry's base-2 exponential histogram at scale 3.
//! Bucket `i` holds the durations in `(2^(i/8), 2^((i+1)/8)]` seconds; neighbouring bounds
//! differ by 9.05 %, so a percentile read at its bucket's geometric middle is within 4.4 % of
//! the true value. Only the buckets between the smallest and the largest one used are kept.

/// The histogram's scale in OpenTelemetry's terms: `2^SCALE` buckets per doubling.
pub const SCALE: i32 = 3;
/// The lowest bucket kept: anything at or below 2^-20 s (about 0.95 µs) is counted in it.
pub const MIN_INDEX: i32 = -160;
/// The highest bucket kept: anything above 2^7 s (128 s) is counted in it.
pub const MAX_INDEX: i32 = 55;
/// Largest relative error of a percentile read from these buckets (half a bucket, geometric).
pub const RELATIVE_ERROR: f64 = 0.0443;

/// Mantissas (the 52 bits below the leading one) of `2^(j/8)` for `j` in `0..8`.
const THRESHOLDS: [u64; 8] = {
    // 2^(j/8) for j in 0..8, written out: const fn cannot compute powers of floats.
    let roots = [
        1.0,
        1.090_507_732_665_257_7,
        1.189_207_115_002_721,
        1.296_839_554_651_009_6,
        std::f64::consts::SQRT_2,
        1.542_210_825_407_940_8,
        1.681_792_830_507_429,
        1.834_008_086_409_342_5,
    ];
    let mut out = [0u64; 8];
    let mut j = 0;
    while j < 8 {
        let bits: u64 = f64::to_bits(roots[j]);
        out[j] = bits & ((1u64 << 52) - 1);
        j += 1;
    }
    out
};

/// The bucket of a duration of `ns` nanoseconds, clamped to `MIN_INDEX..=MAX_INDEX`.
pub fn index_of(ns: u64) -> i32 {
    if ns == 0 {
        return MIN_INDEX;
    }
    let v = ns as f64 * 1e-9;
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mantissa = bits & ((1u64 << 52) - 1);
    // Upper bounds are inclusive: a value exactly 2^(j/8) ends bucket j-1.
    let within = THRESHOLDS.iter().filter(|&&t| mantissa > t).count() as i32 - 1;
    (exp * (1 << SCALE) + within).clamp(MIN_INDEX, MAX_INDEX)
}

/// The lower bound of bucket `index`, in seconds.
pub fn lower_bound(index: i32) -> f64 {
    (f64::from(index) / f64::from(1 << SCALE)).exp2()
}

/// The geometric middle of bucket `index` in nanoseconds: the value a percentile that falls
/// in it is read as.
pub fn middle_ns(index: i32) -> u64 {
    ((f64::from(index) + 0.5) / f64::from(1 << SCALE))
        .exp2()
        .mul_add(1e9, 0.5) as u64
}

/// Counts per bucket over the span of buckets used so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buckets {
    /// Index of `counts[0]`.
    lo: i32,
    counts: Vec<u32>,
}

impl Buckets {
    /// Bytes this holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * 4
    }

    /// The index of the first bucket held, and the counts from there on.
    pub fn parts(&self) -> (i32, &[u32]) {
        (self.lo, &self.counts)
    }

    /// Counts `n` in bucket `index`. With `grow` false and `index` outside the buckets held,
    /// the nearest held bucket counts it (the memory bound is reached); the returned bytes
    /// are what the buckets grew by.
    pub fn add(&mut self, index: i32, n: u32, grow: bool) -> usize {
        if self.counts.is_empty() {
            if !grow {
                return 0;
            }
            self.lo = index;
            self.counts.push(n);
            return self.heap_bytes();
        }
        let hi = self.lo + self.counts.len() as i32 - 1;
        let before = self.heap_bytes();
        let index = if grow {
            if index < self.lo {
                let more = (self.lo - index) as usize;
                self.counts.splice(0..0, std::iter::repeat_n(0, more));
                self.lo = index;
            } else if index > hi {
                self.counts
                    .resize(self.counts.len() + (index - hi) as usize, 0);
            }
            index
        } else {
            index.clamp(self.lo, hi)
        };
        let slot = &mut self.counts[(index - self.lo) as usize];
        *slot = slot.saturating_add(n);
        self.heap_bytes() - before
    }

    /// Adds every count of `other`; returns the bytes grown by.
    pub fn merge(&mut self, other: &Buckets, grow: bool) -> usize {
        let mut grew = 0;
        for (i, &n) in other.counts.iter().enumerate() {
            if n > 0 {
                grew += self.add(other.lo + i as i32, n, grow);
            }
        }
        grew
    }

    /// The 1-based `rank`-th smallest value's bucket, if there are that many.
    pub fn bucket_of_rank(&self, rank: u64) -> Option<i32> {
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(self.lo + i as i32);
            }
        }
        None
    }
}

/// Classic (Prometheus) bucket bounds in seconds, kept exactly beside the exponential ones.
pub const CLASSIC_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The classic bounds in nanoseconds.
const CLASSIC_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The classic bucket of `ns`: the first bound at or above it, or 16 for `+Inf`.
pub fn classic_index(ns: u64) -> usize {
    CLASSIC_NS.partition_point(|&b| b < ns)
}

/// [`classic_index`] of `ns` that lies in exponential bucket `index`, by one look-up and one
/// comparison: a bucket (9 % wide) holds at most one classic bound (they are 2x or more apart),
/// so `ns` is in the classic bucket of the bucket's lower bound or the next one.
pub fn classic_index_in(index: i32, ns: u64) -> usize {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (MIN_INDEX..=MAX_INDEX)
            .map(|i| {
                let lo = if i == MIN_INDEX {
                    0
                } else {
                    (lower_bound(i) * 1e9) as u64
                };
                classic_index(lo.saturating_add(1)) as u8
            })
            .collect()
    });
    let i = usize::try_from(index - MIN_INDEX).unwrap_or(0);
    let t = table
        .get(i)
        .map_or_else(|| classic_index(ns), |&t| usize::from(t));
    if t < CLASSIC_NS.len() && ns > CLASSIC_NS[t] {
        t + 1
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_opentelemetry_scale_3() {
        // 1 s is exactly 2^0: the upper bound of bucket -1.
        assert_eq!(index_of(1_000_000_000), -1);
        assert_eq!(index_of(1_000_000_001), 0);
        // 2 s = 2^1 ends bucket 7; 1.1 s is above 2^(1/8) = 1.0905.
        assert_eq!(index_of(2_000_000_000), 7);
        assert_eq!(index_of(1_100_000_000), 1);
        assert_eq!(index_of(1_090_000_000), 0);
        // 1 ms = 2^-9.966: floor(8 * -9.966) = -80.
        assert_eq!(index_of(1_000_000), -80);
        assert_eq!(index_of(0), MIN_INDEX);
        assert_eq!(index_of(1), MIN_INDEX);
        assert_eq!(index_of(u64::MAX), MAX_INDEX);
        // Every value lies in its bucket's bounds.
        for ns in (1..2_000_000u64).step_by(997) {
            let i = index_of(ns);
            if i == MIN_INDEX {
                continue;
            }
            let v = ns as f64 * 1e-9;
            assert!(lower_bound(i) < v * (1.0 + 1e-12) && v <= lower_bound(i + 1) * (1.0 + 1e-12));
            let mid = middle_ns(i) as f64;
            assert!(
                (mid - ns as f64).abs() / ns as f64 <= RELATIVE_ERROR + 1e-3,
                "{ns}"
            );
        }
    }

    #[test]
    fn buckets_grow_both_ways_or_clamp_when_told_not_to() {
        let mut b = Buckets::default();
        assert!(b.add(5, 1, true) > 0);
        b.add(2, 2, true);
        b.add(9, 1, true);
        assert_eq!(b.parts(), (2, &[2, 0, 0, 1, 0, 0, 0, 1][..]));
        b.add(20, 1, false);
        b.add(-3, 1, false);
        assert_eq!(b.parts(), (2, &[3, 0, 0, 1, 0, 0, 0, 2][..]));
        assert_eq!(b.bucket_of_rank(3), Some(2));
        assert_eq!(b.bucket_of_rank(4), Some(5));
        assert_eq!(b.bucket_of_rank(7), None);
        let mut c = Buckets::default();
        c.merge(&b, true);
        assert_eq!(c, b);
    }

    #[test]
    fn the_classic_bucket_found_through_the_exponential_one_is_the_same() {
        let mut ns = 1u64;
        while ns < 400_000_000_000 {
            for n in [ns - 1, ns, ns + 1] {
                assert_eq!(classic_index_in(index_of(n), n), classic_index(n), "{n}");
            }
            ns = ns * 21 / 20 + 1;
        }
        for b in CLASSIC_NS {
            for n in [b - 1, b, b + 1] {
                assert_eq!(classic_index_in(index_of(n), n), classic_index(n), "{n}");
            }
        }
    }

    #[test]
    fn classic_buckets_are_upper_inclusive() {
        assert_eq!(classic_index(100_000), 0);
        assert_eq!(classic_index(100_001), 1);
        assert_eq!(classic_index(10_000_000_001), 16);
        assert_eq!(classic_index(0), 0);
    }
}
