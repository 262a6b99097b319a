//! `berth exec NAME [-i] [-t] -- CMD...`: runs a process in a running container and exits with
//! its code; 125 when berth itself fails, 126 when the command cannot run, 127 when not found.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use crate::runtime::exec::{ExecRequest, copy_winsize, spawn};
use crate::runtime::sys;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The container (its spec file's stem)
    pub name: String,
    /// Keep stdin open and pass it to the process
    #[arg(short, long)]
    pub interactive: bool,
    /// Run the process on a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Extra environment, KEY=value (repeatable)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

const BERTH_FAILED: u8 = 125;

fn failed(msg: &str) -> ExitCode {
    eprintln!("berth exec: {msg}");
    ExitCode::from(BERTH_FAILED)
}

pub fn run(config: Option<&Path>, args: &ExecArgs) -> ExitCode {
    let rt = match super::runtime_for(config) {
        Ok(rt) => rt,
        Err(e) => return failed(&e),
    };
    let id = match rt.current(&args.name) {
        Ok(Some(id)) => id,
        Ok(None) => return failed(&format!("no container named {:?}", args.name)),
        Err(e) => return failed(&e.to_string()),
    };
    let target = match rt.exec_target(&args.name, &id) {
        Ok(t) => t,
        Err(e) => return failed(&e.to_string()),
    };
    let req = ExecRequest {
        args: args.command.clone(),
        env: args.env.clone(),
        interactive: args.interactive,
        tty: args.tty,
    };
    let mut running = match spawn(&target, &req) {
        Ok(r) => r,
        Err(e) => return failed(&e.to_string()),
    };
    if let Some(master) = running.master.take() {
        let _raw = RawMode::enter(0);
        relay(&master, args.interactive);
    }
    match running.wait() {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("berth exec: {}", e.message());
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// The caller's terminal in raw mode for the life of the value (nothing when not a terminal).
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter(fd: i32) -> RawMode {
        // SAFETY: isatty/tcgetattr/tcsetattr on a plain fd with a struct we own.
        unsafe {
            if libc::isatty(fd) != 1 {
                return RawMode(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the saved settings of fd 0.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// A signalfd for SIGWINCH (blocked for normal delivery): the caller's terminal was resized.
fn winch_fd() -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: sigset manipulation on a struct we own; exec's relay runs on the only thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGWINCH);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return None;
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    }
}

/// Copies stdin to the terminal and the terminal to stdout until the process side closes;
/// passes the caller's terminal size on whenever it changes.
fn relay(master: &OwnedFd, interactive: bool) {
    let mut buf = [0u8; 8192];
    let mut stdin_open = interactive;
    let winch = winch_fd();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: winch.as_ref().map_or(-1, |w| w.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: a live array of three pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) } < 0 {
            continue;
        }
        if let Some(w) = winch.as_ref().filter(|_| fds[2].revents != 0) {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            // SAFETY: drains one siginfo into a live buffer of its size.
            while unsafe { libc::read(w.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
            copy_winsize(0, master.as_raw_fd());
        }
        if fds[0].revents != 0 {
            // SAFETY: reads into a live buffer.
            let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return; // EIO: every slave fd is closed, the process is gone
            }
            if sys::write_all(1, &buf[..n as usize]).is_err() {
                return;
            }
        }
        if fds[1].revents != 0 {
            // SAFETY: reads into a live buffer.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                stdin_open = false;
                // End of input: send the terminal's EOF character.
                let _ = sys::write_all(master.as_raw_fd(), &[4]);
            } else if sys::write_all(master.as_raw_fd(), &buf[..n as usize]).is_err() {
                return;
            }
        }
    }
}
