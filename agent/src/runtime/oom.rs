//! The OOM killer's view of container processes.
//!
//! The agent runs with `OOMScoreAdjust=-500` (systemd/berth.service) so that memory pressure
//! takes containers before the agent that restarts them; every process berth starts inside a
//! container (its init, `berth exec`) would inherit that and be spared before host services.
//! Each one resets its own score first, as Docker's containers start at 0 under a -500 dockerd.

use std::io;

/// The score a container's processes start with (the kernel's neutral value).
pub const CONTAINER_SCORE: i32 = 0;

/// Sets the calling process's `oom_score_adj` (raising it needs no privilege).
pub fn set_own_score(score: i32) -> io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", score.to_string())
}
