//! The spec's tables: `[update]`, `[health]`, `[resources]`, `[security]`, `[logging]`, and
//! the `depends_on` list.

use crate::decode::{Cx, index, join};
use crate::model::*;
use crate::tree::{Kind, Node, Span};
use crate::values;

pub(crate) const UPDATE_KEYS: &[&str] = &[
    "strategy", "min_age", "window", "lock", "verify", "rollback",
];
pub(crate) const HEALTH_KEYS: &[&str] = &[
    "command",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "on_unhealthy",
    "disable",
];
pub(crate) const RESOURCES_KEYS: &[&str] = &["memory", "cpus", "pids"];
pub(crate) const SECURITY_KEYS: &[&str] = &[
    "privileged",
    "cap_add",
    "cap_drop",
    "read_only_rootfs",
    "no_new_privileges",
    "seccomp",
];
pub(crate) const LOGGING_KEYS: &[&str] = &["max_size", "max_files"];
pub(crate) const DEPENDENCY_KEYS: &[&str] = &["name", "condition"];

/// Reads an optional key with `f`; `Err(())` when present and invalid (already reported).
pub(crate) fn opt<T>(
    cx: &mut Cx<'_>,
    t: &crate::tree::Table,
    parent: &str,
    name: &str,
    f: impl FnOnce(&mut Cx<'_>, &Node, &str) -> Option<T>,
) -> Result<Option<T>, ()> {
    match t.get(name) {
        None => Ok(None),
        Some(v) => f(cx, v, &join(parent, name)).map(Some).ok_or(()),
    }
}

pub(crate) fn update(cx: &mut Cx<'_>, n: &Node) -> Option<UpdatePolicy> {
    let t = cx.table(n, "update", UPDATE_KEYS)?;
    let d = UpdatePolicy::default();
    let strategy = opt(cx, t, "update", "strategy", |cx, v, k| {
        cx.choice(
            v,
            k,
            &[
                ("download-then-kill", UpdateStrategy::DownloadThenKill),
                ("kill-then-download", UpdateStrategy::KillThenDownload),
                ("start-then-kill", UpdateStrategy::StartThenKill),
            ],
        )
    });
    let min_age = opt(cx, t, "update", "min_age", |cx, v, k| cx.duration(v, k));
    let window = opt(cx, t, "update", "window", |cx, v, k| {
        let s = cx.str(v, k)?;
        values::parse_window(s)
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let lock = opt(cx, t, "update", "lock", |cx, v, k| {
        let s = cx.str(v, k)?;
        values::normalise_abs_path(s)
            .map_err(|e| {
                cx.error(
                    v.span,
                    k,
                    format!("the lock must be an absolute host path: {e}"),
                )
            })
            .ok()
    });
    let verify = opt(cx, t, "update", "verify", |cx, v, k| cx.duration(v, k));
    let rollback = opt(cx, t, "update", "rollback", |cx, v, k| cx.bool(v, k));
    Some(UpdatePolicy {
        strategy: strategy.ok()?.unwrap_or(d.strategy),
        min_age: min_age.ok()?.filter(|d| !d.is_zero()),
        window: window.ok()?,
        lock: lock.ok()?.map(Into::into),
        verify: verify.ok()?.unwrap_or(d.verify),
        rollback: rollback.ok()?.unwrap_or(d.rollback),
    })
}

pub(crate) fn health(cx: &mut Cx<'_>, n: &Node) -> Option<Health> {
    let t = cx.table(n, "health", HEALTH_KEYS)?;
    let command = opt(cx, t, "health", "command", health_command);
    let positive = |cx: &mut Cx<'_>, v: &Node, k: &str| {
        let d = cx.duration(v, k)?;
        if d.is_zero() {
            cx.error(v.span, k, "must be longer than zero");
            return None;
        }
        Some(d)
    };
    let interval = opt(cx, t, "health", "interval", positive);
    let timeout = opt(cx, t, "health", "timeout", positive);
    let retries = opt(cx, t, "health", "retries", |cx, v, k| {
        cx.int(v, k, 1, 1_000_000)
    });
    let start_period = opt(cx, t, "health", "start_period", |cx, v, k| {
        cx.duration(v, k)
    });
    let on_unhealthy = opt(cx, t, "health", "on_unhealthy", |cx, v, k| {
        cx.choice(
            v,
            k,
            &[
                ("restart", OnUnhealthy::Restart),
                ("none", OnUnhealthy::None),
            ],
        )
    });
    let disable = opt(cx, t, "health", "disable", |cx, v, k| cx.bool(v, k));
    // Keep going past a bad field, so the checks below still report what they find.
    let failed = [
        command.is_err(),
        interval.is_err(),
        timeout.is_err(),
        retries.is_err(),
        start_period.is_err(),
        on_unhealthy.is_err(),
        disable.is_err(),
    ]
    .contains(&true);
    let command = command.unwrap_or(None);
    let (interval, timeout, retries, start_period) = (
        interval.unwrap_or(None),
        timeout.unwrap_or(None),
        retries.unwrap_or(None),
        start_period.unwrap_or(None),
    );
    let disable = disable.unwrap_or(None).unwrap_or(false);
    if disable && command.is_some() {
        let v = t.get("disable").expect("present");
        cx.error(
            v.span,
            "health.disable",
            "disable = true and a command contradict each other",
        );
        return None;
    }
    let check = match command {
        Some(command) => Some(HealthCheck {
            command,
            interval: interval.unwrap_or(HealthCheck::DEFAULT_INTERVAL),
            timeout: timeout.unwrap_or(HealthCheck::DEFAULT_TIMEOUT),
            retries: retries.map_or(HealthCheck::DEFAULT_RETRIES, |r| r as u32),
            start_period: start_period.unwrap_or(HealthCheck::DEFAULT_START_PERIOD),
        }),
        // A command that failed to parse is already reported.
        None if t.get("command").is_some() => None,
        None => {
            let mut ok = true;
            for k in ["interval", "timeout", "retries", "start_period"] {
                if let Some(e) = t.entries.get(k) {
                    cx.error(
                        e.key_span,
                        &join("health", k),
                        "needs health.command (berth does not retune the image's own check)",
                    );
                    ok = false;
                }
            }
            if !ok {
                return None;
            }
            None
        }
    };
    if failed || t.get("command").is_some() && check.is_none() {
        return None;
    }
    Some(Health {
        check,
        disable,
        on_unhealthy: on_unhealthy.ok()?.unwrap_or(OnUnhealthy::None),
    })
}

/// An argv, or a shell string; Docker's `["CMD", ...]` and `["CMD-SHELL", "..."]` are read too.
fn health_command(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<Vec<String>> {
    let shell = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];
    let argv = match &v.kind {
        Kind::Str(_) => return cx.text(v, k).map(shell),
        Kind::Array(_) => cx.strings(v, k)?,
        _ => {
            cx.error(
                v.span,
                k,
                format!(
                    "expected an array of strings or a shell command string, found {}",
                    v.kind.describe()
                ),
            );
            return None;
        }
    };
    let argv = match argv.first().map(String::as_str) {
        Some("CMD") => argv[1..].to_vec(),
        Some("CMD-SHELL") if argv.len() == 2 => shell(&argv[1]),
        Some("NONE") => {
            cx.error(v.span, k, "write disable = true instead of [\"NONE\"]");
            return None;
        }
        _ => argv,
    };
    if argv.is_empty() {
        cx.error(v.span, k, "must not be empty");
        return None;
    }
    Some(argv)
}

pub(crate) fn resources(cx: &mut Cx<'_>, n: &Node) -> Option<Resources> {
    let t = cx.table(n, "resources", RESOURCES_KEYS)?;
    let memory = opt(cx, t, "resources", "memory", |cx, v, k| {
        let m = cx.size(v, k)?;
        if m < 4 << 20 {
            cx.error(v.span, k, format!("{m} bytes is below the minimum of 4MiB"));
            return None;
        }
        Some(m)
    });
    let millicpus = opt(cx, t, "resources", "cpus", |cx, v, k| {
        let cpus = match &v.kind {
            Kind::Float(f) => *f,
            Kind::Int(Ok(i)) => *i as f64,
            _ => {
                cx.error(
                    v.span,
                    k,
                    format!("expected a number such as 1.5, found {}", v.kind.describe()),
                );
                return None;
            }
        };
        let milli = (cpus * 1000.0).round();
        if !cpus.is_finite() || !(1.0..=1_000_000.0).contains(&milli) {
            cx.error(v.span, k, format!("{cpus} is out of range (0.001 to 1000)"));
            return None;
        }
        if (cpus * 1000.0 - milli).abs() > 1e-6 {
            cx.error(v.span, k, format!("{cpus} has more than three decimals"));
            return None;
        }
        Some(milli as u32)
    });
    let pids = opt(cx, t, "resources", "pids", |cx, v, k| {
        cx.int(v, k, 1, i64::MAX).map(|p| p as u64)
    });
    Some(Resources {
        memory: memory.ok()?,
        millicpus: millicpus.ok()?,
        pids: pids.ok()?,
    })
}

pub(crate) fn security(cx: &mut Cx<'_>, n: &Node) -> Option<Security> {
    let t = cx.table(n, "security", SECURITY_KEYS)?;
    let d = Security::default();
    let privileged = opt(cx, t, "security", "privileged", |cx, v, k| cx.bool(v, k));
    let cap_add = opt(cx, t, "security", "cap_add", caps);
    let cap_drop = opt(cx, t, "security", "cap_drop", caps);
    let read_only_rootfs = opt(cx, t, "security", "read_only_rootfs", |cx, v, k| {
        cx.bool(v, k)
    });
    let nnp = opt(cx, t, "security", "no_new_privileges", |cx, v, k| {
        cx.bool(v, k)
    });
    let seccomp = opt(cx, t, "security", "seccomp", |cx, v, k| {
        cx.choice(
            v,
            k,
            &[
                ("default", SeccompMode::Default),
                ("unconfined", SeccompMode::Unconfined),
            ],
        )
    });
    let cap_add = cap_add.ok()?.unwrap_or_default();
    let cap_drop = cap_drop.ok()?.unwrap_or_default();
    for c in cap_add
        .iter()
        .filter(|c| *c != "ALL" && cap_drop.contains(c))
    {
        let v = t.get("cap_drop").expect("present");
        cx.error(
            v.span,
            "security.cap_drop",
            format!("{c} is both added and dropped"),
        );
    }
    let s = Security {
        privileged: privileged.ok()?.unwrap_or(d.privileged),
        cap_add,
        cap_drop,
        read_only_rootfs: read_only_rootfs.ok()?.unwrap_or(d.read_only_rootfs),
        no_new_privileges: nnp.ok()?.unwrap_or(d.no_new_privileges),
        seccomp: seccomp.ok()?.unwrap_or(d.seccomp),
    };
    Some(s)
}

/// Capability names, normalised, sorted, deduplicated.
fn caps(cx: &mut Cx<'_>, v: &Node, k: &str) -> Option<Vec<String>> {
    let items = cx.array(v, k)?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ik = index(k, i);
        match cx.str(item, &ik).map(values::parse_capability) {
            Some(Ok(c)) => out.push(c),
            Some(Err(e)) => cx.error(item.span, &ik, e),
            None => {}
        }
    }
    out.sort();
    out.dedup();
    // Partial on error: the diagnostics already recorded fail the spec, and checks that
    // follow still see the entries that did parse.
    Some(out)
}

pub(crate) fn logging(cx: &mut Cx<'_>, n: &Node, key: &str, d: Logging) -> Option<Logging> {
    let t = cx.table(n, key, LOGGING_KEYS)?;
    let max_size = opt(cx, t, key, "max_size", |cx, v, k| {
        let s = cx.size(v, k)?;
        if s < 4096 {
            cx.error(v.span, k, "must be at least 4KiB");
            return None;
        }
        Some(s)
    });
    let max_files = opt(cx, t, key, "max_files", |cx, v, k| {
        cx.int(v, k, 0, 1000).map(|n| n as u32)
    });
    Some(Logging {
        max_size: max_size.ok()?.unwrap_or(d.max_size),
        max_files: max_files.ok()?.unwrap_or(d.max_files),
    })
}

/// Dependencies sorted by name, each with the span of its entry.
pub(crate) fn depends_on(cx: &mut Cx<'_>, n: &Node, own: &str) -> Option<Vec<(Dependency, Span)>> {
    let items = cx.array(n, "depends_on")?;
    let mut out: Vec<(Dependency, Span)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = index("depends_on", i);
        let dep = match &item.kind {
            Kind::Str(s) => Some(Dependency {
                name: s.clone(),
                condition: DependencyCondition::Started,
            }),
            Kind::Table(_) => dependency_table(cx, item, &key),
            _ => {
                cx.error(
                    item.span,
                    &key,
                    format!(
                        "expected a container name or a table, found {}",
                        item.kind.describe()
                    ),
                );
                None
            }
        };
        let Some(dep) = dep else {
            continue;
        };
        if let Err(e) = crate::names::validate_container_name(&dep.name) {
            cx.error(item.span, &key, e);
        } else if dep.name == own {
            cx.error(item.span, &key, "a container cannot depend on itself");
        } else if out.iter().any(|(d, _)| d.name == dep.name) {
            cx.error(item.span, &key, format!("{:?} is listed twice", dep.name));
        } else {
            out.push((dep, item.span));
        }
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    // Partial on error: the diagnostics already recorded fail the spec, and checks that
    // follow still see the entries that did parse.
    Some(out)
}

fn dependency_table(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<Dependency> {
    let t = cx.table(n, key, DEPENDENCY_KEYS)?;
    let name = match t.get("name") {
        Some(v) => cx.str(v, &join(key, "name")),
        None => {
            cx.error(n.span, key, "missing key \"name\"");
            None
        }
    };
    let condition = opt(cx, t, key, "condition", |cx, v, k| {
        cx.choice(
            v,
            k,
            &[
                ("started", DependencyCondition::Started),
                ("healthy", DependencyCondition::Healthy),
                ("completed", DependencyCondition::Completed),
            ],
        )
    });
    Some(Dependency {
        name: name?.to_string(),
        condition: condition.ok()?.unwrap_or(DependencyCondition::Started),
    })
}
