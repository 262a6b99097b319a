//! `Runtime`: the agent's handle on containers. Every method is blocking and forks nothing on
//! the calling thread except `create`, which spawns the shim binary (call it from
//! `spawn_blocking` or a dedicated thread, never a tokio worker).
//!
//! A `Runtime` keeps no state of its own: everything is read back from the shim dirs, so a
//! fresh one (after an agent restart) sees exactly what the old one saw.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use berth_spec::model::Resources;

use super::cgroup::{Cgroup, CgroupMode};
use super::config::{Bundle, ContainerConfig, STATE_VERSION};
use super::error::{IoContext, Result, RuntimeError};
use super::rootfs::LowerDirs;
use super::state::{ExitRecord, Report, ShimDir, ShimRequest, ShimState, write_json_volatile};
use super::sys;
use crate::fsutil;
use crate::layout::Layout;
use crate::names::{IncarnationId, Names};

/// The cgroup (below each hierarchy) where an instance's shims live.
pub const SHIMS_CGROUP: &str = "_shims";

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub layout: Layout,
    pub names: Names,
    pub cgroups: CgroupMode,
    /// The `berth-shim` binary.
    pub shim_path: PathBuf,
    /// How overlayfs takes the layers on this kernel.
    pub lower_dirs: LowerDirs,
}

impl RuntimeConfig {
    /// Detected cgroup mode and overlayfs options, shim beside the current executable.
    pub fn new(layout: Layout, names: Names) -> Self {
        RuntimeConfig {
            layout,
            names,
            cgroups: CgroupMode::detect(),
            shim_path: default_shim_path(),
            lower_dirs: LowerDirs::detect(),
        }
    }
}

