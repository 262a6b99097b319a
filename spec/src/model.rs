//! The validated, normalised container spec: what the rest of berth consumes.
//!
//! Everything here has its defaults filled in and has passed validation, so code below the
//! parser never re-checks a field. Two spec files that mean the same thing produce equal values
//! (and equal hashes, see [`crate::hash`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reference::ImageSource;

/// One container, as the agent should make it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The file stem: a DNS label.
    pub name: String,
    pub image: ImageSource,
    pub state: DesiredState,
    /// Replaces the image's Entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd when set.
    pub command: Option<Vec<String>>,
    /// `env_files` already merged in (files first, then `env`, so `env` wins).
    pub env: BTreeMap<String, String>,
    /// Kept for display; their contents are already in `env`.
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    pub user: Option<User>,
    /// Supplementary groups beyond the user's own (Docker's `--group-add`): names resolved in
    /// the image's /etc/group, or gids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<UserId>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    /// A signal name such as `SIGTERM`; `None` means the image's StopSignal, else SIGTERM.
    pub stop_signal: Option<String>,
    #[serde(with = "crate::units::duration_serde")]
    pub stop_timeout: Duration,
    pub pull: PullPolicy,
    pub depends_on: Vec<Dependency>,
    pub init: bool,
    pub update: UpdatePolicy,
    /// Ranges are expanded: one entry per host port.
    pub ports: Vec<PortMapping>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub resources: Resources,
    pub health: Health,
    pub network: NetworkMode,
    /// With `network = "bridge"`: the networks it joins, in order (at least one; the first
    /// that is not internal holds the default route and the published ports). Empty in the
    /// other modes.
    pub networks: Vec<NetworkJoin>,
    pub security: Security,
    pub logging: Logging,
    /// `[match]`: which hosts run it (not part of the recreate hash: a host either runs the
    /// spec or does not have it).
    #[serde(default, rename = "match")]
    pub host_match: crate::matching::HostMatch,
}

impl ContainerSpec {
    /// A spec with every default, as `image = "..."` alone in `<name>.toml` would give.
    pub fn with_defaults(name: &str, image: ImageSource) -> Self {
        ContainerSpec {
            name: name.to_string(),
            image,
            state: DesiredState::Running,
            entrypoint: None,
            command: None,
            env: BTreeMap::new(),
            env_files: Vec::new(),
            workdir: None,
            user: None,
            group_add: Vec::new(),
            hostname: None,
            labels: BTreeMap::new(),
            restart: RestartPolicy::Always,
            stop_signal: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            pull: PullPolicy::Missing,
            depends_on: Vec::new(),
            init: false,
            update: UpdatePolicy::default(),
            ports: Vec::new(),
            mounts: Vec::new(),
            devices: Vec::new(),
            resources: Resources::default(),
            health: Health::default(),
            network: NetworkMode::Bridge,
            networks: vec![NetworkJoin::named(crate::config::DEFAULT_NETWORK)],
            security: Security::default(),
            logging: Logging::default(),
            host_match: crate::matching::HostMatch::default(),
        }
    }
}

impl ContainerSpec {
    /// `depends_on`, plus the container whose network it joins (`network = "container:x"`
    /// starts after x), unless listed already.
    pub fn dependencies(&self) -> Vec<Dependency> {
        let mut deps = self.depends_on.clone();
        if let NetworkMode::Container(of) = &self.network
            && !deps.iter().any(|d| &d.name == of)
        {
            deps.push(Dependency {
                name: of.clone(),
                condition: DependencyCondition::Started,
            });
        }
        deps
    }

    /// Whether any network address is asked for by hand.
    pub fn has_static_address(&self) -> bool {
        self.networks
            .iter()
            .any(|n| n.ip.is_some() || n.ip6.is_some())
    }
}

pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredState {
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull only when the reference is not in the store.
    Missing,
    /// Follow the tag: re-resolve it every `update_interval`.
    Always,
    /// Never contact a registry; the image must already be in the store.
    Never,
}

