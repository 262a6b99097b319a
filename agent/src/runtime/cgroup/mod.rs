//! cgroups, v1 and v2, behind one type: a container's cgroup at `<instance>/<name>-<id>` under
//! an injectable root, so that tests can point the v2 driver at a fixture tree.
//!
//! The mode is detected at run time ([`CgroupMode::detect`]): a cgroup2 mount at /sys/fs/cgroup
//! means v2, anything else means v1 controllers under `/sys/fs/cgroup/<controller>`. On v2 with
//! systemd as PID 1 the tree above berth's cgroups is systemd's: each container then gets a
//! transient scope unit of its own (see [`CgroupMode::Systemd`]) and berth writes only inside
//! that scope, as systemd's delegation contract asks.

mod v1;
mod v2;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_spec::model::Resources;
use serde::{Deserialize, Serialize};

use super::devices::DeviceRule;
use super::error::{Result, RuntimeError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupMode {
    /// One hierarchy per controller, each at `root/<controller>`.
    V1 { root: PathBuf },
    /// The unified hierarchy mounted at `root`, no systemd: `<instance>/...` below the root.
    V2 { root: PathBuf },
    /// The unified hierarchy on a host run by systemd. Each container's shim is started by
    /// `systemd-run --scope` in a scope unit of its own in `slice`, with `Delegate=yes`; the
    /// scope's subtree is berth's: the shim lives in `<scope>/supervisor`, the container in
    /// `<scope>/container`. `systemd-cgls`, `systemctl status <slice>` and a `MemoryMax=` on the
    /// slice cover every container.
    Systemd { root: PathBuf, slice: String },
}

/// The slice berth's scopes go to (systemd/berth.slice).
pub const SLICE: &str = "berth.slice";

/// The unit that stops containers at shutdown: every scope is ordered before it, so that at
/// shutdown its `--stop-all` (each container's own stop signal and timeout) runs before
/// systemd stops the scopes.
pub const SHUTDOWN_UNIT: &str = "berth-shutdown.service";

/// systemd-run, where Debian and Ubuntu put it.
pub const SYSTEMD_RUN: &str = "/usr/bin/systemd-run";

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

impl CgroupMode {
    /// v2 when /sys/fs/cgroup is a cgroup2 mount (under systemd when it is PID 1), else v1.
    pub fn detect() -> Self {
        let root = PathBuf::from("/sys/fs/cgroup");
        // f_type's integer type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        match rustix::fs::statfs(&root) {
            Ok(s) if s.f_type as i64 == CGROUP2_SUPER_MAGIC => {
                // sd_booted(): systemd is PID 1 when this dir exists.
                if Path::new("/run/systemd/system").is_dir() && Path::new(SYSTEMD_RUN).exists() {
                    CgroupMode::Systemd {
                        root,
                        slice: SLICE.into(),
                    }
                } else {
                    CgroupMode::V2 { root }
                }
            }
            _ => CgroupMode::V1 { root },
        }
    }

    /// What a container sees at /sys/fs/cgroup: its own cgroup and nothing above it.
    pub fn view(&self) -> crate::runtime::mounts::CgroupView {
        use crate::runtime::mounts::CgroupView;
        match self {
            CgroupMode::V1 { root } => CgroupView::Legacy(v1::mount_names(root)),
            CgroupMode::V2 { .. } | CgroupMode::Systemd { .. } => CgroupView::Unified,
        }
    }
}

/// Starts, when poked, the wait the next cgroup migration would otherwise begin on a create's
/// critical path. After idle, the kernel's migration lock (one for every hierarchy) lets its
/// first writer in only after an RCU grace period: 7-8 ms on an idle tickless guest, against
/// 0.2 ms back to back. Writing this process into the cgroup it already is in takes that lock
/// and moves nothing, so a create begun meanwhile finds the grace period under way or passed.
///
/// It has a thread of its own, poked without blocking: on the blocking pool, a write that waits
/// 7 ms would hold a pool thread and make the spec read that follows start another one.
pub struct GraceStarter {
    poke: std::sync::mpsc::SyncSender<()>,
}

