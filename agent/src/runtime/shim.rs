//! The shim: one small supervisor per running container (binary `berth-shim`), single-threaded
//! until its container runs (then, for ports that answer on `[::1]`, one relay thread).
//!
//! `berth-shim start <shim_dir>`: re-executes from a sealed copy, forks away from the caller
//! (which reaps the short-lived parent, after it made the container's cgroup, sent the
//! supervisor word of it and moved the supervisor into `<instance>/_shims` outside the agent's
//! cgroup), starts a session, becomes subreaper, holds the published host ports, waits for
//! the runtime's go line on stdin (the network namespace and /etc files are made meanwhile),
//! clones the container's init into new namespaces (on v2 straight into its cgroup when it is
//! made by then, else moved in once it is), reports one [`Report`] line on stdout, then
//! relays the container's stdout/stderr into the CRI log (and, on a thread of its own,
//! connections to the ports' `[::1]` side into the container: [`super::proxy`]) until the init
//! exits, records [`ExitRecord`] atomically, removes the cgroup and exits.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::cgroup::{Cgroup, CgroupMode, DevicePolicy};
use super::config::{Bundle, ContainerConfig, MountSource, NetNs, STATE_VERSION};
use super::container::{ChildFds, HostKernel, child_main};
use super::devices::{DevKind, DeviceRule, parse_access};
use super::logs::{LineSplitter, LogWriter, Stream};
use super::state::{
    ExitRecord, Report, ShimDir, ShimRequest, ShimState, write_json, write_json_volatile,
};
use super::{ports, sys};

/// Entry point of the `berth-shim` binary; returns the process exit code.
///
/// # Safety
/// The process must be single-threaded (the binary's `main`, which starts no thread): the
/// shim forks, clones the container's init and sets its environment.
pub unsafe fn main(args: &[String]) -> i32 {
    match args {
        // SAFETY: forwarded from the caller.
        [_, cmd, dir] if cmd == "start" => unsafe { start(Path::new(dir)) },
        _ => {
            eprintln!("usage: berth-shim start <shim-dir>");
            2
        }
    }
}

fn report(r: &Report) {
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    let _ = sys::write_all(1, &line);
}

fn fail(msg: String) -> i32 {
    eprintln!("berth-shim: {msg}");
    report(&Report::Failed {
        version: STATE_VERSION,
        error: msg,
    });
    1
}

