//! The agent's own configuration (`/etc/berth/berth.toml`), validated, with defaults filled.
//!
//! Every path berth writes comes from here, and every kernel object it makes carries
//! `instance`, so several agents (and parallel tests) never touch each other's objects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Logging;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/berth.toml";
pub const CONFIG_ENV: &str = "BERTH_CONFIG";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Prefix of every kernel object this agent owns: at most 12 characters of `[a-z0-9-]`,
    /// starting with a letter, so that derived names fit the kernel's limits.
    pub instance: String,
    pub specs_dir: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// Image archives dropped here are imported and pinned.
    pub images_dir: PathBuf,
    #[serde(with = "crate::units::duration_serde")]
    pub resync_interval: Duration,
    #[serde(with = "crate::units::duration_serde")]
    pub update_interval: Duration,
    /// User names or uids allowed to own spec files, besides root.
    pub trusted_owners: Vec<String>,
    /// Docker's config.json format.
    pub auth_file: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub network: NetworkConfig,
    /// Keyed by `host[:port]`.
    pub registries: BTreeMap<String, RegistryConfig>,
    pub images: ImagesConfig,
    /// Default container log limits.
    pub logging: Logging,
    pub log_format: LogFormat,
    pub log_level: String,
    /// The file this config was read from (`None`: built-in defaults). Not a key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Config {
    /// Parses a config file's text. Every key is optional. Errors are joined, one a line.
    pub fn from_toml_str(text: &str) -> Result<Config, String> {
        Config::parse(std::path::Path::new("berth.toml"), text).map_err(|d| {
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Parses and validates a config file strictly: unknown keys are errors, and every problem
    /// is reported with `file:line:column`.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Config, Vec<crate::Diagnostic>> {
        crate::config_parse::parse(path, text)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instance: "berth".into(),
            specs_dir: "/etc/berth/specs".into(),
            state_dir: "/var/lib/berth".into(),
            run_dir: "/run/berth".into(),
            images_dir: "/var/lib/berth/import".into(),
            resync_interval: Duration::from_secs(30),
            update_interval: Duration::from_secs(3600),
            trusted_owners: Vec::new(),
            auth_file: None,
            metrics_listen: None,
            network: NetworkConfig::default(),
            registries: BTreeMap::new(),
            images: ImagesConfig::default(),
            logging: Logging::default(),
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            source: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub bridge: String,
    /// IPv4 CIDR; the first host address is the gateway. The default avoids Docker's
    /// 172.17.0.0/16 (and its 172.16/12, 192.168/16 pools) and podman's 10.88.0.0/16.
    pub subnet: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "berth0".into(),
            subnet: "10.213.0.0/16".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Plain HTTP (and no certificate checks). Only for registries named here.
    pub insecure: bool,
    /// `host[:port]` of mirrors, tried in order before the origin.
    pub mirrors: Vec<String>,
    /// Extra PEM root certificates for this registry.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Bytes the store may use; oldest-unused images are pruned past it.
    pub max_disk: Option<u64>,
    /// Free bytes to keep on the state dir's filesystem.
    pub min_free: u64,
    /// How long an unreferenced image stays before GC removes it.
    #[serde(with = "crate::units::duration_serde")]
    pub gc_grace: Duration,
    pub max_manifest_size: u64,
    pub max_layers: u32,
    /// Uncompressed bytes per layer.
    pub max_layer_size: u64,
    /// The longest a registry may take to answer a request (headers), and to send a whole
    /// manifest, config or token.
    #[serde(with = "crate::units::duration_serde")]
    pub http_timeout: Duration,
    /// A layer download that goes this long without a byte, or delivers less than 1 KiB/s over
    /// this long (a slow-loris server), is cut and resumed.
    #[serde(with = "crate::units::duration_serde")]
    pub stall_timeout: Duration,
    /// Bytes per second all of this agent's downloads share (`None`: unlimited).
    pub max_download_rate: Option<u64>,
    /// Layers of one image fetched at once (1 on a thin link: one layer at a time finishes).
    pub parallel_layers: u32,
    /// Downloads for containers that already run (updates) wait for this daily window; a first
    /// start and crash restarts never wait.
    pub download_window: Option<crate::model::Window>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            max_disk: None,
            min_free: 512 << 20,
            gc_grace: Duration::from_secs(24 * 3600),
            max_manifest_size: 4 << 20,
            max_layers: 128,
            max_layer_size: 16 << 30,
            http_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(30),
            max_download_rate: None,
            parallel_layers: 4,
            download_window: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}
