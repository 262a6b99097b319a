//! `exec`: a new process inside a running container, in its namespaces, with its user,
//! capabilities and seccomp filter.
//!
//! Nothing of the caller's reaches the container: the process gets pipes that `berth exec`
//! relays (as Docker and podman do), or a terminal opened inside the container's mount
//! namespace (its own devpts, resolved without following links) whose master comes back over
//! a socket (runc's console socket); it starts a session of its own, so the caller's terminal
//! is never its controlling one; every inherited fd is closed at exec. The helpers that join
//! the container run from a sealed copy of the binary (`exeseal`, done by `berth exec` at
//! start) and are not dumpable, so no container process can open their /proc entries. Each
//! exec gets a cgroup of its own below the container's, so that a timeout or a signal to
//! `berth exec` kills everything it started.
//!
//! Forks: call it from a single-threaded process (the `berth exec` command), never from the
//! agent's tokio workers.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sched::CloneFlags;

use super::cgroup::Cgroup;
use super::config::ContainerConfig;
use super::error::{IoContext, Result, RuntimeError};
use super::launch::{self, LaunchError};
use super::lifecycle::Runtime;
use super::process::ProcessSpec;
use super::sys;
use crate::names::IncarnationId;

/// The exit code of an exec killed at its deadline (timeout(1)'s); health checks read it too.
pub const TIMED_OUT: u8 = 124;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// `KEY=value` added to (and overriding) the container's env.
    pub env: Vec<String>,
    /// Relay the caller's stdin (else the process reads EOF).
    pub interactive: bool,
    /// Allocate a terminal from the container's devpts.
    pub tty: bool,
    /// The caller's terminal size (rows, columns): the container's terminal has it before the
    /// process starts, so the process's first look at its size is right (the relay follows
    /// later resizes).
    pub tty_size: Option<(u16, u16)>,
}

/// A running container to exec into, checked alive when made.
#[derive(Debug)]
pub struct ExecTarget {
    pid: i32,
    ns: Vec<(CloneFlags, OwnedFd)>,
    cgroup: Cgroup,
    config: ContainerConfig,
}

/// Namespaces joined, in order: mount last, since it changes what paths mean.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
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

const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

/// Whether `fd` is a pty master of a devpts instance (what `/dev/pts/ptmx` opens).
fn is_ptmx(fd: &impl AsFd) -> bool {
    // f_type's integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let devpts = rustix::fs::fstatfs(fd).is_ok_and(|s| s.f_type as i64 == DEVPTS_SUPER_MAGIC);
    let ptmx = rustix::fs::fstat(fd).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice
            && rustix::fs::major(st.st_rdev) == 5
            && rustix::fs::minor(st.st_rdev) == 2
    });
    devpts && ptmx
}

