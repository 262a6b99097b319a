//! `exec`: a new process inside a running container, in its namespaces and cgroup, with its
//! user, capabilities and seccomp filter, optionally on a terminal from the container's own
//! devpts (so `tty` inside prints a path that exists there).
//!
//! Forks: call it from a single-threaded process (the `berth exec` command), never from the
//! agent's tokio workers.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use super::cgroup::Cgroup;
use super::config::ContainerConfig;
use super::error::{IoContext, Result, RuntimeError};
use super::launch::{self, LaunchError};
use super::lifecycle::Runtime;
use super::process::ProcessSpec;
use super::sys;
use crate::names::IncarnationId;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// `KEY=value` added to (and overriding) the container's env.
    pub env: Vec<String>,
    /// Keep the caller's stdin (else /dev/null).
    pub interactive: bool,
    /// Allocate a terminal from the container's devpts.
    pub tty: bool,
}

/// A running container to exec into, checked alive when made.
#[derive(Debug)]
pub struct ExecTarget {
    pid: i32,
    ns: Vec<(libc::c_int, OwnedFd)>,
    root: PathBuf,
    cgroup: Cgroup,
    config: ContainerConfig,
}

/// Namespaces joined, in order: mount last, since it changes what paths mean.
const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

impl Runtime {
    /// Opens the namespaces of a running container for [`spawn`].
    pub fn exec_target(&self, name: &str, id: &IncarnationId) -> Result<ExecTarget> {
        let not_running = || RuntimeError::NotRunning {
            name: name.into(),
            id: id.to_string(),
        };
        let st = self
            .inspect(name, id)?
            .filter(|o| o.status == super::Status::Running || o.status == super::Status::Paused)
            .ok_or_else(not_running)?;
        if st.status == super::Status::Paused {
            return Err(RuntimeError::Invalid {
                name: name.into(),
                reason: "container is paused".into(),
            });
        }
        let pid = st.pid.ok_or_else(not_running)?;
        let mut ns = Vec::new();
        for (n, flag) in NAMESPACES {
            let p = format!("/proc/{pid}/ns/{n}");
            let f = std::fs::File::open(&p).at(&p)?;
            ns.push((*flag, OwnedFd::from(f)));
        }
        // The pid could have been reused between inspect and open: check it is still ours.
        if !sys::alive(pid, st.pid_start.unwrap_or(0)) {
            return Err(not_running());
        }
        Ok(ExecTarget {
            pid,
            ns,
            root: PathBuf::from(format!("/proc/{pid}/root")),
            cgroup: self.cgroup(name, id),
            config: self.read_config(name, id)?,
        })
    }
}

fn merged_env(base: &[String], extra: &[String]) -> Vec<String> {
    let mut env: Vec<String> = base.to_vec();
    for kv in extra {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(kv.clone());
    }
    env
}

