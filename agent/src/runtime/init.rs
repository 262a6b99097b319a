//! `init = true`: a tiny reaper as the container's pid 1. It forks the payload, forwards the
//! signals it receives to it, reaps every zombie reparented to it, and exits with the payload's
//! status (128 + signal when the payload was killed), as tini does.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI32, Ordering};

use super::launch::LaunchError;

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
}

/// Forks: returns in the child, which goes on to exec the payload; the parent stays pid 1 and
/// never returns.
///
/// # Safety
/// The process must be single-threaded (the container's init, cloned from the shim): it forks,
/// and the parent closes every fd from 3 up, whoever owns it.
pub unsafe fn become_reaper(error_pipe: &OwnedFd) -> Result<(), LaunchError> {
    // SAFETY: the caller promises a single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(LaunchError::Setup(format!(
            "fork init: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        return Ok(());
    }
    CHILD.store(pid, Ordering::Relaxed);
    let _ = error_pipe;
    // The reaper never execs, so close-on-exec does nothing for it: it closes every fd but
    // stdio itself (the error pipe, the shim's held host ports, its log and netns fds...).
    // Not dumpable: the container's processes cannot open its /proc/1/{exe,fd,mem}.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // SAFETY: the reaper runs no code of ours that holds an fd from 3 up after this: it only
    // forwards signals and waits.
    if let Err(e) = unsafe { super::sys::close_from(3) } {
        // SAFETY: stops the payload we just forked; the reaper cannot run safely.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        eprintln!("berth init: close inherited fds: {e}");
        // SAFETY: ends pid 1; the kernel then kills the rest of the namespace.
        unsafe { libc::_exit(125) };
    }
    for sig in 1..32 {
        if matches!(sig, libc::SIGKILL | libc::SIGSTOP | libc::SIGCHLD) {
            continue;
        }
        // SAFETY: installs a handler that only calls kill.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    // The reaper needs no privilege: drop every capability.
    let _ = super::caps::drop_bounding(super::caps::CapSet(0));
    let none = super::caps::CapSets {
        bounding: super::caps::CapSet(0),
        effective: super::caps::CapSet(0),
        permitted: super::caps::CapSet(0),
        inheritable: super::caps::CapSet(0),
        ambient: super::caps::CapSet(0),
    };
    let _ = super::caps::set_process_caps(&none);
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    loop {
        let mut status = 0;
        // SAFETY: waits for any child, writing into a local.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            // SAFETY: ends pid 1; the kernel then kills the rest of the namespace.
            unsafe { libc::_exit(code) };
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            // SAFETY: as above.
            unsafe { libc::_exit(125) };
        }
    }
}
