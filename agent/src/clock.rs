//! The agent's clock for durations: CLOCK_BOOTTIME, which keeps counting across agent restarts
//! within a boot and never jumps when the wall clock is set.

use crate::reconcile::Millis;

pub fn now() -> Millis {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME");
    Millis(ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000)
}

/// The tokio instant at which the boot clock reads `at`.
pub fn instant_of(at: Millis) -> tokio::time::Instant {
    tokio::time::Instant::now() + at.since(now())
}
