//! The container's first process, from clone to exec: network, cgroup namespace, hostname,
//! rootfs, mounts, pivot_root, rlimits, then `launch`. Runs in the shim's cloned child, which
//! is pid 1 of its own pid namespace; it never returns.

use std::convert::Infallible;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::config::{Bundle, ContainerConfig, NetNs};
use super::launch::{self, LaunchError};
use super::mounts::CgroupView;
use super::rootfs::{Create, LowerDirs, mount_overlay, open_in_root};
use super::{init, mounts, oom, sys};

/// The fds the child needs, opened by the shim before clone.
pub struct ChildFds {
    /// `1` to start; then `2` once the shim has put the child in its cgroup (`x`: it failed).
    pub go: OwnedFd,
    /// Close-on-exec: EOF means the payload was exec'd; data is a [`LaunchError`].
    pub error: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub stdin: OwnedFd,
    pub netns: Option<OwnedFd>,
}

pub const NOFILE_WANTED: u64 = 1 << 20;

/// What the agent decided about this host's kernel, once, for every container.
#[derive(Debug, Clone)]
pub struct HostKernel {
    pub lower_dirs: LowerDirs,
    pub cgroup: CgroupView,
}

/// Builds the container and execs its payload; on failure reports over the error pipe and exits.
///
/// # Safety
/// Only in the shim's freshly cloned child, a single-threaded process: with `init = true` it
/// forks once more (see [`init::become_reaper`]), and it turns this process into the
/// container (its namespaces, root, credentials and stdio) for good.
pub unsafe fn child_main(
    cfg: &ContainerConfig,
    bundle: &Bundle,
    host: &HostKernel,
    fds: ChildFds,
) -> ! {
    // SAFETY: forwarded from the caller.
    let err = match unsafe { build(cfg, bundle, host, &fds) } {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = sys::write_all(fds.error.as_raw_fd(), err.encode().as_bytes());
    // SAFETY: _exit ends this child without running the parent's atexit handlers.
    unsafe { libc::_exit(err.exit_code()) }
}

fn step<T>(what: &str, r: io::Result<T>) -> Result<T, LaunchError> {
    r.map_err(|e| LaunchError::Setup(format!("{what}: {e}")))
}

fn nix_step<T>(what: &str, r: nix::Result<T>) -> Result<T, LaunchError> {
    step(what, r.map_err(io::Error::from))
}

/// Long because: it is the container init's one ordered sequence from the shim's privileges to
/// the payload's (mounts, pivot_root, cgroup namespace, user, capabilities, no_new_privs,
/// seccomp, exec), where the order is the security argument; split up, it would no longer
/// read top to bottom.
///
/// # Safety
/// As [`child_main`].
unsafe fn build(
    cfg: &ContainerConfig,
    bundle: &Bundle,
    host: &HostKernel,
    fds: &ChildFds,
) -> Result<Infallible, LaunchError> {
    sys::reset_signals();
    step(
        "reset oom_score_adj",
        oom::set_own_score(oom::CONTAINER_SCORE),
    )?;
    let mut b = [0u8; 1];
    // SAFETY: reads one byte into a live buffer.
    if unsafe { libc::read(fds.go.as_raw_fd(), b.as_mut_ptr().cast(), 1) } != 1 {
        return Err(LaunchError::Setup("the shim went away before start".into()));
    }
    sys::mark("child-go");
    if let Some(ns) = &fds.netns {
        nix_step(
            "join network namespace",
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET),
        )?;
    }
    if cfg.netns == NetNs::None {
        step("bring up lo", loopback_up())?;
    }
    if cfg.netns != NetNs::Host {
        // /proc/sys/net follows the opener's netns: this is the container's, never the host's.
        step(
            "set net.ipv4.ping_group_range",
            std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647"),
        )?;
    }
    nix_step("sethostname", nix::unistd::sethostname(&cfg.hostname))?;
    nix_step(
        "make / private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    let rootfs = bundle.rootfs();
    step(
        "mount overlay rootfs",
        mount_overlay(
            &cfg.layers,
            &bundle.upper(),
            &bundle.work(),
            &rootfs,
            host.lower_dirs,
        ),
    )?;
    sys::mark("child-overlay");
    let root = step("open rootfs", File::open(&rootfs))?;
    step("mounts", mounts::setup(&root, cfg))?;
    sys::mark("child-mounts");
    step(
        &format!("create workdir {}", cfg.process.cwd),
        open_in_root(&root, &cfg.process.cwd, Create::Dir),
    )?;
    drop(root);

    step("chdir rootfs", std::env::set_current_dir(&rootfs))?;
    nix_step("pivot_root", nix::unistd::pivot_root(".", "."))?;
    // The old root is stacked under the new one at "."; detach it so the host is unreachable.
    nix_step("detach old root", umount2(".", MntFlags::MNT_DETACH))?;
    step("chdir /", std::env::set_current_dir("/"))?;
    if cfg.security.read_only_rootfs {
        nix_step(
            "remount rootfs read-only",
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            ),
        )?;
    }
    sys::mark("child-pivot");
    // From here on the process must be in its cgroup: the cgroup namespace is rooted where it
    // is now, and the payload must run under the limits.
    // SAFETY: reads one byte into a live buffer.
    if unsafe { libc::read(fds.go.as_raw_fd(), b.as_mut_ptr().cast(), 1) } != 1 || b[0] != b'2' {
        return Err(LaunchError::Setup(
            "the shim could not place the container in its cgroup".into(),
        ));
    }
    nix_step(
        "unshare cgroup namespace",
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP),
    )?;
    let access = match cfg.security.privileged {
        true => mounts::CgroupAccess::Writable,
        false => mounts::CgroupAccess::ReadOnly,
    };
    step(
        "mount /sys/fs/cgroup",
        mounts::mount_cgroup(&host.cgroup, access),
    )?;
    step("set RLIMIT_NOFILE", set_nofile())?;
    let prepared = launch::prepare(&cfg.process, &cfg.security)?;
    step("stdin", sys::dup2(fds.stdin.as_raw_fd(), 0))?;
    step("stdout", sys::dup2(fds.stdout.as_raw_fd(), 1))?;
    step("stderr", sys::dup2(fds.stderr.as_raw_fd(), 2))?;
    if cfg.init {
        // SAFETY: forwarded from the caller (a single-threaded, freshly cloned child).
        unsafe { init::become_reaper(&fds.error) }?;
    }
    step("mark fds close-on-exec", sys::cloexec_from(3))?;
    sys::mark("child-exec");
    Err(prepared.exec())
}

/// NOFILE as podman sets it, capped at the hard limit the shim inherited from the host.
fn set_nofile() -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let max = getrlimit(Resource::Nofile).maximum;
    let n = max.map_or(NOFILE_WANTED, |max| NOFILE_WANTED.min(max));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(n),
            maximum: Some(n),
        },
    )?;
    Ok(())
}

/// Sets IFF_UP on `lo` in the current network namespace.
fn loopback_up() -> io::Result<()> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let s = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the named interface in `req`.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member for flags, set by the ioctl above.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
