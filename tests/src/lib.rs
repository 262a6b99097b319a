//! Support for berth's end-to-end tests: the binary under test, privileges, unique names.
//!
//! # Layout
//! - [`image`]: building OCI / Docker images in code (busybox rootfs, whiteouts, hostile tars).
//! - [`registry`]: the shared test registries and pushing to them.
//! - [`proxy`]: a fault proxy in front of a registry.
//! - [`tree`]: snapshots of root filesystems, overlay stacking, umoci as the reference unpacker.
//! - [`berth_env`]: a state dir and config for running `berth` against the test registries.
//! - [`tmpfs`]: a size-limited tmpfs over a state dir (disk-full faults).
//! - [`outsider`]: what a local user who is not root reaches (uid 65534 probes).
//! - [`gitrepo`]: a spec repository served by `git daemon`, with signed and unsigned commits.
//! - [`probe`]: the C probes tests run inside containers.
//! - [`podman`]: the peer, for tests that match its behaviour.

pub mod berth_env;
pub mod gitrepo;
pub mod image;
pub mod outsider;
pub mod podman;
pub mod probe;
pub mod proxy;
pub mod registry;
pub mod tmpfs;
pub mod tree;

pub mod agent;
pub mod fixtures;
/// A real MQTT broker (mosquitto) and a real Prometheus, for the fleet reporting tests.
pub mod mqtt;
pub mod prometheus;

use std::path::PathBuf;

/// The `berth` binary cargo built for this test run.
pub fn berth_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_BIN") {
        return PathBuf::from(p);
    }
    // tests/ lives beside agent/ in the workspace; the binary is in the shared target dir.
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe.ancestors().nth(2).expect("target dir").to_path_buf();
    target.join("berth")
}

/// Privileged tests never pass silently: without root they fail unless the run says to skip.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("BERTH_SKIP_PRIVILEGED").is_some() {
        eprintln!("skipping: needs root (BERTH_SKIP_PRIVILEGED is set)");
        return false;
    }
    panic!("this test needs root; run as root or set BERTH_SKIP_PRIVILEGED=1 to skip it");
}

/// A short name unique to this test process and call, usable as an instance name.
pub fn unique_instance(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed) & 0xfff;
    // `bt` marks the suite's objects for the final leak check (tests/setup/leak-check); 3
    // characters of the prefix and 7 hex of pid and counter keep it within 12 and unique.
    let prefix: String = prefix.chars().take(3).collect();
    format!("bt{prefix}{:x}", ((std::process::id() & 0xffff) << 12) | n)
}
