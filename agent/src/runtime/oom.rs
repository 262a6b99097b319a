//! The OOM killer's view of container processes.
//!
//! The agent runs with `OOMScoreAdjust=-500` (systemd/berth.service) so that memory pressure
//! takes containers before the agent that restarts them; every process berth starts inside a
//! container (its init, `berth exec`) would inherit that and be spared before host services.
//! Each one resets its own score first, as Docker's containers start at 0 under a -500 dockerd.

use std::io;

/// The score a container's processes start with (the kernel's neutral value).
pub const CONTAINER_SCORE: i32 = 0;

const PATH: &str = "/proc/self/oom_score_adj";

/// Sets the calling process's `oom_score_adj`. Raising it needs no privilege; lowering it below
/// what a privileged ancestor set needs CAP_SYS_RESOURCE, and without it a higher score stays:
/// the process is more likely to be killed, never spared.
pub fn set_own_score(score: i32) -> io::Result<()> {
    match std::fs::write(PATH, score.to_string()) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && own_score()? > score => Ok(()),
        r => r,
    }
}

fn own_score() -> io::Result<i32> {
    std::fs::read_to_string(PATH)?
        .trim()
        .parse()
        .map_err(io::Error::other)
}
