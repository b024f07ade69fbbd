//! Percentiles over a sorted copy of the samples: the runs are small enough
//! (thousands) that keeping every sample is cheaper than reasoning about a
//! histogram's bucket error at sub-millisecond resolution.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Samples {
    sorted: Vec<f64>,
}

impl Samples {
    /// Milliseconds, from raw durations.
    pub fn from_durations(d: &[Duration]) -> Self {
        Self::from_ms(d.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    pub fn from_ms(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        Self { sorted: ms }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Nearest-rank percentile (`q` in 0..=100); NaN when empty so a missing
    /// figure shows up in the report instead of a fake zero.
    pub fn pct(&self, q: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = (q / 100.0 * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn p50(&self) -> f64 {
        self.pct(50.0)
    }

    pub fn p90(&self) -> f64 {
        self.pct(90.0)
    }

    pub fn p99(&self) -> f64 {
        self.pct(99.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s = Samples::from_ms((1..=100).rev().map(f64::from).collect());
        assert_eq!(s.p50(), 50.0);
        assert_eq!(s.p99(), 99.0);
        assert_eq!(s.pct(100.0), 100.0);
        assert_eq!(s.pct(0.0), 1.0);
        assert!(Samples::default().p50().is_nan());
    }
}
