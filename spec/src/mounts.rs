//! `mounts` (`"/srv/data:/data:ro"`, `"cache:/var/cache"`, tables with `type` bind | volume |
//! tmpfs) and `devices` (`"/dev/fuse"`, `"/dev/sda:/dev/xvda:rw"`, tables).

use std::path::PathBuf;

use crate::decode::{Cx, index, join};
use crate::model::{Device, Mount, MountKind};
use crate::tree::{Kind, Node, Span};
use crate::values::{normalise_abs_path, validate_volume_name};

pub(crate) const MOUNT_KEYS: &[&str] = &["type", "source", "target", "read_only", "size"];
pub(crate) const DEVICE_KEYS: &[&str] = &["host", "container", "permissions"];

pub(crate) fn decode_mounts(cx: &mut Cx<'_>, n: &Node) -> Option<Vec<(Mount, Span)>> {
    let items = cx.array(n, "mounts")?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = index("mounts", i);
        let m = match &item.kind {
            Kind::Str(s) => parse_short_mount(s)
                .map_err(|e| cx.error(item.span, &key, e))
                .ok(),
            Kind::Table(_) => decode_mount_table(cx, item, &key),
            _ => {
                cx.error(
                    item.span,
                    &key,
                    format!(
                        "expected a string such as \"/srv/data:/data:ro\" or a table, found {}",
                        item.kind.describe()
                    ),
                );
                None
            }
        };
        if let Some(m) = m {
            out.push((m, item.span));
        }
    }
    // Partial on error: the diagnostics already recorded fail the spec, and checks that
    // follow still see the entries that did parse.
    Some(out)
}

/// `source:target[:ro|rw]`; an absolute source is a bind, anything else a named volume.
pub(crate) fn parse_short_mount(s: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [src, tgt] => (*src, *tgt, None),
        [src, tgt, opts] => (*src, *tgt, Some(*opts)),
        [_] => {
            return Err(format!(
                "invalid mount {s:?}: expected \"source:target[:ro]\" (for a tmpfs use a table with type = \"tmpfs\")"
            ));
        }
        _ => return Err(format!("invalid mount {s:?}: too many ':'")),
    };
    let mut read_only = false;
    for opt in opts.into_iter().flat_map(|o| o.split(',')) {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => {
                return Err(format!(
                    "invalid mount {s:?}: unknown option {other:?} (ro or rw)"
                ));
            }
        }
    }
    let kind = source_kind(source).map_err(|e| format!("invalid mount {s:?}: {e}"))?;
    let target = mount_target(target).map_err(|e| format!("invalid mount {s:?}: {e}"))?;
    Ok(Mount {
        kind,
        target,
        read_only,
    })
}

fn source_kind(source: &str) -> Result<MountKind, String> {
    if source.starts_with('/') {
        Ok(MountKind::Bind {
            source: PathBuf::from(normalise_abs_path(source)?),
        })
    } else {
        validate_volume_name(source)?;
        Ok(MountKind::Volume {
            name: source.to_string(),
        })
    }
}

fn mount_target(t: &str) -> Result<String, String> {
    let t = normalise_abs_path(t).map_err(|e| format!("target {e}"))?;
    if t == "/" {
        return Err("cannot mount over the container's root".into());
    }
    Ok(t)
}

