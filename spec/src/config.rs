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
    /// The default network (`[network]`), called `default` in specs.
    pub network: NetworkConfig,
    /// Named networks (`[networks.<name>]`), each a bridge of its own.
    pub networks: BTreeMap<String, NamedNetworkConfig>,
    /// Keyed by `host[:port]`.
    pub registries: BTreeMap<String, RegistryConfig>,
    pub images: ImagesConfig,
    /// Default container log limits.
    pub logging: Logging,
    pub log_format: LogFormat,
    pub log_level: String,
    /// This host's id for `[match] hosts` and rollout buckets; `None`: `/etc/machine-id`.
    pub host_id: Option<String>,
    /// This host's labels, for `[match] labels`.
    pub labels: BTreeMap<String, String>,
    /// `[source]`: specs from a signed git repository (berth then owns `specs_dir`).
    #[serde(rename = "source")]
    pub git_source: Option<SourceConfig>,
    /// `[report]`: where this host's status is pushed (an MQTT broker); `None`: nowhere.
    pub report: Option<ReportConfig>,
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
            networks: BTreeMap::new(),
            registries: BTreeMap::new(),
            images: ImagesConfig::default(),
            logging: Logging::default(),
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            host_id: None,
            labels: BTreeMap::new(),
            git_source: None,
            report: None,
            source: None,
        }
    }
}

/// `[report]`: this host's status, pushed to an MQTT broker the operator already runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    pub mqtt: MqttUrl,
    /// The topic prefix; `{host_id}` and `{instance}` expand.
    #[serde(default = "ReportConfig::default_topic")]
    pub topic: String,
    /// PEM client certificate and its key, for `mqtts://` (both or neither).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password for `username` (its first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM roots to trust for `mqtts://` instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A full report at least this often, changed or not.
    #[serde(
        with = "crate::units::duration_serde",
        default = "ReportConfig::default_interval"
    )]
    pub interval: Duration,
}

impl ReportConfig {
    pub const DEFAULT_TOPIC: &str = "berth/{host_id}";

    fn default_topic() -> String {
        Self::DEFAULT_TOPIC.into()
    }

    pub fn default_interval() -> Duration {
        Duration::from_secs(300)
    }

    /// The topic prefix for this host, or why it cannot be one (a host id with `+`, `#` or `/`
    /// would change which topics it names).
    pub fn topic_prefix(&self, host_id: &str, instance: &str) -> Result<String, String> {
        if let Some(c) = host_id.chars().find(|c| matches!(c, '+' | '#' | '/')) {
            return Err(format!(
                "host id {host_id:?} cannot go into an MQTT topic: it has {c:?}"
            ));
        }
        Ok(self
            .topic
            .replace("{host_id}", host_id)
            .replace("{instance}", instance))
    }
}

/// `mqtt://host[:port]` (plain, port 1883) or `mqtts://host[:port]` (TLS, port 8883).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MqttUrl {
    pub transport: MqttTransport,
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttTransport {
    Plain,
    Tls,
}

impl std::str::FromStr for MqttUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<MqttUrl, String> {
        let bad = |why: &str| format!("{s:?} is not an MQTT URL: {why}");
        let (transport, rest) = if let Some(r) = s.strip_prefix("mqtt://") {
            (MqttTransport::Plain, r)
        } else if let Some(r) = s.strip_prefix("mqtts://") {
            (MqttTransport::Tls, r)
        } else {
            return Err(bad("expected mqtt://host[:port] or mqtts://host[:port]"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(bad(
                "no credentials in the URL: set username and password_file",
            ));
        }
        if rest.contains(['/', '?', '#']) {
            return Err(bad("no path, query or fragment"));
        }
        let default_port = match transport {
            MqttTransport::Plain => 1883,
            MqttTransport::Tls => 8883,
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address in brackets"));
            }
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad(&format!("invalid port {p:?}"))),
            },
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
        if !host_ok {
            return Err(bad("invalid host"));
        }
        Ok(MqttUrl {
            transport,
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.transport {
            MqttTransport::Plain => "mqtt",
            MqttTransport::Tls => "mqtts",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl TryFrom<String> for MqttUrl {
    type Error = String;
    fn try_from(s: String) -> Result<MqttUrl, String> {
        s.parse()
    }
}

impl From<MqttUrl> for String {
    fn from(u: MqttUrl) -> String {
        u.to_string()
    }
}

/// `[source]`: where specs come from when they come from a git repository, and what makes a
/// commit trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// `https://`, `http://`, `ssh://`, `git://` or `file://` URL; `None`: bundles only
    /// (`berth source import`, the import dir).
    pub git: Option<String>,
    pub branch: String,
    /// The repository subdir holding spec files, `a/b` form; empty: the root.
    pub path: String,
    #[serde(with = "crate::units::duration_serde")]
    pub interval: Duration,
    /// ssh-keygen's ALLOWED SIGNERS format; required unless `allow_unsigned`.
    pub allowed_signers: Option<PathBuf>,
    /// A commit trusted without a signature on the first run (a full commit id).
    pub trust_on_first_use: Option<String>,
    /// Take commits without verifying them (status shows it as a warning).
    pub allow_unsigned: bool,
    /// A file holding an access token for `https://` (sent as HTTP Basic auth).
    pub token_file: Option<PathBuf>,
    /// The user name sent with the token.
    pub username: String,
    /// The private key for `ssh://`.
    pub ssh_key_file: Option<PathBuf>,
    /// The server's host keys for `ssh://` (OpenSSH known_hosts format).
    pub known_hosts: Option<PathBuf>,
    /// Extra PEM roots for `https://`.
    pub ca_file: Option<PathBuf>,
    /// The longest one fetch may take.
    #[serde(with = "crate::units::duration_serde")]
    pub timeout: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            git: None,
            branch: "main".into(),
            path: String::new(),
            interval: Duration::from_secs(60),
            allowed_signers: None,
            trust_on_first_use: None,
            allow_unsigned: false,
            token_file: None,
            username: "x-access-token".into(),
            ssh_key_file: None,
            known_hosts: None,
            ca_file: None,
            timeout: Duration::from_secs(300),
        }
    }
}

/// The transports `[source] git` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitScheme {
    Https,
    Http,
    Ssh,
    Git,
    File,
}

