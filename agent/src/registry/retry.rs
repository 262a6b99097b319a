//! Retry timing: exponential backoff with full jitter, and which HTTP statuses are worth a retry.

use std::time::Duration;

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt 0 is the first retry), given a random
    /// fraction in [0, 1): "full jitter", so many clients retrying at once spread out.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        // Never zero: a floor of a tenth of the ceiling keeps a retry from hammering.
        let floor = ceiling / 10;
        floor + (ceiling - floor).mul_f64(random.clamp(0.0, 1.0))
    }

    /// The delay for `attempt` with fresh randomness; a server's `Retry-After` wins when longer.
    pub fn delay_now(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let d = self.delay(attempt, random_fraction());
        match retry_after {
            Some(r) if r > d => r.min(self.max.max(d)),
            _ => d,
        }
    }
}

/// Statuses that mean "try again later": 408, 429 and 5xx except 501 and 505.
pub fn status_is_transient(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..600).contains(&status) && !matches!(status, 501 | 505)
}

fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_and_caps() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay(10, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(40, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(0, 0.0), Duration::from_millis(10));
    }

    #[test]
    fn retry_after_wins_within_reason() {
        let p = RetryPolicy::default();
        let d = p.delay_now(0, Some(Duration::from_secs(3)));
        assert_eq!(d, Duration::from_secs(3));
        let d = p.delay_now(0, Some(Duration::from_secs(3600)));
        assert_eq!(d, p.max);
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status_is_transient(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 416, 501, 505] {
            assert!(!status_is_transient(s), "{s}");
        }
    }

    proptest! {
        #[test]
        fn delay_within_bounds(attempt in 0u32..100, r in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            let d = p.delay(attempt, r);
            prop_assert!(d <= p.max);
            prop_assert!(d >= p.base / 10 || d >= p.max / 10);
            prop_assert!(p.delay(attempt, r) <= p.delay(attempt + 1, r) || p.delay(attempt, r) == p.max);
        }
    }
}