fn decode_mount_table(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<Mount> {
    let t = cx.table(n, key, MOUNT_KEYS)?;
    let ty = t.get("type").map(|v| {
        (
            v,
            cx.choice(
                v,
                &join(key, "type"),
                &[("bind", "bind"), ("volume", "volume"), ("tmpfs", "tmpfs")],
            ),
        )
    });
    let source = t
        .get("source")
        .map(|v| (v, cx.text(v, &join(key, "source"))));
    let target = match t.get("target") {
        Some(v) => cx.text(v, &join(key, "target")).and_then(|s| {
            mount_target(s)
                .map_err(|e| cx.error(v.span, &join(key, "target"), e))
                .ok()
        }),
        None => {
            cx.error(n.span, key, "missing key \"target\"");
            None
        }
    };
    let read_only = t
        .get("read_only")
        .map_or(Some(false), |v| cx.bool(v, &join(key, "read_only")));
    let size = t.get("size").map(|v| (v, cx.size(v, &join(key, "size"))));

    let ty = mount_type(cx, n, key, ty, &source)?;
    let kind = mount_kind(cx, n, key, ty, source, size)?;
    Some(Mount {
        kind,
        target: target?,
        read_only: read_only?,
    })
}

/// A mount's type: as `type` says, else a bind for an absolute source and a volume for a name.
fn mount_type(
    cx: &mut Cx<'_>,
    n: &Node,
    key: &str,
    ty: Option<(&Node, Option<&'static str>)>,
    source: &Option<(&Node, Option<&str>)>,
) -> Option<&'static str> {
    let ty = match ty {
        Some((_, None)) => return None,
        Some((_, Some(ty))) => ty,
        None => match &source {
            Some((_, Some(s))) if s.starts_with('/') => "bind",
            Some((_, Some(_))) => "volume",
            Some((_, None)) => return None,
            None => {
                cx.error(
                    n.span,
                    key,
                    "missing key \"source\" (or type = \"tmpfs\" for a tmpfs)",
                );
                return None;
            }
        },
    };
    Some(ty)
}

/// What is mounted: a tmpfs (with its size, no source), or a bind's host path or a volume's
/// name (no size).
fn mount_kind(
    cx: &mut Cx<'_>,
    n: &Node,
    key: &str,
    ty: &'static str,
    source: Option<(&Node, Option<&str>)>,
    size: Option<(&Node, Option<u64>)>,
) -> Option<MountKind> {
    let kind = match ty {
        "tmpfs" => {
            if let Some((v, _)) = source {
                cx.error(v.span, &join(key, "source"), "a tmpfs has no source");
                return None;
            }
            MountKind::Tmpfs {
                size: match size {
                    Some((_, None)) => return None,
                    Some((_, Some(s))) => Some(s),
                    None => None,
                },
            }
        }
        _ => {
            if let Some((v, _)) = size {
                cx.error(v.span, &join(key, "size"), "only a tmpfs has a size");
                return None;
            }
            let Some((sv, Some(s))) = source else {
                if source.is_none() {
                    cx.error(
                        n.span,
                        key,
                        format!("missing key \"source\" for a {ty} mount"),
                    );
                }
                return None;
            };
            let skey = join(key, "source");
            if ty == "bind" {
                match normalise_abs_path(s) {
                    Ok(p) => MountKind::Bind { source: p.into() },
                    Err(e) => {
                        cx.error(
                            sv.span,
                            &skey,
                            format!("a bind source must be an absolute host path: {e}"),
                        );
                        return None;
                    }
                }
            } else {
                match validate_volume_name(s) {
                    Ok(()) => MountKind::Volume {
                        name: s.to_string(),
                    },
                    Err(e) => {
                        cx.error(sv.span, &skey, e);
                        return None;
                    }
                }
            }
        }
    };
    Some(kind)
}

pub(crate) fn decode_devices(cx: &mut Cx<'_>, n: &Node) -> Option<Vec<(Device, Span)>> {
    let items = cx.array(n, "devices")?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = index("devices", i);
        let d = match &item.kind {
            Kind::Str(s) => parse_short_device(s)
                .map_err(|e| cx.error(item.span, &key, e))
                .ok(),
            Kind::Table(_) => decode_device_table(cx, item, &key),
            _ => {
                cx.error(
                    item.span,
                    &key,
                    format!(
                        "expected a string such as \"/dev/fuse\" or a table, found {}",
                        item.kind.describe()
                    ),
                );
                None
            }
        };
        if let Some(d) = d {
            out.push((d, item.span));
        }
    }
    // Partial on error: the diagnostics already recorded fail the spec, and checks that
    // follow still see the entries that did parse.
    Some(out)
}

/// `host[:container][:permissions]`, as Docker's `--device`.
pub(crate) fn parse_short_device(s: &str) -> Result<Device, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, None, None),
        [h, x] if is_permissions(x) && !x.starts_with('/') => (*h, None, Some(*x)),
        [h, c] => (*h, Some(*c), None),
        [h, c, p] => (*h, Some(*c), Some(*p)),
        _ => {
            return Err(format!(
                "invalid device {s:?}: expected host[:container][:rwm]"
            ));
        }
    };
    device(host, container, perms).map_err(|e| format!("invalid device {s:?}: {e}"))
}

