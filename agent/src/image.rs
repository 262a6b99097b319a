//! What the runtime and planner need to know about a pulled image: the parts of its OCI config
//! that shape a container, and the unpacked layer dirs to stack as overlay lowerdirs.
//!
//! The store fills this from the image config blob; the runtime never reads blobs itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_spec::Digest;
use serde::{Deserialize, Serialize};

/// An image ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// The digest the reference resolved to (an index's, or the manifest's when there is no
    /// index), as the registry named it.
    #[serde(rename = "digest")]
    pub reference_digest: Digest,
    /// The platform manifest's digest: the image's identity.
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    /// Unpacked layer dirs, bottom layer first (the overlay lowerdir order is the reverse).
    pub layers: Vec<PathBuf>,
}

/// The container-shaping fields of an OCI / Docker image config (`config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `KEY=value` entries, in order.
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group`, `uid:gid`, as the image says it.
    pub user: Option<String>,
    /// `80/tcp`, `53/udp`.
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<ImageHealthcheck>,
    pub labels: BTreeMap<String, String>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// Docker's `Healthcheck` (OCI images carry it too, as Docker writes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHealthcheck {
    /// `["CMD", args...]`, `["CMD-SHELL", command]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u32>,
}

impl ImageHealthcheck {
    /// As a spec health check, Docker's defaults filling what the image leaves out; `None`
    /// for `["NONE"]` or an empty test.
    pub fn to_check(&self) -> Option<berth_spec::model::HealthCheck> {
        use berth_spec::model::HealthCheck;
        let command = match self.test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, rest)) if kind == "CMD-SHELL" && rest.len() == 1 => {
                vec!["/bin/sh".into(), "-c".into(), rest[0].clone()]
            }
            _ => return None,
        };
        Some(HealthCheck {
            command,
            interval: self.interval.unwrap_or(HealthCheck::DEFAULT_INTERVAL),
            timeout: self.timeout.unwrap_or(HealthCheck::DEFAULT_TIMEOUT),
            retries: self.retries.unwrap_or(HealthCheck::DEFAULT_RETRIES),
            start_period: self
                .start_period
                .unwrap_or(HealthCheck::DEFAULT_START_PERIOD),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(test: &[&str]) -> ImageHealthcheck {
        ImageHealthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval: Some(Duration::from_secs(5)),
            timeout: None,
            start_period: None,
            retries: None,
        }
    }

    #[test]
    fn docker_healthchecks_become_checks() {
        let c = hc(&["CMD", "curl", "-f", "http://x"]).to_check().unwrap();
        assert_eq!(c.command, ["curl", "-f", "http://x"]);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.retries, 3);
        let c = hc(&["CMD-SHELL", "exit 0"]).to_check().unwrap();
        assert_eq!(c.command, ["/bin/sh", "-c", "exit 0"]);
        assert!(hc(&["NONE"]).to_check().is_none());
        assert!(hc(&[]).to_check().is_none());
    }
}
