//! The registry client's errors, each saying which registry, repository or URL it concerns.

use std::path::PathBuf;
use std::time::Duration;

use super::retry::status_is_transient;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connecting, TLS, a timeout, a dropped connection.
    #[error("{url}: {reason}")]
    Transport {
        url: String,
        reason: String,
        transient: bool,
    },
    #[error("{url}: HTTP {status}{}", detail_suffix(.detail))]
    Status {
        url: String,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("{registry}: authentication failed: {reason}")]
    Auth { registry: String, reason: String },
    #[error("{registry}/{repository}: access denied: {reason}")]
    Denied {
        registry: String,
        repository: String,
        reason: String,
    },
    #[error("{what}: not found on {registry}")]
    NotFound { registry: String, what: String },
    #[error("{url}: manifest is larger than the {limit}-byte limit ([images] max_manifest_size)")]
    ManifestTooLarge { url: String, limit: u64 },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: size mismatch: descriptor says {expected} bytes, registry sent {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: String,
    },
    #[error("{registry}: {reason}")]
    Tls { registry: String, reason: String },
    #[error("cannot read CA file {path} for {registry}: {reason}")]
    CaFile {
        registry: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{what}: {reason}")]
    Protocol { what: String, reason: String },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl RegistryError {
    /// Worth retrying: the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { transient, .. } => *transient,
            RegistryError::Status { status, .. } => status_is_transient(*status),
            _ => false,
        }
    }

    /// A server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn transport(url: &str, e: &ureq::Error) -> Self {
        // A failed TLS handshake (a certificate for another name, an unknown CA) will fail the
        // same way next time: say so at once instead of retrying. rustls reports it as an
        // InvalidData I/O error on the connection.
        let tls = match e {
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) => true,
            ureq::Error::Io(io) => {
                url.starts_with("https://") && io.kind() == std::io::ErrorKind::InvalidData
            }
            _ => false,
        };
        if tls {
            let reason = match e {
                ureq::Error::Io(io) => io.to_string(),
                other => other.to_string(),
            };
            return RegistryError::Tls {
                registry: url.to_string(),
                reason: format!("TLS handshake failed: {reason}"),
            };
        }
        let transient = matches!(
            e,
            ureq::Error::Io(_)
                | ureq::Error::Timeout(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::HostNotFound
                | ureq::Error::Protocol(_)
        );
        RegistryError::Transport {
            url: url.to_string(),
            reason: e.to_string(),
            transient,
        }
    }

    pub(crate) fn io(url: &str, e: &std::io::Error) -> Self {
        RegistryError::Transport {
            url: url.to_string(),
            reason: e.to_string(),
            transient: true,
        }
    }
}