/// A terminal pair from the devpts of the mount namespace this process is in (the
/// container's, after setns): (master, slave). The path is resolved inside that root without
/// following any symlink, and what opens must be a devpts ptmx, so a container cannot point
/// berth at anything else.
fn container_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let master = rustix::fs::openat2(
        &root,
        "dev/pts/ptmx",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    if !is_ptmx(&master) {
        return Err(std::io::Error::other(
            "the container's /dev/pts/ptmx is not a devpts terminal multiplexer",
        ));
    }
    rustix::fs::fcntl_setfl(&master, OFlags::RDWR)?;
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } < 0 {
        return Err(std::io::Error::last_os_error());
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
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Sends `fd` over the unix socket `sock`.
fn send_fd(sock: &OwnedFd, fd: &OwnedFd) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(b"m")],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receives one fd from `sock`; `None` when the other side closed without sending.
fn recv_fd(sock: &OwnedFd) -> std::io::Result<Option<OwnedFd>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let r = rustix::net::recvmsg(
        sock,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if r.bytes == 0 {
        return Ok(None);
    }
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

/// How the exec'd process's stdio reaches the caller: never the caller's own fds.
#[derive(Debug)]
pub enum ExecIo {
    /// Three pipes: stdin's write end (`None` without `-i`: the process reads EOF), stdout's
    /// and stderr's read ends.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// The master of a terminal from the container's own devpts.
    Terminal { master: OwnedFd },
}

/// A started exec: the caller relays [`Running::io`] (see `exec_relay`), then [`Running::finish`].
#[derive(Debug)]
pub struct Running {
    /// The helper outside the container's pid namespace; it exits with the process's status.
    helper: i32,
    pidfd: OwnedFd,
    error: OwnedFd,
    /// The exec's own cgroup, below the container's: everything the process starts is in it.
    cgroup: Cgroup,
    pub io: Option<ExecIo>,
}

impl Running {
    /// Readable once the process has exited.
    pub fn exit_fd(&self) -> &OwnedFd {
        &self.pidfd
    }

    /// SIGKILLs every process of this exec (nothing it forked escapes its cgroup).
    pub fn kill_all(&self) {
        if let Err(e) = self.cgroup.kill_all(std::time::Duration::from_secs(10)) {
            eprintln!("berth exec: {e}");
        }
    }

    /// Reaps the helper: the process's exit code (128 + signal when killed), or the launch
    /// error. The exec's cgroup goes once nothing of it is left running (a process it started
    /// in the background keeps it, as it keeps running).
    pub fn finish(self) -> std::result::Result<i32, LaunchError> {
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(self.helper, &mut status, 0) };
        if self.cgroup.pids().is_empty() {
            let _ = self.cgroup.remove(std::time::Duration::from_secs(1));
        }
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

/// The fds the helper hands the process as 0, 1 and 2 (or the socket to send a terminal over).
enum ChildIo {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Terminal {
        sock: OwnedFd,
        size: Option<(u16, u16)>,
    },
}

/// Starts `req` in `target`, in a cgroup of its own below the container's.
///
/// # Safety
/// The calling process must be single-threaded (the `berth exec` command, never the agent's
/// tokio workers): it forks, and the child goes on to allocate and setns.
pub unsafe fn spawn(target: &ExecTarget, req: &ExecRequest) -> Result<Running> {
    let process = ProcessSpec {
        args: req.args.clone(),
        env: merged_env(&target.config.process.env, &req.env),
        cwd: target.config.process.cwd.clone(),
        user: target.config.process.user.clone(),
        group_add: target.config.process.group_add.clone(),
    };
    if process.args.is_empty() {
        return Err(RuntimeError::Invalid {
            name: target.config.name.clone(),
            reason: "no command to exec".into(),
        });
    }
    let (cgroup, procs) = exec_cgroup(target)?;
    let (ours, theirs) = stdio(req)?;
    let (err_r, err_w) = sys::pipe().doing("pipe")?;
    let client = rustix::process::getpid().as_raw_pid();
    // SAFETY: the caller is single-threaded (see the module doc).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let _ = cgroup.remove(std::time::Duration::from_secs(1));
        return Err(RuntimeError::sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // The caller's ends stay with the caller: a helper holding stdin's write end would
        // keep the process from ever reading EOF.
        drop((ours, err_r));
        // SAFETY: the forked child of a single-threaded caller (this function's contract).
        let e = unsafe { enter_and_exec(target, &process, client, &procs, theirs, &err_w) };
        let _ = sys::write_all(err_w.as_raw_fd(), e.encode().as_bytes());
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(e.exit_code()) };
    }
    drop((theirs, err_w));
    let abandon = |e: RuntimeError| {
        // SAFETY: kill and waitpid on our own child; its PDEATHSIG-bound child dies with it.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let _ = cgroup.kill_all(std::time::Duration::from_secs(5));
        let _ = cgroup.remove(std::time::Duration::from_secs(1));
        e
    };
    let pidfd = sys::pidfd_open(pid).doing("pidfd_open").map_err(abandon)?;
    // The helper joins the exec's cgroup itself, before it forks; it is put there from this
    // side as well, before `spawn` returns, so that a kill of the cgroup from now on (a
    // timeout, a signal already pending) can never miss it: it may not have run yet.
    for d in cgroup.dirs() {
        let path = d.join("cgroup.procs");
        if let Err(e) = std::fs::write(&path, pid.to_string()) {
            return Err(abandon(RuntimeError::io(&path, e)));
        }
    }
    let io = match ours {
        Pipes::Io(io) => Some(io),
        Pipes::Socket(sock) => match recv_fd(&sock) {
            Ok(Some(master)) if is_ptmx(&master) => Some(ExecIo::Terminal { master }),
            Ok(Some(_)) => {
                return Err(abandon(RuntimeError::sys(
                    "receive the terminal",
                    std::io::Error::other("not a devpts terminal"),
                )));
            }
            // The helper failed before: its error comes with `finish`.
            Ok(None) => None,
            Err(e) => return Err(abandon(RuntimeError::sys("receive the terminal", e))),
        },
    };
    Ok(Running {
        helper: pid,
        pidfd,
        error: err_r,
        cgroup,
        io,
    })
}

/// The exec's own cgroup below the container's (made without controllers), with the paths
/// of its `cgroup.procs` files for the forked helper to join.
fn exec_cgroup(target: &ExecTarget) -> Result<(Cgroup, Vec<std::ffi::CString>)> {
    let mut suffix = [0u8; 4];
    getrandom::fill(&mut suffix)
        .map_err(|e| RuntimeError::sys("random", std::io::Error::other(e.to_string())))?;
    let cgroup = target
        .cgroup
        .child(&format!("exec-{}", hex::encode(suffix)));
    cgroup.create_without_controllers()?;
    let procs: Vec<std::ffi::CString> = cgroup
        .dirs()
        .iter()
        .map(|d| sys::path_cstr(&d.join("cgroup.procs")))
        .collect::<std::io::Result<_>>()
        .doing("cgroup path")?;
    Ok((cgroup, procs))
}

/// The caller's and the helper's ends of the exec's stdio: three pipes, or a socket a
/// terminal made in the container comes back over.
fn stdio(req: &ExecRequest) -> Result<(Pipes, ChildIo)> {
    Ok(if req.tty {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| RuntimeError::sys("socketpair", e.into()))?;
        (
            Pipes::Socket(a),
            ChildIo::Terminal {
                sock: b,
                size: req.tty_size,
            },
        )
    } else {
        let (in_r, in_w) = sys::pipe().doing("pipe")?;
        let (out_r, out_w) = sys::pipe().doing("pipe")?;
        let (err_r, err_w) = sys::pipe().doing("pipe")?;
        (
            Pipes::Io(ExecIo::Pipes {
                stdin: req.interactive.then_some(in_w),
                stdout: out_r,
                stderr: err_r,
            }),
            ChildIo::Pipes {
                stdin: in_r,
                stdout: out_w,
                stderr: err_w,
            },
        )
    })
}

