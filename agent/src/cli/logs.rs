//! `berth logs NAME`: prints a container's logs straight from its CRI log files (no agent).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;

use crate::runtime::logread::{Follower, Query, read};
use crate::runtime::logs::{Record, Stream};
use crate::runtime::{Runtime, Status, timefmt};

use super::exit;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The container (its spec file's stem)
    pub name: String,
    /// Keep printing new lines until the container exits
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines since a duration ago (10m, 1h30m) or an RFC 3339 time
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Prefix each line with its timestamp
    #[arg(short, long)]
    pub timestamps: bool,
}

/// `10m` ago, or an RFC 3339 time.
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Some(t) = timefmt::parse(s) {
        return Ok(t);
    }
    let d = berth_spec::units::parse_duration(s)
        .map_err(|e| format!("invalid --since {s:?}: not an RFC 3339 time, and {e}"))?;
    Ok(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH))
}

fn print(r: &Record, timestamps: bool) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(r.message.len() + 40);
    if timestamps {
        line.extend_from_slice(r.timestamp.as_bytes());
        line.push(b' ');
    }
    line.extend_from_slice(&r.message);
    line.push(b'\n');
    match r.stream {
        Stream::Stdout => {
            super::out::bytes(&line);
            Ok(())
        }
        Stream::Stderr => std::io::stderr().lock().write_all(&line),
    }
}

pub fn run(config: Option<&Path>, args: &LogsArgs) -> ExitCode {
    let rt = match super::runtime_for(config) {
        Ok(rt) => rt,
        Err(e) => return super::fail(&e),
    };
    match logs(&rt, args) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        // A closed pipe (`berth logs x 2>&1 | head`) is a normal end.
        Err(LogsError::Closed) => ExitCode::from(exit::SUCCESS),
        Err(LogsError::Other(e)) => super::fail(&e),
    }
}

enum LogsError {
    /// The reader went away.
    Closed,
    Other(String),
}

impl From<String> for LogsError {
    fn from(e: String) -> Self {
        LogsError::Other(e)
    }
}

impl From<std::io::Error> for LogsError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => LogsError::Closed,
            _ => LogsError::Other(e.to_string()),
        }
    }
}

fn logs(rt: &Runtime, args: &LogsArgs) -> Result<(), LogsError> {
    let id = rt
        .current(&args.name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no container named {:?}", args.name))?;
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, SystemTime::now()))
        .transpose()?;
    let log = rt.bundle(&args.name, &id).log_file();
    let mut follower = Follower::at_end(&log);
    let q = Query {
        tail: args.tail,
        since,
    };
    for r in read(&log, &q).map_err(|e| format!("{}: {e}", log.display()))? {
        print(&r, args.timestamps)?;
    }
    if !args.follow {
        return Ok(());
    }
    let running = || {
        rt.inspect(&args.name, &id)
            .ok()
            .flatten()
            .is_some_and(|o| matches!(o.status, Status::Running | Status::Paused))
    };
    follower
        .run(
            |r| print(r, args.timestamps),
            || !running(),
            Duration::from_millis(100),
        )
        .map_err(LogsError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            parse_since("10m", now).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(9_400)
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:05Z", now).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(5)
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
