//! The image config blob (OCI / Docker): what shapes a container, the layers' diff ids and the
//! platform it was built for.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_spec::DiffId;
use serde::Deserialize;

use super::error::StoreError;
use crate::image::{ImageConfig, ImageHealthcheck};
use crate::registry::Platform;

/// The most items berth takes from one list or map of a config (env, entrypoint, cmd, ports,
/// labels, a health check's test, diff ids). The bytes are bounded by the fetch (4 MiB), but
/// serde would turn each 3-byte `"",` into a 24-byte String in a Vec that doubles as it grows:
/// a 4 MiB config of empty strings would take ten times that. Honest images have tens.
pub const MAX_CONFIG_ITEMS: usize = 16_384;

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RawConfig>,
    rootfs: RawRootfs,
    /// RFC 3339, as the builder wrote it (optional in OCI).
    #[serde(default)]
    created: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    #[serde(default, deserialize_with = "bounded::list")]
    env: Option<Vec<String>>,
    #[serde(default, deserialize_with = "bounded::list")]
    entrypoint: Option<Vec<String>>,
    #[serde(default, deserialize_with = "bounded::list")]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    /// Only the keys count (the values are `{}`).
    #[serde(default, deserialize_with = "bounded::keys")]
    exposed_ports: Option<Vec<String>>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    healthcheck: Option<RawHealthcheck>,
    #[serde(default, deserialize_with = "bounded::map")]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawHealthcheck {
    #[serde(default, deserialize_with = "bounded::list")]
    test: Option<Vec<String>>,
    /// Nanoseconds, as Docker writes them.
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    start_period: Option<u64>,
    #[serde(default)]
    retries: Option<u32>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(deserialize_with = "bounded::list")]
    diff_ids: Option<Vec<String>>,
}

/// A parsed config blob.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedConfig {
    pub config: ImageConfig,
    /// One per layer, bottom first (see [`ParsedConfig::check_layer_count`]).
    pub diff_ids: Vec<DiffId>,
    pub platform: Platform,
    /// When the image was built, Unix seconds (`min_age` counts from it).
    pub created: Option<u64>,
}