fn device(host: &str, container: Option<&str>, perms: Option<&str>) -> Result<Device, String> {
    let host = normalise_abs_path(host)?;
    let container = match container {
        Some(c) => normalise_abs_path(c)?,
        None => host.clone(),
    };
    let permissions = match perms {
        Some(p) if is_permissions(p) => "rwm".chars().filter(|c| p.contains(*c)).collect(),
        Some(p) => return Err(format!("invalid permissions {p:?}: any of r, w, m")),
        None => "rwm".to_string(),
    };
    Ok(Device {
        host: host.into(),
        container: container.into(),
        permissions,
    })
}

fn is_permissions(p: &str) -> bool {
    !p.is_empty() && p.len() <= 3 && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
}

fn decode_device_table(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<Device> {
    let t = cx.table(n, key, DEVICE_KEYS)?;
    let host = match t.get("host") {
        Some(v) => cx.text(v, &join(key, "host")),
        None => {
            cx.error(n.span, key, "missing key \"host\"");
            None
        }
    };
    let container = t
        .get("container")
        .map(|v| cx.text(v, &join(key, "container")));
    let perms = t
        .get("permissions")
        .map(|v| cx.text(v, &join(key, "permissions")));
    let (host, container, perms) = (
        host?,
        container.map_or(Some(None), |c| c.map(Some))?,
        perms.map_or(Some(None), |p| p.map(Some))?,
    );
    device(host, container, perms)
        .map_err(|e| cx.error(n.span, key, e))
        .ok()
}

/// The short form of a mount, when it has one (a tmpfs has none).
pub(crate) fn format_mount(m: &Mount) -> Option<String> {
    let source = match &m.kind {
        MountKind::Bind { source } => source.display().to_string(),
        MountKind::Volume { name } => name.clone(),
        MountKind::Tmpfs { .. } => return None,
    };
    let ro = if m.read_only { ":ro" } else { "" };
    Some(format!("{source}:{}{ro}", m.target))
}

pub(crate) fn format_device(d: &Device) -> String {
    let mut s = d.host.display().to_string();
    if d.container != d.host {
        s = format!("{s}:{}", d.container.display());
    }
    if d.permissions != "rwm" {
        s = format!("{s}:{}", d.permissions);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_mounts() {
        let m = parse_short_mount("/srv/data/:/data:ro").unwrap();
        assert_eq!(
            m,
            Mount {
                kind: MountKind::Bind {
                    source: "/srv/data".into()
                },
                target: "/data".into(),
                read_only: true
            }
        );
        let m = parse_short_mount("cache:/var/cache").unwrap();
        assert_eq!(
            m.kind,
            MountKind::Volume {
                name: "cache".into()
            }
        );
        assert!(!m.read_only);
        for s in ["/a:/b:ro", "vol:/x", "/:/host:ro"] {
            assert_eq!(format_mount(&parse_short_mount(s).unwrap()).unwrap(), s);
        }
        for (bad, why) in [
            ("/data", "tmpfs"),
            ("a:b", "absolute"),
            ("/a:/b:rx", "unknown option"),
            ("../x:/b", "volume name"),
            ("/a:/", "root"),
            ("/a:/b/../c", "\"..\""),
            ("/a:/b:ro:x", "too many"),
        ] {
            let e = parse_short_mount(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn short_devices() {
        let d = parse_short_device("/dev/fuse").unwrap();
        assert_eq!(
            (d.container.to_str().unwrap(), d.permissions.as_str()),
            ("/dev/fuse", "rwm")
        );
        let d = parse_short_device("/dev/sda:/dev/xvda:wr").unwrap();
        assert_eq!(d.container, PathBuf::from("/dev/xvda"));
        assert_eq!(d.permissions, "rw");
        let d = parse_short_device("/dev/sda:r").unwrap();
        assert_eq!(
            (d.container.to_str().unwrap(), d.permissions.as_str()),
            ("/dev/sda", "r")
        );
        for s in ["/dev/fuse", "/dev/a:/dev/b:r", "/dev/a:rw"] {
            assert_eq!(format_device(&parse_short_device(s).unwrap()), s);
        }
        for bad in ["fuse", "/dev/a:/dev/b:x", "/dev/a:b", "/a:/b:r:x"] {
            assert!(parse_short_device(bad).is_err(), "{bad}");
        }
    }
}
