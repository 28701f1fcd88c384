//! Percentiles over collected samples. Sans-IO.

use serde::Serialize;

/// p50 / p90 / p99 / p99.9 / max of a sample set, in the samples' unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) count: usize,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    #[serde(rename = "p99_9")]
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

/// Nearest-rank percentile of sorted samples: the smallest sample such that
/// at least `p` percent of the samples are at or below it. `None` when empty.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    // Less a hair: 0.999 * 1000 is 999.0000000000001 in floating point, and
    // its ceiling would skip the 999th sample.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[index])
}

impl Percentiles {
    /// Sorts `samples` in place and summarises them, divided by `scale`
    /// (e.g. 1000.0 to turn microseconds into milliseconds).
    pub(crate) fn from_samples(samples: &mut [u32], scale: f64) -> Self {
        Self::summarize(samples, f64::from, scale)
    }

    /// The same for samples that may be negative (differences).
    pub(crate) fn from_signed_samples(samples: &mut [i64], scale: f64) -> Self {
        Self::summarize(samples, |v| v as f64, scale)
    }

    fn summarize<T: Copy + Ord>(samples: &mut [T], to_f64: impl Fn(T) -> f64, scale: f64) -> Self {
        samples.sort_unstable();
        let at = |p| percentile(samples, p).map_or(0.0, |v| to_f64(v) / scale);
        Self {
            count: samples.len(),
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            p999: at(99.9),
            max: at(100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&samples, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
        // 1000 samples: p99 is the 990th.
        let samples: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 99.0), Some(990));
        assert_eq!(percentile(&samples, 99.9), Some(999));
    }

    #[test]
    fn summaries_sort_and_scale() {
        let mut samples = vec![3000, 1000, 2000, 100_000];
        let p = Percentiles::from_samples(&mut samples, 1000.0);
        assert_eq!(p.count, 4);
        assert_eq!(p.p50, 2.0);
        assert_eq!(p.p99, 100.0);
        assert_eq!(p.max, 100.0);
        assert_eq!(
            Percentiles::from_samples(&mut [], 1.0),
            Percentiles::default()
        );
        let mut thousand: Vec<u32> = (1..=1000).rev().map(|v| v * 1000).collect();
        let p = Percentiles::from_samples(&mut thousand, 1000.0);
        assert_eq!((p.p50, p.p90, p.p99, p.p999, p.max), (500.0, 900.0, 990.0, 999.0, 1000.0));
        let json = serde_json::to_value(p).expect("serializes");
        assert_eq!((json["p90"].as_f64(), json["p99_9"].as_f64()), (Some(900.0), Some(999.0)));
        let p = Percentiles::from_signed_samples(&mut [-2000, 5000, 1000], 1000.0);
        assert_eq!((p.p50, p.max), (1.0, 5.0));
    }
}
