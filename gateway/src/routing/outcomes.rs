//! Each deployment's recent outcomes, for `GET /model/health` (the console's Models page): the
//! calls that ended in the current and the previous minute, the failed ones, and the latencies
//! of the successful ones in fixed buckets. Recording costs one lock and a few additions per
//! call; a read is bounded (two minutes of [`LATENCY_BOUNDS_MS`] buckets).

use std::sync::Mutex;
use std::time::Duration;

/// The upper bounds of the latency buckets, in ms; the last takes everything slower. A
/// quantile is reported as the upper bound of the bucket it falls in.
pub const LATENCY_BOUNDS_MS: [u64; 22] = [
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    750,
    1_000,
    1_500,
    2_000,
    3_000,
    5_000,
    7_500,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    1_800_000,
    u64::MAX,
];

#[derive(Clone, Copy, Debug, Default)]
struct Minute {
    minute: u64,
    calls: u64,
    failures: u64,
    latencies: [u64; LATENCY_BOUNDS_MS.len()],
}

/// Two one-minute windows, indexed by the minute's parity.
#[derive(Debug, Default)]
pub struct Outcomes(Mutex<[Minute; 2]>);

/// The outcomes of the current and the previous minute together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeSnapshot {
    pub calls: u64,
    pub failures: u64,
    /// Median and 99th percentile latency of the successful calls (a bucket's upper bound, ms);
    /// `None` without one. `u64::MAX` means slower than the largest bound.
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

fn bucket(latency: Duration) -> usize {
    let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len() - 1)
}

/// The upper bound of the bucket holding the `per_mille`-th latency (nearest rank).
fn quantile(latencies: &[u64; LATENCY_BOUNDS_MS.len()], per_mille: u64) -> Option<u64> {
    let n: u64 = latencies.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = (n * per_mille).div_ceil(1000).max(1);
    let mut seen = 0;
    for (count, bound) in latencies.iter().zip(LATENCY_BOUNDS_MS) {
        seen += count;
        if seen >= rank {
            return Some(bound);
        }
    }
    LATENCY_BOUNDS_MS.last().copied()
}

impl Outcomes {
    /// A call ended in `minute` (minutes since the router's epoch): successful with its
    /// latency, or failed.
    pub fn record(&self, minute: u64, outcome: Result<Duration, ()>) {
        let Ok(mut windows) = self.0.lock() else { return };
        let w = &mut windows[(minute % 2) as usize];
        if w.minute != minute {
            *w = Minute { minute, ..Minute::default() };
        }
        w.calls += 1;
        match outcome {
            Ok(latency) => w.latencies[bucket(latency)] += 1,
            Err(()) => w.failures += 1,
        }
    }

    /// What ended in `minute` and the minute before it.
    pub fn snapshot(&self, minute: u64) -> OutcomeSnapshot {
        let Ok(windows) = self.0.lock() else { return OutcomeSnapshot::default() };
        let mut latencies = [0; LATENCY_BOUNDS_MS.len()];
        let mut out = OutcomeSnapshot::default();
        for w in windows.iter().filter(|w| w.minute == minute || w.minute + 1 == minute) {
            out.calls += w.calls;
            out.failures += w.failures;
            for (sum, n) in latencies.iter_mut().zip(w.latencies) {
                *sum += n;
            }
        }
        out.p50_ms = quantile(&latencies, 500);
        out.p99_ms = quantile(&latencies, 990);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets_of_the_last_two_minutes() {
        let o = Outcomes::default();
        for _ in 0..98 {
            o.record(10, Ok(Duration::from_millis(40)));
        }
        o.record(11, Ok(Duration::from_millis(2_400)));
        o.record(11, Ok(Duration::from_secs(3_600)));
        o.record(11, Err(()));
        let s = o.snapshot(11);
        assert_eq!((s.calls, s.failures, s.p50_ms, s.p99_ms), (101, 1, Some(50), Some(3_000)));
        // Minute 10 is gone two minutes on; only minute 11 is left.
        let later = o.snapshot(12);
        assert_eq!((later.calls, later.p50_ms, later.p99_ms), (3, Some(3_000), Some(u64::MAX)));
        o.record(12, Err(()));
        assert_eq!(o.snapshot(13), OutcomeSnapshot { calls: 1, failures: 1, p50_ms: None, p99_ms: None });
        assert_eq!(o.snapshot(20), OutcomeSnapshot::default());
    }
}
