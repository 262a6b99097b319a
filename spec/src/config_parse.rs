//! Strict reading of the agent config, with the same diagnostics as spec files.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::*;
use crate::decode::{Cx, index, join};
use crate::diag::{self, Diagnostic, SourceFile};
use crate::sections::{self, opt};
use crate::tree::{self, Node, Table};

pub const CONFIG_KEYS: &[&str] = &[
    "instance",
    "specs_dir",
    "state_dir",
    "run_dir",
    "images_dir",
    "resync_interval",
    "update_interval",
    "trusted_owners",
    "auth_file",
    "metrics_listen",
    "network",
    "networks",
    "registries",
    "images",
    "logging",
    "log_format",
    "log_level",
    "host_id",
    "labels",
    "source",
    "report",
];
pub const REPORT_KEYS: &[&str] = &[
    "mqtt",
    "topic",
    "client_cert",
    "client_key",
    "username",
    "password_file",
    "ca_file",
    "interval",
];
pub const SOURCE_KEYS: &[&str] = &[
    "git",
    "branch",
    "path",
    "interval",
    "allowed_signers",
    "trust_on_first_use",
    "allow_unsigned",
    "token_file",
    "username",
    "ssh_key_file",
    "known_hosts",
    "ca_file",
    "timeout",
];
pub const NETWORK_KEYS: &[&str] = &["bridge", "subnet", "subnet6", "internal", "masquerade6"];
pub const NAMED_NETWORK_KEYS: &[&str] = NETWORK_KEYS;
pub const REGISTRY_KEYS: &[&str] = &["insecure", "mirrors", "ca_file"];
pub const IMAGES_KEYS: &[&str] = &[
    "max_disk",
    "min_free",
    "gc_grace",
    "max_manifest_size",
    "max_layers",
    "max_layer_size",
    "max_layer_entries",
    "http_timeout",
    "stall_timeout",
    "max_download_rate",
    "parallel_layers",
    "download_window",
];

/// The slowest `max_download_rate` berth accepts, in bytes per second.
pub const MIN_DOWNLOAD_RATE: u64 = 16 << 10;

pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let files = [SourceFile::new(path, text)];
    let root = tree::parse(&files, 0)?;
    let mut cx = Cx::new(&files);
    let config = decode(&mut cx, &root);
    let mut diags = cx.diags;
    match config {
        Some(c) if diags.is_empty() => Ok(c),
        _ => {
            diag::sort(&mut diags);
            Err(diags)
        }
    }
}