/// `uid[:gid]` or a name (resolved in the container's /etc/passwd, /etc/group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user: UserId,
    pub group: Option<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserId {
    Id(u32),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub name: String,
    pub condition: DependencyCondition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DependencyCondition {
    /// The dependency's process is running.
    Started,
    /// The dependency's health check passes.
    Healthy,
    /// The dependency exited with code 0.
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    pub strategy: UpdateStrategy,
    #[serde(with = "crate::units::opt_duration_serde")]
    pub min_age: Option<Duration>,
    pub window: Option<Window>,
    pub lock: Option<PathBuf>,
    #[serde(with = "crate::units::duration_serde")]
    pub verify: Duration,
    pub rollback: bool,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            strategy: UpdateStrategy::DownloadThenKill,
            min_age: None,
            window: None,
            lock: None,
            verify: Duration::from_secs(60),
            rollback: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateStrategy {
    DownloadThenKill,
    KillThenDownload,
    StartThenKill,
}

/// A daily maintenance window in local time, minutes after midnight. `end < start` wraps past
/// midnight (`"23:00-01:00"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl Window {
    /// Whether a local time of day (minutes after midnight) falls inside the window.
    pub fn contains(&self, minute_of_day: u16) -> bool {
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_minute || minute_of_day < self.end_minute
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port (ranges are expanded before this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    /// `None`: every host address.
    pub host_ip: Option<IpAddr>,
    pub host: u16,
    pub container: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountKind {
    /// A host path.
    Bind {
        source: PathBuf,
    },
    /// A named volume: a directory under the state dir that outlives recreations.
    Volume {
        name: String,
    },
    Tmpfs {
        size: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Host device node.
    pub host: PathBuf,
    /// Path inside the container; defaults to the host path.
    pub container: PathBuf,
    /// Any of `r`, `w`, `m`; default `rwm`.
    pub permissions: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Bytes.
    pub memory: Option<u64>,
    /// Thousandths of a CPU (`cpus = 1.5` is 1500), so the value hashes exactly.
    pub millicpus: Option<u32>,
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `None`: use the image's health check, unless `disable`.
    pub check: Option<HealthCheck>,
    /// Ignore the image's own health check.
    pub disable: bool,
    pub on_unhealthy: OnUnhealthy,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            check: None,
            disable: false,
            on_unhealthy: OnUnhealthy::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Run as an argv; a string in the spec becomes `["/bin/sh", "-c", string]`.
    pub command: Vec<String>,
    #[serde(with = "crate::units::duration_serde")]
    pub interval: Duration,
    #[serde(with = "crate::units::duration_serde")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(with = "crate::units::duration_serde")]
    pub start_period: Duration,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_RETRIES: u32 = 3;
    pub const DEFAULT_START_PERIOD: Duration = Duration::from_secs(0);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnhealthy {
    Restart,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// On one or more of berth's networks (see [`ContainerSpec::networks`]).
    Bridge,
    Host,
    None,
    /// `container:<name>`: in that container's network namespace (a sidecar).
    Container(String),
}

impl NetworkMode {
    /// As a spec writes it: `bridge`, `host`, `none`, `container:<name>`.
    pub fn spec_word(&self) -> String {
        match self {
            NetworkMode::Bridge => "bridge".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::None => "none".into(),
            NetworkMode::Container(c) => format!("container:{c}"),
        }
    }
}

/// One network a container joins, with the addresses it asks for (else IPAM picks).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkJoin {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
}

impl NetworkJoin {
    pub fn named(name: &str) -> Self {
        NetworkJoin {
            name: name.to_string(),
            ip: None,
            ip6: None,
        }
    }

    /// The static addresses, IPv4 first.
    pub fn static_addresses(&self) -> Vec<IpAddr> {
        self.ip
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ip6.map(IpAddr::V6))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    pub privileged: bool,
    /// Upper-case with the `CAP_` prefix, sorted, deduplicated: `CAP_NET_ADMIN`. `ALL` allowed.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only_rootfs: bool,
    pub no_new_privileges: bool,
    pub seccomp: SeccompMode,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            privileged: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            read_only_rootfs: false,
            no_new_privileges: true,
            seccomp: SeccompMode::Default,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SeccompMode {
    Default,
    Unconfined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Logging {
    /// Bytes per log file before rotation.
    pub max_size: u64,
    /// Rotated files kept besides the current one.
    pub max_files: u32,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            max_size: 10 * 1024 * 1024,
            max_files: 3,
        }
    }
}
