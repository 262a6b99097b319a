//! The cgroup v1 driver: one directory per controller under the root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::model::Resources;

use super::{DevicePolicy, keyed_value, wait_until, write};
use crate::runtime::devices::DEFAULT_RULES;
use crate::runtime::error::{Result, RuntimeError};

/// Controllers a container's cgroup spans.
const CONTROLLERS: &[&str] = &["memory", "cpu", "pids", "freezer", "devices"];
pub const CFS_PERIOD_US: u64 = 100_000;

pub(super) fn hierarchies(root: &Path) -> Vec<PathBuf> {
    CONTROLLERS
        .iter()
        .map(|c| root.join(c))
        .filter(|p| p.is_dir())
        .collect()
}

/// The hierarchies a container's cgroup spans, by the controller set each is mounted with
/// (`cpu,cpuacct` where `cpu` is a link to a co-mounted hierarchy), each once.
pub(super) fn mount_names(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in hierarchies(root) {
        let name = std::fs::read_link(&h)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            .or_else(|| h.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

pub(super) fn freezer_dir(root: &Path) -> PathBuf {
    root.join("freezer")
}

pub(super) fn devices_dir(root: &Path) -> PathBuf {
    root.join("devices")
}

pub(super) fn create(root: &Path, rel: &str) -> Result<()> {
    let hs = hierarchies(root);
    if !hs.iter().any(|h| h.ends_with("freezer")) {
        return Err(RuntimeError::Cgroup {
            path: root.to_path_buf(),
            reason: "no v1 freezer hierarchy: cannot pause or kill reliably".into(),
        });
    }
    for h in hs {
        let d = h.join(rel);
        std::fs::create_dir_all(&d).map_err(|e| RuntimeError::Cgroup {
            path: d.clone(),
            reason: format!("cannot create: {e}"),
        })?;
    }
    Ok(())
}

pub(super) fn apply(root: &Path, rel: &str, r: &Resources) -> Result<()> {
    let mem = root.join("memory").join(rel);
    if mem.is_dir() {
        let limit = r
            .memory
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-1".into());
        // memsw must stay >= the memory limit: lift it first, set it last.
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, "-1")?;
        }
        write(&mem.join("memory.limit_in_bytes"), &limit)?;
        if memsw.exists() && r.memory.is_some() {
            write(&memsw, &limit)?;
        }
    } else if r.memory.is_some() {
        return Err(missing(root, "memory"));
    }
    let cpu = root.join("cpu").join(rel);
    if cpu.is_dir() {
        write(&cpu.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
        let quota = r
            .millicpus
            .map(|m| (m as u64 * CFS_PERIOD_US / 1000).max(1000).to_string())
            .unwrap_or_else(|| "-1".into());
        write(&cpu.join("cpu.cfs_quota_us"), &quota)?;
    } else if r.millicpus.is_some() {
        return Err(missing(root, "cpu"));
    }
    let pids = root.join("pids").join(rel);
    if pids.is_dir() {
        let max = r
            .pids
            .map(|p| p.to_string())
            .unwrap_or_else(|| "max".into());
        write(&pids.join("pids.max"), &max)?;
    } else if r.pids.is_some() {
        return Err(missing(root, "pids"));
    }
    Ok(())
}

fn missing(root: &Path, c: &str) -> RuntimeError {
    RuntimeError::Cgroup {
        path: root.join(c),
        reason: format!("the {c} controller is not mounted"),
    }
}

pub(super) fn set_devices(dir: &Path, policy: DevicePolicy<'_>) -> Result<()> {
    if !dir.is_dir() {
        return Err(RuntimeError::Cgroup {
            path: dir.to_path_buf(),
            reason: "no v1 devices hierarchy: device access cannot be limited".into(),
        });
    }
    match policy {
        DevicePolicy::All => write(&dir.join("devices.allow"), "a"),
        DevicePolicy::Allow(extra) => {
            write(&dir.join("devices.deny"), "a")?;
            for r in DEFAULT_RULES.iter().chain(extra) {
                write(&dir.join("devices.allow"), &r.v1_line())?;
            }
            Ok(())
        }
    }
}

pub(super) fn freeze(dir: &Path, timeout: Duration) -> Result<()> {
    let state = dir.join("freezer.state");
    // The v1 freezer is asynchronous: FREEZING until every task stops; re-writing nudges tasks
    // that were forking while the first write went through.
    wait_until(timeout, &format!("{} to freeze", dir.display()), || {
        let _ = std::fs::write(&state, "FROZEN");
        std::fs::read_to_string(&state).is_ok_and(|s| s.trim() == "FROZEN")
    })
}

pub(super) fn thaw(dir: &Path, timeout: Duration) -> Result<()> {
    let state = dir.join("freezer.state");
    wait_until(timeout, &format!("{} to thaw", dir.display()), || {
        let _ = std::fs::write(&state, "THAWED");
        std::fs::read_to_string(&state).map_or(true, |s| s.trim() == "THAWED")
    })
}

pub(super) fn is_frozen(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
}

pub(super) fn oom_kills(dir: &Path) -> u64 {
    keyed_value(&dir.join("memory.oom_control"), "oom_kill").unwrap_or(0)
}
