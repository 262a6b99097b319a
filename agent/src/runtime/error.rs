//! The runtime's error type: every variant names the container, path or object it is about.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{what}: {source}")]
    Sys { what: String, source: io::Error },
    #[error("container {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("container {name} ({id}) not found")]
    NotFound { name: String, id: String },
    #[error("container {name} ({id}) is not running")]
    NotRunning { name: String, id: String },
    #[error("container {name} ({id}) is already running")]
    AlreadyRunning { name: String, id: String },
    #[error("container {name}: failed to start: {reason}")]
    Start { name: String, reason: String },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    #[error("{path}: unsupported state version {found} (this berth reads up to {supported})")]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("timed out after {secs:.1}s waiting for {what}")]
    Timeout { what: String, secs: f64 },
}

impl RuntimeError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn sys(what: impl Into<String>, source: io::Error) -> Self {
        RuntimeError::Sys {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Maps an `io::Result` to a [`RuntimeError::Io`] naming `path`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
    fn doing(self, what: impl Into<String>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| RuntimeError::io(path, e))
    }
    fn doing(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| RuntimeError::sys(what, e))
    }
}
