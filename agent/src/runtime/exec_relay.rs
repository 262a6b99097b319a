//! `berth exec`'s side of a running exec: copies the caller's stdin to the process and the
//! process's output to the caller's stdout and stderr (or both ways through the terminal),
//! passes on the caller's terminal size, and on a deadline or a signal (SIGINT, SIGTERM,
//! SIGHUP, SIGQUIT) kills every process of the exec. It never blocks on the process: every fd
//! it writes to the container is non-blocking, and once the process has exited its output is
//! drained for a bounded time, so a background process holding the pipes cannot hold
//! `berth exec` (nor a health check) forever.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::exec::{ExecIo, Running, copy_winsize};
use super::sys;

/// How long output is still relayed after the process exited (background processes may
/// hold the pipes open for good).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Why the relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The process exited.
    Exited,
    /// The deadline passed: every process of the exec was killed.
    TimedOut,
    /// `berth exec` got this signal: every process of the exec was killed.
    Signalled(i32),
}

/// The caller's fds.
const CALLER_IN: RawFd = 0;
const CALLER_OUT: RawFd = 1;
const CALLER_ERR: RawFd = 2;

const SIGNALS: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a struct we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Blocks [`SIGNALS`] for normal delivery, so that one arriving before [`relay`] runs stays
/// pending for it (the exec'd process starts with an empty mask: the launch resets it).
pub fn block_signals() -> bool {
    let set = signal_set();
    // SAFETY: a mask change of this thread; `berth exec` runs on one thread.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == 0 }
}

