//! The agent's own logs through tracing: human-readable on a terminal (or when asked), JSON
//! when asked or when `auto` runs without a terminal (a journal or a collector reads them).
//! Each container's work runs in a `container` span, so every line names its container.

use std::io::IsTerminal;

use berth_spec::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let tty = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !tty,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder.with_ansi(tty).try_init()
    };
    // Already installed (tests): keep the first.
    let _ = result;
}
