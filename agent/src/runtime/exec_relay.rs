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
    if let Ok(fl) = rustix::fs::fcntl_getfl(fd) {
        let _ = rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK);
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

/// Whether the caller's stdin reaches the process (`berth exec -i`) on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    Relayed,
    Closed,
}

/// Relays until the process has exited and its output is drained (at most
/// [`DRAIN_AFTER_EXIT`] more), killing the exec at `deadline` or on a signal.
pub fn relay(running: &mut Running, stdin: Stdin, deadline: Option<Instant>) -> Ended {
    let mut r = Relay::new(running, stdin);
    let sig = signal_fd();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let now = Instant::now();
        if r.drained(now) {
            break;
        }
        if deadline.is_some_and(|d| now >= d) {
            r.kill(running, Ended::TimedOut);
        }
        let mut pfds = r.poll_set(running, sig.as_ref());
        let timeout_ms = r
            .wait(now, deadline)
            .map_or(-1, |w| w.as_millis().min(i32::MAX as u128) as i32 + 1);
        // SAFETY: a live array of pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n <= 0 {
            continue;
        }
        let outs = r.outs.len();
        r.copy_out(&pfds[..outs], &mut buf);
        if pfds[outs].revents != 0 {
            r.exited_at = Some(Instant::now());
        }
        if pfds[outs + 1].revents != 0
            && let Some(s) = &sig
        {
            r.on_signals(running, s);
        }
        if pfds[outs + 2].revents != 0 {
            r.read_input(&mut buf);
        }
        r.offer_input();
    }
    r.ended
}

/// The relay's state between polls.
struct Relay {
    outs: Vec<Out>,
    /// Where the caller's stdin goes, with what is read but not yet taken.
    sink: Option<OwnedFd>,
    pending: Vec<u8>,
    stdin_open: bool,
    terminal: Option<RawFd>,
    ended: Ended,
    killed: bool,
    exited_at: Option<Instant>,
}

impl Relay {
    fn new(running: &mut Running, stdin: Stdin) -> Self {
        let mut outs: Vec<Out> = Vec::new();
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
                sink = match stdin {
                    Stdin::Relayed => input,
                    Stdin::Closed => None,
                };
            }
            None => {}
        }
        for f in outs.iter().filter_map(|o| o.from.as_ref()).chain(&sink) {
            set_nonblocking(f);
        }
        Relay {
            outs,
            stdin_open: sink.is_some(),
            sink,
            pending: Vec::new(),
            terminal,
            ended: Ended::Exited,
            killed: false,
            exited_at: None,
        }
    }

    /// Whether the process has exited and its output is drained, or the drain time is up.
    fn drained(&self, now: Instant) -> bool {
        self.exited_at.is_some_and(|t| {
            self.outs.iter().all(|o| o.from.is_none()) || now >= t + DRAIN_AFTER_EXIT
        })
    }

    /// Kills every process of the exec once, remembering why.
    fn kill(&mut self, running: &mut Running, why: Ended) {
        if !self.killed {
            running.kill_all();
            self.killed = true;
            self.ended = why;
        }
    }

    /// The fds to poll: each output, the exit, the signals, the caller's stdin while there
    /// is room for it, the process's stdin while input is pending (-1: not this round).
    fn poll_set(&self, running: &Running, sig: Option<&OwnedFd>) -> Vec<libc::pollfd> {
        let pfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let mut pfds: Vec<libc::pollfd> = self
            .outs
            .iter()
            .map(|o| pfd(o.from.as_ref().map_or(-1, |f| f.as_raw_fd()), libc::POLLIN))
            .collect();
        let exit = match self.exited_at {
            None => running.exit_fd().as_raw_fd(),
            Some(_) => -1,
        };
        pfds.push(pfd(exit, libc::POLLIN));
        pfds.push(pfd(sig.map_or(-1, |s| s.as_raw_fd()), libc::POLLIN));
        let wants_input = self.stdin_open && self.pending.is_empty() && self.exited_at.is_none();
        pfds.push(pfd(if wants_input { CALLER_IN } else { -1 }, libc::POLLIN));
        let sink = match &self.sink {
            Some(s) if !self.pending.is_empty() => s.as_raw_fd(),
            _ => -1,
        };
        pfds.push(pfd(sink, libc::POLLOUT));
        pfds
    }

    /// How long a poll may wait: until the drain time or the deadline, whichever is first.
    fn wait(&self, now: Instant, deadline: Option<Instant>) -> Option<std::time::Duration> {
        let mut wait = self
            .exited_at
            .map(|t| (t + DRAIN_AFTER_EXIT).saturating_duration_since(now));
        if !self.killed
            && let Some(d) = deadline
        {
            let left = d.saturating_duration_since(now);
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        wait
    }

    /// Copies what each ready output has to the caller.
    fn copy_out(&mut self, ready: &[libc::pollfd], buf: &mut [u8]) {
        for (o, p) in self.outs.iter_mut().zip(ready) {
            if p.revents == 0 {
                continue;
            }
            let Some(f) = &o.from else { continue };
            let r = read(f.as_raw_fd(), buf);
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
    }

    /// SIGWINCH resizes the terminal; any other signal kills the exec.
    fn on_signals(&mut self, running: &mut Running, sig: &OwnedFd) {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        while read(sig.as_raw_fd(), &mut info) > 0 {
            // SAFETY: the kernel wrote a whole signalfd_siginfo into the buffer.
            let si: libc::signalfd_siginfo =
                unsafe { std::ptr::read_unaligned(info.as_ptr().cast()) };
            let signo = si.ssi_signo as i32;
            if signo == libc::SIGWINCH {
                if let Some(t) = self.terminal {
                    copy_winsize(CALLER_IN, t);
                }
            } else {
                self.kill(running, Ended::Signalled(signo));
            }
        }
    }

    fn read_input(&mut self, buf: &mut [u8]) {
        let r = read(CALLER_IN, buf);
        if r > 0 {
            self.pending.extend_from_slice(&buf[..r as usize]);
        } else if r == 0 || !would_block() {
            self.stdin_open = false;
            // End of input on a terminal: its EOF character; on a pipe, closing it (once what
            // is pending went through).
            if self.terminal.is_some() {
                self.pending.push(4);
            }
        }
    }

    /// Whatever is pending is offered at once (the fd is non-blocking); POLLOUT wakes the
    /// loop when a full pipe or terminal takes more.
    fn offer_input(&mut self) {
        if !self.pending.is_empty()
            && let Some(s) = &self.sink
        {
            // SAFETY: writes from a live buffer.
            let w = unsafe {
                libc::write(
                    s.as_raw_fd(),
                    self.pending.as_ptr().cast(),
                    self.pending.len(),
                )
            };
            if w > 0 {
                self.pending.drain(..w as usize);
            } else if w < 0 && !would_block() {
                // The process closed its stdin.
                self.pending.clear();
                self.stdin_open = false;
                self.sink = None;
            }
        }
        if !self.stdin_open && self.pending.is_empty() && self.terminal.is_none() {
            self.sink = None;
        }
    }
}
