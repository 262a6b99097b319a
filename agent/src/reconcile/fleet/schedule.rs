//! When the source fetches next: every `interval` plus a per-host jitter (a fleet must not
//! poll its remote in step), and after failures a backoff that doubles, so a dead remote is
//! not hammered and a flapping one is retried soon.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// The first retry after a failure waits at most this long.
const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Retries never wait longer than this, or than `interval` when that is longer.
const MAX_RETRY: Duration = Duration::from_secs(600);

/// A fraction in [0, 1) from the host id and a counter: spreads hosts, stable per host.
fn spread(host_id: &str, n: u64) -> f64 {
    let d = Sha256::new()
        .chain_update(host_id.as_bytes())
        .chain_update(n.to_be_bytes())
        .finalize();
    let x = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before poll `n` (counting from 0) after a successful one: `interval` plus up to a
/// fifth of it.
pub fn poll_delay(interval: Duration, host_id: &str, n: u64) -> Duration {
    interval + interval.mul_f64(0.2 * spread(host_id, n))
}

/// The wait after `failures` failures in a row (at least 1): 10 s (or `interval`, if
/// shorter), doubling, capped at the larger of 10 minutes and `interval`; plus up to a fifth.
pub fn retry_delay(interval: Duration, failures: u32, host_id: &str, n: u64) -> Duration {
    let first = FIRST_RETRY.min(interval);
    let cap = MAX_RETRY.max(interval);
    let doubled = first.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let base = doubled.min(cap);
    base + base.mul_f64(0.2 * spread(host_id, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn polls_spread_within_a_fifth() {
        let mut delays: Vec<Duration> = (0..1000)
            .map(|i| poll_delay(MIN, &format!("host-{i}"), 0))
            .collect();
        assert!(delays.iter().all(|d| *d >= MIN && *d < MIN + MIN / 5));
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 990, "hosts land on distinct instants");
        // Stable for a host and a poll number.
        assert_eq!(poll_delay(MIN, "h", 3), poll_delay(MIN, "h", 3));
        assert_ne!(poll_delay(MIN, "h", 3), poll_delay(MIN, "h", 4));
    }

    #[test]
    fn retries_double_up_to_the_cap() {
        let base = |f| {
            let d = retry_delay(MIN, f, "h", 0);
            // Strip the jitter: it is below a fifth.
            (d.as_secs_f64() / 1.2, d.as_secs_f64())
        };
        let (lo, hi) = base(1);
        assert!(lo <= 10.0 && hi >= 10.0, "{lo} {hi}");
        let (lo, hi) = base(2);
        assert!(lo <= 20.0 && hi >= 20.0);
        for f in [7u32, 30, 1000] {
            let (lo, hi) = base(f);
            assert!(lo <= 600.0 && hi >= 600.0, "{f}: {lo} {hi}");
        }
        // A long interval caps retries at the interval; a short one starts there.
        let d = retry_delay(Duration::from_secs(3600), 40, "h", 0);
        assert!(d >= Duration::from_secs(3600) && d < Duration::from_secs(4320));
        let d = retry_delay(Duration::from_secs(2), 1, "h", 0);
        assert!(d >= Duration::from_secs(2) && d < Duration::from_millis(2400));
        // Never below the previous failure's wait.
        let mut last = Duration::ZERO;
        for f in 1..40 {
            let d = retry_delay(MIN, f, "h", 0);
            assert!(d.as_secs_f64() * 1.0001 >= last.as_secs_f64() / 1.2, "{f}");
            last = d;
        }
    }
}
