//! Writes a normalised spec back as a spec file (what `berth validate --show` prints). Every
//! key is written out, defaults included, so the output reads as the full meaning of the file,
//! and parsing it again gives the same spec.

use toml::{Table, Value};

use crate::model::*;
use crate::units::{format_duration, format_size};
use crate::{mounts, ports, values};

/// The spec as TOML text, in spec-file form.
pub fn render_toml(spec: &ContainerSpec) -> String {
    toml::to_string(&to_table(spec)).expect("a table renders")
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|x| s(x.as_str())).collect())
}

fn map(m: &crate::StringMap) -> Value {
    Value::Table(m.iter().map(|(k, v)| (k.to_string(), s(v))).collect())
}

fn word<T: serde::Serialize>(v: &T) -> Value {
    match serde_json::to_value(v).expect("enum serialises") {
        serde_json::Value::String(w) => s(w),
        other => panic!("not a unit enum: {other}"),
    }
}

/// The spec as a TOML table in spec-file form.
pub fn to_table(spec: &ContainerSpec) -> Table {
    let mut t = Table::new();
    t.insert("image".into(), s(spec.image.to_string()));
    t.insert("state".into(), word(&spec.state));
    if let Some(e) = &spec.extra.entrypoint {
        t.insert("entrypoint".into(), strings(e));
    }
    if let Some(c) = &spec.command {
        t.insert("command".into(), strings(c));
    }
    if !spec.extra.env_files.is_empty() {
        t.insert(
            "env_files".into(),
            Value::Array(
                spec.extra
                    .env_files
                    .iter()
                    .map(|p| s(p.display().to_string()))
                    .collect(),
            ),
        );
    }
    t.insert("env".into(), map(&spec.env));
    if let Some(w) = &spec.extra.workdir {
        t.insert("workdir".into(), s(w.as_str()));
    }
    if let Some(u) = &spec.extra.user {
        t.insert("user".into(), s(values::format_user(u)));
    }
    if !spec.extra.group_add.is_empty() {
        t.insert(
            "group_add".into(),
            Value::Array(
                spec.extra
                    .group_add
                    .iter()
                    .map(|g| s(values::format_group(g)))
                    .collect(),
            ),
        );
    }
    if let Some(h) = &spec.extra.hostname {
        t.insert("hostname".into(), s(h.as_str()));
    }
    t.insert("labels".into(), map(&spec.extra.labels));
    t.insert("restart".into(), word(&spec.restart));
    if let Some(sig) = &spec.extra.stop_signal {
        t.insert("stop_signal".into(), s(sig.as_str()));
    }
    t.insert(
        "stop_timeout".into(),
        s(format_duration(spec.extra.stop_timeout)),
    );
    t.insert("pull".into(), word(&spec.pull));
    t.insert("depends_on".into(), dependencies(spec));
    t.insert("init".into(), Value::Boolean(spec.init));
    t.insert(
        "ports".into(),
        Value::Array(
            spec.extra
                .ports
                .iter()
                .map(|p| s(ports::format(p)))
                .collect(),
        ),
    );
    t.insert(
        "mounts".into(),
        Value::Array(spec.extra.mounts.iter().map(mount).collect()),
    );
    t.insert(
        "devices".into(),
        Value::Array(
            spec.extra
                .devices
                .iter()
                .map(|d| s(mounts::format_device(d)))
                .collect(),
        ),
    );
    network_keys(spec, &mut t);
    t.insert("update".into(), Value::Table(update(&spec.extra.update)));
    t.insert(
        "resources".into(),
        Value::Table(resources(&spec.extra.resources)),
    );
    t.insert("health".into(), Value::Table(health(&spec.extra.health)));
    t.insert(
        "security".into(),
        Value::Table(security(&spec.extra.security)),
    );
    t.insert("logging".into(), Value::Table(logging(&spec.logging)));
    if !spec.extra.host_match.is_everywhere() {
        t.insert(
            "match".into(),
            Value::Table(host_match(&spec.extra.host_match)),
        );
    }
    t
}

/// `network`, `networks` and `ip`.
fn network_keys(spec: &ContainerSpec, t: &mut Table) {
    t.insert("network".into(), s(spec.network.spec_word()));
    if !spec.extra.networks.is_empty() {
        t.insert(
            "networks".into(),
            Value::Array(
                spec.extra
                    .networks
                    .iter()
                    .map(|n| s(n.name.as_str()))
                    .collect(),
            ),
        );
    }
    if spec.has_static_address() {
        t.insert("ip".into(), Value::Table(static_addresses(spec)));
    }
}

