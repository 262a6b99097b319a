//! The image config blob (OCI / Docker): what shapes a container, the layers' diff ids and the
//! platform it was built for.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::image::{ImageConfig, ImageHealthcheck};
use crate::registry::Platform;

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
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    healthcheck: Option<RawHealthcheck>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawHealthcheck {
    #[serde(default)]
    test: Vec<String>,
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
    diff_ids: Vec<String>,
}

/// A parsed config blob.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedConfig {
    pub config: ImageConfig,
    pub diff_ids: Vec<String>,
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
    for d in &raw.rootfs.diff_ids {
        berth_spec::reference::validate_digest(d)
            .map_err(|e| format!("diff id: {}", crate::registry::manifest::clip(&e)))?;
    }
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
        exposed_ports: c
            .exposed_ports
            .map(|p| p.into_keys().collect())
            .unwrap_or_default(),
        stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
        healthcheck: c.healthcheck.map(|h| ImageHealthcheck {
            test: h.test,
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
        diff_ids: raw.rootfs.diff_ids,
        platform,
        created,
    })
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
        assert_eq!(p.diff_ids, vec![D.to_string()]);
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