/// A signalfd for [`SIGNALS`], blocked for normal delivery.
fn signal_fd() -> Option<OwnedFd> {
    if !block_signals() {
        return None;
    }
    let set = signal_set();
    // SAFETY: signalfd on a set we own; the fd is new and ours.
    unsafe {
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> isize {
    // SAFETY: reads into a live buffer.
    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
}

fn would_block() -> bool {
    let e = std::io::Error::last_os_error().raw_os_error();
    e == Some(libc::EAGAIN) || e == Some(libc::EINTR)
}

/// One direction from the process to the caller.
struct Out {
    from: Option<OwnedFd>,
    to: RawFd,
}

/// Relays until the process has exited and its output is drained (at most
/// [`DRAIN_AFTER_EXIT`] more), killing the exec at `deadline` or on a signal.
pub fn relay(running: &mut Running, interactive: bool, deadline: Option<Instant>) -> Ended {
    let sig = signal_fd();
    let mut outs: Vec<Out> = Vec::new();
    // Where the caller's stdin goes, with what is read but not yet taken.
    let mut sink: Option<OwnedFd> = None;
    let mut terminal: Option<RawFd> = None;
    match running.io.take() {
        Some(ExecIo::Pipes {
            stdin,
            stdout,
            stderr,
        }) => {
            outs.push(Out {
                from: Some(stdout),
                to: CALLER_OUT,
            });
            outs.push(Out {
                from: Some(stderr),
                to: CALLER_ERR,
            });
            sink = stdin;
        }
        Some(ExecIo::Terminal { master }) => {
            copy_winsize(CALLER_IN, master.as_raw_fd());
            terminal = Some(master.as_raw_fd());
            let input = master.try_clone().ok();
            outs.push(Out {
                from: Some(master),
                to: CALLER_OUT,
            });
            sink = if interactive { input } else { None };
        }
        None => {}
    }
    for o in &outs {
        if let Some(f) = &o.from {
            set_nonblocking(f);
        }
    }
    if let Some(s) = &sink {
        set_nonblocking(s);
    }
    let mut stdin_open = sink.is_some();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let mut ended = Ended::Exited;
    let mut killed = false;
    let mut exited_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if let Some(t) = exited_at
            && (outs.iter().all(|o| o.from.is_none()) || now >= t + DRAIN_AFTER_EXIT)
        {
            break;
        }
        if !killed && deadline.is_some_and(|d| now >= d) {
            running.kill_all();
            killed = true;
            ended = Ended::TimedOut;
        }
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        let pfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        for o in &outs {
            pfds.push(pfd(
                o.from.as_ref().map_or(-1, |f| f.as_raw_fd()),
                libc::POLLIN,
            ));
        }
        let (i_exit, i_sig, i_in) = (outs.len(), outs.len() + 1, outs.len() + 2);
        pfds.push(pfd(
            if exited_at.is_none() {
                running.exit_fd().as_raw_fd()
            } else {
                -1
            },
            libc::POLLIN,
        ));
        pfds.push(pfd(
            sig.as_ref().map_or(-1, |s| s.as_raw_fd()),
            libc::POLLIN,
        ));
        pfds.push(pfd(
            if stdin_open && pending.is_empty() && exited_at.is_none() {
                CALLER_IN
            } else {
                -1
            },
            libc::POLLIN,
        ));
        pfds.push(pfd(
            match &sink {
                Some(s) if !pending.is_empty() => s.as_raw_fd(),
                _ => -1,
            },
            libc::POLLOUT,
        ));
        let mut wait = exited_at.map(|t| (t + DRAIN_AFTER_EXIT).saturating_duration_since(now));
        if !killed && let Some(d) = deadline {
            let left = d.saturating_duration_since(now);
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        let timeout_ms = wait.map_or(-1, |w| w.as_millis().min(i32::MAX as u128) as i32 + 1);
        // SAFETY: a live array of pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n <= 0 {
            continue;
        }
        for (i, o) in outs.iter_mut().enumerate() {
            if pfds[i].revents == 0 {
                continue;
            }
            let Some(f) = &o.from else { continue };
            let r = read(f.as_raw_fd(), &mut buf);
            if r > 0 {
                if sys::write_all(o.to, &buf[..r as usize]).is_err() {
                    // The caller stopped listening: nothing more to relay.
                    o.from = None;
                }
            } else if r == 0 || !would_block() {
                // EOF (EIO for a terminal whose every slave fd closed).
                o.from = None;
            }
        }
        if pfds[i_exit].revents != 0 {
            exited_at = Some(Instant::now());
        }
        if pfds[i_sig].revents != 0
            && let Some(s) = &sig
        {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            while read(s.as_raw_fd(), &mut info) > 0 {
                // SAFETY: the kernel wrote a whole signalfd_siginfo into the buffer.
                let si: libc::signalfd_siginfo =
                    unsafe { std::ptr::read_unaligned(info.as_ptr().cast()) };
                let signo = si.ssi_signo as i32;
                if signo == libc::SIGWINCH {
                    if let Some(t) = terminal {
                        copy_winsize(CALLER_IN, t);
                    }
                } else if !killed {
                    running.kill_all();
                    killed = true;
                    ended = Ended::Signalled(signo);
                }
            }
        }
        if pfds[i_in].revents != 0 {
            let r = read(CALLER_IN, &mut buf);
            if r > 0 {
                pending.extend_from_slice(&buf[..r as usize]);
            } else if r == 0 || !would_block() {
                stdin_open = false;
                // End of input on a terminal: its EOF character; on a pipe, closing it (once
                // what is pending went through).
                if terminal.is_some() {
                    pending.push(4);
                }
            }
        }
        // Whatever is pending is offered at once (the fd is non-blocking); POLLOUT above wakes
        // the loop when a full pipe or terminal takes more.
        if !pending.is_empty()
            && let Some(s) = &sink
        {
            // SAFETY: writes from a live buffer.
            let w = unsafe { libc::write(s.as_raw_fd(), pending.as_ptr().cast(), pending.len()) };
            if w > 0 {
                pending.drain(..w as usize);
            } else if w < 0 && !would_block() {
                // The process closed its stdin.
                pending.clear();
                stdin_open = false;
                sink = None;
            }
        }
        if !stdin_open && pending.is_empty() && terminal.is_none() {
            sink = None;
        }
    }
    ended
}