/// `ip`: each network's static address, or its two (IPv4 and IPv6).
fn static_addresses(spec: &ContainerSpec) -> Table {
    let mut ips = Table::new();
    for n in &spec.extra.networks {
        let addrs: Vec<Value> = n
            .static_addresses()
            .iter()
            .map(|a| s(a.to_string()))
            .collect();
        match addrs.len() {
            0 => {}
            1 => {
                ips.insert(n.name.clone(), addrs[0].clone());
            }
            _ => {
                ips.insert(n.name.clone(), Value::Array(addrs));
            }
        }
    }
    ips
}

/// `depends_on`, each with its condition.
fn dependencies(spec: &ContainerSpec) -> Value {
    Value::Array(
        spec.extra
            .depends_on
            .iter()
            .map(|d| {
                let mut dt = Table::new();
                dt.insert("name".into(), s(d.name.as_str()));
                dt.insert("condition".into(), word(&d.condition));
                Value::Table(dt)
            })
            .collect(),
    )
}

fn host_match(m: &crate::matching::HostMatch) -> Table {
    let mut t = Table::new();
    if !m.labels.is_empty() {
        let mut labels = Table::new();
        for (name, values) in &m.labels {
            let v = match values.as_slice() {
                [one] => s(one.as_str()),
                many => strings(many),
            };
            labels.insert(name.clone(), v);
        }
        t.insert("labels".into(), Value::Table(labels));
    }
    if let Some(hosts) = &m.hosts {
        t.insert("hosts".into(), strings(hosts));
    }
    t
}

fn mount(m: &Mount) -> Value {
    if let Some(short) = mounts::format_mount(m) {
        return s(short);
    }
    let mut t = Table::new();
    t.insert("type".into(), s("tmpfs"));
    t.insert("target".into(), s(m.target.as_str()));
    t.insert("read_only".into(), Value::Boolean(m.read_only));
    if let MountKind::Tmpfs { size: Some(size) } = m.kind {
        t.insert("size".into(), s(format_size(size)));
    }
    Value::Table(t)
}

fn update(u: &UpdatePolicy) -> Table {
    let mut t = Table::new();
    t.insert("strategy".into(), word(&u.strategy));
    if let Some(a) = u.min_age {
        t.insert("min_age".into(), s(format_duration(a)));
    }
    if let Some(w) = &u.window {
        t.insert("window".into(), s(values::format_window(w)));
    }
    if let Some(l) = &u.lock {
        t.insert("lock".into(), s(l.display().to_string()));
    }
    t.insert("verify".into(), s(format_duration(u.verify)));
    t.insert("rollback".into(), Value::Boolean(u.rollback));
    t
}

fn resources(r: &Resources) -> Table {
    let mut t = Table::new();
    if let Some(m) = r.memory {
        t.insert("memory".into(), s(format_size(m)));
    }
    if let Some(c) = r.millicpus {
        t.insert("cpus".into(), Value::Float(f64::from(c) / 1000.0));
    }
    if let Some(p) = r.pids {
        t.insert("pids".into(), Value::Integer(p.min(i64::MAX as u64) as i64));
    }
    t
}

fn health(h: &Health) -> Table {
    let mut t = Table::new();
    if let Some(c) = &h.check {
        t.insert("command".into(), strings(&c.command));
        t.insert("interval".into(), s(format_duration(c.interval)));
        t.insert("timeout".into(), s(format_duration(c.timeout)));
        t.insert("retries".into(), Value::Integer(i64::from(c.retries)));
        t.insert("start_period".into(), s(format_duration(c.start_period)));
    }
    t.insert("on_unhealthy".into(), word(&h.on_unhealthy));
    t.insert("disable".into(), Value::Boolean(h.disable));
    t
}

fn security(x: &Security) -> Table {
    let mut t = Table::new();
    t.insert("privileged".into(), Value::Boolean(x.privileged));
    t.insert("cap_add".into(), strings(&x.cap_add));
    t.insert("cap_drop".into(), strings(&x.cap_drop));
    t.insert(
        "read_only_rootfs".into(),
        Value::Boolean(x.read_only_rootfs),
    );
    t.insert(
        "no_new_privileges".into(),
        Value::Boolean(x.no_new_privileges),
    );
    t.insert("seccomp".into(), word(&x.seccomp));
    t
}

fn logging(l: &Logging) -> Table {
    let mut t = Table::new();
    t.insert("max_size".into(), s(format_size(l.max_size)));
    t.insert("max_files".into(), Value::Integer(i64::from(l.max_files)));
    t
}