/// The caller's side before it knows which: the relayed stdio, or the socket a terminal
/// comes over.
enum Pipes {
    Io(ExecIo),
    Socket(OwnedFd),
}

/// The size (rows, columns) of terminal `fd`, if it is one with a size.
pub fn terminal_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain old data; the ioctl writes one struct.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into the live struct above.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

fn set_winsize(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one live struct.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
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

/// In the forked helper: join the exec's cgroup and the container's namespaces, fork into
/// the pid namespace; the grandchild starts a session of its own, takes its stdio (or a
/// terminal it opens in the container) and execs.
/// Long because: it is the forked child's one ordered sequence from the host's privileges to
/// the container's, where the order is the security argument (each step says why it stands
/// where it does); split up, the order would no longer read top to bottom.
///
/// # Safety
/// Only in the child [`spawn`] forks, a single-threaded process: it forks once more, and it
/// turns this process into one of the container's for good.
unsafe fn enter_and_exec(
    target: &ExecTarget,
    process: &ProcessSpec,
    client: i32,
    procs: &[std::ffi::CString],
    io: ChildIo,
    err_w: &OwnedFd,
) -> LaunchError {
    let setup =
        |what: &str| LaunchError::Setup(format!("{what}: {}", std::io::Error::last_os_error()));
    sys::reset_signals();
    if super::oom::set_own_score(super::oom::CONTAINER_SCORE).is_err() {
        return setup("reset oom_score_adj");
    }
    // SAFETY: prctl with integer arguments only. Not dumpable: no process of the container
    // may open this one's /proc/<pid>/{exe,fd,mem} while it holds host privileges and fds;
    // and the helpers die with `berth exec`, so a killed client leaves nothing behind.
    unsafe {
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
        {
            return setup("prctl");
        }
    }
    if rustix::process::getppid().map(|p| p.as_raw_pid()) != Some(client) {
        return LaunchError::Setup("berth exec went away".into());
    }
    // Whatever the caller left open without close-on-exec stays out of the container. Done
    // here, while /proc is still the host's.
    if let Err(e) = sys::cloexec_from(3) {
        return LaunchError::Setup(format!("mark fds close-on-exec: {e}"));
    }
    for p in procs {
        use rustix::fs::{Mode, OFlags};
        // "0" means the calling process.
        let joined = rustix::fs::open(
            p.as_c_str(),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .and_then(|fd| sys::write_all(fd.as_raw_fd(), b"0"));
        if let Err(e) = joined {
            return LaunchError::Setup(format!("join the exec's cgroup: {e}"));
        }
    }
    for (flag, fd) in &target.ns {
        if let Err(e) = nix::sched::setns(fd, *flag) {
            return LaunchError::Setup(format!("join namespace: {e}"));
        }
    }
    // A pid namespace applies to children: fork once more.
    // SAFETY: this process is single-threaded (the caller's promise).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return setup("fork");
    }
    if child > 0 {
        // Only the grandchild keeps the process's ends and the error pipe, so the caller sees
        // EOF once it (and whatever it started) is done with them.
        drop(io);
        // SAFETY: closing our copy of the error pipe; the OwnedFd is never used again here.
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
    // SAFETY: prctl with integer arguments only. The parent is outside this pid namespace, so
    // getppid says 0 while it lives (the container's init adopts us if it died first).
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return setup("prctl");
        }
    }
    if rustix::process::getppid().is_some() {
        return LaunchError::Setup("berth exec went away".into());
    }
    // A session of its own: the caller's terminal is never this process's controlling one.
    // SAFETY: setsid takes no arguments; a fresh child is never a group leader.
    if unsafe { libc::setsid() } < 0 {
        return setup("setsid");
    }
    match io {
        ChildIo::Terminal { sock, size } => {
            let (master, slave) = match container_pty() {
                Ok(p) => p,
                Err(e) => return LaunchError::Setup(format!("open a terminal: {e}")),
            };
            if let Some((rows, cols)) = size {
                set_winsize(master.as_raw_fd(), rows, cols);
            }
            if let Err(e) = send_fd(&sock, &master) {
                return LaunchError::Setup(format!("pass the terminal back: {e}"));
            }
            drop((master, sock));
            // SAFETY: the slave becomes our controlling terminal (we lead a new session).
            if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
                return setup("set the controlling terminal");
            }
            for fd in 0..3 {
                if sys::dup2(slave.as_raw_fd(), fd).is_err() {
                    return setup("dup2 tty");
                }
            }
        }
        ChildIo::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            for (from, to) in [(&stdin, 0), (&stdout, 1), (&stderr, 2)] {
                if sys::dup2(from.as_raw_fd(), to).is_err() {
                    return setup("dup2 stdio");
                }
            }
        }
    }
    let _ = target.pid;
    match launch::prepare(process, &target.config.security) {
        Ok(p) => match sys::cloexec_from(3) {
            Ok(()) => p.exec(),
            Err(e) => LaunchError::Setup(format!("mark fds close-on-exec: {e}")),
        },
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
