//! One container's spec: `<name>.toml` and its drop-ins merged, read, validated and normalised
//! into a [`ContainerSpec`], with every problem reported.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decode::{Cx, index};
use crate::diag::{self, Diagnostic, SourceFile};
use crate::envfile::{check_env_name, parse_env_file};
use crate::model::*;
use crate::reference::ImageSource;
use crate::sections::{self, opt};
use crate::tree::{self, Kind, Node, Span, Table};
use crate::{mounts, ports, values};

/// Every top-level key of a spec file.
pub const TOP_KEYS: &[&str] = &[
    "image",
    "state",
    "entrypoint",
    "command",
    "env",
    "env_files",
    "workdir",
    "user",
    "group_add",
    "hostname",
    "labels",
    "restart",
    "stop_signal",
    "stop_timeout",
    "pull",
    "depends_on",
    "init",
    "update",
    "ports",
    "mounts",
    "devices",
    "resources",
    "health",
    "network",
    "networks",
    "ip",
    "security",
    "logging",
    "match",
];

/// Reads an env file for the parser (the caller does the I/O): the text, or why not.
pub type ReadEnvFile<'a> = dyn FnMut(&Path) -> Result<String, String> + 'a;

/// A position in a file, kept for checks across files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
}

/// A valid spec and where its parts came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSpec {
    /// Shared, not copied: the agent's source cache, last valid specs, desired set and plan
    /// all hold this one allocation.
    pub spec: std::sync::Arc<ContainerSpec>,
    /// Every file read for it: the base, its drop-ins, then env files, as the caller named them.
    pub files: Vec<PathBuf>,
    /// Where the keys checked across specs are written; `None` when the spec sets none of
    /// them (most: an agent's source cache holds one per spec).
    places: Option<Box<Places>>,
}

/// Where the keys of a spec that [`crate::set`] checks across specs are written.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Places {
    /// One per `spec.ports` entry.
    pub(crate) port_places: Vec<Location>,
    /// One per `spec.depends_on` entry.
    pub(crate) dependency_places: Vec<Location>,
    /// Where `network` is set, when it is.
    pub(crate) network_place: Option<Location>,
    /// Every static address, with where it is written.
    pub(crate) ip_places: Vec<(IpAddr, Location)>,
}

static NO_PLACES: std::sync::LazyLock<Places> = std::sync::LazyLock::new(Places::default);

impl ParsedSpec {
    pub(crate) fn places(&self) -> &Places {
        self.places.as_deref().unwrap_or(&NO_PLACES)
    }
}

/// Defaults a host may set for keys a spec leaves out, and what specs are checked against
/// (from the agent config: see [`crate::Config::spec_defaults`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpecDefaults {
    /// The agent config's `[logging]`: container log limits unless a spec says otherwise.
    pub logging: Logging,
    /// The networks the config declares, by name; `None`: not known (names are not checked).
    pub networks: Option<BTreeMap<String, KnownNetwork>>,
}

/// What a spec's checks need to know of a declared network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownNetwork {
    pub ipv4: bool,
    pub ipv6: bool,
    pub internal: bool,
}

/// Parses one container from its files: `files[0]` is `<name>.toml`, the rest its drop-ins in
/// the order they apply. `read_env_file` is called with each `env_files` path (relative paths
/// resolved against the directory of the file that names them).
pub fn parse_spec(
    name: &str,
    files: &[SourceFile],
    read_env_file: &mut ReadEnvFile<'_>,
) -> Result<ParsedSpec, Vec<Diagnostic>> {
    parse_spec_with(name, files, read_env_file, &SpecDefaults::default())
}