/// # Safety
/// As [`main`]: the process must be single-threaded.
unsafe fn start(dir: &Path) -> i32 {
    sys::mark("shim-start");
    // The container's init is a clone of this process until it execs the payload, and with
    // `init = true` its reaper stays one for good: never a clone of the host's binary. So the
    // shim re-executes itself from a sealed copy before it does anything for the container.
    if let Err(e) = super::exeseal::ensure_sealed() {
        return fail(format!("cannot run from a sealed copy of berth-shim: {e}"));
    }
    sys::mark("shim-sealed");
    let shim = ShimDir::new(dir);
    let req = match shim.read_request() {
        Ok(Some(r)) => r,
        Ok(None) => return fail(format!("{}: missing", shim.request().display())),
        Err(e) => return fail(e.to_string()),
    };
    let bundle = Bundle::at(&req.bundle);
    let cfg: ContainerConfig = match crate::fsutil::read_json(&bundle.config()) {
        Ok(Some(c)) => c,
        Ok(None) => return fail(format!("{}: missing", bundle.config().display())),
        Err(e) => return fail(e.to_string()),
    };
    let cg = Cgroup::new(&req.cgroup_mode, &req.cgroup);
    // SAFETY: forwarded from the caller.
    let mut word = match unsafe { place(&req, &cfg, &cg) } {
        Placed::Parent => return 0,
        Placed::Failed(e) => return fail(e),
        Placed::Supervisor(word) => word,
    };
    let held_ports = match ports::hold(&cfg.host_ports) {
        Ok(p) => p,
        Err(e) => {
            word.undo(&cg);
            return fail(e);
        }
    };
    // SAFETY: setsid, umask and signal take no pointers.
    unsafe {
        libc::setsid();
        libc::umask(0o022);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        // At shutdown every process gets SIGTERM: the shim outlives its container's exit to
        // record it (the container's child resets all of these before exec).
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let _ = std::env::set_current_dir("/");
    let host = HostKernel {
        lower_dirs: req.lower_dirs,
        cgroup: req.cgroup_mode.view(),
    };
    // SAFETY: forwarded from the caller (the [::1] relay's thread starts only once the
    // container's init runs, after the last clone).
    match unsafe { supervise(&shim, &bundle, &cfg, &host, &cg, &mut word, held_ports) } {
        Ok(code) => code,
        Err(msg) => {
            word.undo(&cg);
            fail(msg)
        }
    }
}

/// Where [`place`] left this process.
enum Placed {
    /// The short-lived parent, done: the caller reaps it.
    Parent,
    /// The supervisor, with the parent's word to come on the container's cgroup.
    Supervisor(CgroupWord),
    Failed(String),
}

/// Forks the supervisor; the short-lived parent makes the container's cgroup, sends the
/// supervisor its word on it and moves it into its own cgroup. The cgroup is made beside the
/// supervisor's start, not before it: after idle, the agent has begun the RCU grace period of
/// the first migration (~7 ms on an idle tickless guest) at the spec event, and that migration
/// holds the cgroup mutex, which every mkdir and cgroup write waits for. Meanwhile the
/// supervisor waits for the go line, clones the init and lets it build its rootfs, which waits
/// for the word only to be moved into its cgroup (on v2, an init cloned once the word has come
/// is born there).
///
/// # Safety
/// The process must be single-threaded: it forks, and the child goes on allocating.
unsafe fn place(req: &ShimRequest, cfg: &ContainerConfig, cg: &Cgroup) -> Placed {
    if let CgroupMode::Systemd { root, .. } = &req.cgroup_mode {
        // systemd-run started us in our scope's own cgroup, and a cgroup holding processes
        // cannot hand controllers to its children: the supervisor moves into its leaf first.
        let leaf = root.join(&req.shim_cgroup);
        let entered = std::fs::create_dir_all(&leaf)
            .and_then(|()| std::fs::write(leaf.join("cgroup.procs"), "0"));
        if let Err(e) = entered {
            return Placed::Failed(format!("{}: {e}", leaf.display()));
        }
    }
    let (word_r, word_w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => return Placed::Failed(format!("cgroup word pipe: {e}")),
    };
    // Fork: the caller reaps this short-lived parent and the supervisor is adopted by init (or
    // the agent's subreaper), so no agent ever has to reap shims. A forked child also maps only
    // the file pages it touches from here on, which halves the shim's resident memory.
    // SAFETY: the caller promises a single-threaded process.
    match unsafe { libc::fork() } {
        -1 => Placed::Failed(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(word_w);
            Placed::Supervisor(CgroupWord::new(word_r))
        }
        child => {
            drop(word_r);
            let made = setup_cgroup(cg, cfg);
            sys::mark("shim-cgroup-made");
            let word = match &made {
                Ok(()) => format!("1{}", cg.oom_kills()),
                Err(e) => format!("x{e}"),
            };
            if sys::write_all(word_w.as_raw_fd(), word.as_bytes()).is_err() {
                // The supervisor is gone before it could hear: nobody else removes it.
                let _ = cg.remove(Duration::from_secs(1));
            }
            drop(word_w);
            // The parent moves the supervisor out of the caller's cgroup into
            // `<instance>/_shims` (on a systemd host it is in its leaf already).
            if made.is_ok() && !matches!(req.cgroup_mode, CgroupMode::Systemd { .. }) {
                let shims = Cgroup::new(&req.cgroup_mode, &req.shim_cgroup);
                if let Err(e) = shims.create().and_then(|()| shims.add_pid(child)) {
                    eprintln!("berth-shim: the supervisor stays in the caller's cgroup: {e}");
                }
            }
            Placed::Parent
        }
    }
}

/// The short-lived parent's word on the container's cgroup: `1` and its OOM kill count once it
/// is made (what the exit's `oom` is judged against), `x` and the reason when it could not be;
/// the parent closes its end after it.
struct CgroupWord {
    pipe: Option<OwnedFd>,
    heard: Option<Result<u64, String>>,
}

impl CgroupWord {
    fn new(pipe: OwnedFd) -> Self {
        CgroupWord {
            pipe: Some(pipe),
            heard: None,
        }
    }

    /// Whether the cgroup is known to be made already, without waiting.
    fn made_already(&mut self) -> bool {
        let arrived = self
            .pipe
            .as_ref()
            .is_some_and(|p| sys::poll_readable(p, 0).unwrap_or(false));
        if self.heard.is_none() && arrived {
            let _ = self.wait();
        }
        matches!(self.heard, Some(Ok(_)))
    }

    /// Waits for the word: the cgroup's OOM kill count when it was made.
    fn wait(&mut self) -> Result<u64, String> {
        if let Some(heard) = &self.heard {
            return heard.clone();
        }
        let got = match self.pipe.take() {
            Some(p) => sys::read_to_end(&p),
            None => Ok(Vec::new()),
        };
        let heard = match got.as_deref() {
            Ok([b'1', count @ ..]) => Ok(std::str::from_utf8(count)
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0)),
            Ok([b'x', why @ ..]) => Err(String::from_utf8_lossy(why).into_owned()),
            Ok(_) => Err("the shim's parent ended before it made the container's cgroup".into()),
            Err(e) => Err(format!("the shim's parent's word on the cgroup: {e}")),
        };
        self.heard = Some(heard.clone());
        heard
    }

    /// Empties and removes the container's cgroup, once the parent is done making it.
    fn undo(&mut self, cg: &Cgroup) {
        let _ = self.wait();
        undo(cg);
    }
}

