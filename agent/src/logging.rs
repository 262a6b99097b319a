//! The agent's own logs through tracing: human-readable (colours only on a terminal) unless
//! `log_format = "json"` asks for JSON lines. Each container's work runs in a `container`
//! span, so every line names its container.

use std::io::IsTerminal;

use berth_spec::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let tty = std::io::stderr().is_terminal();
    let json = format == LogFormat::Json;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.with_ansi(tty).try_init()
    };
    // Already installed (tests): keep the first.
    let _ = result;
}