impl GraceStarter {
    /// Finds this process's cgroup once (`None` where it cannot: the pokes then do nothing).
    pub fn spawn(mode: &CgroupMode) -> Option<GraceStarter> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let procs = own_cgroup_dir(mode, &own)?.join("cgroup.procs");
        let pid = std::process::id().to_string();
        let (poke, pokes) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("cgroup-grace".into())
            .stack_size(64 << 10)
            .spawn(move || {
                while pokes.recv().is_ok() {
                    if let Err(e) = std::fs::write(&procs, &pid) {
                        tracing::debug!("cannot begin the migration grace period: {e}");
                    }
                }
            })
            .ok()?;
        Some(GraceStarter { poke })
    }

    /// Never blocks: a poke while one is pending or under way is the same poke.
    pub fn poke(&self) {
        let _ = self.poke.try_send(());
    }
}

/// One cgroup, `rel` below the root of every hierarchy the mode uses.
#[derive(Debug, Clone)]
pub struct Cgroup {
    mode: CgroupMode,
    rel: String,
}

/// Device access policy of a container's cgroup.
#[derive(Debug, Clone, Copy)]
pub enum DevicePolicy<'a> {
    /// Only these nodes.
    Allow(&'a [DeviceRule]),
    /// Everything (privileged).
    All,
}

impl Cgroup {
    pub fn new(mode: &CgroupMode, rel: &str) -> Self {
        Cgroup {
            mode: mode.clone(),
            rel: rel.to_string(),
        }
    }

    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// The cgroup `name` below this one (limits and device rules of this one still apply).
    pub fn child(&self, name: &str) -> Cgroup {
        Cgroup::new(&self.mode, &format!("{}/{name}", self.rel))
    }

