//! What the runtime and planner need to know about a pulled image: the parts of its OCI config
//! that shape a container, and the unpacked layer dirs to stack as overlay lowerdirs.
//!
//! The store fills this from the image config blob; the runtime never reads blobs itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An image ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// The digest the reference resolved to (an index's or a manifest's), as the registry named it.
    pub digest: String,
    /// The platform manifest's digest.
    pub manifest_digest: String,
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