pub fn parse(bytes: &[u8]) -> Result<ParsedConfig, String> {
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| crate::registry::manifest::clip(&e.to_string()))?;
    if raw.rootfs.kind != "layers" {
        return Err(format!(
            "rootfs type {:?}, expected \"layers\"",
            crate::registry::manifest::clip(&raw.rootfs.kind)
        ));
    }
    let diff_ids = raw
        .rootfs
        .diff_ids
        .unwrap_or_default()
        .iter()
        .map(|d| DiffId::parse(d).map_err(|e| format!("diff id: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let c = raw.config.unwrap_or_default();
    let nanos = |n: Option<u64>| n.filter(|n| *n > 0).map(Duration::from_nanos);
    let platform = Platform::new(
        if raw.os.is_empty() { "linux" } else { &raw.os },
        &raw.architecture,
        raw.variant.as_deref(),
    );
    let config = ImageConfig {
        env: c.env.unwrap_or_default(),
        entrypoint: c.entrypoint,
        cmd: c.cmd,
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
        exposed_ports: c.exposed_ports.unwrap_or_default(),
        stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
        healthcheck: c.healthcheck.map(|h| ImageHealthcheck {
            test: h.test.unwrap_or_default(),
            interval: nanos(h.interval),
            timeout: nanos(h.timeout),
            start_period: nanos(h.start_period),
            retries: h.retries,
        }),
        labels: c.labels.unwrap_or_default(),
        os: platform.os.clone(),
        architecture: platform.architecture.clone(),
        variant: platform.variant.clone(),
    };
    // A missing or unparsable time is not an error: min_age then counts from first sight.
    let created = raw
        .created
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    Ok(ParsedConfig {
        config,
        diff_ids,
        platform,
        created,
    })
}

impl ParsedConfig {
    /// The config names one diff id per layer of the manifest (or `docker save` entry) that
    /// points to it: they are paired in order, and a pairing that falls short would leave a
    /// layer unchecked. The error names the image.
    pub fn check_layer_count(&self, image: &str, layers: usize) -> Result<(), StoreError> {
        if self.diff_ids.len() == layers {
            return Ok(());
        }
        Err(StoreError::Config {
            image: image.to_string(),
            reason: format!("{} diff ids for {layers} layers", self.diff_ids.len()),
        })
    }
}

/// Lists and maps of at most [`MAX_CONFIG_ITEMS`], refused as soon as one has more (serde has
/// no such limit of its own).
mod bounded {
    use std::collections::BTreeMap;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserializer;
    use serde::de::{Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::MAX_CONFIG_ITEMS;

    fn too_many<E: Error>() -> E {
        E::custom(format!(
            "a list or map with more than {MAX_CONFIG_ITEMS} items"
        ))
    }

    /// `null` or a list of strings.
    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Vec<String>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings or null")
            }
            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    if out.len() == MAX_CONFIG_ITEMS {
                        return Err(too_many());
                    }
                    out.push(s);
                }
                Ok(Some(out))
            }
        }
        d.deserialize_any(V)
    }

    /// `null` or a map whose keys are kept (sorted, once each) and values ignored.
    pub fn keys<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        Ok(entries::<D, IgnoredAny>(d)?.map(|m| m.into_keys().collect()))
    }

    /// `null` or a map of strings to strings.
    pub fn map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeMap<String, String>>, D::Error> {
        entries::<D, String>(d)
    }

    fn entries<'de, D: Deserializer<'de>, T: serde::Deserialize<'de>>(
        d: D,
    ) -> Result<Option<BTreeMap<String, T>>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Option<BTreeMap<String, T>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map or null")
            }
            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                let mut seen = 0usize;
                while let Some((k, v)) = m.next_entry::<String, T>()? {
                    // Counted as read: repeated keys take parsing time too.
                    seen += 1;
                    if seen > MAX_CONFIG_ITEMS {
                        return Err(too_many());
                    }
                    out.insert(k, v);
                }
                Ok(Some(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod created_tests {
    #[test]
    fn created_times_parse_with_or_without_fractions() {
        let cfg = |c: &str| {
            let j = format!(
                r#"{{"architecture":"amd64","os":"linux","created":"{c}","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            );
            super::parse(j.as_bytes()).unwrap().created
        };
        assert_eq!(cfg("2024-01-01T00:00:00Z"), Some(1_704_067_200));
        assert_eq!(cfg("2024-01-01T00:00:00.123456789Z"), Some(1_704_067_200));
        assert_eq!(cfg("not a time"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_config() {
        let json = format!(
            r#"{{"architecture":"arm64","os":"linux","config":{{"Env":["PATH=/bin","A=b"],"Entrypoint":["/init"],"Cmd":null,
            "WorkingDir":"/srv","User":"1000:1000","ExposedPorts":{{"80/tcp":{{}},"53/udp":{{}}}},"StopSignal":"SIGQUIT",
            "Healthcheck":{{"Test":["CMD-SHELL","true"],"Interval":30000000000,"Retries":3}},"Labels":{{"a":"b"}}}},
            "rootfs":{{"type":"layers","diff_ids":["{D}"]}},"history":[]}}"#
        );
        let p = parse(json.as_bytes()).unwrap();
        assert_eq!(p.diff_ids, vec![DiffId::parse(D).unwrap()]);
        assert_eq!(p.platform, Platform::new("linux", "arm64", Some("v8")));
        let c = p.config;
        assert_eq!(c.env, ["PATH=/bin", "A=b"]);
        assert_eq!(c.entrypoint.unwrap(), ["/init"]);
        assert_eq!(c.cmd, None);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        let h = c.healthcheck.unwrap();
        assert_eq!(h.interval, Some(Duration::from_secs(30)));
        assert_eq!(h.timeout, None);
        assert_eq!(h.retries, Some(3));
        assert_eq!(c.variant.as_deref(), Some("v8"));
    }

    /// Every list and map of a config stops at MAX_CONFIG_ITEMS (issue 13: a 4 MiB config of
    /// empty strings would otherwise take ten times its size in memory).
    #[test]
    fn lists_and_maps_are_bounded() {
        let cfg = |field: &str, n: usize| {
            let body = match field {
                "ExposedPorts" | "Labels" => format!(
                    "{{{}}}",
                    (0..n)
                        .map(|i| format!(r#""{i}":"""#))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                _ => format!("[{}]", vec![r#""""#; n].join(",")),
            };
            let inner = if field == "Test" {
                format!(r#""Healthcheck":{{"Test":{body}}}"#)
            } else {
                format!(r#""{field}":{body}"#)
            };
            let j = format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{{inner}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            );
            parse(j.as_bytes())
        };
        for field in ["Env", "Entrypoint", "Cmd", "Test", "ExposedPorts", "Labels"] {
            let ok = cfg(field, MAX_CONFIG_ITEMS);
            assert!(ok.is_ok(), "{field}: {ok:?}");
            let err = cfg(field, MAX_CONFIG_ITEMS + 1).unwrap_err();
            assert!(err.contains("more than 16384 items"), "{field}: {err}");
        }
        let diffs = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            vec![format!(r#""{D}""#); MAX_CONFIG_ITEMS + 1].join(",")
        );
        assert!(
            parse(diffs.as_bytes())
                .unwrap_err()
                .contains("more than 16384 items")
        );
        // null is none, as before.
        let p = parse(
            br#"{"config":{"Env":null,"Cmd":null,"Labels":null,"ExposedPorts":null},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert!(p.config.env.is_empty() && p.config.cmd.is_none());
    }

    #[test]
    fn diff_ids_pair_one_to_one_with_layers() {
        let two = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{D}","{D}"]}}}}"#);
        let p = parse(two.as_bytes()).unwrap();
        assert!(p.check_layer_count("reg/app:1", 2).is_ok());
        for layers in [0, 1, 3] {
            let e = p.check_layer_count("reg/app:1", layers).unwrap_err();
            assert!(matches!(&e, StoreError::Config { image, .. } if image == "reg/app:1"));
            assert_eq!(
                e.to_string(),
                format!("reg/app:1: invalid image config: 2 diff ids for {layers} layers")
            );
        }
        let none = parse(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
        assert!(none.check_layer_count("x", 0).is_ok());
        assert!(none.check_layer_count("x", 1).is_err());
    }

    #[test]
    fn minimal_and_bad() {
        let p = parse(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(p.config.env, Vec::<String>::new());
        assert!(parse(br#"{"rootfs":{"type":"layers","diff_ids":["md5:x"]}}"#).is_err());
        assert!(parse(br#"{"rootfs":{"type":"other","diff_ids":[]}}"#).is_err());
        assert!(parse(b"[]").is_err());
    }
}
