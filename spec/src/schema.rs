//! The JSON Schema of a spec file, as a user writes it (short forms and tables), for editors
//! (taplo, Even Better TOML). These types exist only to describe the format: parsing is done by
//! hand in [`crate::parse`] so every error is reported; a test keeps the two in step.

// The types are never built: they only describe the format to schemars.
#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;

/// A berth container spec: one container per `<name>.toml`, the file stem is its name.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "berth container spec")]
struct SpecFile {
    /// Image reference (`nginx:1.27`, `ghcr.io/o/r@sha256:...`), or an image on disk:
    /// `oci-archive:/path/img.tar`, `oci:/path/layout[:tag]`.
    image: String,
    /// Desired state. Default `running`.
    state: Option<State>,
    /// Replaces the image's entrypoint.
    entrypoint: Option<Vec<String>>,
    /// Replaces the image's command.
    command: Option<Vec<String>>,
    /// Environment variables; these win over `env_files`.
    env: Option<BTreeMap<String, EnvValue>>,
    /// Files of `KEY=VALUE` lines (Docker's --env-file), relative to the spec file's directory.
    env_files: Option<Vec<String>>,
    /// Working directory inside the container (absolute).
    workdir: Option<String>,
    /// `uid[:gid]` or a user name from the image's /etc/passwd.
    user: Option<UserValue>,
    /// Supplementary groups beyond the user's own (Docker's `--group-add`): group names from
    /// the image's /etc/group, or gids.
    group_add: Option<Vec<UserValue>>,
    /// The container's host name. Default: the container's name.
    hostname: Option<String>,
    /// Labels kept on the container.
    labels: Option<BTreeMap<String, EnvValue>>,
    /// Restart policy. Default `always`.
    restart: Option<Restart>,
    /// Signal that asks the container to stop (`SIGTERM`, `QUIT`). Default: the image's, else
    /// SIGTERM.
    stop_signal: Option<String>,
    /// How long to wait after the stop signal before SIGKILL. Default `10s`.
    stop_timeout: Option<DurationStr>,
    /// When to contact the registry. Default `missing`.
    pull: Option<Pull>,
    /// Containers to start first.
    depends_on: Option<Vec<DependencyEntry>>,
    /// Run a tiny reaper as pid 1. Default false.
    init: Option<bool>,
    /// How a changed image or spec is rolled out.
    update: Option<UpdateTable>,
    /// Published ports: `"8080:80"`, `"127.0.0.1:5353:53/udp"`, `"8000-8010:8000-8010"`, or tables.
    ports: Option<Vec<PortEntry>>,
    /// `"/srv/data:/data:ro"` (bind), `"cache:/var/cache"` (named volume), or tables.
    mounts: Option<Vec<MountEntry>>,
    /// Host devices: `"/dev/fuse"`, `"/dev/sda:/dev/xvda:rw"`, or tables.
    devices: Option<Vec<DeviceEntry>>,
    /// Limits, applied to the live cgroup without a recreate.
    resources: Option<ResourcesTable>,
    /// Health check.
    health: Option<HealthTable>,
    /// Network mode: `bridge` (berth's networks, see `networks`), `host`, `none`, or
    /// `container:<name>` (that container's network namespace). Default `bridge`.
    network: Option<Network>,
    /// The networks the container joins, declared in the agent config (`default` is
    /// `[network]`); the first that is not internal holds the default route and the published ports. Default
    /// `["default"]`.
    networks: Option<Vec<String>>,
    /// Static addresses: one (or one IPv4 and one IPv6) on the first network, or a table of
    /// them by network name.
    ip: Option<IpValue>,
    security: Option<SecurityTable>,
    logging: Option<LoggingTable>,
    /// Which hosts run this spec (by the agent config's `host_id` and `[labels]`); without it,
    /// every host does.
    #[serde(rename = "match")]
    host_match: Option<MatchTable>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct MatchTable {
    /// Label name to a value, or a list of values any of which matches. Every name listed must
    /// match: `{ role = "kiosk", site = ["berlin", "paris"] }`.
    labels: Option<BTreeMap<String, LabelValues>>,
    /// Host ids (`host_id`, else /etc/machine-id), any of which matches.
    hosts: Option<Vec<String>>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum LabelValues {
    One(String),
    Any(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum State {
    Running,
    Paused,
    Stopped,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Restart {
    Always,
    OnFailure,
    Never,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Pull {
    Missing,
    Always,
    Never,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum Network {
    Mode(NetworkWord),
    /// `container:<name>`: share that container's network namespace.
    Container(#[schemars(regex(pattern = r"^container:[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))] String),
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum NetworkWord {
    Bridge,
    Host,
    None,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum IpValue {
    One(String),
    /// One IPv4 and one IPv6 address.
    Two(Vec<String>),
    ByNetwork(BTreeMap<String, IpAddresses>),
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum IpAddresses {
    One(String),
    Two(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum EnvValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum UserValue {
    Name(String),
    Uid(u32),
}

/// A duration: `"10s"`, `"1m30s"`, `"250ms"`, `"2h"`, `"1d"`.
#[derive(JsonSchema)]
#[schemars(transparent)]
struct DurationStr(#[schemars(regex(pattern = r"^([0-9.]+(ms|s|m|h|d))+$|^0$"))] String);

/// A size as Docker reads it: `"256m"`, `"1g"`, `"512MiB"` (binary), or a byte count.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Size {
    Text(String),
    Bytes(u64),
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum DependencyEntry {
    /// A container name (condition `started`).
    Name(String),
    Table(DependencyTable),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct DependencyTable {
    name: String,
    /// Default `started`.
    condition: Option<Condition>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Condition {
    Started,
    Healthy,
    Completed,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTable {
    /// Default `download-then-kill`.
    strategy: Option<Strategy>,
    /// Don't take an image younger than this.
    min_age: Option<DurationStr>,
    /// Daily maintenance window in local time, `"02:00-04:00"`.
    window: Option<String>,
    /// A host path: while that file exists, updates wait.
    lock: Option<String>,
    /// How long a new container must stay up (and healthy) before it counts. Default `1m`.
    verify: Option<DurationStr>,
    /// Go back to the previous image if verification fails. Default true.
    rollback: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Strategy {
    DownloadThenKill,
    KillThenDownload,
    StartThenKill,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum PortEntry {
    Short(String),
    Table(PortTable),
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum PortNumber {
    Port(u16),
    /// `"8000-8010"`.
    Range(String),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct PortTable {
    /// Default: every host address.
    host_ip: Option<String>,
    host: PortNumber,
    container: PortNumber,
    /// Default `tcp`.
    protocol: Option<Protocol>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Protocol {
    Tcp,
    Udp,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum MountEntry {
    Short(String),
    Table(MountTable),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct MountTable {
    /// Default: `bind` for an absolute source, `volume` otherwise.
    #[serde(rename = "type")]
    kind: Option<MountType>,
    /// A host path (bind) or a volume name; none for a tmpfs.
    source: Option<String>,
    target: String,
    /// Default false.
    read_only: Option<bool>,
    /// tmpfs only.
    size: Option<Size>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum MountType {
    Bind,
    Volume,
    Tmpfs,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum DeviceEntry {
    Short(String),
    Table(DeviceTable),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct DeviceTable {
    host: String,
    /// Default: the host path.
    container: Option<String>,
    /// Any of `r`, `w`, `m`. Default `rwm`.
    permissions: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ResourcesTable {
    /// Memory limit: `"256m"`, `"1g"`, `"512MiB"`.
    memory: Option<Size>,
    /// CPUs, fractional (`1.5`), three decimals at most.
    cpus: Option<f64>,
    /// Maximum number of processes.
    pids: Option<u64>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
enum HealthCommand {
    /// Run through `/bin/sh -c`.
    Shell(String),
    Argv(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct HealthTable {
    command: Option<HealthCommand>,
    /// Default `30s`.
    interval: Option<DurationStr>,
    /// Default `30s`.
    timeout: Option<DurationStr>,
    /// Default 3.
    retries: Option<u32>,
    /// Default `0s`.
    start_period: Option<DurationStr>,
    /// Default `none`.
    on_unhealthy: Option<OnUnhealthy>,
    /// Ignore the image's own health check. Default false.
    disable: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum OnUnhealthy {
    Restart,
    None,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct SecurityTable {
    /// Default false.
    privileged: Option<bool>,
    /// Capability names (`NET_ADMIN`, `CAP_NET_ADMIN`, `ALL`).
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    /// Default false.
    read_only_rootfs: Option<bool>,
    /// Default true.
    no_new_privileges: Option<bool>,
    /// Default `default`.
    seccomp: Option<Seccomp>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Seccomp {
    Default,
    Unconfined,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct LoggingTable {
    /// Size of a log file before rotation. Default `10MiB`.
    max_size: Option<Size>,
    /// Rotated files kept. Default 3.
    max_files: Option<u32>,
}

/// The agent config (`/etc/berth/berth.toml`). Every key is optional.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "berth agent config")]
struct ConfigFile {
    /// Prefix of every kernel object this agent owns: 1-12 of `a-z0-9-`, starting with a
    /// letter. Default `berth`.
    instance: Option<String>,
    /// The spec directory (absolute). Default `/etc/berth/specs`.
    specs_dir: Option<String>,
    /// Images, layers, container dirs, volumes (absolute). Default `/var/lib/berth`.
    state_dir: Option<String>,
    /// Socket, shim state, netns mounts (absolute). Default `/run/berth`.
    run_dir: Option<String>,
    /// Image archives dropped here are imported and pinned (absolute). Default
    /// `/var/lib/berth/import`.
    images_dir: Option<String>,
    /// Full comparison of desired and observed state, at least 1s. Default `30s`.
    resync_interval: Option<DurationStr>,
    /// How often `pull = "always"` tags are re-resolved, at least 1s. Default `1h`.
    update_interval: Option<DurationStr>,
    /// Besides root, who may own spec files: user names or uids.
    trusted_owners: Option<Vec<String>>,
    /// Registry credentials in Docker's config.json format (absolute path).
    auth_file: Option<String>,
    /// Prometheus metrics endpoint, `"127.0.0.1:9100"`. Default: off.
    metrics_listen: Option<String>,
    network: Option<NetworkTable>,
    /// Named networks, keyed by name, each a bridge of its own.
    networks: Option<BTreeMap<String, NamedNetworkTable>>,
    /// Per registry, keyed by `"host[:port]"`.
    registries: Option<BTreeMap<String, RegistryTable>>,
    images: Option<ImagesTable>,
    /// Default container log limits (a spec's `[logging]` wins).
    logging: Option<LoggingTable>,
    /// The agent's own logs. Default `auto`: text on a terminal, JSON otherwise.
    log_format: Option<LogFormat>,
    /// `error`, `warn`, `info`, `debug`, `trace`, `off`, or a filter such as
    /// `"berth=debug,info"`. Default `info`.
    log_level: Option<String>,
    /// This host's id in a fleet (rollout buckets, `[match] hosts`, reports): 1-253
    /// characters, no spaces. Default: the contents of `/etc/machine-id`.
    host_id: Option<String>,
    /// This host's labels, free-form strings (`site = "berlin"`), for `[match] labels` and
    /// reports.
    labels: Option<BTreeMap<String, String>>,
    /// Specs from a signed git repository (berth then owns `specs_dir`).
    source: Option<SourceTable>,
    /// Push this host's status to an MQTT broker.
    report: Option<ReportTable>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct SourceTable {
    /// The remote: `https://`, `http://`, `ssh://`, `git://` or `file://`. None: bundles only.
    git: Option<String>,
    /// The branch followed. Default `main`.
    branch: Option<String>,
    /// The directory of spec files inside the repository. Default: its root.
    path: Option<String>,
    /// Time between fetches, at least 1s (plus up to a fifth of it per host). Default `1m`.
    interval: Option<DurationStr>,
    /// Who may sign, in ssh-keygen's ALLOWED SIGNERS format (absolute path); required unless
    /// `allow_unsigned`.
    allowed_signers: Option<String>,
    /// A full commit id trusted without a signature on the first run.
    trust_on_first_use: Option<String>,
    /// Take commits without a signature check (shown as a warning). Default `false`.
    allow_unsigned: Option<bool>,
    /// `https://` only: a file holding an access token (absolute path).
    token_file: Option<String>,
    /// The user name sent with the token. Default `x-access-token`.
    username: Option<String>,
    /// `ssh://` only: the private key (absolute path).
    ssh_key_file: Option<String>,
    /// `ssh://` only: the server's host keys, OpenSSH known_hosts (absolute path).
    known_hosts: Option<String>,
    /// `https://` only: extra PEM roots (absolute path).
    ca_file: Option<String>,
    /// The longest one fetch may take. Default `5m`.
    timeout: Option<DurationStr>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReportTable {
    /// The broker: `mqtt://host[:port]` (port 1883) or `mqtts://host[:port]` (TLS, 8883).
    mqtt: String,
    /// Topic prefix; `{host_id}` and `{instance}` expand. Default `berth/{host_id}`.
    topic: Option<String>,
    /// PEM client certificate for `mqtts://` (absolute path; with `client_key`).
    client_cert: Option<String>,
    /// The client certificate's PEM private key (absolute path).
    client_key: Option<String>,
    /// The MQTT user name.
    username: Option<String>,
    /// A file holding `username`'s password, its first line (absolute path).
    password_file: Option<String>,
    /// PEM roots trusted for `mqtts://` instead of the system's (absolute path).
    ca_file: Option<String>,
    /// A full report at least this often, at least 1s. Default `5m`.
    interval: Option<DurationStr>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct NetworkTable {
    /// The bridge's name, at most 15 characters. Default `berth0`.
    bridge: Option<String>,
    /// IPv4 CIDR, prefix 8-30, host bits zero. Default `10.213.0.0/16`.
    subnet: Option<String>,
    /// IPv6 CIDR, prefix 48-124, host bits zero: the network is dual-stack. Default: none.
    subnet6: Option<String>,
    /// No route out and no published ports. Default false.
    internal: Option<bool>,
    /// Masquerade IPv6 leaving the host (NAT66). Default true.
    masquerade6: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct NamedNetworkTable {
    /// The bridge's name, at most 15 characters. Default: derived from the instance.
    bridge: Option<String>,
    /// IPv4 CIDR, prefix 8-30, host bits zero.
    subnet: Option<String>,
    /// IPv6 CIDR, prefix 48-124, host bits zero.
    subnet6: Option<String>,
    /// No route out and no published ports. Default false.
    internal: Option<bool>,
    /// Masquerade IPv6 leaving the host (NAT66). Default true.
    masquerade6: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct RegistryTable {
    /// Plain HTTP and no certificate checks, for this registry only. Default false.
    insecure: Option<bool>,
    /// `host[:port]` mirrors, tried in order before the origin.
    mirrors: Option<Vec<String>>,
    /// Extra PEM roots for this registry (absolute path).
    ca_file: Option<String>,
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct ImagesTable {
    /// Bytes the store may use; least recently used images are pruned past it.
    max_disk: Option<Size>,
    /// Free space to keep on the state dir's filesystem. Default `512MiB`.
    min_free: Option<Size>,
    /// How long an unreferenced image stays. Default `1d`.
    gc_grace: Option<DurationStr>,
    /// Larger manifests are refused. Default `4MiB`.
    max_manifest_size: Option<Size>,
    /// 1-10000. Default 128.
    max_layers: Option<u32>,
    /// Tar entries per layer (files, dirs, links, whiteouts, extension headers),
    /// 1-1000000000. Default `1000000`.
    max_layer_entries: Option<u64>,
    /// Uncompressed, per layer. Default `16GiB`.
    max_layer_size: Option<Size>,
    /// The longest a registry may take to answer, at least 1s. Default `60s`.
    http_timeout: Option<DurationStr>,
    /// A download silent (or under 1 KiB/s) this long is cut and resumed, at least 1s.
    /// Default `30s`.
    stall_timeout: Option<DurationStr>,
    /// Bytes per second all of the agent's downloads share, at least `16KiB/s`, e.g.
    /// `"2MiB/s"`. Default unlimited.
    max_download_rate: Option<String>,
    /// Layers of one image fetched at once, 1-16 (1 on a thin link). Default 4.
    parallel_layers: Option<u32>,
    /// Downloads of updates wait for this daily window in local time, `"01:00-05:00"`; a
    /// first start and crash restarts never wait. Default none.
    download_window: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum LogFormat {
    Auto,
    Text,
    Json,
}

/// The spec file's JSON Schema (draft-07, which taplo reads), as pretty JSON with a newline.
pub fn spec_schema_json() -> String {
    schema_json::<SpecFile>()
}

/// The agent config's JSON Schema, as [`spec_schema_json`].
pub fn config_schema_json() -> String {
    schema_json::<ConfigFile>()
}

fn schema_json<T: JsonSchema>() -> String {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut value = schema.to_value();
    strip_null(&mut value);
    let mut s = serde_json::to_string_pretty(&value).expect("schema serialises");
    s.push('\n');
    s
}

/// TOML has no null (an absent key is how a spec says "default"), so the `null` schemars
/// adds for every `Option` is taken out.
fn strip_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alts)) = map.get_mut(key) {
                    alts.retain(|a| a.get("type").is_none_or(|t| t != "null"));
                }
            }
            map.values_mut().for_each(strip_null);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn props<'a>(schema: &'a Value, def: Option<&str>) -> Vec<&'a str> {
        let obj = match def {
            Some(d) => &schema["definitions"][d],
            None => schema,
        };
        let mut v: Vec<&str> = obj["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{def:?} has properties"))
            .keys()
            .map(String::as_str)
            .collect();
        v.sort();
        v
    }

    fn sorted<'a>(keys: &[&'a str]) -> Vec<&'a str> {
        let mut v = keys.to_vec();
        v.sort();
        v
    }

    /// The schema and the hand-written parser accept the same keys at every level.
    #[test]
    fn schema_keys_match_the_parser() {
        let s: Value = serde_json::from_str(&spec_schema_json()).unwrap();
        assert_eq!(props(&s, None), sorted(crate::parse::TOP_KEYS));
        use crate::{mounts, ports, sections};
        for (def, keys) in [
            ("UpdateTable", sections::UPDATE_KEYS),
            ("HealthTable", sections::HEALTH_KEYS),
            ("ResourcesTable", sections::RESOURCES_KEYS),
            ("SecurityTable", sections::SECURITY_KEYS),
            ("LoggingTable", sections::LOGGING_KEYS),
            ("DependencyTable", sections::DEPENDENCY_KEYS),
            ("PortTable", ports::KEYS),
            ("MountTable", mounts::MOUNT_KEYS),
            ("DeviceTable", mounts::DEVICE_KEYS),
            ("MatchTable", crate::matching::MATCH_KEYS),
        ] {
            assert_eq!(props(&s, Some(def)), sorted(keys), "{def}");
        }
        assert_eq!(s["additionalProperties"], Value::Bool(false));
        assert!(!spec_schema_json().contains("\"null\""));
    }

    #[test]
    fn config_schema_keys_match_the_parser() {
        let s: Value = serde_json::from_str(&config_schema_json()).unwrap();
        assert_eq!(props(&s, None), sorted(crate::config_parse::CONFIG_KEYS));
        use crate::config_parse::{IMAGES_KEYS, NETWORK_KEYS, REGISTRY_KEYS, REPORT_KEYS};
        for (def, keys) in [
            ("ReportTable", REPORT_KEYS),
            ("SourceTable", crate::config_parse::SOURCE_KEYS),
            ("NetworkTable", NETWORK_KEYS),
            ("NamedNetworkTable", crate::config_parse::NAMED_NETWORK_KEYS),
            ("RegistryTable", REGISTRY_KEYS),
            ("ImagesTable", IMAGES_KEYS),
            ("LoggingTable", crate::sections::LOGGING_KEYS),
        ] {
            assert_eq!(props(&s, Some(def)), sorted(keys), "{def}");
        }
        assert_eq!(s["additionalProperties"], Value::Bool(false));
        assert!(!config_schema_json().contains("\"null\""));
    }

    #[test]
    fn shipped_config_schema_is_current() {
        assert_eq!(
            include_str!("../berth-config.schema.json"),
            config_schema_json(),
            "regenerate with `berth schema --config > spec/berth-config.schema.json`"
        );
    }

    /// The shipped file is what `berth schema` prints (regenerate it with that command).
    #[test]
    fn shipped_schema_is_current() {
        assert_eq!(
            include_str!("../berth-spec.schema.json"),
            spec_schema_json()
        );
    }
}