/// [`parse_spec`] with a host's defaults.
pub fn parse_spec_with(
    name: &str,
    files: &[SourceFile],
    read_env_file: &mut ReadEnvFile<'_>,
    defaults: &SpecDefaults,
) -> Result<ParsedSpec, Vec<Diagnostic>> {
    assert!(!files.is_empty(), "parse_spec needs at least the base file");
    let mut diags = Vec::new();
    if let Err(e) = crate::names::validate_container_name(name) {
        diags.push(Diagnostic::at(&files[0].path, "", 0, "", e));
    }
    let mut merged: Option<Node> = None;
    for i in 0..files.len() {
        match tree::parse(files, i) {
            Ok(n) => match &mut merged {
                Some(m) => tree::merge(m, n),
                None => merged = Some(n),
            },
            Err(d) => diags.extend(d),
        }
    }
    if !diags.is_empty() {
        diag::sort(&mut diags);
        return Err(diags);
    }
    let root = merged.expect("at least one file parsed");
    let mut cx = Cx::new(files);
    let spec = decode(&mut cx, &root, name, read_env_file, defaults);
    let mut diags = cx.diags;
    match spec {
        Some(parsed) if diags.is_empty() => Ok(parsed),
        _ => {
            assert!(
                !diags.is_empty(),
                "a spec that failed to decode has a diagnostic"
            );
            diag::sort(&mut diags);
            diags.dedup();
            Err(diags)
        }
    }
}

/// [`parse_spec`] for a single file with no drop-ins and no env files (tests, tools).
pub fn parse_spec_str(name: &str, path: &Path, text: &str) -> Result<ParsedSpec, Vec<Diagnostic>> {
    let files = [SourceFile::new(path, text)];
    parse_spec(name, &files, &mut |p: &Path| {
        Err(format!("cannot read {}: no env files here", p.display()))
    })
}

fn location(cx: &Cx<'_>, span: Span) -> Location {
    let f = &cx.files[span.file];
    let (line, column) = diag::line_column(&f.text, span.start);
    Location {
        file: f.path.clone(),
        line,
        column,
    }
}