/// A terminal pair from the container's devpts: (master, slave).
fn container_pty(root: &std::path::Path) -> Result<(OwnedFd, OwnedFd)> {
    let ptmx = root.join("dev/pts/ptmx");
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags_noctty()
        .open(&ptmx)
        .at(&ptmx)?
        .into();
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } < 0 {
        return Err(RuntimeError::sys(
            "unlock pty",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: TIOCGPTPEER opens the slave of this master and returns a new fd.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(RuntimeError::sys(
            "open pty slave",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh fd we own.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}
impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY)
    }
}

/// A started exec: the caller relays the terminal (if any), then calls [`Running::wait`].
#[derive(Debug)]
pub struct Running {
    child: i32,
    error: OwnedFd,
    /// The terminal's master side, when a tty was asked for.
    pub master: Option<OwnedFd>,
}

impl Running {
    /// Waits for the process; its exit code (128 + signal when killed), or the launch error.
    pub fn wait(self) -> std::result::Result<i32, LaunchError> {
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(self.child, &mut status, 0) };
        let msg = sys::read_to_end(&self.error).unwrap_or_default();
        if !msg.is_empty() {
            return Err(LaunchError::decode(&String::from_utf8_lossy(&msg)));
        }
        Ok(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
    }
}

/// Starts `req` in `target`.
pub fn spawn(target: &ExecTarget, req: &ExecRequest) -> Result<Running> {
    let process = ProcessSpec {
        args: req.args.clone(),
        env: merged_env(&target.config.process.env, &req.env),
        cwd: target.config.process.cwd.clone(),
        user: target.config.process.user.clone(),
    };
    if process.args.is_empty() {
        return Err(RuntimeError::Invalid {
            name: target.config.name.clone(),
            reason: "no command to exec".into(),
        });
    }
    let pty = if req.tty {
        Some(container_pty(&target.root)?)
    } else {
        None
    };
    if let Some((master, _)) = &pty {
        copy_winsize(0, master.as_raw_fd());
    }
    let (err_r, err_w) = sys::pipe().doing("pipe")?;
    let procs: Vec<std::ffi::CString> = target
        .cgroup
        .dirs()
        .iter()
        .map(|d| sys::path_cstr(&d.join("cgroup.procs")))
        .collect::<std::io::Result<_>>()
        .doing("cgroup path")?;
    // SAFETY: the caller is single-threaded (see the module doc).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(RuntimeError::sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let e = enter_and_exec(
            target,
            &process,
            req,
            &procs,
            pty.as_ref().map(|p| &p.1),
            &err_w,
        );
        let _ = sys::write_all(err_w.as_raw_fd(), e.encode().as_bytes());
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(e.exit_code()) };
    }
    drop(err_w);
    Ok(Running {
        child: pid,
        error: err_r,
        master: pty.map(|(m, _)| m),
    })
}

/// Gives terminal `to` the size of terminal `from` (a no-op when `from` is not one).
pub fn copy_winsize(from: RawFd, to: RawFd) {
    // SAFETY: winsize is plain old data; the ioctls read and write one struct.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// In the forked child: join the cgroup and namespaces, fork into the pid namespace, exec.
fn enter_and_exec(
    target: &ExecTarget,
    process: &ProcessSpec,
    req: &ExecRequest,
    procs: &[std::ffi::CString],
    slave: Option<&OwnedFd>,
    err_w: &OwnedFd,
) -> LaunchError {
    let setup =
        |what: &str| LaunchError::Setup(format!("{what}: {}", std::io::Error::last_os_error()));
    sys::reset_signals();
    if super::oom::set_own_score(super::oom::CONTAINER_SCORE).is_err() {
        return setup("reset oom_score_adj");
    }
    for p in procs {
        // SAFETY: open/write/close on a C path we own; "0" means the calling process.
        unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return setup("join the container's cgroup");
            }
            libc::close(fd);
        }
    }
    for (flag, fd) in &target.ns {
        // SAFETY: setns on an fd we hold.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
            return setup("join namespace");
        }
    }
    // A pid namespace applies to children: fork once more.
    // SAFETY: this process is single-threaded.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return setup("fork");
    }
    if child > 0 {
        // SAFETY: closing our copy so the parent sees EOF once the grandchild execs.
        unsafe { libc::close(err_w.as_raw_fd()) };
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        // SAFETY: ends this intermediate process.
        unsafe { libc::_exit(code) };
    }
    match slave {
        Some(s) => {
            // SAFETY: a new session with the slave as controlling terminal, on fds we hold.
            unsafe {
                libc::setsid();
                libc::ioctl(s.as_raw_fd(), libc::TIOCSCTTY, 0);
            }
            for fd in 0..3 {
                if sys::dup2(s.as_raw_fd(), fd).is_err() {
                    return setup("dup2 tty");
                }
            }
        }
        None if !req.interactive => {
            if let Ok(null) = std::fs::File::open("/dev/null") {
                let _ = sys::dup2(null.as_raw_fd(), 0);
            }
        }
        None => {}
    }
    let _ = target.pid;
    match launch::prepare(process, &target.config.security) {
        Ok(p) => {
            sys::cloexec_from(3);
            p.exec()
        }
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_by_key() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let env = merged_env(&base, &["A=2".into(), "B=3".into()]);
        assert_eq!(env, ["PATH=/bin", "A=2", "B=3"]);
    }
}
