//! Health checks run inside the container, as `berth exec` does it, in a child process: the
//! agent is multi-threaded and must not fork into namespaces itself.
//!
//! A check never outlives its timeout: `berth exec --timeout` kills every process of the check
//! (the exec's own cgroup) when it passes, and the agent reads the check's output with a
//! deadline of its own and kills `berth exec` should it still be there, so a check that hangs
//! (or leaves a process holding its output) is a failed check, and the next one runs.

use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_spec::model::HealthCheck;

use super::Host;
use crate::reconcile::health::CheckRun;
use crate::runtime::sys;

/// The output kept from one check, for `berth status`.
const OUTPUT_MAX: usize = 4096;

/// How long past the check's timeout the agent waits for `berth exec` to kill the check and
/// exit on its own.
const GRACE: Duration = Duration::from_secs(10);

impl Host {
    pub(super) fn run_health_check(&self, name: &str, check: &HealthCheck) -> CheckRun {
        let exe = std::env::current_exe().unwrap_or_else(|_| "berth".into());
        let mut cmd = Command::new(exe);
        if let Some(p) = &self.config_path {
            cmd.arg("--config").arg(p);
        }
        cmd.arg("exec")
            .arg("--timeout")
            .arg(humantime::format_duration(check.timeout).to_string())
            .arg(name)
            .arg("--")
            .args(&check.command);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return CheckRun::failed(format!("cannot run the check: {e}")),
        };
        let deadline = Instant::now() + check.timeout + GRACE;
        let (out, finished) = collect(&mut child, deadline);
        let mut out = String::from_utf8_lossy(&out).into_owned();
        out.truncate(OUTPUT_MAX);
        let status = match finished {
            Some(st) => st,
            None => {
                stop_exec(&mut child);
                return CheckRun::failed(format!("timed out after {:?}", check.timeout));
            }
        };
        match status.code() {
            Some(0) => CheckRun::passed(out),
            Some(c) if c == i32::from(crate::runtime::exec::TIMED_OUT) => {
                CheckRun::failed(format!("timed out after {:?}", check.timeout))
            }
            code => CheckRun::failed(format!("exit {}: {}", code.unwrap_or(-1), out.trim())),
        }
    }
}

/// Ends a `berth exec` that outlived the agent's deadline (a slow start on a loaded host can
/// put its own deadline past the agent's): SIGTERM first, which it answers by killing every
/// process of the check (its cgroup) before it exits; SIGKILL only if it does not exit within
/// [`GRACE`]. A SIGKILL alone would leave the check's processes running in the container.
fn stop_exec(child: &mut Child) {
    let exited = sys::pidfd_open(child.id() as i32).ok();
    // SAFETY: a signal to our own child, which we have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if let Some(fd) = &exited {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let deadline = Instant::now() + GRACE;
        while pfd.revents == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32 + 1) };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads the child's stdout and stderr (up to [`OUTPUT_MAX`] kept) until both close and it
/// exits, or until `deadline`; returns the output and its exit status (`None` at the deadline).
fn collect(child: &mut Child, deadline: Instant) -> (Vec<u8>, Option<std::process::ExitStatus>) {
    let mut out = Vec::new();
    let mut streams = [
        child.stdout.take().map(std::os::fd::OwnedFd::from),
        child.stderr.take().map(std::os::fd::OwnedFd::from),
    ];
    let exit = sys::pidfd_open(child.id() as i32).ok();
    let mut buf = [0u8; 4096];
    loop {
        if streams.iter().all(Option::is_none)
            && let Ok(Some(st)) = child.try_wait()
        {
            return (out, Some(st));
        }
        let now = Instant::now();
        if now >= deadline {
            return (out, None);
        }
        let mut pfds: Vec<libc::pollfd> = streams
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        pfds.push(libc::pollfd {
            // Only once the streams are done: the exit alone does not end the collection.
            fd: match &exit {
                Some(p) if streams.iter().all(Option::is_none) => p.as_raw_fd(),
                _ => -1,
            },
            events: libc::POLLIN,
            revents: 0,
        });
        let left = deadline
            .saturating_duration_since(now)
            .as_millis()
            .min(1000) as i32
            + 1;
        // SAFETY: a live array of pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, left) };
        if n <= 0 {
            continue;
        }
        for (i, s) in streams.iter_mut().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            let Some(f) = s else { continue };
            // SAFETY: reads into a live buffer.
            let r = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                let keep = (OUTPUT_MAX - out.len().min(OUTPUT_MAX)).min(r as usize);
                out.extend_from_slice(&buf[..keep]);
            } else if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
            {
                *s = None;
            }
        }
    }
}
