//! Latency samples and their percentiles.
//!
//! A plain vector of nanosecond samples, sorted once when percentiles are asked for. At the
//! rates a 2-core loopback run reaches (well under a million round trips per measurement)
//! this is exact and cheap; the sample cap keeps memory bounded whatever happens.

use std::time::Duration;

/// At most this many samples are kept (80 MB of `u32`s); later ones are counted but dropped.
const MAX_SAMPLES: usize = 20_000_000;

/// Round-trip times in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    samples: Vec<u32>,
    sorted: bool,
    dropped: u64,
}

impl Histogram {
    /// Records one round trip; times above ~4.3 s are clamped.
    pub fn record(&mut self, d: Duration) {
        if self.samples.len() >= MAX_SAMPLES {
            self.dropped += 1;
            return;
        }
        let ns = u32::try_from(d.as_nanos()).unwrap_or(u32::MAX);
        self.samples.push(ns);
        self.sorted = false;
    }

    /// Adds every sample of `other` (e.g. another connection or another round).
    pub fn merge(&mut self, other: &Histogram) {
        let room = MAX_SAMPLES.saturating_sub(self.samples.len());
        let take = room.min(other.samples.len());
        self.samples.extend_from_slice(&other.samples[..take]);
        self.dropped += other.dropped + (other.samples.len() - take) as u64;
        self.sorted = false;
    }

    /// How many samples were recorded, including any dropped over the cap.
    pub fn count(&self) -> u64 {
        self.samples.len() as u64 + self.dropped
    }

    /// The `q`-quantile (0.0..=1.0) in microseconds, nearest-rank; `None` without samples.
    pub fn quantile_us(&mut self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
        let n = self.samples.len();
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
        let idx = rank.saturating_sub(1).min(n - 1);
        Some(f64::from(self.samples[idx]) / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut h = Histogram::default();
        for us in (1..=1000).rev() {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.quantile_us(0.5), Some(500.0));
        assert_eq!(h.quantile_us(0.99), Some(990.0));
        assert_eq!(h.quantile_us(0.999), Some(999.0));
        assert_eq!(h.quantile_us(1.0), Some(1000.0));
    }

    #[test]
    fn merge_keeps_both_sides() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(30));
        b.record(Duration::from_micros(20));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.quantile_us(0.5), Some(20.0));
    }

    #[test]
    fn empty_has_no_quantile() {
        assert_eq!(Histogram::default().quantile_us(0.5), None);
    }
}
