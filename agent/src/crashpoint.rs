//! Named crash points for crash-safety tests: `BERTH_CRASH_AT=create.netns` makes the agent
//! kill itself with SIGKILL when it reaches that step, so a test can prove that a restart from
//! exactly there converges with nothing leaked. `BERTH_CRASH_AT=create.netns:3` crashes on
//! the third time the point is reached. Unset (always, outside tests), a point costs one
//! relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

struct Armed {
    name: String,
    nth: u32,
    seen: AtomicU32,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("BERTH_CRASH_AT")
                .ok()
                .filter(|s| !s.is_empty())?;
            let (name, nth) = match spec.rsplit_once(':') {
                Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                name,
                nth,
                seen: AtomicU32::new(0),
            })
        })
        .as_ref()
}

/// Dies here, as `kill -9` would, if this point is armed.
pub fn point(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && a.seen.fetch_add(1, Ordering::Relaxed) + 1 == a.nth
    {
        eprintln!("berth: crash point {name} reached: SIGKILL");
        // SAFETY: raising a signal on ourselves has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

/// Every crash point berth has, for tests that iterate over them.
pub const POINTS: &[&str] = &[
    "pull.blob",
    "pull.commit",
    "create.record",
    "create.network",
    "create.runtime",
    "create.started",
    "remove.runtime",
    "remove.network",
    "remove.record",
];
