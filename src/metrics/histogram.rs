//! A histogram of durations in fixed buckets, each an atomic: observing is a few compares
//! and two relaxed increments, with no lock; a scrape adds the buckets up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{MetricEncoder, NoLabelSet as NoLabels};

/// Upper bounds of the buckets, in microseconds: a TLS handshake takes from about a
/// millisecond (loopback) to a few hundred (a far client); the last ones catch stalls up
/// to the handshake timeout.
const BOUNDS_US: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// Durations counted by bucket (not cumulative; the last slot is above every bound).
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Counts one duration.
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let slot = BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The sum in seconds, the count, and the cumulative buckets (upper bound in
    /// seconds, count) as the exposition wants them, `+Inf` last.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = BOUNDS_US
                .get(i)
                .map_or(f64::INFINITY, |us| *us as f64 / 1e6);
            buckets.push((bound, cumulative));
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, cumulative, buckets)
    }

    pub(super) fn encode(&self, mut encoder: MetricEncoder<'_>) -> std::fmt::Result {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabels>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_in_seconds() {
        let h = Histogram::default();
        for ms in [0, 1, 2, 30, 20_000] {
            h.observe(Duration::from_millis(ms));
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 5);
        assert!((sum - 20.033).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.001, 2), "0 and 1 ms are within 1 ms");
        assert_eq!(buckets[1], (0.0025, 3));
        assert_eq!(buckets[5], (0.05, 4));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 5)));
    }
}
