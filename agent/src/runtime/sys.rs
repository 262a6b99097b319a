//! Thin wrappers over the syscalls the runtime needs and no crate offers in this shape.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// `clone` with fork semantics (no new stack, SIGCHLD on exit) plus namespace `flags`: the
/// child returns `Ok(None)` and is pid 1 of a new pid namespace when CLONE_NEWPID is set.
///
/// # Safety
/// The calling process must be single-threaded (the shim, or a child forked for exec): the
/// child gets a copy of one thread only, so a lock another thread held (the allocator's, say)
/// would stay locked in it forever.
pub unsafe fn clone_fork(flags: libc::c_int) -> io::Result<Option<i32>> {
    // Raw syscall: nix's clone runs a callback on a stack of its own, not fork semantics;
    // rustix has no clone.
    // SAFETY: without CLONE_VM the child gets a copy of the address space, as with fork; every
    // argument after the flags is zero, so the per-arch argument order does not matter.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid as i32)),
    }
}

/// As [`clone_fork`], with the child born in the cgroup v2 dir `cgroup` (clone3 with
/// `CLONE_INTO_CGROUP`, Linux 5.7): no migration, so none of the RCU grace period the first
/// migration after idle waits for. `Ok(Err(e))` when this kernel (or a seccomp filter above
/// us) refuses clone3 or the flag: then nothing was cloned and the caller falls back.
///
/// # Safety
/// As [`clone_fork`].
pub unsafe fn clone_into_cgroup(
    flags: libc::c_int,
    cgroup: BorrowedFd<'_>,
) -> io::Result<Result<Option<i32>, io::Error>> {
    // struct clone_args up to `cgroup` (CLONE_ARGS_SIZE_VER2): every field a u64; written by
    // hand because the libc crate has no binding for it.
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    // Raw syscall: neither nix nor rustix has clone3.
    // SAFETY: clone3 reads `size_of::<CloneArgs>()` bytes of a live struct; without CLONE_VM
    // and with no stack the child continues here on a copy of the address space, as fork.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOSYS) | Some(libc::E2BIG) | Some(libc::EINVAL) => Ok(Err(e)),
                _ => Err(e),
            }
        }
        0 => Ok(Ok(None)),
        pid => Ok(Ok(Some(pid as i32))),
    }
}

pub fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string has a NUL"))
}

pub fn path_cstr(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL"))
}

/// A pipe whose both ends close on exec: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads until EOF.
pub fn read_to_end(fd: &impl AsRawFd) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into a live buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on integers; `to` is replaced atomically.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every fd from `first` up close-on-exec: close_range where the kernel has it (5.11+),
/// else each fd /proc/self/fd lists.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
    // Raw syscall: neither nix nor rustix has close_range with its CLOEXEC flag.
    // SAFETY: close_range with CLOEXEC only sets flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
        return Err(e);
    }
    cloexec_from_procfs(first)
}

/// Closes every fd from `first` up: close_range where the kernel has it (5.9+), else each fd
/// /proc/self/fd lists.
///
/// # Safety
/// Nothing may use an fd from `first` up afterwards: the `OwnedFd`s and files holding them
/// are left with closed (or, later, reused) numbers.
pub unsafe fn close_from(first: u32) -> io::Result<()> {
    // Raw syscall: nix has no close_range; fds by number go through libc.
    // SAFETY: close_range closes fds this process owns; nothing uses them afterwards.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
        return Err(e);
    }
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd: &RawFd| *fd >= first as RawFd)
        .collect();
    for fd in fds {
        // SAFETY: closing an fd by number; the listing's own fd (already closed) gives EBADF.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// [`cloexec_from`] for kernels without close_range (or its CLOEXEC flag, 5.11).
pub fn cloexec_from_procfs(first: u32) -> io::Result<()> {
    // Collected first: the listing's own fd is among them while it is open.
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd: &RawFd| *fd >= first as RawFd)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on an integer; an fd closed since the listing gives EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // SAFETY: as above.
        if flags >= 0 && unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `(start time in clock ticks since boot, state char)` of a process, from `/proc/<pid>/stat`.
pub fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

/// Splits at the last `)`: the command name may contain anything.
pub fn parse_stat(s: &str) -> Option<(u64, char)> {
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state is field 3 (index 0 here), starttime field 22 (index 19).
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// Whether `pid` is a live (not zombie) process started at `start`.
pub fn alive(pid: i32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((s, st)) if s == start && st != 'Z' && st != 'X')
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // Raw syscall: processes go through libc, and glibc wraps pidfd_open only since 2.36.
    // SAFETY: pidfd_open takes integers and returns a new fd.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

pub fn pidfd_signal(pidfd: &impl AsRawFd, sig: i32) -> io::Result<()> {
    // Raw syscall: glibc wraps pidfd_send_signal only since 2.36, and rustix's `Signal` has no
    // safe constructor for the real-time signals a spec's stop signal may be.
    // SAFETY: integers and a null siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout_ms` (-1: forever) for `fd` to become readable.
pub fn poll_readable(fd: &impl AsRawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one live pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}

/// Reaps `pid` if it is our child and has exited; ECHILD (not ours) is fine.
pub fn try_reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on a specific pid with WNOHANG.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Restores every signal to its default action and unblocks all: the shim ignores some, and an
/// ignored disposition would survive exec into the payload.
pub fn reset_signals() {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: [u32; 2],
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: [0; 2],
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // Raw syscall: libc's wrappers (and nix's through them) refuse the signals glibc
        // reserves for itself (32, 33), which the shim may have inherited as ignored.
        // SAFETY: rt_sigaction reads one kernel sigaction we own; SIG_DFL runs no code.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    // SAFETY: an empty set, written into a local, then applied.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Start-path timing for benchmarks: with `BERTH_SHIM_TIMING` set in the shim's environment,
/// prints `timing <label> <monotonic µs>` to its stderr (the shim log).
pub fn mark(label: &str) {
    if std::env::var_os("BERTH_SHIM_TIMING").is_some() {
        let Ok(t) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) else {
            return;
        };
        eprintln!(
            "timing {label} {}",
            t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a kernel without close_range (before 5.9) or its CLOEXEC flag (5.11), emulated by a
    /// seccomp filter answering ENOSYS, every fd is still marked.
    #[test]
    fn cloexec_without_close_range() {
        use crate::runtime::seccomp::{RET_ALLOW, SockFilter, load, ret_errno};
        let prog = [
            SockFilter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 0,
            },
            SockFilter {
                code: 0x15,
                jt: 0,
                jf: 1,
                k: libc::SYS_close_range as u32,
            },
            SockFilter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: ret_errno(libc::ENOSYS),
            },
            SockFilter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: RET_ALLOW,
            },
        ];
        // SAFETY: the child makes syscalls and reads /proc, then _exits without unwinding.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                let denied =
                    load(&prog).is_ok() && libc::syscall(libc::SYS_close_range, 3, u32::MAX, 4) < 0;
                let marked = cloexec_from(3).is_ok()
                    && libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0;
                libc::_exit(if denied && marked { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn stat_with_hostile_names() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 100 1";
        assert_eq!(parse_stat(line), Some((98765, 'S')));
        let me = proc_stat(std::process::id() as i32).unwrap();
        assert!(alive(std::process::id() as i32, me.0));
        assert!(!alive(std::process::id() as i32, me.0 + 1));
    }
}
