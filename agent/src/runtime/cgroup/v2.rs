//! The cgroup v2 driver: one unified hierarchy under the root, controllers enabled downwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::model::Resources;

use super::{DevicePolicy, keyed_value, wait_until, write};
use crate::runtime::devices::{DEFAULT_RULES, attach, compile};
use crate::runtime::error::{Result, RuntimeError};

pub const CPU_PERIOD_US: u64 = 100_000;
const WANTED: &[&str] = &["memory", "cpu", "pids"];

pub(super) fn create(root: &Path, rel: &str) -> Result<()> {
    let leaf = root.join(rel);
    // Enable the controllers we use in every ancestor's subtree_control, top down.
    let mut dir = root.to_path_buf();
    for part in Path::new(rel).iter() {
        enable_controllers(&dir)?;
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(RuntimeError::Cgroup {
                    path: dir,
                    reason: format!("cannot create: {e}"),
                });
            }
        }
    }
    debug_assert_eq!(dir, leaf);
    Ok(())
}

fn enable_controllers(dir: &Path) -> Result<()> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = WANTED
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .filter(|c| !enabled.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&dir.join("cgroup.subtree_control"), &missing.join(" "))
}

pub(super) fn apply(dir: &Path, r: &Resources) -> Result<()> {
    let set = |file: &str, value: String, wanted: bool| -> Result<()> {
        let path = dir.join(file);
        if !path.exists() {
            if wanted {
                return Err(RuntimeError::Cgroup {
                    path,
                    reason: "controller not available in this cgroup".into(),
                });
            }
            return Ok(());
        }
        write(&path, &value)
    };
    set(
        "memory.max",
        r.memory
            .map(|m| m.to_string())
            .unwrap_or_else(|| "max".into()),
        r.memory.is_some(),
    )?;
    if r.memory.is_some() {
        // As Docker without --memory-swap: no swap beyond the limit.
        let _ = set("memory.swap.max", "0".into(), false);
    }
    let quota = r
        .millicpus
        .map(|m| (m as u64 * CPU_PERIOD_US / 1000).max(1000).to_string())
        .unwrap_or_else(|| "max".into());
    set(
        "cpu.max",
        format!("{quota} {CPU_PERIOD_US}"),
        r.millicpus.is_some(),
    )?;
    set(
        "pids.max",
        r.pids
            .map(|p| p.to_string())
            .unwrap_or_else(|| "max".into()),
        r.pids.is_some(),
    )?;
    Ok(())
}

pub(super) fn set_devices(dir: &Path, policy: DevicePolicy<'_>) -> Result<()> {
    let DevicePolicy::Allow(extra) = policy else {
        return Ok(());
    };
    let rules: Vec<_> = DEFAULT_RULES.iter().chain(extra).copied().collect();
    let fd = std::fs::File::open(dir).map_err(|e| RuntimeError::Cgroup {
        path: dir.to_path_buf(),
        reason: format!("cannot open: {e}"),
    })?;
    attach(&fd, &compile(&rules)).map_err(|e| RuntimeError::Cgroup {
        path: dir.to_path_buf(),
        reason: format!("cannot attach the device filter: {e}"),
    })
}

/// What `cgroup.freeze` is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freezer {
    Frozen,
    Thawed,
}

pub(super) fn freeze(dir: &Path, want: Freezer, timeout: Duration) -> Result<()> {
    let (value, verb) = match want {
        Freezer::Frozen => ("1", "freeze"),
        Freezer::Thawed => ("0", "thaw"),
    };
    write(&dir.join("cgroup.freeze"), value)?;
    let what = format!("{} to {verb}", dir.display());
    wait_until(timeout, &what, || {
        is_frozen(dir) == (want == Freezer::Frozen)
    })
}

pub(super) fn is_frozen(dir: &Path) -> bool {
    keyed_value(&dir.join("cgroup.events"), "frozen") == Some(1)
}

/// Writes cgroup.kill; `false` when this kernel has none (before 5.14).
pub(super) fn kill(dir: &Path) -> Result<bool> {
    let p: PathBuf = dir.join("cgroup.kill");
    if !p.exists() {
        return Ok(false);
    }
    write(&p, "1")?;
    Ok(true)
}

pub(super) fn oom_kills(dir: &Path) -> u64 {
    keyed_value(&dir.join("memory.events"), "oom_kill").unwrap_or(0)
}