    /// The directories that make up this cgroup (one per v1 controller, one for v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.mode {
            CgroupMode::V1 { root } => v1::hierarchies(root)
                .into_iter()
                .map(|h| h.join(&self.rel))
                .collect(),
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                vec![root.join(&self.rel)]
            }
        }
    }

    /// The dir whose `cgroup.procs` lists every process of the cgroup.
    fn procs_dir(&self) -> PathBuf {
        match &self.mode {
            CgroupMode::V1 { root } => v1::freezer_dir(root).join(&self.rel),
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => root.join(&self.rel),
        }
    }

    /// The one dir a process can be cloned into (`CLONE_INTO_CGROUP`): on v2 only; on v1 a
    /// process joins each hierarchy by a migration.
    pub fn clone_target(&self) -> Option<PathBuf> {
        match &self.mode {
            CgroupMode::V1 { .. } => None,
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                Some(root.join(&self.rel))
            }
        }
    }

    /// Whether any of its dirs is left (a removal cut short may have taken some).
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.is_dir())
    }

    pub fn create(&self) -> Result<()> {
        match &self.mode {
            CgroupMode::V1 { root } => v1::create(root, &self.rel),
            CgroupMode::V2 { root } => v2::create(root, &self.rel),
            // systemd made the scope; controllers are enabled from the scope down only.
            CgroupMode::Systemd { root, .. } => match self.rel.rsplit_once('/') {
                Some((scope, leaf)) => v2::create(&root.join(scope), leaf),
                None => v2::create(root, &self.rel),
            },
        }
    }

    /// Makes this cgroup without enabling any controller for it: for a group below a cgroup
    /// that holds processes (an exec's, below its container's), whose parent cannot give
    /// controllers to children on v2 (no internal processes). Its processes are charged to the
    /// nearest ancestor with the controller, which is the container's cgroup.
    pub fn create_without_controllers(&self) -> Result<()> {
        match &self.mode {
            CgroupMode::V1 { root } => v1::create(root, &self.rel),
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                let d = root.join(&self.rel);
                match std::fs::create_dir(&d) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        Err(RuntimeError::Cgroup {
                            path: d,
                            reason: format!("cannot create: {e}"),
                        })
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    pub fn apply(&self, r: &Resources) -> Result<()> {
        match &self.mode {
            CgroupMode::V1 { root } => v1::apply(root, &self.rel, r),
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                v2::apply(&root.join(&self.rel), r)
            }
        }
    }

    pub fn set_devices(&self, policy: DevicePolicy<'_>) -> Result<()> {
        match &self.mode {
            CgroupMode::V1 { root } => {
                v1::set_devices(&v1::devices_dir(root).join(&self.rel), policy)
            }
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                v2::set_devices(&root.join(&self.rel), policy)
            }
        }
    }

    /// Moves process `pid` into this cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process of the cgroup and of its descendants (an exec's own cgroup sits below
    /// its container's). On v1, the union over every hierarchy: a process caught while
    /// joining them (its creator killed half way) may be in some and not in others.
    pub fn pids(&self) -> Vec<i32> {
        let dirs = match &self.mode {
            CgroupMode::V1 { .. } => self.dirs(),
            CgroupMode::V2 { .. } | CgroupMode::Systemd { .. } => vec![self.procs_dir()],
        };
        let mut all: Vec<i32> = dirs
            .iter()
            .flat_map(|d| subtree(d))
            .flat_map(|d| read_pids(&d))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    pub fn freeze(&self, timeout: Duration) -> Result<()> {
        match &self.mode {
            CgroupMode::V1 { root } => v1::freeze(&v1::freezer_dir(root).join(&self.rel), timeout),
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                v2::freeze(&root.join(&self.rel), v2::Freezer::Frozen, timeout)
            }
        }
    }

    pub fn thaw(&self, timeout: Duration) -> Result<()> {
        match &self.mode {
            CgroupMode::V1 { root } => v1::thaw(&v1::freezer_dir(root).join(&self.rel), timeout),
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                v2::freeze(&root.join(&self.rel), v2::Freezer::Thawed, timeout)
            }
        }
    }

    pub fn is_frozen(&self) -> bool {
        match &self.mode {
            CgroupMode::V1 { root } => v1::is_frozen(&v1::freezer_dir(root).join(&self.rel)),
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                v2::is_frozen(&root.join(&self.rel))
            }
        }
    }

    /// SIGKILLs every process in the cgroup, so that nothing forked escapes, and waits until
    /// the cgroup is empty.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        if !self.exists() {
            return Ok(());
        }
        let killed = match &self.mode {
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                v2::kill(&root.join(&self.rel))?
            }
            CgroupMode::V1 { .. } => false,
        };
        if !killed {
            // v1 (or a v2 kernel before cgroup.kill): freeze so nothing forks while we kill.
            let frozen = self.freeze(timeout).is_ok();
            for pid in self.pids() {
                // SAFETY: kill with plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if frozen {
                self.thaw(timeout)?;
            }
        }
        wait_until(timeout, &format!("cgroup {} to empty", self.rel), || {
            self.pids().is_empty()
        })
    }

    /// OOM kills counted in this cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        match &self.mode {
            CgroupMode::V1 { root } => v1::oom_kills(&root.join("memory").join(&self.rel)),
            CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => {
                v2::oom_kills(&root.join(&self.rel))
            }
        }
    }

    /// Removes the cgroup dirs, descendants first (retrying while the last processes leave);
    /// missing is fine.
    pub fn remove(&self, timeout: Duration) -> Result<()> {
        for d in self.dirs() {
            for sub in subtree(&d).into_iter().rev() {
                remove_dir(&sub, timeout)?;
            }
        }
        Ok(())
    }
}

/// `dir` and every cgroup below it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

pub(crate) fn remove_dir(d: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match std::fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(RuntimeError::Cgroup {
                    path: d.to_path_buf(),
                    reason: format!("cannot remove: {e}"),
                });
            }
        }
    }
}

/// The calling process's cgroup in one hierarchy berth uses, from `/proc/self/cgroup`'s text.
fn own_cgroup_dir(mode: &CgroupMode, proc_self_cgroup: &str) -> Option<PathBuf> {
    let (root, hierarchy) = match mode {
        CgroupMode::V1 { root } => (root, "pids"),
        CgroupMode::V2 { root } | CgroupMode::Systemd { root, .. } => (root, ""),
    };
    proc_self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let path = path.trim_start_matches('/');
        match hierarchy {
            "" => (controllers.is_empty()).then(|| root.join(path)),
            c => controllers
                .split(',')
                .any(|x| x == c)
                .then(|| root.join(c).join(path)),
        }
    })
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| RuntimeError::Cgroup {
        path: path.to_path_buf(),
        reason: format!("cannot write {value:?}: {e}"),
    })
}

pub(crate) fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Reads `key N` from a flat keyed file such as memory.events.
pub(crate) fn keyed_value(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Polls `done` until it holds or `timeout` passes; cgroup state changes have no event on v1.
pub(crate) fn wait_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        if done() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(RuntimeError::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs_f64(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests;
