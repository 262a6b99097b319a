//! What the image commands share: the config, the store, the state dir lock, error output.

use std::path::Path;
use std::process::ExitCode;

use berth_spec::Config;

use crate::layout::Layout;
use crate::store::lock::StateLock;
use crate::store::{Store, StoreError};

use super::exit;

/// Loads the config (`--config`, `$BERTH_CONFIG` or the default path).
pub fn config(explicit: Option<&Path>) -> Result<Config, String> {
    crate::config::load(explicit).map_err(|e| e.to_string())
}

/// The store opened for writing, with the state dir lock held (the agent holds the same lock).
pub fn writable(cfg: &Config) -> Result<(Store, StateLock), StoreError> {
    let layout = Layout::new(cfg);
    let lock = StateLock::try_acquire(&layout)?;
    let store = Store::open(&layout, &cfg.images)?;
    Ok((store, lock))
}

/// The store for reading; takes no lock (records are replaced atomically).
pub fn readable(cfg: &Config) -> Store {
    Store::open_read_only(&Layout::new(cfg), &cfg.images)
}

/// Logs warnings and errors to stderr (`RUST_LOG` overrides).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// Prints `berth: <error>` and returns the failure exit code.
pub fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: {e}");
    ExitCode::from(exit::FAILURE)
}

/// `1.2 MiB`-style sizes for tables.
pub fn human_size(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// `12s ago`, `3h ago`, `2d ago`.
pub fn ago(then: u64, now: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..60 => format!("{d}s ago"),
        60..3600 => format!("{}m ago", d / 60),
        3600..86400 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

/// The first 12 hex digits of a digest.
/// A digest's first 12 hex digits; anything else (an image name in a retry line) whole.
pub fn short(d: &str) -> &str {
    match d.strip_prefix("sha256:") {
        Some(hex) => hex.get(..12).unwrap_or(hex),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
        assert_eq!(ago(100, 130), "30s ago");
        assert_eq!(ago(0, 7200), "2h ago");
        assert_eq!(ago(0, 3 * 86400), "3d ago");
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short("127.0.0.1:5000/a:v1"), "127.0.0.1:5000/a:v1");
    }
}