fn abs_path(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<PathBuf> {
    let s = cx.text(v, k)?;
    if !s.starts_with('/') {
        cx.error(v.span, k, format!("{s:?} is not an absolute path"));
        return None;
    }
    Some(PathBuf::from(s))
}

fn interval(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<Duration> {
    let d = cx.duration(v, k)?;
    if d < Duration::from_secs(1) {
        cx.error(v.span, k, "must be at least 1s");
        return None;
    }
    Some(d)
}

fn decode(cx: &mut Cx<'_>, root: &Node) -> Option<Config> {
    let t = cx.table(root, "", CONFIG_KEYS)?;
    let d = Config::default();
    let instance = opt(cx, t, "", "instance", instance_name);
    let specs_dir = opt(cx, t, "", "specs_dir", abs_path);
    let state_dir = opt(cx, t, "", "state_dir", abs_path);
    let run_dir = opt(cx, t, "", "run_dir", abs_path);
    let images_dir = opt(cx, t, "", "images_dir", abs_path);
    let resync_interval = opt(cx, t, "", "resync_interval", interval);
    let update_interval = opt(cx, t, "", "update_interval", interval);
    let trusted_owners = opt(cx, t, "", "trusted_owners", |cx, v, k| cx.strings(v, k));
    let auth_file = opt(cx, t, "", "auth_file", abs_path);
    let metrics_listen = opt(cx, t, "", "metrics_listen", listen_addr);
    let network = opt(cx, t, "", "network", network);
    let networks = opt(cx, t, "", "networks", named_networks);
    let registries = opt(cx, t, "", "registries", registry_table);
    let images = opt(cx, t, "", "images", images);
    let logging = opt(cx, t, "", "logging", |cx, v, k| {
        sections::logging(cx, v, k, d.logging)
    });
    let log_format = opt(cx, t, "", "log_format", |cx, v, k| {
        cx.choice(
            v,
            k,
            &[
                ("auto", LogFormat::Auto),
                ("text", LogFormat::Text),
                ("json", LogFormat::Json),
            ],
        )
    });
    let log_level = opt(cx, t, "", "log_level", level_filter);
    let host_id = opt(cx, t, "", "host_id", |cx, v, k| {
        let s = cx.str(v, k)?;
        crate::matching::validate_host_id(s)
            .map(|()| s.to_string())
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let labels = opt(cx, t, "", "labels", host_labels);
    let git_source = opt(cx, t, "", "source", source);
    let report = opt(cx, t, "", "report", report);
    let config = Config {
        instance: instance.ok()?.unwrap_or(d.instance),
        specs_dir: specs_dir.ok()?.unwrap_or(d.specs_dir),
        state_dir: state_dir.ok()?.unwrap_or(d.state_dir),
        run_dir: run_dir.ok()?.unwrap_or(d.run_dir),
        images_dir: images_dir.ok()?.unwrap_or(d.images_dir),
        resync_interval: resync_interval.ok()?.unwrap_or(d.resync_interval),
        update_interval: update_interval.ok()?.unwrap_or(d.update_interval),
        trusted_owners: trusted_owners.ok()?.unwrap_or(d.trusted_owners),
        auth_file: auth_file.ok()?,
        metrics_listen: metrics_listen.ok()?,
        network: network.ok()?.unwrap_or(d.network),
        networks: networks.ok()?.unwrap_or_default(),
        registries: registries.ok()?.unwrap_or(d.registries),
        images: images.ok()?.unwrap_or(d.images),
        logging: logging.ok()?.unwrap_or(d.logging),
        log_format: log_format.ok()?.unwrap_or(d.log_format),
        log_level: log_level.ok()?.unwrap_or(d.log_level),
        host_id: host_id.ok()?,
        labels: labels.ok()?.unwrap_or_default(),
        git_source: git_source.ok()?,
        report: report.ok()?,
        source: None,
    };
    networks_apart(cx, t, &config);
    Some(config)
}

/// `instance`: names every kernel object of this agent.
fn instance_name(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<String> {
    let s = cx.str(v, k)?;
    crate::names::validate_instance(s)
        .map(|()| s.to_string())
        .map_err(|e| cx.error(v.span, k, e))
        .ok()
}

/// `metrics_listen`: an address and port.
fn listen_addr(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<SocketAddr> {
    let s = cx.str(v, k)?;
    s.parse::<SocketAddr>()
        .map_err(|_| {
            cx.error(
                v.span,
                k,
                format!("{s:?} is not an address such as \"127.0.0.1:9100\""),
            )
        })
        .ok()
}

/// `[registries."host[:port]"]`.
fn registry_table(
    cx: &mut Cx<'_>,
    v: &Node,
    k: &str,
) -> Option<std::collections::BTreeMap<String, RegistryConfig>> {
    let valid = |host: &str| {
        valid_host_port(host)
            .then_some(())
            .ok_or_else(|| format!("{host:?} is not a registry \"host[:port]\""))
    };
    let entries = KeyedTable {
        expected: "expected a table of registries keyed by \"host[:port]\"",
        key_path: |k: &str, host: &str| join(k, &format!("{host:?}")),
    };
    entries.decode(cx, v, k, valid, registry)
}

/// A table of tables keyed by name (`[registries."host"]`, `[networks.<name>]`): every key
/// checked, every value decoded, every problem reported; `None` when there was one.
struct KeyedTable<P> {
    /// The error when the node is not a table.
    expected: &'static str,
    /// How an entry's key path is written (quoted or not).
    key_path: P,
}

impl<P: Fn(&str, &str) -> String> KeyedTable<P> {
    fn decode<T>(
        &self,
        cx: &mut Cx<'_>,
        n: &Node,
        key: &str,
        valid_key: impl Fn(&str) -> Result<(), String>,
        value: impl Fn(&mut Cx<'_>, &Node, &str) -> Option<T>,
    ) -> Option<std::collections::BTreeMap<String, T>> {
        let crate::tree::Kind::Table(t) = &n.kind else {
            cx.error(n.span, key, self.expected);
            return None;
        };
        let mut out = std::collections::BTreeMap::new();
        let mut ok = true;
        for (name, e) in &t.entries {
            let path = (self.key_path)(key, name);
            if let Err(why) = valid_key(name) {
                cx.error(e.key_span, &path, why);
                ok = false;
                continue;
            }
            match value(cx, &e.value, &path) {
                Some(v) => {
                    out.insert(name.clone(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// `log_level`: a level, or a tracing filter.
fn level_filter(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<String> {
    let s = cx.text(v, k)?;
    const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];
    if LEVELS.contains(&s) || s.contains('=') {
        return Some(s.to_string());
    }
    let hint = diag::did_you_mean(s, LEVELS)
        .map(|m| format!(" (did you mean {m:?}?)"))
        .unwrap_or_default();
    cx.error(
        v.span,
        k,
        format!("unknown level {s:?}{hint}: error, warn, info, debug, trace, off, or a filter such as \"berth=debug\""),
    );
    None
}

/// Two networks may share neither a bridge nor an address.
fn networks_apart(cx: &mut Cx<'_>, root: &Table, config: &Config) {
    let defs = config.network_defs();
    // Where each network's keys are, to point at the later of two that clash.
    let span_of = |name: &str, key: &str| -> Option<crate::tree::Span> {
        let table = if name == DEFAULT_NETWORK {
            root.get("network")
        } else {
            root.get("networks").and_then(|n| match &n.kind {
                crate::tree::Kind::Table(t) => t.get(name),
                _ => None,
            })
        }?;
        match &table.kind {
            crate::tree::Kind::Table(t) => t.entries.get(key).map(|e| e.key_span),
            _ => Some(table.span),
        }
    };
    let key_of = |name: &str, key: &str| {
        if name == DEFAULT_NETWORK {
            format!("network.{key}")
        } else {
            format!("networks.{name}.{key}")
        }
    };
    for (i, b) in defs.iter().enumerate() {
        for a in &defs[..i] {
            if let (Some(x), Some(y)) = (&a.bridge, &b.bridge)
                && x == y
                && let Some(span) = span_of(&b.name, "bridge")
            {
                cx.error(
                    span,
                    &key_of(&b.name, "bridge"),
                    format!("bridge {y:?} is already network {:?}'s", a.name),
                );
            }
            for key in ["subnet", "subnet6"] {
                let pick = |d: &NetworkDecl| {
                    if key == "subnet" {
                        d.subnet.clone()
                    } else {
                        d.subnet6.clone()
                    }
                };
                if let (Some(x), Some(y)) = (pick(a), pick(b))
                    && cidrs_overlap(&x, &y)
                    && let Some(span) = span_of(&b.name, key)
                {
                    cx.error(
                        span,
                        &key_of(&b.name, key),
                        format!("{y} overlaps network {:?}'s {x}", a.name),
                    );
                }
            }
        }
    }
}

/// Whether two valid CIDRs of the same family share an address.
fn cidrs_overlap(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Option<(u128, u8, u8)> {
        let (ip, len) = s.split_once('/')?;
        let len: u8 = len.parse().ok()?;
        match ip.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V4(v4) => Some((u32::from(v4) as u128, len, 32)),
            std::net::IpAddr::V6(v6) => Some((u128::from(v6), len, 128)),
        }
    };
    let (Some((x, lx, bx)), Some((y, ly, by))) = (parse(a), parse(b)) else {
        return false;
    };
    if bx != by {
        return false;
    }
    let len = lx.min(ly) as u32;
    let shift = bx as u32 - len;
    let mask = if len == 0 {
        0
    } else {
        (u128::MAX >> (128 - bx as u32)) >> shift << shift
    };
    x & mask == y & mask
}

fn named_networks(
    cx: &mut Cx<'_>,
    n: &Node,
    key: &str,
) -> Option<std::collections::BTreeMap<String, NamedNetworkConfig>> {
    let entries = KeyedTable {
        expected: "expected a table of networks keyed by name",
        key_path: join,
    };
    entries.decode(
        cx,
        n,
        key,
        crate::names::validate_network_name,
        named_network,
    )
}

fn bridge_name(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<String> {
    let s = cx.text(v, k)?;
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !ok {
        cx.error(
            v.span,
            k,
            format!("invalid interface name {s:?}: 1-15 characters, no '/', ':' or whitespace"),
        );
        return None;
    }
    Some(s.to_string())
}

fn subnet4(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<String> {
    let s = cx.str(v, k)?;
    check_subnet(s).map_err(|e| cx.error(v.span, k, e)).ok()?;
    Some(s.to_string())
}

fn subnet6(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<String> {
    let s = cx.str(v, k)?;
    check_subnet6(s).map_err(|e| cx.error(v.span, k, e)).ok()?;
    Some(s.to_string())
}

fn named_network(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<NamedNetworkConfig> {
    let t: &Table = cx.table(n, key, NAMED_NETWORK_KEYS)?;
    let d = NamedNetworkConfig::default();
    let bridge = opt(cx, t, key, "bridge", bridge_name);
    let subnet = opt(cx, t, key, "subnet", subnet4);
    let subnet6 = opt(cx, t, key, "subnet6", subnet6);
    let internal = opt(cx, t, key, "internal", |cx, v, k| cx.bool(v, k));
    let masquerade6 = opt(cx, t, key, "masquerade6", |cx, v, k| cx.bool(v, k));
    let c = NamedNetworkConfig {
        bridge: bridge.ok()?,
        subnet: subnet.ok()?,
        subnet6: subnet6.ok()?,
        internal: internal.ok()?.unwrap_or(d.internal),
        masquerade6: masquerade6.ok()?.unwrap_or(d.masquerade6),
    };
    if c.subnet.is_none() && c.subnet6.is_none() {
        cx.error(n.span, key, "a network needs a subnet, a subnet6, or both");
        return None;
    }
    Some(c)
}

fn host_labels(
    cx: &mut Cx<'_>,
    n: &Node,
    key: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let labels = cx.string_map(n, key, crate::matching::validate_label_name)?;
    let mut ok = true;
    if let crate::tree::Kind::Table(t) = &n.kind {
        for (name, value) in &labels {
            if let Err(e) = crate::matching::validate_label_value(value) {
                let span = t.entries.get(name).map_or(n.span, |e| e.value.span);
                cx.error(span, &join(key, name), e);
                ok = false;
            }
        }
    }
    ok.then_some(labels)
}

/// A git ref name as `git check-ref-format --branch` would take it, minus the rare corners.
fn valid_branch(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['-', '/', '.'])
        && !s.ends_with(['/', '.'])
        && !s.ends_with(".lock")
        && !s.contains("..")
        && !s.contains("//")
        && !s.contains("@{")
        && !s.contains("/.")
        && s.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"~^:?*[\\".contains(c))
}

/// `specs`, `./fleet/specs/` -> `fleet/specs`; `""`, `"."` -> the root.
pub fn normalise_repo_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        return Err(format!("{s:?} must be relative to the repository's root"));
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{s:?} must not leave the repository (\"..\")")),
            ".git" => return Err(format!("{s:?} must not name a .git dir")),
            c if c.chars().any(char::is_control) => {
                return Err(format!("{s:?} has a control character"));
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn source(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<SourceConfig> {
    let t = cx.table(n, key, SOURCE_KEYS)?;
    let d = SourceConfig::default();
    let git = opt(cx, t, key, "git", git_url);
    let branch = opt(cx, t, key, "branch", branch_name);
    let path = opt(cx, t, key, "path", |cx, v, k| {
        let s = cx.str(v, k)?;
        normalise_repo_path(s)
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let poll = opt(cx, t, key, "interval", interval);
    let allowed_signers = opt(cx, t, key, "allowed_signers", abs_path);
    let tofu = opt(cx, t, key, "trust_on_first_use", full_commit_id);
    let allow_unsigned = opt(cx, t, key, "allow_unsigned", |cx, v, k| cx.bool(v, k));
    let token_file = opt(cx, t, key, "token_file", abs_path);
    let username = opt(cx, t, key, "username", user_name);
    let ssh_key_file = opt(cx, t, key, "ssh_key_file", abs_path);
    let known_hosts = opt(cx, t, key, "known_hosts", abs_path);
    let ca_file = opt(cx, t, key, "ca_file", abs_path);
    let timeout = opt(cx, t, key, "timeout", interval);
    let c = SourceConfig {
        git: git.ok()?,
        branch: branch.ok()?.unwrap_or(d.branch),
        path: path.ok()?.unwrap_or(d.path),
        interval: poll.ok()?.unwrap_or(d.interval),
        allowed_signers: allowed_signers.ok()?,
        trust_on_first_use: tofu.ok()?,
        allow_unsigned: allow_unsigned.ok()?.unwrap_or(d.allow_unsigned),
        token_file: token_file.ok()?,
        username: username.ok()?.unwrap_or(d.username),
        ssh_key_file: ssh_key_file.ok()?,
        known_hosts: known_hosts.ok()?,
        ca_file: ca_file.ok()?,
        timeout: timeout.ok()?.unwrap_or(d.timeout),
    };
    source_keys_fit(cx, t, n, key, &c).then_some(c)
}

/// `git`: a remote URL of a scheme berth fetches.
fn git_url(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<String> {
    let s = cx.text(v, k)?;
    if GitScheme::of(s).is_none() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        cx.error(
            v.span,
            k,
            format!("{s:?} is not a https://, http://, ssh://, git:// or file:// URL"),
        );
        return None;
    }
    Some(s.to_string())
}

/// `branch`: a branch name (`refs/heads/` optional).
fn branch_name(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<String> {
    let s = cx.text(v, k)?;
    let s = s.strip_prefix("refs/heads/").unwrap_or(s);
    if !valid_branch(s) {
        cx.error(v.span, k, format!("{s:?} is not a valid branch name"));
        return None;
    }
    Some(s.to_string())
}

/// `trust_on_first_use`: a full commit id.
fn full_commit_id(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<String> {
    let s = cx.str(v, k)?;
    if !crate::rollout::is_full_commit_id(s) {
        cx.error(
            v.span,
            k,
            format!("{s:?} is not a full commit id (40 lower-case hex digits)"),
        );
        return None;
    }
    Some(s.to_string())
}

/// `username`: sent with the token (no `:`, no control characters).
fn user_name(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<String> {
    let s = cx.text(v, k)?;
    if s.contains(':') || s.chars().any(char::is_control) {
        cx.error(v.span, k, "must not contain ':' or control characters");
        return None;
    }
    Some(s.to_string())
}

/// Checks across the keys of `[source]`, each reported at the key that does not fit: the
/// signature policy is whole, and each credential suits the remote's scheme.
fn source_keys_fit(cx: &mut Cx<'_>, t: &Table, n: &Node, key: &str, c: &SourceConfig) -> bool {
    let at = |k: &str| t.entries.get(k).map_or(n.span, |e| e.key_span);
    let mut ok = true;
    let mut bad = |cx: &mut Cx<'_>, k: &str, msg: String| {
        cx.error(at(k), &join(key, k), msg);
        ok = false;
    };
    match (c.allow_unsigned, &c.allowed_signers) {
        (false, None) => bad(
            cx,
            "allowed_signers",
            "missing: every commit must be signed by a key listed there (or set allow_unsigned = true)".into(),
        ),
        (true, Some(_)) => bad(
            cx,
            "allow_unsigned",
            "contradicts allowed_signers: with allow_unsigned = true no signature is checked".into(),
        ),
        _ => {}
    }
    if c.allow_unsigned && c.trust_on_first_use.is_some() {
        bad(
            cx,
            "trust_on_first_use",
            "has no use with allow_unsigned = true".into(),
        );
    }
    let scheme = c.git.as_deref().and_then(GitScheme::of);
    let needs = |k: &str, ok_for: &[GitScheme]| {
        t.get(k).is_some() && !scheme.is_some_and(|s| ok_for.contains(&s))
    };
    if needs("token_file", &[GitScheme::Https]) {
        bad(
            cx,
            "token_file",
            "a token is only sent to an https:// remote".into(),
        );
    }
    if needs("username", &[GitScheme::Https]) {
        bad(
            cx,
            "username",
            "only used with token_file for https://".into(),
        );
    }
    if needs("ca_file", &[GitScheme::Https]) {
        bad(cx, "ca_file", "only used for an https:// remote".into());
    }
    for k in ["ssh_key_file", "known_hosts"] {
        if needs(k, &[GitScheme::Ssh]) {
            bad(cx, k, "only used for an ssh:// remote".into());
        } else if scheme == Some(GitScheme::Ssh) && t.get(k).is_none() {
            bad(cx, k, "missing: an ssh:// remote needs it".into());
        }
    }
    ok
}

/// A topic template: MQTT's rules for a topic name to publish to (no wildcards, no leading
/// `$`, which brokers keep for themselves), and no placeholder but `{host_id}` and `{instance}`.
fn topic_template(s: &str) -> Result<(), String> {
    if s.contains(['+', '#']) {
        return Err(format!(
            "{s:?} has a wildcard ('+' or '#'): a topic to publish to has none"
        ));
    }
    if s.starts_with('$') {
        return Err(format!(
            "{s:?} starts with '$', which brokers keep for themselves"
        ));
    }
    if s.ends_with('/') {
        return Err(format!(
            "{s:?} ends with '/': it is a prefix, berth adds \"/status\" and the others"
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{s:?} has a control character"));
    }
    let rest = s.replace("{host_id}", "").replace("{instance}", "");
    if rest.contains(['{', '}']) {
        return Err(format!(
            "{s:?} has an unknown placeholder: only {{host_id}} and {{instance}} expand"
        ));
    }
    Ok(())
}

fn report(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<ReportConfig> {
    let t = cx.table(n, key, REPORT_KEYS)?;
    let mqtt = opt(cx, t, key, "mqtt", |cx, v, k| {
        let s = cx.text(v, k)?;
        s.parse::<MqttUrl>()
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let topic = opt(cx, t, key, "topic", |cx, v, k| {
        let s = cx.text(v, k)?;
        topic_template(s)
            .map(|()| s.to_string())
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let client_cert = opt(cx, t, key, "client_cert", abs_path);
    let client_key = opt(cx, t, key, "client_key", abs_path);
    let username = opt(cx, t, key, "username", |cx, v, k| {
        let s = cx.text(v, k)?;
        if s.chars().any(char::is_control) {
            cx.error(v.span, k, "must not contain control characters");
            return None;
        }
        Some(s.to_string())
    });
    let password_file = opt(cx, t, key, "password_file", abs_path);
    let ca_file = opt(cx, t, key, "ca_file", abs_path);
    let every = opt(cx, t, key, "interval", interval);
    let Some(mqtt) = mqtt.ok()? else {
        cx.error(
            n.span,
            &join(key, "mqtt"),
            "missing: the broker's URL, mqtt://host[:port] or mqtts://host[:port]",
        );
        return None;
    };
    let c = ReportConfig {
        mqtt,
        topic: topic
            .ok()?
            .unwrap_or_else(|| ReportConfig::DEFAULT_TOPIC.into()),
        client_cert: client_cert.ok()?,
        client_key: client_key.ok()?,
        username: username.ok()?,
        password_file: password_file.ok()?,
        ca_file: ca_file.ok()?,
        interval: every.ok()?.unwrap_or_else(ReportConfig::default_interval),
    };
    // Checks across keys, each reported at the key that does not fit.
    let at = |k: &str| t.entries.get(k).map_or(n.span, |e| e.key_span);
    let mut ok = true;
    let mut bad = |cx: &mut Cx<'_>, k: &str, msg: &str| {
        cx.error(at(k), &join(key, k), msg);
        ok = false;
    };
    match (&c.client_cert, &c.client_key) {
        (Some(_), None) => bad(cx, "client_key", "missing: client_cert needs its key"),
        (None, Some(_)) => bad(
            cx,
            "client_cert",
            "missing: client_key needs its certificate",
        ),
        _ => {}
    }
    if c.mqtt.transport == MqttTransport::Plain {
        for k in ["client_cert", "client_key", "ca_file"] {
            if t.get(k).is_some() {
                bad(cx, k, "only used with an mqtts:// broker");
            }
        }
    }
    if c.password_file.is_some() && c.username.is_none() {
        bad(
            cx,
            "username",
            "missing: password_file is the password of username",
        );
    }
    ok.then_some(c)
}

fn network(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<NetworkConfig> {
    let t: &Table = cx.table(n, key, NETWORK_KEYS)?;
    let d = NetworkConfig::default();
    let bridge = opt(cx, t, key, "bridge", bridge_name);
    let subnet = opt(cx, t, key, "subnet", subnet4);
    let subnet6 = opt(cx, t, key, "subnet6", subnet6);
    let internal = opt(cx, t, key, "internal", |cx, v, k| cx.bool(v, k));
    let masquerade6 = opt(cx, t, key, "masquerade6", |cx, v, k| cx.bool(v, k));
    Some(NetworkConfig {
        bridge: bridge.ok()?.unwrap_or(d.bridge),
        subnet: subnet.ok()?.unwrap_or(d.subnet),
        subnet6: subnet6.ok()?,
        internal: internal.ok()?.unwrap_or(d.internal),
        masquerade6: masquerade6.ok()?.unwrap_or(d.masquerade6),
    })
}

/// An address family's addresses as numbers, for the CIDR checks both families share.
trait Family: std::str::FromStr + std::fmt::Display + Copy {
    const BITS: u8;
    const NAME: &'static str;
    fn bits(self) -> u128;
    fn from_bits(bits: u128) -> Self;
}

impl Family for Ipv4Addr {
    const BITS: u8 = 32;
    const NAME: &'static str = "IPv4";
    fn bits(self) -> u128 {
        u32::from(self).into()
    }
    fn from_bits(bits: u128) -> Self {
        Ipv4Addr::from(bits as u32)
    }
}

impl Family for Ipv6Addr {
    const BITS: u8 = 128;
    const NAME: &'static str = "IPv6";
    fn bits(self) -> u128 {
        self.into()
    }
    fn from_bits(bits: u128) -> Self {
        bits.into()
    }
}

/// A network in CIDR form (`key` names it, `example` shows one) with a prefix length in
/// `lens` and its host bits zero.
fn check_cidr<A: Family>(
    s: &str,
    key: &str,
    example: &str,
    lens: std::ops::RangeInclusive<u8>,
) -> Result<(A, u8), String> {
    let bad = || {
        format!(
            "invalid {key} {s:?}: expected {} CIDR such as \"{example}\"",
            A::NAME
        )
    };
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: A = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !lens.contains(&len) {
        return Err(format!(
            "invalid {key} {s:?}: prefix length must be {} to {}",
            lens.start(),
            lens.end()
        ));
    }
    let host = u128::MAX
        .checked_shr(128 - u32::from(A::BITS - len))
        .unwrap_or(0);
    if ip.bits() & host != 0 {
        let net = A::from_bits(ip.bits() & !host);
        return Err(format!(
            "invalid {key} {s:?}: host bits set (did you mean \"{net}/{len}\"?)"
        ));
    }
    Ok((ip, len))
}

/// An IPv4 network in CIDR form, its host bits zero, with room for a gateway and containers.
pub fn check_subnet(s: &str) -> Result<(Ipv4Addr, u8), String> {
    check_cidr(s, "subnet", "10.213.0.0/16", 8..=30)
}

/// An IPv6 network in CIDR form for containers: host bits zero, a prefix of 48 to 124 bits,
/// and not a link-local, multicast, loopback or IPv4-mapped range.
pub fn check_subnet6(s: &str) -> Result<(Ipv6Addr, u8), String> {
    let (ip, len) = check_cidr::<Ipv6Addr>(s, "subnet6", "fd00:b::/64", 48..=124)?;
    let first = ip.segments()[0];
    if first & 0xffc0 == 0xfe80
        || first & 0xff00 == 0xff00
        || ip.is_loopback()
        || ip.is_unspecified()
        || ip.to_ipv4_mapped().is_some()
    {
        return Err(format!(
            "invalid subnet6 {s:?}: link-local, multicast, loopback and IPv4-mapped ranges cannot hold containers"
        ));
    }
    Ok((ip, len))
}

fn valid_host_port(s: &str) -> bool {
    crate::reference::ImageReference::parse(&format!("{s}/x")).is_ok_and(|r| r.registry == s)
        || s == "docker.io"
}

fn registry(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<RegistryConfig> {
    let t = cx.table(n, key, REGISTRY_KEYS)?;
    let insecure = opt(cx, t, key, "insecure", |cx, v, k| cx.bool(v, k));
    let mirrors = opt(cx, t, key, "mirrors", |cx, v, k| {
        let items = cx.strings(v, k)?;
        let mut ok = true;
        let arr = cx.array(v, k)?;
        for (i, m) in items.iter().enumerate() {
            if !valid_host_port(m) {
                cx.error(
                    arr[i].span,
                    &index(k, i),
                    format!("{m:?} is not a registry \"host[:port]\""),
                );
                ok = false;
            }
        }
        ok.then_some(items)
    });
    let ca_file = opt(cx, t, key, "ca_file", abs_path);
    Some(RegistryConfig {
        insecure: insecure.ok()?.unwrap_or(false),
        mirrors: mirrors.ok()?.unwrap_or_default(),
        ca_file: ca_file.ok()?,
    })
}

fn images(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<ImagesConfig> {
    let t = cx.table(n, key, IMAGES_KEYS)?;
    let d = ImagesConfig::default();
    let positive_size = |cx: &mut Cx<'_>, v: &Node, k: &str| {
        let s = cx.size(v, k)?;
        if s == 0 {
            cx.error(v.span, k, "must be more than zero");
            return None;
        }
        Some(s)
    };
    let max_disk = opt(cx, t, key, "max_disk", positive_size);
    let min_free = opt(cx, t, key, "min_free", |cx, v, k| cx.size(v, k));
    let gc_grace = opt(cx, t, key, "gc_grace", |cx, v, k| cx.duration(v, k));
    let max_manifest_size = opt(cx, t, key, "max_manifest_size", positive_size);
    let max_layers = opt(cx, t, key, "max_layers", |cx, v, k| {
        cx.int(v, k, 1, 10_000).map(|n| n as u32)
    });
    let max_layer_size = opt(cx, t, key, "max_layer_size", positive_size);
    let max_layer_entries = opt(cx, t, key, "max_layer_entries", |cx, v, k| {
        cx.int(v, k, 1, 1_000_000_000).map(|n| n as u64)
    });
    let http_timeout = opt(cx, t, key, "http_timeout", interval);
    let stall_timeout = opt(cx, t, key, "stall_timeout", interval);
    let max_download_rate = opt(cx, t, key, "max_download_rate", |cx, v, k| {
        let s = cx.str(v, k)?;
        let rate = crate::units::parse_rate(s)
            .map_err(|e| cx.error(v.span, k, e))
            .ok()?;
        // The stall check cuts a download slower than 1 KiB/s, and up to 16 layers share it.
        if rate < MIN_DOWNLOAD_RATE {
            cx.error(v.span, k, "must be at least 16KiB/s");
            return None;
        }
        Some(rate)
    });
    let parallel_layers = opt(cx, t, key, "parallel_layers", |cx, v, k| {
        cx.int(v, k, 1, 16).map(|n| n as u32)
    });
    let download_window = opt(cx, t, key, "download_window", |cx, v, k| {
        let s = cx.str(v, k)?;
        crate::values::parse_window(s)
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    Some(ImagesConfig {
        max_disk: max_disk.ok()?,
        min_free: min_free.ok()?.unwrap_or(d.min_free),
        gc_grace: gc_grace.ok()?.unwrap_or(d.gc_grace),
        max_manifest_size: max_manifest_size.ok()?.unwrap_or(d.max_manifest_size),
        max_layers: max_layers.ok()?.unwrap_or(d.max_layers),
        max_layer_size: max_layer_size.ok()?.unwrap_or(d.max_layer_size),
        max_layer_entries: max_layer_entries.ok()?.unwrap_or(d.max_layer_entries),
        http_timeout: http_timeout.ok()?.unwrap_or(d.http_timeout),
        stall_timeout: stall_timeout.ok()?.unwrap_or(d.stall_timeout),
        max_download_rate: max_download_rate.ok()?,
        parallel_layers: parallel_layers.ok()?.unwrap_or(d.parallel_layers),
        download_window: download_window.ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        parse(Path::new("berth.toml"), text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(parse(Path::new("b.toml"), "").unwrap(), Config::default());
    }

    #[test]
    fn every_key() {
        let c = parse(
            Path::new("b.toml"),
            r#"
instance = "t1"
specs_dir = "/tmp/s"
state_dir = "/tmp/st"
run_dir = "/tmp/r"
images_dir = "/tmp/i"
resync_interval = "10s"
update_interval = "1h"
trusted_owners = ["deploy", "1000"]
auth_file = "/root/.docker/config.json"
metrics_listen = "127.0.0.1:9100"
log_format = "json"
log_level = "berth=debug"
[network]
bridge = "t1br"
subnet = "10.99.0.0/24"
[registries."127.0.0.1:5000"]
insecure = true
mirrors = ["mirror.local:5000"]
ca_file = "/etc/ssl/ca.pem"
[images]
max_disk = "20GiB"
min_free = "1g"
gc_grace = "2h"
max_manifest_size = "8MiB"
max_layers = 64
max_layer_size = "4GiB"
max_layer_entries = 5000
http_timeout = "20s"
stall_timeout = "10s"
max_download_rate = "2MiB/s"
parallel_layers = 1
download_window = "01:00-05:00"
[logging]
max_size = "1MiB"
max_files = 2
"#,
        )
        .unwrap();
        assert_eq!(c.instance, "t1");
        assert_eq!(c.resync_interval, Duration::from_secs(10));
        assert_eq!(c.network.subnet, "10.99.0.0/24");
        assert!(c.registries["127.0.0.1:5000"].insecure);
        assert_eq!(c.images.max_disk, Some(20 << 30));
        assert_eq!(c.images.max_layers, 64);
        assert_eq!(c.images.max_layer_entries, 5000);
        assert_eq!(c.images.http_timeout, Duration::from_secs(20));
        assert_eq!(c.images.stall_timeout, Duration::from_secs(10));
        assert_eq!(c.images.max_download_rate, Some(2 << 20));
        assert_eq!(c.images.parallel_layers, 1);
        assert_eq!(
            c.images.download_window,
            Some(crate::model::Window {
                start_minute: 60,
                end_minute: 300
            })
        );
        assert_eq!(c.logging.max_files, 2);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.trusted_owners, vec!["deploy", "1000"]);
    }

    #[test]
    fn subnet6_is_checked_and_makes_a_network_dual_stack_or_ipv6_only() {
        let c = parse(
            Path::new("b.toml"),
            "[network]\nsubnet6 = \"fd00:213::/64\"\nmasquerade6 = false\n\
             [networks.six]\nsubnet6 = \"fd00:b::/64\"\n",
        )
        .unwrap();
        assert_eq!(c.network.subnet6.as_deref(), Some("fd00:213::/64"));
        assert!(!c.network.masquerade6);
        let six = &c.networks["six"];
        assert_eq!(
            (six.subnet.as_deref(), six.subnet6.as_deref()),
            (None, Some("fd00:b::/64"))
        );
        for (bad, why) in [
            ("fd00::1/64", "did you mean \"fd00::/64\""),
            ("fd00::/47", "48 to 124"),
            ("fd00::/125", "48 to 124"),
            ("fe80::/64", "link-local"),
            ("ff00::/64", "multicast"),
            ("::ffff:10.0.0.0/120", "IPv4-mapped"),
            ("10.0.0.0/24", "expected IPv6 CIDR"),
        ] {
            let e = errs(&format!("[networks.x]\nsubnet6 = \"{bad}\"\n")).join("\n");
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = errs("[networks.x]\ninternal = true\n").join("\n");
        assert!(e.contains("a subnet, a subnet6, or both"), "{e}");
        let e =
            errs("[network]\nsubnet6 = \"fd00:b::/64\"\n[networks.x]\nsubnet6 = \"fd00:b::/80\"\n")
                .join("\n");
        assert!(e.contains("overlaps network \"default\""), "{e}");
    }

    #[test]
    fn all_errors_with_positions() {
        let e = errs(
            "instanse = \"x\"\ninstance = \"Bad\"\nstate_dir = \"rel\"\n[network]\nsubnet = \"10.0.0.1/16\"\n[images]\nmax_layers = 0\n",
        );
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(
            e[0].starts_with(
                "berth.toml:1:1: error: instanse: unknown key (did you mean \"instance\"?)"
            ),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("berth.toml:2:12: error: instance: invalid instance"),
            "{}",
            e[1]
        );
        assert!(e[2].contains("state_dir: \"rel\" is not an absolute path"));
        assert!(e[3].contains("did you mean \"10.0.0.0/16\""));
        assert!(e[4].contains("images.max_layers: 0 is out of range"));
    }

    #[test]
    fn named_networks_check_each_name_and_value() {
        let e =
            errs("[networks.\"Bad Name\"]\n[networks.back]\nsubnet = \"10.9.0.0/24\"\nfoo = 1\n");
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e.iter().any(|e| e.contains("networks.Bad Name")), "{e:#?}");
        assert!(
            e.iter()
                .any(|e| e.contains("networks.back.foo: unknown key")),
            "{e:#?}"
        );
        let e = errs("networks = 1\n");
        assert!(
            e[0].contains("expected a table of networks keyed by name"),
            "{e:#?}"
        );
    }

    #[test]
    fn registries_and_levels() {
        let e = errs(
            "log_level = \"debgu\"\n[registries.\"bad host\"]\n[registries.\"ok.io\"]\nmirrors = [\"a b\"]\nfoo = 1\n",
        );
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e.iter().any(|e| e.contains("did you mean \"debug\"")));
        assert!(
            e.iter()
                .any(|e| e.contains("\"bad host\" is not a registry"))
        );
        assert!(
            e.iter()
                .any(|e| e.contains("registries.\"ok.io\".foo: unknown key"))
        );
    }

    #[test]
    fn source_labels_and_host_id() {
        let c = parse(
            Path::new("b.toml"),
            r#"
host_id = "edge-0042"
[labels]
site = "berlin"
role = "kiosk"
[source]
git = "https://git.example.com/fleet.git"
branch = "refs/heads/prod"
path = "./fleet//specs/"
interval = "30s"
allowed_signers = "/etc/berth/allowed_signers"
trust_on_first_use = "9c1e0e4a5b6c7d8e9f00112233445566778899aa"
token_file = "/etc/berth/token"
username = "deploy"
ca_file = "/etc/ssl/ca.pem"
timeout = "2m"
"#,
        )
        .unwrap();
        assert_eq!(c.host_id.as_deref(), Some("edge-0042"));
        assert_eq!(c.labels["site"], "berlin");
        let s = c.git_source.unwrap();
        assert_eq!(s.branch, "prod");
        assert_eq!(s.path, "fleet/specs");
        assert_eq!(s.interval, Duration::from_secs(30));
        assert_eq!(s.timeout, Duration::from_secs(120));
        assert_eq!(s.username, "deploy");

        let d = parse(
            Path::new("b.toml"),
            "[source]\ngit = \"git://127.0.0.1/x\"\nallow_unsigned = true\n",
        )
        .unwrap()
        .git_source
        .unwrap();
        assert_eq!(d.branch, "main");
        assert_eq!(d.path, "");
        assert_eq!(d.interval, Duration::from_secs(60));
        // Bundles only: no remote at all.
        assert!(
            parse(
                Path::new("b.toml"),
                "[source]\nallowed_signers = \"/etc/s\"\n"
            )
            .unwrap()
            .git_source
            .unwrap()
            .git
            .is_none()
        );
    }

    #[test]
    fn source_errors_name_the_key() {
        let e = errs(
            "host_id = \"a b\"\n[labels]\n\"bad name\" = \"x\"\nok = \"a,b\"\n[source]\ngit = \"ext::sh -c x\"\nbranch = \"a..b\"\npath = \"../x\"\ntrust_on_first_use = \"abc\"\n",
        );
        assert!(
            e.iter().any(|l| l.contains("host_id: invalid host id")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("labels.bad name: invalid label name")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("labels.ok: invalid label value")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("source.git: \"ext::sh -c x\" is not a https://"))
        );
        assert!(
            e.iter()
                .any(|l| l.contains("source.branch: \"a..b\" is not a valid branch"))
        );
        assert!(
            e.iter()
                .any(|l| l.contains("source.path: \"../x\" must not leave"))
        );
        assert!(
            e.iter()
                .any(|l| l.contains("source.trust_on_first_use: \"abc\" is not a full commit id"))
        );

        let e = errs("[source]\ngit = \"http://h/x\"\ntoken_file = \"/t\"\n");
        assert!(
            e.iter()
                .any(|l| l.contains("source.allowed_signers: missing")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("source.token_file: a token is only sent to an https://")),
            "{e:#?}"
        );
        let e = errs(
            "[source]\ngit = \"ssh://git@h/x\"\nallowed_signers = \"/s\"\nssh_key_file = \"/k\"\n",
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("source.known_hosts: missing: an ssh:// remote needs it"));
        let e = errs(
            "[source]\ngit = \"git://h/x\"\nallowed_signers = \"/s\"\nallow_unsigned = true\nknown_hosts = \"/k\"\n",
        );
        assert!(
            e.iter()
                .any(|l| l.contains("source.allow_unsigned: contradicts")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("source.known_hosts: only used for an ssh://")),
            "{e:#?}"
        );
    }

    #[test]
    fn repo_paths() {
        assert_eq!(normalise_repo_path("").unwrap(), "");
        assert_eq!(normalise_repo_path(".").unwrap(), "");
        assert_eq!(normalise_repo_path("a/./b/").unwrap(), "a/b");
        for bad in ["/abs", "a/../b", "..", "x/.git", ".git"] {
            assert!(normalise_repo_path(bad).is_err(), "{bad}");
        }
        for ok in ["main", "release/1.2", "feature-x"] {
            assert!(valid_branch(ok), "{ok}");
        }
        for bad in [
            "", "-x", "a b", "a..b", "a/", "x.lock", "a:b", "a~1", "/a", "a//b", ".a", "a/.b",
            "a@{1}",
        ] {
            assert!(!valid_branch(bad), "{bad}");
        }
    }

    #[test]
    fn report_host_id_and_labels() {
        let c = parse(
            Path::new("b.toml"),
            r#"
host_id = "edge-0042"
[labels]
site = "berlin"
floor = 3
[report]
mqtt = "mqtts://broker.example.com"
topic = "fleet/{host_id}/{instance}"
client_cert = "/etc/berth/mqtt.crt"
client_key = "/etc/berth/mqtt.key"
ca_file = "/etc/berth/ca.pem"
username = "edge"
password_file = "/etc/berth/mqtt.pass"
interval = "1m"
"#,
        )
        .unwrap();
        assert_eq!(c.host_id.as_deref(), Some("edge-0042"));
        assert_eq!(c.labels["site"], "berlin");
        assert_eq!(c.labels["floor"], "3");
        let r = c.report.unwrap();
        assert_eq!(r.mqtt.transport, MqttTransport::Tls);
        assert_eq!(
            (r.mqtt.host.as_str(), r.mqtt.port),
            ("broker.example.com", 8883)
        );
        assert_eq!(r.interval, Duration::from_secs(60));
        assert_eq!(
            r.topic_prefix("edge-0042", "berth").unwrap(),
            "fleet/edge-0042/berth"
        );
        assert!(r.topic_prefix("a/b", "berth").is_err());
        assert!(r.topic_prefix("a+", "berth").is_err());

        let d = parse(
            Path::new("b.toml"),
            "[report]\nmqtt = \"mqtt://[::1]:1884\"\n",
        )
        .unwrap()
        .report
        .unwrap();
        assert_eq!(d.topic, "berth/{host_id}");
        assert_eq!(d.interval, Duration::from_secs(300));
        assert_eq!((d.mqtt.host.as_str(), d.mqtt.port), ("::1", 1884));
        assert_eq!(d.mqtt.to_string(), "mqtt://[::1]:1884");
    }

    #[test]
    fn report_errors() {
        let e = errs(
            "host_id = \"a b\"\n[labels]\n\"bad key\" = \"x\"\nok = \"a,b\"\n[report]\ntopic = \"x/+/{host}\"\n",
        );
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(e.iter().any(|e| e.contains("host_id: invalid host id")));
        assert!(
            e.iter()
                .any(|e| e.contains("invalid label name \"bad key\""))
        );
        assert!(
            e.iter()
                .any(|e| e.contains("labels.ok: invalid label value"))
        );
        assert!(
            e.iter()
                .any(|e| e.contains("report.topic:") && e.contains("wildcard"))
        );
        assert!(e.iter().any(|e| e.contains("report.mqtt: missing")));

        let e = errs(
            "[report]\nmqtt = \"mqtt://h\"\nclient_cert = \"/c\"\nca_file = \"/ca\"\npassword_file = \"/p\"\n",
        );
        assert!(
            e.iter().any(|e| e.contains("report.client_key: missing")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|e| e.contains("report.client_cert: only used with an mqtts://"))
        );
        assert!(
            e.iter()
                .any(|e| e.contains("report.ca_file: only used with an mqtts://"))
        );
        assert!(e.iter().any(|e| e.contains("report.username: missing")));

        for (url, why) in [
            ("http://h", "expected mqtt://"),
            ("mqtt://u:p@h", "no credentials"),
            ("mqtt://h:0", "invalid port"),
            ("mqtt://h:99999", "invalid port"),
            ("mqtt://h/x", "no path"),
            ("mqtt://", "invalid host"),
            ("mqtt://[nope]:1", "IPv6"),
        ] {
            let e = errs(&format!("[report]\nmqtt = {url:?}\n"));
            assert!(e.iter().any(|e| e.contains(why)), "{url}: {e:#?}");
        }
        for t in ["$SYS/x", "a/", "a/{nope}", "a/#"] {
            let e = errs(&format!("[report]\nmqtt = \"mqtt://h\"\ntopic = {t:?}\n"));
            assert!(e.iter().any(|e| e.contains("report.topic")), "{t}: {e:#?}");
        }
    }

    #[test]
    fn metered_link_keys_are_checked() {
        let e = errs(
            "[images]\nmax_download_rate = \"2MB/s\"\nparallel_layers = 0\ndownload_window = \"1-5\"\n",
        );
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].contains("images.max_download_rate") && e[0].contains("ambiguous"));
        assert!(e[1].contains("images.parallel_layers: 0 is out of range"));
        assert!(e[2].contains("images.download_window: invalid window"));
        let e = errs("[images]\nmax_download_rate = \"1KiB/s\"\n");
        assert!(e[0].contains("at least 16KiB/s"), "{e:#?}");
        let e = errs("[images]\nmax_download_rate = \"2MiB\"\n");
        assert!(e[0].contains("per second"), "{e:#?}");
    }

    #[test]
    fn subnets() {
        assert!(check_subnet("10.213.0.0/16").is_ok());
        for bad in [
            "10.0.0.0",
            "10.0.0.0/31",
            "10.0.0.0/7",
            "10.0.0.1/24",
            "x/8",
            "::/64",
        ] {
            assert!(check_subnet(bad).is_err(), "{bad}");
        }
    }
}
