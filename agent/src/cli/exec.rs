//! `berth exec NAME [-i] [-t] [--timeout D] -- CMD...`: runs a process in a running container
//! and exits with its code; 125 when berth itself fails, 126 when the command cannot run, 127
//! when not found, 124 when `--timeout` passed (everything the process started is killed),
//! 128 + N when `berth exec` got signal N (likewise).
//!
//! The process never gets the caller's fds or terminal: its stdio are pipes relayed here, or a
//! terminal from the container's own devpts with `-t` (see `runtime::exec`).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::runtime::exec::{ExecRequest, spawn};
use crate::runtime::exec_relay::{self, Ended, Stdin, relay};
use crate::runtime::exeseal;

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
    /// Kill the process and everything it started after this long (e.g. "30s"); exit 124
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

const BERTH_FAILED: u8 = 125;
use crate::runtime::exec::TIMED_OUT;

fn failed(msg: &str) -> ExitCode {
    eprintln!("berth exec: {msg}");
    ExitCode::from(BERTH_FAILED)
}

pub fn run(config: Option<&Path>, args: &ExecArgs) -> ExitCode {
    // First, while single-threaded: the helpers that enter the container are forks of this
    // process, and must never be forks of the host's binary (CVE-2019-5736).
    if let Err(e) = exeseal::ensure_sealed() {
        return failed(&format!("cannot run from a sealed copy of berth: {e}"));
    }
    // From here on a SIGTERM (the agent ending a health check) or a ^C waits, pending, for the
    // relay, which kills every process of the exec: delivered any earlier than that, it would
    // end this command and leave the processes running in the container.
    exec_relay::block_signals();
    let deadline = args.timeout.map(|t| Instant::now() + t);
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
        tty_size: if args.tty {
            crate::runtime::exec::terminal_size(0)
        } else {
            None
        },
    };
    // SAFETY: `berth exec` runs no async runtime and starts no thread before this point.
    let mut running = match unsafe { spawn(&target, &req) } {
        Ok(r) => r,
        Err(e) => return failed(&e.to_string()),
    };
    let ended = {
        let _raw = args.tty.then(|| RawMode::enter(0));
        let stdin = match args.interactive {
            true => Stdin::Relayed,
            false => Stdin::Closed,
        };
        relay(&mut running, stdin, deadline)
    };
    let result = running.finish();
    match ended {
        Ended::TimedOut => {
            eprintln!(
                "berth exec: timed out after {}: killed its processes",
                humantime::format_duration(args.timeout.unwrap_or_default())
            );
            return ExitCode::from(TIMED_OUT);
        }
        Ended::Signalled(sig) => return ExitCode::from((128 + sig) as u8),
        Ended::Exited => {}
    }
    match result {
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
