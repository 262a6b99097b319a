//! Strict reading of the agent config, with the same diagnostics as spec files.

use std::net::{Ipv4Addr, SocketAddr};
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
    "registries",
    "images",
    "logging",
    "log_format",
    "log_level",
];
pub const NETWORK_KEYS: &[&str] = &["bridge", "subnet"];
pub const REGISTRY_KEYS: &[&str] = &["insecure", "mirrors", "ca_file"];
pub const IMAGES_KEYS: &[&str] = &[
    "max_disk",
    "min_free",
    "gc_grace",
    "max_manifest_size",
    "max_layers",
    "max_layer_size",
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
    let instance = opt(cx, t, "", "instance", |cx, v, k| {
        let s = cx.str(v, k)?;
        crate::names::validate_instance(s)
            .map(|()| s.to_string())
            .map_err(|e| cx.error(v.span, k, e))
            .ok()
    });
    let specs_dir = opt(cx, t, "", "specs_dir", abs_path);
    let state_dir = opt(cx, t, "", "state_dir", abs_path);
    let run_dir = opt(cx, t, "", "run_dir", abs_path);
    let images_dir = opt(cx, t, "", "images_dir", abs_path);
    let resync_interval = opt(cx, t, "", "resync_interval", interval);
    let update_interval = opt(cx, t, "", "update_interval", interval);
    let trusted_owners = opt(cx, t, "", "trusted_owners", |cx, v, k| cx.strings(v, k));
    let auth_file = opt(cx, t, "", "auth_file", abs_path);
    let metrics_listen = opt(cx, t, "", "metrics_listen", |cx, v, k| {
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
    });
    let network = opt(cx, t, "", "network", network);
    let registries = opt(cx, t, "", "registries", |cx, v, k| {
        let Some(crate::tree::Kind::Table(rt)) = Some(&v.kind) else {
            cx.error(
                v.span,
                k,
                "expected a table of registries keyed by \"host[:port]\"",
            );
            return None;
        };
        let mut out = std::collections::BTreeMap::new();
        let mut ok = true;
        for (host, e) in &rt.entries {
            let rk = join(k, &format!("{host:?}"));
            if !valid_host_port(host) {
                cx.error(
                    e.key_span,
                    &rk,
                    format!("{host:?} is not a registry \"host[:port]\""),
                );
                ok = false;
                continue;
            }
            match registry(cx, &e.value, &rk) {
                Some(r) => {
                    out.insert(host.clone(), r);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
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
    let log_level = opt(cx, t, "", "log_level", |cx, v, k| {
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
    });
    Some(Config {
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
        registries: registries.ok()?.unwrap_or(d.registries),
        images: images.ok()?.unwrap_or(d.images),
        logging: logging.ok()?.unwrap_or(d.logging),
        log_format: log_format.ok()?.unwrap_or(d.log_format),
        log_level: log_level.ok()?.unwrap_or(d.log_level),
        source: None,
    })
}

fn network(cx: &mut Cx<'_>, n: &Node, key: &str) -> Option<NetworkConfig> {
    let t: &Table = cx.table(n, key, NETWORK_KEYS)?;
    let d = NetworkConfig::default();
    let bridge = opt(cx, t, key, "bridge", |cx, v, k| {
        let s = cx.text(v, k)?;
        let ok = s.len() <= 15
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !ok {
            cx.error(
                v.span,
                k,
                format!(
                    "invalid interface name {s:?}: at most 15 characters, no '/', ':' or whitespace"
                ),
            );
            return None;
        }
        Some(s.to_string())
    });
    let subnet = opt(cx, t, key, "subnet", |cx, v, k| {
        let s = cx.str(v, k)?;
        check_subnet(s).map_err(|e| cx.error(v.span, k, e)).ok()?;
        Some(s.to_string())
    });
    Some(NetworkConfig {
        bridge: bridge.ok()?.unwrap_or(d.bridge),
        subnet: subnet.ok()?.unwrap_or(d.subnet),
    })
}

/// An IPv4 network in CIDR form, its host bits zero, with room for a gateway and containers.
pub fn check_subnet(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("invalid subnet {s:?}: expected IPv4 CIDR such as \"10.213.0.0/16\"");
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) {
        return Err(format!(
            "invalid subnet {s:?}: prefix length must be 8 to 30"
        ));
    }
    let mask = u32::MAX << (32 - len);
    if u32::from(ip) & !mask != 0 {
        let net = Ipv4Addr::from(u32::from(ip) & mask);
        return Err(format!(
            "invalid subnet {s:?}: host bits set (did you mean \"{net}/{len}\"?)"
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
