//! Restart and retry delays: exponential, capped, reset by a long healthy run.

use std::time::Duration;

pub const FIRST_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// A run this long forgives earlier crashes.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// The delay before retry number `streak` (0 = the first retry after a failure): 1 s, 2 s,
/// 4 s, ... capped at 5 min.
pub fn delay(streak: u32) -> Duration {
    let factor = 1u64.checked_shl(streak.min(32)).unwrap_or(u64::MAX);
    FIRST_DELAY
        .checked_mul(factor.min(u32::MAX as u64) as u32)
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

/// After a run that lasted `ran`, with `streak` crashes in a row before it: the delay before
/// the restart, and the streak the restart carries. A long run forgives earlier crashes.
pub fn restart_after(streak: u32, ran: Duration) -> (Duration, u32) {
    let streak = if ran >= RESET_AFTER { 0 } else { streak };
    (delay(streak), streak.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap() {
        let d: Vec<u64> = (0..12).map(|s| delay(s).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn long_run_resets() {
        assert_eq!(restart_after(7, Duration::from_secs(601)), (FIRST_DELAY, 1));
        assert_eq!(
            restart_after(7, Duration::from_secs(5)),
            (Duration::from_secs(128), 8)
        );
        assert_eq!(
            restart_after(u32::MAX, Duration::ZERO),
            (MAX_DELAY, u32::MAX)
        );
    }
}