fn setup_cgroup(cg: &Cgroup, cfg: &ContainerConfig) -> Result<(), String> {
    cg.create().map_err(|e| e.to_string())?;
    cg.apply(&cfg.resources).map_err(|e| e.to_string())?;
    let rules = device_rules(cfg)?;
    let policy = if cfg.security.privileged {
        DevicePolicy::All
    } else {
        DevicePolicy::Allow(&rules)
    };
    cg.set_devices(policy).map_err(|e| e.to_string())
}

fn device_rules(cfg: &ContainerConfig) -> Result<Vec<DeviceRule>, String> {
    cfg.devices
        .iter()
        .map(|d| {
            let m = std::fs::metadata(&d.host)
                .map_err(|e| format!("device {}: {e}", d.host.display()))?;
            let kind = if m.file_type().is_block_device() {
                DevKind::Block
            } else if m.file_type().is_char_device() {
                DevKind::Char
            } else {
                return Err(format!("{} is not a device node", d.host.display()));
            };
            Ok(DeviceRule {
                kind,
                major: Some(rustix::fs::major(m.rdev())),
                minor: Some(rustix::fs::minor(m.rdev())),
                // The node is made with mknod while the child may already be in its cgroup.
                access: parse_access(&d.permissions) | super::devices::ACC_MKNOD,
            })
        })
        .collect()
}

/// Starts the container in `cg` and relays until it exits: its volumes and log, the go line,
/// the init's clone and exec, the start report, the run, the exit record.
///
/// # Safety
/// The process must be single-threaded: it clones the container's init (see
/// [`sys::clone_fork`]).
unsafe fn supervise(
    shim: &ShimDir,
    bundle: &Bundle,
    cfg: &ContainerConfig,
    host: &HostKernel,
    cg: &Cgroup,
    word: &mut CgroupWord,
    held_ports: ports::Held,
) -> Result<i32, String> {
    let me = rustix::process::getpid().as_raw_pid();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    make_volumes(cfg)?;
    let mut log = LogWriter::open(&bundle.log_file(), cfg.logging)
        .map_err(|e| format!("{}: {e}", bundle.log_file().display()))?;
    let (ours, mut theirs) = init_pipes()?;
    // The runtime makes the network namespace and the container's files while the parent
    // makes the cgroups (and the migrations' RCU grace period runs): the go line on stdin says
    // they are there, end-of-file that they will never be.
    sys::mark("shim-wait-go");
    let loopback6_to = wait_for_go()?;
    let _ = sys::dup2(theirs.stdin.as_raw_fd(), 0);
    sys::mark("shim-go");
    theirs.netns = match &cfg.netns {
        NetNs::Path(p) => Some(OwnedFd::from(
            std::fs::File::open(p).map_err(|e| format!("netns {}: {e}", p.display()))?,
        )),
        _ => None,
    };
    // SAFETY: forwarded from the caller.
    let started = unsafe { start_init(cfg, bundle, host, cg, word, ours, theirs) }?;
    // Heard by now: the init is in its cgroup.
    let oom_before = word.wait()?;
    let pidfd = report_started(shim, me, &started)?;
    let (status, finished_at, reserved) = run(
        &mut log,
        started.outputs,
        &pidfd,
        started.pid,
        held_ports,
        loopback6_to,
    );
    let oom = cg.oom_kills() > oom_before;
    undo(cg);
    drop(reserved);
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, Some(libc::WTERMSIG(status)))
    };
    let exit = ExitRecord {
        version: STATE_VERSION,
        code,
        signal,
        oom,
        started_at: started.at,
        finished_at,
    };
    // The bundle's copy first: the run dir's is what tells the agent the run is over.
    if let Err(e) = write_json(&bundle.last_exit(), &exit) {
        eprintln!("berth-shim: {e}");
    }
    write_json(&shim.exit(), &exit).map_err(|e| e.to_string())?;
    Ok(0)
}

