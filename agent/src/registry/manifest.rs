//! Manifests and indexes, Docker v2 schema 2 and OCI, parsed from their raw bytes.
//!
//! Only the fields berth uses; the raw bytes are what gets hashed and stored, never a
//! re-serialisation.

use berth_spec::Digest;
use serde::Deserialize;

use super::platform::Platform;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `Accept` header for manifest requests: every kind berth understands.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Checked as it is parsed: a descriptor naming anything but a sha256 digest is refused
    /// with its manifest, before the digest can reach a URL or a file name.
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DescriptorPlatform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Descriptor {
    /// The platform an index entry is for; `unknown/unknown` when it says none (attestations,
    /// old lists), which no host selects.
    pub fn platform_or_unknown(&self) -> Platform {
        self.platform
            .as_ref()
            .map(|p| p.platform())
            .unwrap_or_else(|| Platform::new("unknown", "unknown", None))
    }
}

impl DescriptorPlatform {
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// One platform's image: a config and its layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A manifest list / OCI index.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageIndex {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("unsupported manifest type {0:?} (schema 1 and others are not supported)")]
    Unsupported(String),
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses manifest bytes; `content_type` is the response's Content-Type, if any. The body's
    /// own `mediaType` wins, then the header, then the shape.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Invalid(clip(&e.to_string())))?;
        if probe.schema_version == Some(1) {
            return Err(ManifestError::Unsupported(
                "application/vnd.docker.distribution.manifest.v1+json".into(),
            ));
        }
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
        let kind = probe.media_type.clone().or(header);
        let is_index = match kind.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
            Some(other) if probe.manifests.is_none() && probe.layers.is_none() => {
                return Err(ManifestError::Unsupported(clip(other)));
            }
            _ => probe.manifests.is_some() && probe.layers.is_none(),
        };
        let invalid = |e: serde_json::Error| ManifestError::Invalid(clip(&e.to_string()));
        if is_index {
            Ok(Manifest::Index(
                serde_json::from_slice(bytes).map_err(invalid)?,
            ))
        } else {
            let m: ImageManifest = serde_json::from_slice(bytes).map_err(invalid)?;
            for l in &m.layers {
                Compression::of_media_type(&l.media_type).ok_or_else(|| {
                    ManifestError::Unsupported(format!("layer media type {}", clip(&l.media_type)))
                })?;
            }
            Ok(Manifest::Image(m))
        }
    }
}

/// Text from a registry as it goes into an error message: at most 200 characters. serde's
/// errors quote the offending value, and a hostile manifest can make that value megabytes
/// long; the error ends up on `berth status`.
pub fn clip(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer media type; `None` for types that are not layers at all. An empty type (some
    /// old registries omit it) counts as gzip; the stream is sniffed before decoding anyway.
    pub fn of_media_type(mt: &str) -> Option<Compression> {
        let base = mt.split(';').next().unwrap_or(mt);
        match base {
            "" => Some(Compression::Gzip),
            OCI_LAYER_TAR | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
                Some(Compression::None)
            }
            OCI_LAYER_GZIP
            | DOCKER_LAYER_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// From the first bytes of a stream.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_each_kind() {
        let oci = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":10}},"layers":[{{"mediaType":"{OCI_LAYER_ZSTD}","digest":"{D}","size":5}}]}}"#
        );
        let Manifest::Image(m) = Manifest::parse(oci.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(m.layers[0].size, 5);

        let docker_no_mt = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D}","size":10}},"layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{D}","size":5}}]}}"#
        );
        assert!(matches!(
            Manifest::parse(docker_no_mt.as_bytes(), Some(DOCKER_MANIFEST)).unwrap(),
            Manifest::Image(_)
        ));

        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{D}","size":3,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#
        );
        let Manifest::Index(i) = Manifest::parse(list.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(
            i.manifests[0].platform.as_ref().unwrap().platform(),
            Platform::new("linux", "arm", Some("v7"))
        );
        let index_by_shape = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            Manifest::parse(index_by_shape.as_bytes(), Some("application/json")).unwrap(),
            Manifest::Index(_)
        ));
    }

    #[test]
    fn refuses_schema1_and_unknown() {
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None),
            Err(ManifestError::Unsupported(_))
        ));
        assert!(matches!(
            Manifest::parse(br#"{"mediaType":"application/x-helm"}"#, None),
            Err(ManifestError::Unsupported(_))
        ));
        assert!(matches!(
            Manifest::parse(b"not json", None),
            Err(ManifestError::Invalid(_))
        ));
        let weird_layer = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{D}","size":1}},"layers":[{{"mediaType":"application/x-wasm","digest":"{D}","size":5}}]}}"#
        );
        assert!(matches!(
            Manifest::parse(weird_layer.as_bytes(), None),
            Err(ManifestError::Unsupported(_))
        ));
    }

    #[test]
    fn descriptors_name_only_sha256_digests() {
        for bad in ["sha256:../../../../etc", "md5:0", "sha256:ABC"] {
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{D}","size":1}},"layers":[{{"mediaType":"{OCI_LAYER_TAR}","digest":"{bad}","size":5}}]}}"#
            );
            let e = Manifest::parse(m.as_bytes(), None).unwrap_err().to_string();
            assert!(e.contains("digest"), "{bad}: {e}");
            let i = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"{bad}","size":1}}]}}"#
            );
            assert!(Manifest::parse(i.as_bytes(), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_quote_at_most_a_little_of_the_input() {
        let long = format!("\"{}\"", "x".repeat(10_000));
        let e = Manifest::parse(long.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 300, "{e}");
        let mt = format!(r#"{{"mediaType":"{}"}}"#, "é".repeat(10_000));
        let e = Manifest::parse(mt.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 600, "{e}");
    }

    #[test]
    fn sniffs_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }
}
