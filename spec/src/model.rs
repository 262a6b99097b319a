//! The validated, normalised container spec: what the rest of berth consumes.
//!
//! Everything here has its defaults filled in and has passed validation, so code below the
//! parser never re-checks a field. Two spec files that mean the same thing produce equal values
//! (and equal hashes, see [`crate::hash`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reference::ImageSource;
use crate::string_map::StringMap;

/// One container, as the agent should make it.
///
/// The keys most specs leave at their defaults are in [`ContainerSpec::extra`], allocated only
/// when one is set: an agent holds every spec it knows (see `size_of` in the tests below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The file stem: a DNS label.
    pub name: String,
    pub image: ImageSource,
    pub state: DesiredState,
    /// Replaces the image's Cmd when set.
    pub command: Option<Vec<String>>,
    /// `env_files` already merged in (files first, then `env`, so `env` wins).
    pub env: StringMap,
    pub restart: RestartPolicy,
    pub pull: PullPolicy,
    pub init: bool,
    pub network: NetworkMode,
    /// Inline, not in `extra`: a host's config sets it for every spec.
    pub logging: Logging,
    /// Written in `spec.json` as keys of the spec itself, as they always were.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The keys of a spec that most specs leave at their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtraKeys {
    /// Replaces the image's Entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    /// Kept for display; their contents are already in `env`.
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    pub user: Option<User>,
    /// Supplementary groups beyond the user's own (Docker's `--group-add`): names resolved in
    /// the image's /etc/group, or gids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<UserId>,
    pub hostname: Option<String>,
    pub labels: StringMap,
    /// A signal name such as `SIGTERM`; `None` means the image's StopSignal, else SIGTERM.
    pub stop_signal: Option<String>,
    #[serde(with = "crate::units::duration_serde")]
    pub stop_timeout: Duration,
    pub depends_on: Vec<Dependency>,
    pub update: UpdatePolicy,
    /// Ranges are expanded: one entry per host port.
    pub ports: Vec<PortMapping>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub resources: Resources,
    pub health: Health,
    pub security: Security,
    /// With `network = "bridge"`: the networks it joins, in order (at least one; the first
    /// that is not internal holds the default route and the published ports). Empty in the
    /// other modes. Here, not inline: most specs join the default network alone.
    pub networks: Vec<NetworkJoin>,
    /// `[match]`: which hosts run it (not part of the recreate hash: a host either runs the
    /// spec or does not have it).
    #[serde(default, rename = "match")]
    pub host_match: crate::matching::HostMatch,
}

impl Default for ExtraKeys {
    fn default() -> Self {
        ExtraKeys {
            entrypoint: None,
            env_files: Vec::new(),
            workdir: None,
            user: None,
            group_add: Vec::new(),
            hostname: None,
            labels: StringMap::new(),
            stop_signal: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            depends_on: Vec::new(),
            update: UpdatePolicy::default(),
            ports: Vec::new(),
            mounts: Vec::new(),
            devices: Vec::new(),
            resources: Resources::default(),
            health: Health::default(),
            security: Security::default(),
            networks: vec![NetworkJoin::named(crate::config::DEFAULT_NETWORK)],
            host_match: crate::matching::HostMatch::default(),
        }
    }
}

/// [`ExtraKeys`], boxed only when one differs from its default: a pointer for a spec that sets
/// none. Reads see the defaults through `Deref`; a write through `DerefMut` allocates them.
#[derive(Clone, Default)]
pub struct Extra(Option<Box<ExtraKeys>>);

static DEFAULT_EXTRA: std::sync::LazyLock<ExtraKeys> = std::sync::LazyLock::new(ExtraKeys::default);

impl Extra {
    pub fn new(keys: ExtraKeys) -> Self {
        if keys == *DEFAULT_EXTRA {
            Extra(None)
        } else {
            Extra(Some(Box::new(keys)))
        }
    }

    /// Whether every key has its default (and nothing is allocated).
    pub fn is_default(&self) -> bool {
        self.0.is_none()
    }
}

impl std::ops::Deref for Extra {
    type Target = ExtraKeys;

    fn deref(&self) -> &ExtraKeys {
        self.0.as_deref().unwrap_or(&DEFAULT_EXTRA)
    }
}

impl std::ops::DerefMut for Extra {
    fn deref_mut(&mut self) -> &mut ExtraKeys {
        self.0.get_or_insert_with(Default::default)
    }
}

impl PartialEq for Extra {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Extra {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ExtraKeys::deserialize(d).map(Extra::new)
    }
}

impl From<ExtraKeys> for Extra {
    fn from(keys: ExtraKeys) -> Self {
        Extra::new(keys)
    }
}

impl ContainerSpec {
    /// A spec with every default, as `image = "..."` alone in `<name>.toml` would give.
    pub fn with_defaults(name: &str, image: ImageSource) -> Self {
        ContainerSpec {
            name: name.to_string(),
            image,
            state: DesiredState::Running,
            command: None,
            env: StringMap::new(),
            restart: RestartPolicy::Always,
            pull: PullPolicy::Missing,
            init: false,
            network: NetworkMode::Bridge,
            logging: Logging::default(),
            extra: Extra::default(),
        }
    }
}

impl ContainerSpec {
    /// `depends_on`, plus the container whose network it joins (`network = "container:x"`
    /// starts after x), unless listed already.
    pub fn dependencies(&self) -> Vec<Dependency> {
        let mut deps = self.extra.depends_on.clone();
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
        self.extra
            .networks
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
    /// On one or more of berth's networks (see [`ExtraKeys::networks`]).
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
