//! Everything a command prints on stdout goes through here. A reader that stops early
//! (`berth images | head -1`) ends the command quietly, with success, as ripgrep does; any
//! other failure to write (a full disk) ends it with the reason and exit 1. Never a panic,
//! which is what `println!` does on both. (Tested on the real binary, for every read
//! command: tests/tests/cli_conventions.rs.)

use std::io::Write;

use super::exit;

/// Writes `bytes` to stdout and flushes them (a follower's lines must show at once).
pub fn bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        gone(&e)
    }
}

pub fn text(s: &str) {
    bytes(s.as_bytes())
}

pub fn line(args: std::fmt::Arguments<'_>) {
    let mut s = args.to_string();
    s.push('\n');
    text(&s)
}

/// Ends the process: stdout is gone. Exiting here is fine: nothing a command holds needs more
/// than the kernel's cleanup (locks are flocks).
fn gone(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(exit::SUCCESS.into());
    }
    let _ = writeln!(std::io::stderr(), "berth: cannot write the output: {e}");
    std::process::exit(exit::FAILURE.into());
}