/// One spec file's keys, checked, to a spec: every key read (reporting every error, not the
/// first), the checks across keys, the environment merged, the spec built.
/// Long because: one binding per top-level key, then one field per key of the spec; what lies
/// between is named steps.
fn decode(
    cx: &mut Cx<'_>,
    root: &Node,
    name: &str,
    read_env_file: &mut ReadEnvFile<'_>,
    host: &SpecDefaults,
) -> Option<ParsedSpec> {
    let t = cx.table(root, "", TOP_KEYS)?;
    let image = match t.get("image") {
        Some(v) => cx.str(v, "image").and_then(|s| {
            ImageSource::parse(s)
                .map_err(|e| cx.error(v.span, "image", e.to_string()))
                .ok()
        }),
        None => {
            cx.error(root.span, "image", "missing required key");
            None
        }
    };
    let state = opt(cx, t, "", "state", |cx, v, k| {
        cx.choice(
            v,
            k,
            &[
                ("running", DesiredState::Running),
                ("paused", DesiredState::Paused),
                ("stopped", DesiredState::Stopped),
            ],
        )
    });
    let argv = |cx: &mut Cx<'_>, v: &Node, k: &str| {
        if let Kind::Str(s) = &v.kind {
            cx.error(
                v.span,
                k,
                format!("expected an array such as [\"/bin/sh\", \"-c\", {s:?}], found a string"),
            );
            return None;
        }
        cx.strings(v, k)
    };
    let entrypoint = opt(cx, t, "", "entrypoint", argv);
    let command = opt(cx, t, "", "command", argv);
    let env = opt(cx, t, "", "env", |cx, v, k| {
        cx.string_map(v, k, check_env_name)
    });
    let env_files = opt(cx, t, "", "env_files", env_file_list);
    let workdir = opt(cx, t, "", "workdir", |cx, v, k| {
        let s = cx.str(v, k)?;
        values::normalise_abs_path(s)
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let user = opt(cx, t, "", "user", user_key);
    let group_add = opt(cx, t, "", "group_add", group_list);
    let hostname = opt(cx, t, "", "hostname", |cx, v, k| {
        let s = cx.str(v, k)?;
        values::validate_hostname(s)
            .map(|()| s.to_string())
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let labels = opt(cx, t, "", "labels", |cx, v, k| {
        cx.string_map(v, k, |k| {
            if k.is_empty() {
                Err("empty label name".into())
            } else {
                Ok(())
            }
        })
    });
    let restart = opt(cx, t, "", "restart", |cx, v, k| {
        cx.choice(
            v,
            k,
            &[
                ("always", RestartPolicy::Always),
                ("on-failure", RestartPolicy::OnFailure),
                ("never", RestartPolicy::Never),
            ],
        )
    });
    let stop_signal = opt(cx, t, "", "stop_signal", |cx, v, k| {
        let s = cx.str(v, k)?;
        values::parse_signal(s)
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let stop_timeout = opt(cx, t, "", "stop_timeout", |cx, v, k| cx.duration(v, k));
    let pull = opt(cx, t, "", "pull", |cx, v, k| {
        cx.choice(
            v,
            k,
            &[
                ("missing", PullPolicy::Missing),
                ("always", PullPolicy::Always),
                ("never", PullPolicy::Never),
            ],
        )
    });
    let depends_on = opt(cx, t, "", "depends_on", |cx, v, _| {
        sections::depends_on(cx, v, name)
    });
    let init = opt(cx, t, "", "init", |cx, v, k| cx.bool(v, k));
    let update = opt(cx, t, "", "update", |cx, v, _| sections::update(cx, v));
    let ports = opt(cx, t, "", "ports", |cx, v, _| ports::decode(cx, v));
    let mounts = opt(cx, t, "", "mounts", |cx, v, _| mounts::decode_mounts(cx, v));
    let devices = opt(cx, t, "", "devices", |cx, v, _| {
        mounts::decode_devices(cx, v)
    });
    let resources = opt(cx, t, "", "resources", |cx, v, _| {
        sections::resources(cx, v)
    });
    let health = opt(cx, t, "", "health", |cx, v, _| sections::health(cx, v));
    let network = opt(cx, t, "", "network", |cx, v, k| {
        network_mode(cx, v, k, name)
    });
    let networks = opt(cx, t, "", "networks", |cx, v, k| {
        network_list(cx, v, k, host.networks.as_ref())
    });
    let security = opt(cx, t, "", "security", |cx, v, _| sections::security(cx, v));
    let logging = opt(cx, t, "", "logging", |cx, v, k| {
        sections::logging(cx, v, k, host.logging)
    });
    let host_match = opt(cx, t, "", "match", |cx, v, _| {
        crate::matching::decode(cx, v)
    });

    // Checks across keys of this one file.
    let net = network
        .clone()
        .ok()
        .flatten()
        .unwrap_or(NetworkMode::Bridge);
    let names: Vec<String> = match (&net, &networks) {
        (NetworkMode::Bridge, Ok(Some(list))) => list.iter().map(|(n, _)| n.clone()).collect(),
        (NetworkMode::Bridge, _) => vec![crate::config::DEFAULT_NETWORK.to_string()],
        _ => Vec::new(),
    };
    let ip = opt(cx, t, "", "ip", |cx, v, k| static_ips(cx, v, k, &names));
    let published = ports
        .as_ref()
        .ok()
        .and_then(Option::as_deref)
        .unwrap_or_default();
    check_network_keys(cx, t, &net, published, &names, &ip, host);
    let joins = network_joins(&names, &ip);
    let ports = ports.ok()?.unwrap_or_default();
    let ports = check_ports(cx, ports)?;
    let mounts = check_unique(
        cx,
        mounts.ok()?.unwrap_or_default(),
        "mounts",
        |m: &Mount| m.target.clone(),
        "mount target",
    )?;
    let devices = check_unique(
        cx,
        devices.ok()?.unwrap_or_default(),
        "devices",
        |d: &Device| d.container.display().to_string(),
        "device path",
    )?;

    let mut files: Vec<PathBuf> = cx.files.iter().map(|f| f.path.clone()).collect();
    let env_files = env_files.ok()?.unwrap_or_default();
    let env_merged = merge_env(cx, &env_files, env.ok()?.unwrap_or_default(), read_env_file)?;
    files.extend(env_files.iter().map(|(p, _)| p.clone()));

    let depends_on = depends_on.ok()?.unwrap_or_default();
    network.ok()?;
    networks.ok()?;
    let defaults = ContainerSpec::with_defaults(name, image.clone()?);
    let extra = ExtraKeys {
        entrypoint: entrypoint.ok()?,
        env_files: env_files.iter().map(|(p, _)| p.clone()).collect(),
        workdir: workdir.ok()?,
        user: user.ok()?,
        group_add: group_add.ok()?.unwrap_or_default(),
        hostname: hostname.ok()?,
        labels: labels.ok()?.unwrap_or_default().into(),
        stop_signal: stop_signal.ok()?,
        stop_timeout: stop_timeout.ok()?.unwrap_or(defaults.extra.stop_timeout),
        depends_on: depends_on.iter().map(|(d, _)| d.clone()).collect(),
        update: update
            .ok()?
            .unwrap_or_else(|| defaults.extra.update.clone()),
        ports: ports.iter().map(|(p, _)| *p).collect(),
        mounts,
        devices,
        resources: resources.ok()?.unwrap_or(defaults.extra.resources),
        health: health
            .ok()?
            .unwrap_or_else(|| defaults.extra.health.clone()),
        security: security
            .ok()?
            .unwrap_or_else(|| defaults.extra.security.clone()),
        networks: joins,
        host_match: host_match.ok()?.unwrap_or_default(),
    };
    let spec = ContainerSpec {
        name: name.to_string(),
        image: image?,
        state: state.ok()?.unwrap_or(defaults.state),
        command: command.ok()?,
        env: env_merged.into(),
        restart: restart.ok()?.unwrap_or(defaults.restart),
        pull: pull.ok()?.unwrap_or(defaults.pull),
        init: init.ok()?.unwrap_or(defaults.init),
        network: net,
        logging: logging.ok()?.unwrap_or(host.logging),
        extra: extra.into(),
    };
    let network_place = t.entries.get("network").map(|e| location(cx, e.key_span));
    let ip_places = ip
        .ok()?
        .unwrap_or_default()
        .iter()
        .map(|(_, a, s)| (*a, location(cx, *s)))
        .collect();
    let places = Places {
        network_place,
        ip_places,
        port_places: ports.iter().map(|(_, s)| location(cx, *s)).collect(),
        dependency_places: depends_on.iter().map(|(_, s)| location(cx, *s)).collect(),
    };
    Some(ParsedSpec {
        places: (places != Places::default()).then(|| Box::new(places)),
        spec: spec.into(),
        files,
    })
}

/// `env_files`: each path relative to the file that names it.
fn env_file_list(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<Vec<(PathBuf, Span)>> {
    let items = cx.array(v, k)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match cx.text(item, &index(k, i)) {
            Some(s) => {
                let base = cx.files[item.span.file]
                    .path
                    .parent()
                    .unwrap_or(Path::new(""));
                out.push((base.join(s), item.span));
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `user`: a name, a uid, `name:group` or `uid:gid`.
fn user_key(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<User> {
    let s = match &v.kind {
        Kind::Int(Ok(i)) if *i >= 0 && *i <= u32::MAX as i64 => i.to_string(),
        _ => cx.str(v, k)?.to_string(),
    };
    values::parse_user(&s)
        .map_err(|e| cx.error(v.span, k, e))
        .ok()
}

/// `group_add`: group names and gids.
fn group_list(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<Vec<UserId>> {
    let items = cx.array(v, k)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let k = index(k, i);
        let g = match &item.kind {
            Kind::Int(Ok(n)) => u32::try_from(*n)
                .map(UserId::Id)
                .map_err(|_| format!("group id {n} is out of range")),
            Kind::Str(s) => values::parse_group(s),
            _ => Err("expected a group name or a gid".to_string()),
        };
        match g {
            Ok(g) => out.push(g),
            Err(e) => {
                cx.error(item.span, &k, e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

type StaticIps = Result<Option<Vec<(String, IpAddr, Span)>>, ()>;

/// Checks across the network keys of one file: ports, `ip` and `networks` need a bridge; a
/// static address needs its family on its network; published ports need a network that
/// can carry them.
fn check_network_keys(
    cx: &mut Cx<'_>,
    t: &Table,
    net: &NetworkMode,
    ports: &[(PortMapping, Span)],
    names: &[String],
    ip: &StaticIps,
    host: &SpecDefaults,
) {
    if *net != NetworkMode::Bridge {
        let word = net.spec_word();
        if let Some(e) = t.entries.get("ports").filter(|_| !ports.is_empty()) {
            cx.error(
                e.key_span,
                "ports",
                format!("ports cannot be published with network = \"{word}\""),
            );
        }
        for key in ["ip", "networks"] {
            if let Some(e) = t.entries.get(key) {
                cx.error(
                    e.key_span,
                    key,
                    format!("{key} needs network = \"bridge\", not {word:?}"),
                );
            }
        }
    }
    if let (Some(known), Ok(Some(ips))) = (host.networks.as_ref(), ip) {
        for (network, addr, span) in ips {
            let Some(k) = known.get(network) else {
                continue;
            };
            let (has, family) = match addr {
                IpAddr::V4(_) => (k.ipv4, "IPv4 subnet (subnet)"),
                IpAddr::V6(_) => (k.ipv6, "IPv6 subnet (subnet6)"),
            };
            if !has {
                cx.error(
                    *span,
                    "ip",
                    format!("{addr}: network {network:?} has no {family}"),
                );
            }
        }
    }
    if let (Some(known), Some(e)) = (host.networks.as_ref(), t.entries.get("ports"))
        && !ports.is_empty()
        && *net == NetworkMode::Bridge
    {
        publish_targets(cx, e.key_span, ports, names, known);
    }
}

/// The networks a bridged container joins, each with its static addresses.
fn network_joins(names: &[String], ip: &StaticIps) -> Vec<NetworkJoin> {
    let mut joins: Vec<NetworkJoin> = names.iter().map(|n| NetworkJoin::named(n)).collect();
    if let Ok(Some(ips)) = ip {
        for (network, addr, _) in ips {
            if let Some(j) = joins.iter_mut().find(|j| &j.name == network) {
                match addr {
                    IpAddr::V4(a) => j.ip = Some(*a),
                    IpAddr::V6(a) => j.ip6 = Some(*a),
                }
            }
        }
    }
    joins
}

/// The environment: each env file in order, then `env`, later ones winning.
fn merge_env(
    cx: &mut Cx<'_>,
    env_files: &[(PathBuf, Span)],
    env: BTreeMap<String, String>,
    read_env_file: &mut ReadEnvFile<'_>,
) -> Option<BTreeMap<String, String>> {
    let mut merged = BTreeMap::new();
    let mut ok = true;
    for (i, (path, span)) in env_files.iter().enumerate() {
        match read_env_file(path) {
            Ok(text) => match parse_env_file(path, &text) {
                Ok(vars) => merged.extend(vars),
                Err(d) => {
                    cx.diags.extend(d);
                    ok = false;
                }
            },
            Err(why) => {
                cx.error(
                    *span,
                    &index("env_files", i),
                    format!("cannot read env file {}: {why}", path.display()),
                );
                ok = false;
            }
        }
    }
    merged.extend(env);
    ok.then_some(merged)
}

/// `bridge`, `host`, `none` or `container:<name>`.
fn network_mode(cx: &mut Cx<'_>, v: &Node, k: &str, own: &str) -> Option<NetworkMode> {
    let s = cx.str(v, k)?;
    match s {
        "bridge" => return Some(NetworkMode::Bridge),
        "host" => return Some(NetworkMode::Host),
        "none" => return Some(NetworkMode::None),
        _ => {}
    }
    if let Some(of) = s.strip_prefix("container:") {
        if let Err(e) = crate::names::validate_container_name(of) {
            cx.error(v.span, k, e);
            return None;
        }
        if of == own {
            cx.error(
                v.span,
                k,
                "a container cannot join its own network namespace",
            );
            return None;
        }
        return Some(NetworkMode::Container(of.to_string()));
    }
    let hint = diag::did_you_mean(s, &["bridge", "host", "none"])
        .map(|m| format!(" (did you mean {m:?}?)"))
        .unwrap_or_default();
    cx.error(
        v.span,
        k,
        format!("unknown network mode {s:?}{hint}: expected \"bridge\", \"host\", \"none\" or \"container:<name>\""),
    );
    None
}

/// `networks`: names of declared networks, at least one, each once; in the order given.
fn network_list(
    cx: &mut Cx<'_>,
    v: &Node,
    k: &str,
    known: Option<&BTreeMap<String, KnownNetwork>>,
) -> Option<Vec<(String, Span)>> {
    let items = cx.array(v, k)?;
    if items.is_empty() {
        cx.error(
            v.span,
            k,
            "at least one network (for none at all: network = \"none\")",
        );
        return None;
    }
    let mut out: Vec<(String, Span)> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let ik = index(k, i);
        let Some(name) = cx.str(item, &ik) else {
            ok = false;
            continue;
        };
        if out.iter().any(|(n, _)| n == name) {
            cx.error(item.span, &ik, format!("network {name:?} is listed twice"));
            ok = false;
            continue;
        }
        if let Some(known) = known
            && !known.contains_key(name)
        {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            let hint = diag::did_you_mean(name, &names)
                .map(|m| format!(" (did you mean {m:?}?)"))
                .unwrap_or_default();
            cx.error(
                item.span,
                &ik,
                format!(
                    "unknown network {name:?}{hint}: the agent config declares {}",
                    names.join(", ")
                ),
            );
            ok = false;
            continue;
        }
        out.push((name.to_string(), item.span));
    }
    ok.then_some(out)
}

/// `ip`: an address or a list of them (one per family) on the first network, or a table of
/// them by network. Returns (network, address, where).
fn static_ips(
    cx: &mut Cx<'_>,
    v: &Node,
    k: &str,
    networks: &[String],
) -> Option<Vec<(String, IpAddr, Span)>> {
    let one = |cx: &mut Cx<'_>, n: &Node, k: &str| -> Option<IpAddr> {
        let s = cx.str(n, k)?;
        match s.parse::<IpAddr>() {
            Ok(ip)
                if ip.is_unspecified()
                    || ip.is_multicast()
                    || ip.is_loopback()
                    || matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80) =>
            {
                cx.error(
                    n.span,
                    k,
                    format!("{s} is not a unicast address for a container"),
                );
                None
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                cx.error(n.span, k, format!("{s:?} is not an IP address"));
                None
            }
        }
    };
    // One or two addresses, at most one of each family.
    let family = |cx: &mut Cx<'_>, n: &Node, k: &str| -> Option<Vec<(IpAddr, Span)>> {
        let list: Vec<(IpAddr, Span)> = match &n.kind {
            Kind::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match one(cx, item, &index(k, i)) {
                        Some(ip) => out.push((ip, item.span)),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                out
            }
            _ => vec![(one(cx, n, k)?, n.span)],
        };
        let v4 = list.iter().filter(|(ip, _)| ip.is_ipv4()).count();
        if list.is_empty() || v4 > 1 || list.len() - v4 > 1 {
            cx.error(
                n.span,
                k,
                "expected one address, or two: one IPv4 and one IPv6",
            );
            return None;
        }
        Some(list)
    };
    let Some(first) = networks.first() else {
        // No bridge networks: the mode's own check reports `ip`.
        return Some(Vec::new());
    };
    match &v.kind {
        Kind::Table(t) => {
            let mut out = Vec::new();
            let mut ok = true;
            for (network, e) in &t.entries {
                let nk = crate::decode::join(k, network);
                if !networks.contains(network) {
                    let names: Vec<&str> = networks.iter().map(String::as_str).collect();
                    cx.error(
                        e.key_span,
                        &nk,
                        format!(
                            "{network:?} is not one of this container's networks ({})",
                            names.join(", ")
                        ),
                    );
                    ok = false;
                    continue;
                }
                match family(cx, &e.value, &nk) {
                    Some(list) => {
                        out.extend(list.into_iter().map(|(ip, s)| (network.clone(), ip, s)))
                    }
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
        _ => Some(
            family(cx, v, k)?
                .into_iter()
                .map(|(ip, s)| (first.clone(), ip, s))
                .collect(),
        ),
    }
}

/// Published ports go to the container's address on the first network of each family that is
/// not internal: there must be one for every port of a family. `::1` needs none of IPv6: the
/// shim relays it to the container's IPv4 address when it has no IPv6 one.
fn publish_targets(
    cx: &mut Cx<'_>,
    at: Span,
    ports: &[(PortMapping, Span)],
    networks: &[String],
    known: &BTreeMap<String, KnownNetwork>,
) {
    let routed = |v6: bool| {
        networks.iter().any(|n| {
            known
                .get(n)
                .is_some_and(|k| !k.internal && if v6 { k.ipv6 } else { k.ipv4 })
        })
    };
    let (v4, v6) = (routed(false), routed(true));
    if !v4 && !v6 {
        cx.error(
            at,
            "ports",
            format!(
                "ports cannot be published: every network of this container ({}) is internal or unknown",
                networks.join(", ")
            ),
        );
        return;
    }
    for (p, span) in ports {
        match p.host_ip {
            Some(IpAddr::V4(a)) if !a.is_unspecified() && !v4 => cx.error(
                *span,
                "ports",
                format!(
                    "{}: no network of this container has IPv4 outside an internal network",
                    ports::format(p)
                ),
            ),
            Some(IpAddr::V6(a)) if !a.is_unspecified() && !a.is_loopback() && !v6 => cx.error(
                *span,
                "ports",
                format!(
                    "{}: no network of this container has IPv6 outside an internal network",
                    ports::format(p)
                ),
            ),
            _ => {}
        }
    }
}

/// Sorts the mappings and refuses two that would take the same host port.
fn check_ports(
    cx: &mut Cx<'_>,
    mut ports: Vec<(PortMapping, Span)>,
) -> Option<Vec<(PortMapping, Span)>> {
    let mut ok = true;
    for i in 0..ports.len() {
        let (a, _) = ports[i];
        if let Some((b, _)) = ports[..i].iter().find(|(b, _)| {
            b.host == a.host && b.protocol == a.protocol && ports::ips_overlap(a.host_ip, b.host_ip)
        }) {
            let span = ports[i].1;
            cx.error(
                span,
                "ports",
                format!(
                    "host port {}/{} is published twice ({} and {})",
                    a.host,
                    a.protocol.as_str(),
                    ports::format(b),
                    ports::format(&a)
                ),
            );
            ok = false;
        }
    }
    ports.sort_by_key(|(p, _)| *p);
    ok.then_some(ports)
}

/// Sorts entries by `key` and refuses duplicates.
fn check_unique<T>(
    cx: &mut Cx<'_>,
    mut items: Vec<(T, Span)>,
    list: &str,
    key: impl Fn(&T) -> String,
    what: &str,
) -> Option<Vec<T>> {
    let mut ok = true;
    for i in 0..items.len() {
        let k = key(&items[i].0);
        if items[..i].iter().any(|(x, _)| key(x) == k) {
            cx.error(items[i].1, list, format!("{what} {k} appears twice"));
            ok = false;
        }
    }
    items.sort_by_key(|(x, _)| key(x));
    let _ = ok;
    Some(items.into_iter().map(|(x, _)| x).collect())
}
