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
use crate::tree::{self, Kind, Node, Span};
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
    /// One per `spec.ports` entry.
    pub(crate) port_places: Vec<Location>,
    /// One per `spec.depends_on` entry.
    pub(crate) dependency_places: Vec<Location>,
}

/// Defaults a host may set for keys a spec leaves out (from the agent config).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpecDefaults {
    /// The agent config's `[logging]`: container log limits unless a spec says otherwise.
    pub logging: Logging,
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
    let env_files = opt(cx, t, "", "env_files", |cx, v, k| {
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
    });
    let workdir = opt(cx, t, "", "workdir", |cx, v, k| {
        let s = cx.str(v, k)?;
        values::normalise_abs_path(s)
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let user = opt(cx, t, "", "user", |cx, v, k| {
        let s = match &v.kind {
            Kind::Int(Ok(i)) if *i >= 0 && *i <= u32::MAX as i64 => i.to_string(),
            _ => cx.str(v, k)?.to_string(),
        };
        values::parse_user(&s)
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let group_add = opt(cx, t, "", "group_add", |cx, v, k| {
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
    });
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
        cx.choice(
            v,
            k,
            &[
                ("bridge", NetworkMode::Bridge),
                ("host", NetworkMode::Host),
                ("none", NetworkMode::None),
            ],
        )
    });
    let ip = opt(cx, t, "", "ip", |cx, v, k| {
        let s = cx.str(v, k)?;
        match s.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() => {
                cx.error(
                    v.span,
                    k,
                    format!("{s} is not a unicast address for a container"),
                );
                None
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                cx.error(v.span, k, format!("{s:?} is not an IP address"));
                None
            }
        }
    });
    let security = opt(cx, t, "", "security", |cx, v, _| sections::security(cx, v));
    let logging = opt(cx, t, "", "logging", |cx, v, k| {
        sections::logging(cx, v, k, host.logging)
    });
    let host_match = opt(cx, t, "", "match", |cx, v, _| {
        crate::matching::decode(cx, v)
    });

    // Checks across keys of this one file.
    let net = network.ok().flatten().unwrap_or(NetworkMode::Bridge);
    if net != NetworkMode::Bridge {
        let word = if net == NetworkMode::Host {
            "host"
        } else {
            "none"
        };
        if let Some(e) = t
            .entries
            .get("ports")
            .filter(|_| matches!(ports, Ok(Some(ref p)) if !p.is_empty()))
        {
            cx.error(
                e.key_span,
                "ports",
                format!("ports cannot be published with network = \"{word}\""),
            );
        }
        if let Some(e) = t.entries.get("ip") {
            cx.error(
                e.key_span,
                "ip",
                format!("a static ip needs network = \"bridge\", not {word:?}"),
            );
        }
    }
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

    let mut env_merged = BTreeMap::new();
    let mut files: Vec<PathBuf> = cx.files.iter().map(|f| f.path.clone()).collect();
    let env_files = env_files.ok()?.unwrap_or_default();
    let mut env_ok = true;
    for (i, (path, span)) in env_files.iter().enumerate() {
        match read_env_file(path) {
            Ok(text) => match parse_env_file(path, &text) {
                Ok(vars) => env_merged.extend(vars),
                Err(d) => {
                    cx.diags.extend(d);
                    env_ok = false;
                }
            },
            Err(why) => {
                cx.error(
                    *span,
                    &index("env_files", i),
                    format!("cannot read env file {}: {why}", path.display()),
                );
                env_ok = false;
            }
        }
        files.push(path.clone());
    }
    env_merged.extend(env.ok()?.unwrap_or_default());
    if !env_ok {
        return None;
    }

    let depends_on = depends_on.ok()?.unwrap_or_default();
    let defaults = ContainerSpec::with_defaults(name, image.clone()?);
    let spec = ContainerSpec {
        name: name.to_string(),
        image: image?,
        state: state.ok()?.unwrap_or(defaults.state),
        entrypoint: entrypoint.ok()?,
        command: command.ok()?,
        env: env_merged,
        env_files: env_files.iter().map(|(p, _)| p.clone()).collect(),
        workdir: workdir.ok()?,
        user: user.ok()?,
        group_add: group_add.ok()?.unwrap_or_default(),
        hostname: hostname.ok()?,
        labels: labels.ok()?.unwrap_or_default(),
        restart: restart.ok()?.unwrap_or(defaults.restart),
        stop_signal: stop_signal.ok()?,
        stop_timeout: stop_timeout.ok()?.unwrap_or(defaults.stop_timeout),
        pull: pull.ok()?.unwrap_or(defaults.pull),
        depends_on: depends_on.iter().map(|(d, _)| d.clone()).collect(),
        init: init.ok()?.unwrap_or(defaults.init),
        update: update.ok()?.unwrap_or(defaults.update),
        ports: ports.iter().map(|(p, _)| *p).collect(),
        mounts,
        devices,
        resources: resources.ok()?.unwrap_or(defaults.resources),
        health: health.ok()?.unwrap_or(defaults.health),
        network: network.ok()?.unwrap_or(defaults.network),
        ip: ip.ok()?,
        security: security.ok()?.unwrap_or(defaults.security),
        logging: logging.ok()?.unwrap_or(host.logging),
        host_match: host_match.ok()?.unwrap_or_default(),
    };
    Some(ParsedSpec {
        port_places: ports.iter().map(|(_, s)| location(cx, *s)).collect(),
        dependency_places: depends_on.iter().map(|(_, s)| location(cx, *s)).collect(),
        spec: spec.into(),
        files,
    })
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