/// Empties and removes the container's cgroup: whatever ran in it is gone.
fn undo(cg: &Cgroup) {
    let _ = cg.kill_all(Duration::from_secs(5));
    let _ = cg.remove(Duration::from_secs(5));
}

/// Makes the dirs of the container's volumes.
fn make_volumes(cfg: &ContainerConfig) -> Result<(), String> {
    for m in &cfg.mounts {
        if let MountSource::Volume(dir) = &m.source {
            // `volumes/` is root's (0700); the volume itself is the container's (0755, as
            // before), reached only through its bind mount.
            if let Some(parent) = dir.parent() {
                crate::fsutil::create_private_dir_all(parent)
                    .map_err(|e| format!("volume {}: {e}", dir.display()))?;
            }
            std::fs::create_dir_all(dir).map_err(|e| format!("volume {}: {e}", dir.display()))?;
        }
    }
    Ok(())
}

/// The shim's ends of the pipes to the container's init.
struct ShimEnds {
    /// The container's stdout and stderr, read into the log.
    outputs: Outputs,
    /// `1`, then `2` (or `x`) to the init: see [`ChildFds::go`].
    go: OwnedFd,
    /// The init's launch error, or EOF once it exec'd.
    error: OwnedFd,
}

/// The read ends of the container's stdout and stderr.
struct Outputs {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// The pipes between the shim and the container's init, both ends; the init's stdin is
/// /dev/null and its netns is opened only once the go line says it is there.
fn init_pipes() -> Result<(ShimEnds, ChildFds), String> {
    let pipe = |what: &str| sys::pipe().map_err(|e| format!("{what} pipe: {e}"));
    let (out_r, out_w) = pipe("stdout")?;
    let (err_r, err_w) = pipe("stderr")?;
    let (go_r, go_w) = pipe("sync")?;
    let (fail_r, fail_w) = pipe("error")?;
    let stdin = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let ours = ShimEnds {
        outputs: Outputs {
            stdout: out_r,
            stderr: err_r,
        },
        go: go_w,
        error: fail_r,
    };
    let theirs = ChildFds {
        go: go_r,
        error: fail_w,
        stdout: out_w,
        stderr: err_w,
        stdin: stdin.into(),
        netns: None,
    };
    Ok((ours, theirs))
}

/// The container's namespaces: its own but for a network namespace the runtime made.
fn clone_flags(cfg: &ContainerConfig) -> libc::c_int {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if cfg.netns == NetNs::None {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// The container's init, running its payload.
struct Started {
    pid: i32,
    at: SystemTime,
    outputs: Outputs,
}

/// Clones the container's init (the clone never returns from here), puts it in its cgroup
/// and waits until it has exec'd its payload. On failure the init is killed; the caller
/// empties and removes the cgroup.
///
/// # Safety
/// As [`clone_init`]: the process must be single-threaded.
unsafe fn start_init(
    cfg: &ContainerConfig,
    bundle: &Bundle,
    host: &HostKernel,
    cg: &Cgroup,
    word: &mut CgroupWord,
    ours: ShimEnds,
    theirs: ChildFds,
) -> Result<Started, String> {
    // On v2 the init is born in its cgroup when the parent has made it by now: no migration
    // (and none of the RCU grace period a migration after idle waits for). On v1, before the
    // cgroup is made, or where clone3 is refused, it is moved in below.
    let target = match cg.clone_target() {
        Some(dir) if word.made_already() => Some(OwnedFd::from(
            std::fs::File::open(&dir).map_err(|e| format!("{}: {e}", dir.display()))?,
        )),
        _ => None,
    };
    sys::mark("shim-clone");
    // SAFETY: forwarded from the caller.
    let cloned = unsafe { clone_init(clone_flags(cfg), target.as_ref()) };
    let (child, born) = match cloned {
        Err(e) => return Err(format!("clone: {e}")),
        Ok((None, _)) => {
            drop((ours, target, word.pipe.take()));
            // SAFETY: this is the freshly cloned child, single-threaded as the shim was.
            unsafe { child_main(cfg, bundle, host, theirs) }
        }
        Ok((Some(pid), born)) => (pid, born),
    };
    drop((theirs, target));
    let at = SystemTime::now();
    let ShimEnds { outputs, go, error } = ours;
    let placed = place_init(go, cg, word, child, born);
    sys::mark("shim-placed");
    if let Some(e) = launch_error(placed, &error) {
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        return Err(e);
    }
    sys::mark("shim-exec-seen");
    Ok(Started {
        pid: child,
        at,
        outputs,
    })
}

/// Lets the init build its rootfs while its cgroup is made and it is moved in (v1, v2 before
/// the cgroup was there, or a v2 kernel without CLONE_INTO_CGROUP; should the RCU grace period
/// of the first migration still be running, the mounts use that time), then tells it whether
/// it is placed: it waits for that second byte before its cgroup namespace and exec.
fn place_init(
    go: OwnedFd,
    cg: &Cgroup,
    word: &mut CgroupWord,
    child: i32,
    born: Born,
) -> Result<(), String> {
    let started = sys::write_all(go.as_raw_fd(), b"1").map_err(|e| format!("start container: {e}"));
    let placed = started.and_then(|()| match born {
        Born::InItsCgroup => Ok(()),
        Born::Outside => word
            .wait()
            .and_then(|_| cg.add_pid(child).map_err(|e| e.to_string())),
    });
    let _ = sys::write_all(go.as_raw_fd(), if placed.is_ok() { b"2" } else { b"x" });
    placed
}

/// Why the init did not get to exec its payload, if it did not: its placement failed, or it
/// wrote a [`super::launch::LaunchError`] before its error pipe closed.
fn launch_error(placed: Result<(), String>, error: &OwnedFd) -> Option<String> {
    match (placed, sys::read_to_end(error)) {
        (Err(e), _) => Some(e),
        (Ok(()), Ok(b)) if b.is_empty() => None,
        (Ok(()), Ok(b)) => Some(
            super::launch::LaunchError::decode(&String::from_utf8_lossy(&b))
                .message()
                .to_string(),
        ),
        (Ok(()), Err(e)) => Some(format!("read start result: {e}")),
    }
}

/// Records the running container's state (what the agent adopts it by) and reports it to the
/// caller, which is told nothing more: its pidfd, readable once the init exits.
fn report_started(shim: &ShimDir, me: i32, started: &Started) -> Result<OwnedFd, String> {
    let pidfd = sys::pidfd_open(started.pid).map_err(|e| format!("pidfd_open: {e}"))?;
    let state = ShimState {
        version: STATE_VERSION,
        shim_pid: me,
        shim_start: sys::proc_stat(me).map(|s| s.0).unwrap_or(0),
        pid: started.pid,
        pid_start: sys::proc_stat(started.pid).map(|s| s.0).unwrap_or(0),
        started_at: started.at,
    };
    write_json_volatile(&shim.state(), &state).map_err(|e| e.to_string())?;
    sys::mark("shim-report");
    report(&Report::Started {
        version: STATE_VERSION,
        state,
    });
    // Nothing more goes to the caller: let it see EOF.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = sys::dup2(null.as_raw_fd(), 1);
    }
    Ok(pidfd)
}

/// The container's run: its output relayed into the log (and its ports' `[::1]` side into
/// it) until its init exits. Its wait status, when, and the host ports still held.
fn run(
    log: &mut LogWriter,
    outputs: Outputs,
    pidfd: &OwnedFd,
    child: i32,
    held_ports: ports::Held,
    loopback6_to: Option<std::net::IpAddr>,
) -> (i32, SystemTime, Vec<OwnedFd>) {
    // The [::1] relay: the shim's one thread besides itself, started only now that nothing
    // forks or clones any more (the container's init is running), and joined before the exit
    // is recorded, so that "exited" means nothing of the run is left.
    let ports::Held {
        reserved,
        mut loopback6,
    } = held_ports;
    // Made before the container's address was known: aimed at it now, or not run at all.
    loopback6.retain_mut(|r| r.aim(loopback6_to));
    let proxy = match super::proxy::Proxy::start(loopback6, super::proxy::Limits::default()) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("berth-shim: cannot start the [::1] relay: {e}");
            None
        }
    };
    let status = relay(log, outputs.stdout, outputs.stderr, pidfd, child);
    let finished_at = SystemTime::now();
    if let Some(p) = proxy {
        p.stop();
    }
    (status, finished_at, reserved)
}

