//! A lock-free latency histogram in microseconds: four linear buckets per power of two
//! (at most 25 % wide), so p99 near a millisecond is read to about ±100 µs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Values from 0 to 2^25 µs (33 s) get their own bucket; larger ones land in the last.
const TOP_EXPONENT: u32 = 25;
const BUCKETS: usize = 4 * TOP_EXPONENT as usize;

pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            max: AtomicU64::new(0),
        }
    }
}

/// A histogram's state, as published in `/state` (`buckets` lists only non-empty
/// buckets as `[upper bound µs, count]`, so two snapshots can be subtracted).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub buckets: Vec<(u64, u64)>,
}

fn bucket_of(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    let sub = (us >> (exp - 2)) & 3;
    (4 * (exp as usize - 1) + sub as usize).min(BUCKETS - 1)
}

/// Largest value that falls into bucket `i`.
fn upper_bound(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let exp = (i / 4 + 1) as u32;
    let sub = (i % 4) as u64;
    ((4 + sub + 1) << (exp - 2)) - 1
}

impl Histogram {
    pub fn record(&self, us: u64) {
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(u64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (upper_bound(i), c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect();
        HistogramSnapshot::from_buckets(buckets, self.max.load(Ordering::Relaxed))
    }
}

impl HistogramSnapshot {
    pub fn from_buckets(buckets: Vec<(u64, u64)>, max_us: u64) -> HistogramSnapshot {
        let count = buckets.iter().map(|(_, c)| c).sum();
        HistogramSnapshot {
            count,
            p50_us: quantile(&buckets, count, 0.50),
            p99_us: quantile(&buckets, count, 0.99),
            max_us,
            buckets,
        }
    }

    /// What was recorded between `earlier` and `self` (max is not known for the
    /// interval; the largest non-empty bucket's bound stands in for it).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let buckets: Vec<(u64, u64)> = self
            .buckets
            .iter()
            .map(|&(upper, c)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(u, _)| *u == upper)
                    .map_or(0, |(_, c)| *c);
                (upper, c.saturating_sub(before))
            })
            .filter(|(_, c)| *c > 0)
            .collect();
        let max = buckets.last().map_or(0, |(u, _)| *u);
        HistogramSnapshot::from_buckets(buckets, max)
    }
}

/// Upper bound of the bucket holding the `q` quantile.
fn quantile(buckets: &[(u64, u64)], count: u64, q: f64) -> u64 {
    if count == 0 {
        return 0;
    }
    let rank = ((count as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for &(upper, c) in buckets {
        seen += c;
        if seen >= rank {
            return upper;
        }
    }
    buckets.last().map_or(0, |(u, _)| *u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounds_hold_their_values() {
        for v in [
            0u64, 1, 3, 4, 5, 7, 8, 9, 15, 16, 100, 1000, 1023, 1024, 65_000,
        ] {
            let b = bucket_of(v);
            assert!(v <= upper_bound(b), "{v} above bucket {b}");
            if b > 0 {
                assert!(v > upper_bound(b - 1), "{v} belongs lower than {b}");
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_and_differences() {
        let h = Histogram::default();
        for _ in 0..98 {
            h.record(100);
        }
        h.record(5000);
        h.record(5000);
        let a = h.snapshot();
        assert_eq!(a.count, 100);
        assert!((100..=111).contains(&a.p50_us), "{a:?}");
        assert!((5000..=5631).contains(&a.p99_us), "{a:?}");
        assert_eq!(a.max_us, 5000);
        for _ in 0..10 {
            h.record(2000);
        }
        let d = h.snapshot().since(&a);
        assert_eq!(d.count, 10);
        assert!((2000..=2303).contains(&d.p50_us), "{d:?}");
    }
}