/// `berth-shim` next to the running binary.
pub fn default_shim_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("berth-shim")))
        .unwrap_or_else(|| PathBuf::from("/usr/lib/berth/berth-shim"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub pid: i32,
    pub pid_start: u64,
    pub shim_pid: i32,
    pub started_at: SystemTime,
}

/// A shim started by [`Runtime::spawn`], waiting to be told to start the container.
#[derive(Debug)]
pub struct Spawning {
    child: std::process::Child,
    shim: ShimDir,
    name: String,
}

impl Spawning {
    /// Lets the shim start the container (its network namespace and files must exist now),
    /// telling it the container's address its ports' `[::1]` relay connects to; returns once
    /// the payload has been exec'd, or with the reason it could not be.
    pub fn start(mut self, loopback6_to: Option<IpAddr>) -> Result<Started> {
        // The go line; a shim that already failed has closed its end (EPIPE is ignored
        // process-wide by Rust's runtime): its report says why.
        if let Some(mut stdin) = self.child.stdin.take() {
            let to = loopback6_to.map(|ip| ip.to_string()).unwrap_or_default();
            let _ = stdin.write_all(format!("g{to}\n").as_bytes());
        }
        let out = self.finish()?;
        sys::mark("runtime-reported");
        let start_err = |reason: String| RuntimeError::Start {
            name: self.name.clone(),
            reason,
        };
        let line = out.lines().next().unwrap_or("");
        match serde_json::from_str::<Report>(line) {
            Ok(Report::Started { state, .. }) => Ok(Started {
                pid: state.pid,
                pid_start: state.pid_start,
                shim_pid: state.shim_pid,
                started_at: state.started_at,
            }),
            Ok(Report::Failed { error, .. }) => {
                let _ = fsutil::remove_dir_all_if_exists(&self.shim.dir);
                Err(start_err(error))
            }
            Err(_) => {
                let log = std::fs::read_to_string(self.shim.log()).unwrap_or_default();
                Err(start_err(format!(
                    "the shim sent no report (its log: {:?})",
                    log.trim()
                )))
            }
        }
    }

    /// Tells the shim not to start (it removes the container's cgroup and exits) and waits
    /// until it is gone, so that nothing of it races the caller's teardown.
    pub fn abort(mut self) {
        drop(self.child.stdin.take());
        let _ = self.finish();
        let _ = fsutil::remove_dir_all_if_exists(&self.shim.dir);
    }

    /// The shim's report: everything it wrote to stdout until the supervisor let go of it.
    fn finish(&mut self) -> Result<String> {
        let mut out = String::new();
        let read = self
            .child
            .stdout
            .take()
            .map(|mut s| s.read_to_string(&mut out));
        // Our child is the shim's short-lived parent; the supervisor itself is adopted by init
        // (or our subreaper) and reaped there.
        let _ = self.child.wait();
        if let Some(Err(e)) = read {
            return Err(RuntimeError::sys("read shim report", e));
        }
        Ok(out)
    }
}

impl Drop for Spawning {
    fn drop(&mut self) {
        if self.child.stdout.is_some() {
            drop(self.child.stdin.take());
            let _ = self.finish();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Paused,
    /// The init is gone and the shim recorded how (see `exit`).
    Exited,
    /// The init runs but its shim died: logs are lost and nobody records its exit.
    Unsupervised,
    /// Both the shim and the init are gone without an exit record.
    Lost,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    pub name: String,
    pub id: IncarnationId,
    pub status: Status,
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    pub shim_pid: Option<i32>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub exit: Option<ExitRecord>,
}

/// A pollable handle that becomes readable when a container's shim exits (after it wrote the
/// exit record). Register it with tokio's `AsyncFd::register` (it owns its fd and `as_raw_fd`
/// returns that same open fd for its whole life, as that function's safety contract asks), or
/// call [`ExitWatch::wait`] on a blocking thread.
#[derive(Debug)]
pub struct ExitWatch {
    pidfd: OwnedFd,
    shim: ShimDir,
}

impl ExitWatch {
    /// Blocks up to `timeout` (None: forever); the exit record once it is there.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitRecord>> {
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        if !sys::poll_readable(&self.pidfd, ms).doing("poll shim pidfd")? {
            return Ok(None);
        }
        self.shim.read_exit()
    }

    pub fn exit_record(&self) -> Result<Option<ExitRecord>> {
        self.shim.read_exit()
    }
}

impl AsFd for ExitWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl AsRawFd for ExitWatch {
    fn as_raw_fd(&self) -> i32 {
        self.pidfd.as_raw_fd()
    }
}

#[derive(Debug, Clone)]
pub struct Runtime {
    cfg: RuntimeConfig,
}

const CGROUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`Runtime::remove`] does with the incarnation's bundle dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleDir {
    /// Kept: the next start of the same incarnation has the same filesystem (upper, logs).
    Keep,
    /// Removed with everything in it.
    Remove,
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Self {
        Runtime { cfg }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    pub fn bundle(&self, name: &str, id: &IncarnationId) -> Bundle {
        Bundle::new(&self.cfg.layout, name, id)
    }

    fn shim_dir(&self, name: &str, id: &IncarnationId) -> ShimDir {
        ShimDir::new(&self.cfg.layout.shim_dir(name, id))
    }

    pub fn cgroup(&self, name: &str, id: &IncarnationId) -> Cgroup {
        Cgroup::new(&self.cfg.cgroups, &self.cgroup_rel(name, id))
    }

    /// A container's cgroup below the hierarchies' root: `<instance>/<name>-<id>`, or on a
    /// systemd host `<slice>/<its scope>/container`.
    fn cgroup_rel(&self, name: &str, id: &IncarnationId) -> String {
        match &self.cfg.cgroups {
            CgroupMode::Systemd { slice, .. } => {
                format!("{slice}/{}/container", self.cfg.names.scope_unit(name, id))
            }
            _ => self.cfg.names.cgroup(name, id),
        }
    }

    /// Where a container's shim lives: the instance's `_shims`, or on a systemd host its
    /// scope's `supervisor` leaf.
    fn shim_cgroup_rel(&self, name: &str, id: &IncarnationId) -> String {
        match &self.cfg.cgroups {
            CgroupMode::Systemd { slice, .. } => {
                format!("{slice}/{}/supervisor", self.cfg.names.scope_unit(name, id))
            }
            _ => format!("{}/{SHIMS_CGROUP}", self.cfg.names.cgroup_parent()),
        }
    }

    /// Every container cgroup of this instance that exists, by `<name>-<id>` key.
    pub fn container_cgroups(&self) -> Vec<(String, Cgroup)> {
        let mut out = Vec::new();
        match &self.cfg.cgroups {
            CgroupMode::Systemd { root, slice } => {
                for e in std::fs::read_dir(root.join(slice))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let unit = e.file_name().to_string_lossy().into_owned();
                    if let Some(key) = self.cfg.names.parse_scope_unit(&unit)
                        && e.path().join("container").is_dir()
                    {
                        let rel = format!("{slice}/{unit}/container");
                        out.push((key.to_string(), Cgroup::new(&self.cfg.cgroups, &rel)));
                    }
                }
            }
            _ => {
                let parent = Cgroup::new(&self.cfg.cgroups, self.cfg.names.cgroup_parent());
                for dir in parent.dirs() {
                    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        let key = e.file_name().to_string_lossy().into_owned();
                        if e.path().is_dir()
                            && Names::parse_container_key(&key).is_some()
                            && !out.iter().any(|(k, _)| *k == key)
                        {
                            let rel = format!("{}/{key}", self.cfg.names.cgroup_parent());
                            out.push((key, Cgroup::new(&self.cfg.cgroups, &rel)));
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Creates and starts incarnation `cfg.id` of `cfg.name`; returns once the payload has been
    /// exec'd (or with the reason it could not be). An existing upper dir of the same
    /// incarnation is kept: that is a restart.
    pub fn create(&self, cfg: &ContainerConfig) -> Result<Started> {
        self.spawn(cfg)?.start(None)
    }

    /// The first half of [`Runtime::create`]: starts the shim, which makes the container's
    /// cgroup and moves into its own, then waits for [`Spawning::start`] before it opens the
    /// network namespace and the files the container joins. The caller makes those meanwhile:
    /// the first cgroup migration after idle waits for an RCU grace period (~10 ms on an idle
    /// tickless guest), and that wait then runs beside the network's attach instead of after it.
    /// A [`Spawning`] dropped without `start` (or an agent that dies) closes the shim's stdin,
    /// and the shim undoes its cgroup and exits.
    pub fn spawn(&self, cfg: &ContainerConfig) -> Result<Spawning> {
        let (name, id) = (cfg.name.as_str(), &cfg.id);
        sys::mark("runtime-create");
        cfg.validate().map_err(|reason| RuntimeError::Invalid {
            name: name.into(),
            reason,
        })?;
        let shim = self.shim_dir(name, id);
        if let Some(st) = shim.read_state()?
            && shim.read_exit()?.is_none()
            && sys::alive(st.pid, st.pid_start)
        {
            return Err(RuntimeError::AlreadyRunning {
                name: name.into(),
                id: id.to_string(),
            });
        }
        let bundle = self.bundle(name, id);
        // The bundle is root's (0700: config.json holds the environment, upper/ what container
        // root made, logs/ the output); upper keeps the usual 0755, being the container's `/`.
        fsutil::create_private_dir_all(&bundle.logs()).at(bundle.logs())?;
        for d in [bundle.upper(), bundle.work(), bundle.rootfs()] {
            std::fs::create_dir_all(&d).at(&d)?;
        }
        write_json_volatile(&bundle.config(), cfg)?;
        for f in [bundle.last_exit(), bundle.stop_requested()] {
            fsutil::remove_file_if_exists(&f).at(&f)?;
        }
        fsutil::create_private_dir_all(&shim.dir).at(&shim.dir)?;
        for f in [shim.state(), shim.exit()] {
            fsutil::remove_file_if_exists(&f).at(&f)?;
        }
        write_json_volatile(
            &shim.request(),
            &ShimRequest {
                version: STATE_VERSION,
                bundle: bundle.dir.clone(),
                cgroup_mode: self.cfg.cgroups.clone(),
                cgroup: self.cgroup_rel(name, id),
                shim_cgroup: self.shim_cgroup_rel(name, id),
                lower_dirs: self.cfg.lower_dirs,
            },
        )?;
        let log = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(fsutil::PRIVATE_FILE)
            .open(shim.log())
            .at(shim.log())?;
        sys::mark("runtime-spawn");
        let mut command = match &self.cfg.cgroups {
            // A scope of its own per container (systemd's delegation contract: berth writes
            // only below a unit delegated to it). systemd-run registers the scope with its own
            // pid and then execs the shim, which thus starts inside it.
            CgroupMode::Systemd { slice, .. } => {
                let mut c = Command::new(super::cgroup::SYSTEMD_RUN);
                c.args(["--scope", "--quiet", "--collect", "--slice", slice])
                    .arg(format!("--unit={}", self.cfg.names.scope_unit(name, id)))
                    .arg(format!(
                        "--description=berth container {name} ({})",
                        self.cfg.names.instance()
                    ))
                    .args(["--property=Delegate=yes", "--property=TasksMax=infinity"])
                    .arg(format!(
                        "--property=Before={}",
                        super::cgroup::SHUTDOWN_UNIT
                    ))
                    .arg("--")
                    .arg(&self.cfg.shim_path);
                c
            }
            _ => Command::new(&self.cfg.shim_path),
        };
        let child = command
            .arg("start")
            .arg(&shim.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .at(&self.cfg.shim_path)?;
        Ok(Spawning {
            child,
            shim,
            name: name.to_string(),
        })
    }

    /// Every container this instance's shims know about, running or exited.
    pub fn observe(&self) -> Result<Vec<ObservedContainer>> {
        let dir = self.cfg.layout.shims_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io(dir, e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let key = e.file_name().to_string_lossy().into_owned();
            let Some((name, id)) = Names::parse_container_key(&key) else {
                continue;
            };
            if let Some(o) = self.inspect(name, &id)? {
                out.push(o);
            }
        }
        out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(out)
    }

    /// One container's observed state; `None` if it was never started (or is starting).
    pub fn inspect(&self, name: &str, id: &IncarnationId) -> Result<Option<ObservedContainer>> {
        let shim = self.shim_dir(name, id);
        let state = shim.read_state()?;
        let exit = shim.read_exit()?;
        let Some(st) = state else {
            return Ok(None);
        };
        if !sys::alive(st.shim_pid, st.shim_start) {
            // A shim reparented to us (we are a subreaper) is a zombie until reaped.
            sys::try_reap(st.shim_pid);
        }
        let status = if exit.is_some() {
            Status::Exited
        } else if sys::alive(st.pid, st.pid_start) {
            if !sys::alive(st.shim_pid, st.shim_start) {
                Status::Unsupervised
            } else if self.cgroup(name, id).is_frozen() {
                Status::Paused
            } else {
                Status::Running
            }
        } else if sys::alive(st.shim_pid, st.shim_start) {
            // The init just went; the shim is draining logs and writing the record.
            Status::Running
        } else {
            Status::Lost
        };
        Ok(Some(ObservedContainer {
            name: name.to_string(),
            id: id.clone(),
            status,
            pid: Some(st.pid),
            pid_start: Some(st.pid_start),
            shim_pid: Some(st.shim_pid),
            started_at: Some(st.started_at),
            finished_at: exit.as_ref().map(|e| e.finished_at),
            exit,
        }))
    }

    fn live_state(&self, name: &str, id: &IncarnationId) -> Result<ShimState> {
        let shim = self.shim_dir(name, id);
        let not_running = || RuntimeError::NotRunning {
            name: name.into(),
            id: id.to_string(),
        };
        let st = shim.read_state()?.ok_or_else(not_running)?;
        if shim.read_exit()?.is_some() || !sys::alive(st.pid, st.pid_start) {
            return Err(not_running());
        }
        Ok(st)
    }

    /// A handle that becomes readable when the container's shim exits.
    pub fn exit_watch(&self, name: &str, id: &IncarnationId) -> Result<ExitWatch> {
        let shim = self.shim_dir(name, id);
        let st = shim.read_state()?.ok_or_else(|| RuntimeError::NotFound {
            name: name.into(),
            id: id.to_string(),
        })?;
        let pidfd = sys::pidfd_open(st.shim_pid);
        // Re-check after opening: the pid may have been reused before the open.
        match pidfd {
            Ok(fd) if sys::alive(st.shim_pid, st.shim_start) => Ok(ExitWatch { pidfd: fd, shim }),
            _ => {
                // Already gone: a pidfd on ourselves' exited sibling is not available, so hand
                // out an always-readable fd.
                let (r, w) = sys::pipe().doing("pipe")?;
                drop(w);
                Ok(ExitWatch { pidfd: r, shim })
            }
        }
    }

    pub fn pause(&self, name: &str, id: &IncarnationId) -> Result<()> {
        self.live_state(name, id)?;
        self.cgroup(name, id).freeze(CGROUP_TIMEOUT)
    }

    pub fn resume(&self, name: &str, id: &IncarnationId) -> Result<()> {
        self.live_state(name, id)?;
        self.cgroup(name, id).thaw(CGROUP_TIMEOUT)
    }

    pub fn update_resources(&self, name: &str, id: &IncarnationId, r: &Resources) -> Result<()> {
        self.live_state(name, id)?;
        self.cgroup(name, id).apply(r)
    }

    /// Sends `signal` (default: the config's stop signal) to the init, waits `timeout`, then
    /// kills everything in the cgroup. Returns the exit record; stopping an exited container
    /// returns its record.
    pub fn stop(
        &self,
        name: &str,
        id: &IncarnationId,
        signal: Option<i32>,
        timeout: Duration,
    ) -> Result<Option<ExitRecord>> {
        let shim = self.shim_dir(name, id);
        let Some(st) = shim.read_state()? else {
            return Ok(None);
        };
        let watch = self.exit_watch(name, id)?;
        if let Some(done) = shim.read_exit()? {
            sys::try_reap(st.shim_pid);
            return Ok(Some(done));
        }
        let sig = match signal {
            Some(s) => s,
            None => self
                .read_config(name, id)
                .map(|c| c.stop_signal)
                .unwrap_or(libc::SIGTERM),
        };
        let cg = self.cgroup(name, id);
        let marker = self.bundle(name, id).stop_requested();
        std::fs::write(&marker, b"").at(&marker)?;
        if let Ok(fd) = sys::pidfd_open(st.pid)
            && sys::alive(st.pid, st.pid_start)
        {
            let _ = sys::pidfd_signal(&fd, sig);
            if cg.is_frozen() {
                cg.thaw(CGROUP_TIMEOUT)?;
            }
        }
        let shim_alive = sys::alive(st.shim_pid, st.shim_start);
        let gone = if shim_alive {
            watch.wait(Some(timeout))?.is_some()
        } else {
            wait_dead(st.pid, st.pid_start, timeout)
        };
        if !gone {
            cg.kill_all(CGROUP_TIMEOUT)?;
            if shim_alive {
                watch.wait(Some(CGROUP_TIMEOUT))?;
            }
        }
        sys::try_reap(st.shim_pid);
        shim.read_exit()
    }

    /// Removes a stopped container: its cgroup, shim dir and, with [`BundleDir::Remove`], its
    /// whole bundle dir (upper, work, logs, config). With [`BundleDir::Keep`] a later `create`
    /// of the same incarnation is a restart with the same filesystem.
    pub fn remove(&self, name: &str, id: &IncarnationId, bundle_dir: BundleDir) -> Result<()> {
        let shim = self.shim_dir(name, id);
        if let Some(st) = shim.read_state()? {
            if sys::alive(st.pid, st.pid_start) {
                return Err(RuntimeError::AlreadyRunning {
                    name: name.into(),
                    id: id.to_string(),
                });
            }
            sys::try_reap(st.shim_pid);
        }
        let cg = self.cgroup(name, id);
        if cg.exists() {
            cg.kill_all(CGROUP_TIMEOUT)?;
            cg.remove(CGROUP_TIMEOUT)?;
        }
        fsutil::remove_dir_all_if_exists(&shim.dir).at(&shim.dir)?;
        let bundle = self.bundle(name, id);
        // The rootfs is mounted only inside the container's mount namespace; a host mount here
        // would be a leftover of something else, so detach it rather than delete through it.
        let _ = nix::mount::umount2(&bundle.rootfs(), nix::mount::MntFlags::MNT_DETACH);
        if bundle_dir == BundleDir::Remove {
            fsutil::remove_dir_all_if_exists(&bundle.dir).at(&bundle.dir)?;
        }
        Ok(())
    }

    /// How the last run of an incarnation ended when it ended on its own (not stopped by
    /// berth), from the bundle: it survives a reboot, unlike the shim's files.
    pub fn completed_run(&self, name: &str, id: &IncarnationId) -> Option<ExitRecord> {
        let bundle = self.bundle(name, id);
        if bundle.stop_requested().exists() {
            return None;
        }
        fsutil::read_json(&bundle.last_exit()).ok().flatten()
    }

    /// The config of an incarnation as the shim read it.
    pub fn read_config(&self, name: &str, id: &IncarnationId) -> Result<ContainerConfig> {
        let p = self.bundle(name, id).config();
        fsutil::read_json(&p)
            .at(&p)?
            .ok_or_else(|| RuntimeError::NotFound {
                name: name.into(),
                id: id.to_string(),
            })
    }

    /// Removes this instance's empty cgroup parents (`<instance>/_shims`, `<instance>`); busy
    /// ones stay.
    pub fn prune_cgroups(&self) {
        if let CgroupMode::Systemd { .. } = self.cfg.cgroups {
            // systemd removes a scope once its last process is gone.
            return;
        }
        let parent = self.cfg.names.cgroup_parent();
        for rel in [format!("{parent}/{SHIMS_CGROUP}"), parent.to_string()] {
            for d in Cgroup::new(&self.cfg.cgroups, &rel).dirs() {
                let _ = std::fs::remove_dir(&d);
            }
        }
    }

    /// The incarnations of `name` that have a bundle dir.
    pub fn incarnations(&self, name: &str) -> Vec<IncarnationId> {
        let mut ids: Vec<IncarnationId> = std::fs::read_dir(self.cfg.layout.container_dir(name))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| IncarnationId::parse(&e.file_name().to_string_lossy()))
            .collect();
        ids.sort();
        ids
    }

    /// The incarnation of `name` that tools such as `berth logs` and `berth exec` mean: the
    /// running one, else the one started last.
    pub fn current(&self, name: &str) -> Result<Option<IncarnationId>> {
        let mut best: Option<(bool, SystemTime, IncarnationId)> = None;
        for id in self.incarnations(name) {
            let (live, started) = match self.inspect(name, &id)? {
                Some(o) => (
                    matches!(
                        o.status,
                        Status::Running | Status::Paused | Status::Unsupervised
                    ),
                    o.started_at.unwrap_or(SystemTime::UNIX_EPOCH),
                ),
                None => {
                    let cfg = self.bundle(name, &id).config();
                    let mtime = std::fs::metadata(&cfg).and_then(|m| m.modified());
                    (false, mtime.unwrap_or(SystemTime::UNIX_EPOCH))
                }
            };
            if best.as_ref().is_none_or(|b| (live, started) > (b.0, b.1)) {
                best = Some((live, started, id));
            }
        }
        Ok(best.map(|b| b.2))
    }

    /// The shim dir of an incarnation, for tools that read it directly.
    pub fn shim_path(&self, name: &str, id: &IncarnationId) -> PathBuf {
        self.cfg.layout.shim_dir(name, id)
    }
}

fn wait_dead(pid: i32, start: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !sys::alive(pid, start) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !sys::alive(pid, start)
}