/// Clones the container's init: into `cgroup` where the kernel can (v2), else where we are.
/// `Ok((None, _))` in the child; in the parent its pid and whether it was born in `cgroup`.
///
/// # Safety
/// As [`sys::clone_fork`]: the calling process must be single-threaded.
unsafe fn clone_init(
    flags: libc::c_int,
    cgroup: Option<&OwnedFd>,
) -> std::io::Result<(Option<i32>, Born)> {
    if let Some(fd) = cgroup {
        // SAFETY: forwarded from the caller.
        match unsafe { sys::clone_into_cgroup(flags, fd.as_fd()) }? {
            Ok(r) => return Ok((r, Born::InItsCgroup)),
            Err(refused) => eprintln!("berth-shim: clone3 into the cgroup: {refused}; migrating"),
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { sys::clone_fork(flags) }.map(|r| (r, Born::Outside))
}

/// Where the init was cloned: into its cgroup (v2's CLONE_INTO_CGROUP), or outside it, to be
/// moved in before it may exec.
#[derive(Debug, Clone, Copy)]
enum Born {
    InItsCgroup,
    Outside,
}

/// Blocks until the runtime's go line arrives on stdin: `g`, then the container's address
/// its ports' `[::1]` relay connects to, if it has one.
fn wait_for_go() -> Result<Option<std::net::IpAddr>, String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reads one byte into a live buffer (byte by byte: what follows the line on
        // stdin is not ours to take).
        match unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) } {
            1 if b[0] == b'\n' => {
                let text = String::from_utf8_lossy(&line);
                let to = text.strip_prefix('g').ok_or("a start line without its g")?;
                return Ok(to.parse().ok());
            }
            1 if line.len() < 64 => line.push(b[0]),
            1 => return Err("an overlong start line".into()),
            0 => return Err("the runtime gave up on this start before it began".into()),
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => {
                return Err(format!(
                    "read the start signal: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
}

/// Copies the container's output into the log until its init exits; returns its wait status.
fn relay(log: &mut LogWriter, out: OwnedFd, err: OwnedFd, pidfd: &OwnedFd, child: i32) -> i32 {
    let mut streams = [
        (Some(out), LineSplitter::new(Stream::Stdout)),
        (Some(err), LineSplitter::new(Stream::Stderr)),
    ];
    let mut buf = vec![0u8; 32 * 1024];
    let mut status = None;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if status.is_some() {
            let open = streams.iter().any(|(fd, _)| fd.is_some());
            if !open || drain_deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        let mut pfds: Vec<libc::pollfd> = streams
            .iter()
            .map(|(fd, _)| libc::pollfd {
                fd: fd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        pfds.push(libc::pollfd {
            fd: if status.is_none() {
                pidfd.as_raw_fd()
            } else {
                -1
            },
            events: libc::POLLIN,
            revents: 0,
        });
        let timeout = if status.is_some() { 100 } else { -1 };
        // SAFETY: a live array of pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue;
        }
        for (i, (fd, splitter)) in streams.iter_mut().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            let Some(f) = fd else { continue };
            // SAFETY: reads into a live buffer.
            let r = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let now = SystemTime::now();
            if r > 0 {
                let _ = splitter.feed(&buf[..r as usize], log, now);
            } else if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
            {
                let _ = splitter.finish(log, now);
                *fd = None;
            }
        }
        if pfds[2].revents != 0 && status.is_none() {
            let mut st = 0;
            // SAFETY: waits for our own child, which has exited (the pidfd is readable).
            let r = unsafe { libc::waitpid(child, &mut st, 0) };
            if r == child {
                status = Some(st);
                drain_deadline = Some(Instant::now() + Duration::from_secs(2));
            }
        }
        // Reap anything reparented to us (we are subreaper), the init included if it just went.
        loop {
            let mut st = 0;
            // SAFETY: a non-blocking wait writing into a local.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == child && status.is_none() {
                status = Some(st);
                drain_deadline = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }
    let now = SystemTime::now();
    for (_, s) in streams.iter_mut() {
        let _ = s.finish(log, now);
    }
    status.unwrap_or(0)
}