impl GitScheme {
    /// The scheme of a URL berth accepts, as git's `protocol.<name>.allow` names it.
    pub fn of(url: &str) -> Option<GitScheme> {
        let (scheme, rest) = url.split_once("://")?;
        if rest.is_empty() {
            return None;
        }
        Some(match scheme {
            "https" => GitScheme::Https,
            "http" => GitScheme::Http,
            "ssh" => GitScheme::Ssh,
            "git" => GitScheme::Git,
            "file" => GitScheme::File,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GitScheme::Https => "https",
            GitScheme::Http => "http",
            GitScheme::Ssh => "ssh",
            GitScheme::Git => "git",
            GitScheme::File => "file",
        }
    }
}

/// The name specs give the network of `[network]`.
pub const DEFAULT_NETWORK: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub bridge: String,
    /// IPv4 CIDR; the first host address is the gateway. The default avoids Docker's
    /// 172.17.0.0/16 (and its 172.16/12, 192.168/16 pools) and podman's 10.88.0.0/16.
    pub subnet: String,
    /// IPv6 CIDR: the network is dual-stack; the first host address is the gateway.
    pub subnet6: Option<String>,
    /// No route out (no masquerade, forwarding off the bridge dropped) and no published ports.
    pub internal: bool,
    /// Masquerade IPv6 leaving the host (NAT66). Off: containers' own addresses go out, for a
    /// prefix routed to the host.
    pub masquerade6: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "berth0".into(),
            subnet: "10.213.0.0/16".into(),
            subnet6: None,
            internal: false,
            masquerade6: true,
        }
    }
}

/// `[networks.<name>]`: a network of its own. At least one of `subnet` and `subnet6`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamedNetworkConfig {
    /// The bridge's name; by default derived from the instance and the network's name.
    pub bridge: Option<String>,
    pub subnet: Option<String>,
    pub subnet6: Option<String>,
    pub internal: bool,
    pub masquerade6: bool,
}

impl Default for NamedNetworkConfig {
    fn default() -> Self {
        NamedNetworkConfig {
            bridge: None,
            subnet: None,
            subnet6: None,
            internal: false,
            masquerade6: true,
        }
    }
}

/// One network as the config declares it, the default one included (see [`Config::network_defs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDecl {
    pub name: String,
    /// `None`: derived from the instance (see the agent's names).
    pub bridge: Option<String>,
    pub subnet: Option<String>,
    pub subnet6: Option<String>,
    pub internal: bool,
    pub masquerade6: bool,
}

impl Config {
    /// Every network, the default one first, then the named ones by name.
    pub fn network_defs(&self) -> Vec<NetworkDecl> {
        let n = &self.network;
        let mut out = vec![NetworkDecl {
            name: DEFAULT_NETWORK.to_string(),
            bridge: Some(n.bridge.clone()),
            subnet: Some(n.subnet.clone()),
            subnet6: n.subnet6.clone(),
            internal: n.internal,
            masquerade6: n.masquerade6,
        }];
        out.extend(self.networks.iter().map(|(name, n)| NetworkDecl {
            name: name.clone(),
            bridge: n.bridge.clone(),
            subnet: n.subnet.clone(),
            subnet6: n.subnet6.clone(),
            internal: n.internal,
            masquerade6: n.masquerade6,
        }));
        out
    }

    /// What specs are checked against: the config's logging defaults and its networks.
    pub fn spec_defaults(&self) -> crate::parse::SpecDefaults {
        crate::parse::SpecDefaults {
            logging: self.logging,
            networks: Some(
                self.network_defs()
                    .into_iter()
                    .map(|d| {
                        (
                            d.name,
                            crate::parse::KnownNetwork {
                                ipv4: d.subnet.is_some(),
                                ipv6: d.subnet6.is_some(),
                                internal: d.internal,
                            },
                        )
                    })
                    .collect(),
            ),
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
    /// Tar entries per layer (files, dirs, links, whiteouts, headers of every kind).
    pub max_layer_entries: u64,
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
            max_layer_entries: 1_000_000,
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
