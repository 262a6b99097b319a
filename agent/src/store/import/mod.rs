//! Importing images without a registry: an OCI image layout (a directory or a tar of one) or a
//! `docker save` archive. Every blob is verified exactly as a pull verifies it (size, digest,
//! diff id), then recorded and pinned (there may be no registry to fetch it again).
//!
//! Records are keyed by the archive (`oci-archive:/abs/path`, `oci:/abs/dir[:tag]`) and by any
//! image name the archive carries (`RepoTags`, `io.containerd.image.name`, a full reference in
//! `org.opencontainers.image.ref.name`), so a spec naming `busybox:1.36` finds an imported copy.
//! A name with a digest (`app@sha256:…`) is never taken from an archive: the archive's own
//! content has its own digest, and a claimed one would re-point a digest-pinned spec at it.

pub mod archive;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use berth_spec::{DiffId, Digest, ImageReference, ImageSource};
use serde::Deserialize;

use crate::image::ResolvedImage;
use crate::registry::manifest::{self, Descriptor, ImageManifest, Manifest};
use crate::registry::platform::{self, Platform};

use super::Store;
use super::error::StoreError;
use super::image_config;
use super::index::{ImageRecord, LayerRecord, LayerRef, PIN_IMPORT, now_secs};
use super::layer::{LayerSpec, Meter};
use archive::Archive;

/// The largest JSON file read from an archive (index, manifests, configs): a config's limit.
const MAX_JSON: u64 = super::pull::MAX_CONFIG_SIZE;
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One image found in an archive, before its layers are unpacked.
struct Found {
    /// Record keys: the archive's own key(s) and any names it carries.
    keys: Vec<String>,
    /// What the archive's entry names: an index's digest, or the manifest's.
    reference_digest: Digest,
    manifest_digest: Digest,
    manifest_bytes: Vec<u8>,
    index_bytes: Option<Vec<u8>>,
    manifest: ImageManifest,
    /// For `docker save`: where each layer's bytes are, by layer index.
    layer_paths: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl Store {
    /// Imports every image of an archive (OCI layout dir or tar, or `docker save` tar). The
    /// caller holds the state dir lock.
    pub fn import(&self, path: &Path) -> Result<Vec<ResolvedImage>, StoreError> {
        let mut out: Vec<ResolvedImage> = Vec::new();
        for r in self.import_records(path, None)? {
            // One image may be recorded under several names.
            if !out.iter().any(|o| o.manifest_digest == r.manifest_digest) {
                out.push(self.resolved(&r));
            }
        }
        Ok(out)
    }

    /// Makes an `oci-archive:` / `oci:` spec image available: imports it unless already in
    /// the store.
    pub fn import_source(&self, source: &ImageSource) -> Result<ResolvedImage, StoreError> {
        if let Some(r) = self.resolve(source)? {
            return Ok(r);
        }
        let (path, tag) = match source {
            ImageSource::OciArchive { path } => (path, None),
            ImageSource::OciLayout { path, tag } => (path, tag.as_deref()),
            ImageSource::Registry(_) => {
                return Err(StoreError::Invalid {
                    image: source.to_string(),
                    reason: "not an archive source".into(),
                });
            }
        };
        self.import_records(path, tag)?;
        self.resolve(source)?.ok_or_else(|| StoreError::NotFound {
            image: source.to_string(),
        })
    }

    /// Imports and returns the records written. `only_tag` limits an OCI layout to the entry
    /// with that `ref.name`.
    pub(crate) fn import_records(
        &self,
        path: &Path,
        only_tag: Option<&str>,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let shown = path.display().to_string();
        let abs = std::path::absolute(path).map_err(|e| StoreError::io(path, e))?;
        let ar = Archive::open(&abs, &self.scratch()).map_err(|e| StoreError::Invalid {
            image: shown.clone(),
            reason: e.to_string(),
        })?;
        self.import_archive(&ar, &abs, only_tag)
    }

    /// Where compressed archives are inflated, and the space to keep.
    pub(crate) fn scratch(&self) -> archive::Scratch {
        archive::Scratch {
            dir: self.inner.layout.blobs_dir(),
            min_free: self.inner.limits.min_free,
        }
    }

    /// Imports an open archive (`abs`: its path, for record keys and messages).
    pub(crate) fn import_archive(
        &self,
        ar: &Archive,
        abs: &Path,
        only_tag: Option<&str>,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let shown = abs.display().to_string();
        let invalid = |reason: String| StoreError::Invalid {
            image: shown.clone(),
            reason,
        };
        let found = if ar.exists("oci-layout") && ar.exists("index.json") {
            self.find_oci(ar, abs, only_tag, &shown)?
        } else if ar.exists("manifest.json") {
            self.find_docker_save(ar, abs, &shown)?
        } else {
            return Err(invalid(
                "neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)".into(),
            ));
        };
        if found.is_empty() {
            return Err(invalid(match only_tag {
                Some(t) => format!("no image tagged {t:?} for this platform"),
                None => "no image for this platform in the archive".into(),
            }));
        }
        let mut out = Vec::new();
        for f in found {
            out.extend(self.import_one(ar, &shown, f)?);
        }
        Ok(out)
    }

    fn find_oci(
        &self,
        ar: &Archive,
        abs: &Path,
        only_tag: Option<&str>,
        shown: &str,
    ) -> Result<Vec<Found>, StoreError> {
        let index_bytes = read_json_file(ar, "index.json", shown)?;
        let index = match Manifest::parse(&index_bytes, Some(manifest::OCI_INDEX)) {
            Ok(Manifest::Index(i)) => i,
            Ok(Manifest::Image(_)) => {
                return Err(StoreError::Invalid {
                    image: shown.into(),
                    reason: "index.json is not an index".into(),
                });
            }
            Err(source) => {
                return Err(StoreError::Manifest {
                    image: shown.into(),
                    source,
                });
            }
        };
        let layout = if ar.is_dir() {
            OciLayout::Dir
        } else {
            OciLayout::Archive
        };
        let host = Platform::host();
        let mut out: Vec<Found> = Vec::new();
        for desc in &index.manifests {
            let ref_name = desc.annotations.get(REF_NAME);
            if let Some(t) = only_tag
                && ref_name.map(String::as_str) != Some(t)
            {
                continue;
            }
            let bytes = read_blob(ar, desc, shown)?;
            let Some(Resolved {
                reference_digest,
                manifest_digest,
                manifest,
                manifest_bytes,
                sub_index,
            }) = resolve_oci_entry(ar, desc, bytes, &host, shown)?
            else {
                continue;
            };
            let entry = if out.is_empty() {
                EntryOrder::First
            } else {
                EntryOrder::Later
            };
            let mut keys = oci_keys(abs, layout, ref_name, entry);
            for name in [desc.annotations.get(CONTAINERD_NAME), ref_name]
                .into_iter()
                .flatten()
                .filter(|n| n.contains('/') || n.contains(':'))
            {
                if let Some(r) = archive_name(name, shown) {
                    keys.push(r);
                }
            }
            keys.dedup();
            out.push(Found {
                keys,
                reference_digest,
                manifest_digest,
                manifest_bytes,
                index_bytes: sub_index,
                manifest,
                layer_paths: Vec::new(),
            });
        }
        Ok(out)
    }

    fn find_docker_save(
        &self,
        ar: &Archive,
        abs: &Path,
        shown: &str,
    ) -> Result<Vec<Found>, StoreError> {
        let bytes = read_json_file(ar, "manifest.json", shown)?;
        let entries: Vec<DockerSaveEntry> =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
                image: shown.into(),
                reason: format!("manifest.json: {e}"),
            })?;
        let mut out = Vec::new();
        for (n, e) in entries.into_iter().enumerate() {
            let (config_bytes, config_digest, parsed) = docker_save_config(ar, &e, shown)?;
            let layers = docker_save_layers(ar, &e, &parsed.diff_ids, shown)?;
            // A manifest berth writes for the image, so every record has one to name it by.
            let m = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": manifest::OCI_MANIFEST,
                "config": {"mediaType": manifest::OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
                "layers": layers,
            });
            let manifest_bytes = serde_json::to_vec(&m).expect("json");
            let Manifest::Image(manifest) =
                Manifest::parse(&manifest_bytes, None).map_err(|source| StoreError::Manifest {
                    image: shown.into(),
                    source,
                })?
            else {
                unreachable!("built as an image manifest");
            };
            self.put_blob(&config_digest, &config_bytes)?;
            let digest = Digest::of(&manifest_bytes);
            let mut keys = Vec::new();
            if n == 0 {
                keys.push(format!("oci-archive:{}", abs.display()));
            }
            for t in e.repo_tags.unwrap_or_default() {
                if let Some(r) = archive_name(&t, shown) {
                    keys.push(r);
                }
            }
            out.push(Found {
                keys,
                reference_digest: digest.clone(),
                manifest_digest: digest,
                manifest_bytes,
                index_bytes: None,
                manifest,
                layer_paths: e.layers,
            });
        }
        Ok(out)
    }

    fn import_one(
        &self,
        ar: &Archive,
        shown: &str,
        f: Found,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let m = &f.manifest;
        if m.layers.len() > self.inner.limits.max_layers as usize {
            return Err(StoreError::Limit {
                image: shown.into(),
                what: format!("{} layers", m.layers.len()),
                limit: self.inner.limits.max_layers.into(),
                setting: "max_layers",
            });
        }
        let config_bytes = read_blob(ar, &m.config, shown).or_else(|e| {
            // docker save: the config was verified and stored while reading manifest.json.
            std::fs::read(self.blob_path(&m.config.digest)).map_err(|_| e)
        })?;
        let parsed = image_config::parse(&config_bytes).map_err(|reason| StoreError::Config {
            image: shown.into(),
            reason,
        })?;
        parsed.check_layer_count(shown, m.layers.len())?;
        let layers: Vec<LayerRef> = m
            .layers
            .iter()
            .zip(&parsed.diff_ids)
            .map(|(d, diff)| LayerRef {
                blob_digest: d.digest.clone(),
                diff_id: diff.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
                annotations: Default::default(),
            })
            .collect();
        let _active = self.activate(&layers);
        let mut unpacked_size = 0;
        for (i, l) in layers.iter().enumerate() {
            let name = f
                .layer_paths
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("blobs/sha256/{}", l.blob_digest.hex()));
            unpacked_size += self.import_layer(ar, shown, l, &name)?;
        }
        self.put_blob(&f.manifest_digest, &f.manifest_bytes)?;
        if let Some(ib) = &f.index_bytes {
            self.put_blob(&f.reference_digest, ib)?;
        }
        self.put_blob(&m.config.digest, &config_bytes)?;
        let now = now_secs();
        let _g = self.inner.records.lock().expect("records");
        let mut records = Vec::new();
        for key in &f.keys {
            let mut pins = self
                .inner
                .index
                .get(key)
                .ok()
                .flatten()
                .map(|r| r.pins)
                .unwrap_or_default();
            pins.insert(PIN_IMPORT.to_string());
            let r = ImageRecord {
                reference: key.clone(),
                reference_digest: f.reference_digest.clone(),
                manifest_digest: f.manifest_digest.clone(),
                config_digest: m.config.digest.clone(),
                platform: parsed.platform.clone(),
                layers: layers.clone(),
                config: parsed.config.clone(),
                size: layers.iter().map(|l| l.size).sum(),
                unpacked_size,
                pins,
                pulled_at: now,
                last_used: now,
            };
            self.inner
                .index
                .put(&r)
                .map_err(|e| StoreError::io(self.inner.index.record_path(key), e))?;
            records.push(r);
        }
        Ok(records)
    }

    /// Verifies and unpacks one layer from the archive unless the store has it.
    fn import_layer(
        &self,
        ar: &Archive,
        shown: &str,
        l: &LayerRef,
        name: &str,
    ) -> Result<u64, StoreError> {
        let dest = self.layer_dir(&l.diff_id);
        if dest.exists() {
            return Ok(self.layer_size(&l.diff_id).unwrap_or(0));
        }
        let src = ar.open_file(name).map_err(|e| StoreError::Invalid {
            image: shown.into(),
            reason: format!("layer {}: {e}", l.blob_digest),
        })?;
        let cancel = AtomicBool::new(false);
        let meter = Meter::new(&cancel);
        let spec = LayerSpec {
            image: shown,
            digest: &l.blob_digest,
            size: l.size,
            diff_id: &l.diff_id,
            max_unpacked: self.inner.limits.max_layer_size,
            max_entries: self.inner.limits.max_layer_entries,
            min_free: self.inner.limits.min_free,
        };
        // One byte more than the descriptor allows, so an oversized file is caught.
        self.unpack_layer_from(&spec, src.take(l.size + 1), &meter, &dest)?;
        let size = meter.unpacked_bytes();
        self.inner
            .index
            .put_layer(&LayerRecord {
                diff_id: l.diff_id.clone(),
                size,
            })
            .map_err(|e| StoreError::io(&dest, e))?;
        Ok(size)
    }
}

/// An image name an archive carries, as a record key; `None` for one that is not a reference
/// or that names a digest (only the registry, fetching by digest, can vouch for one).
fn archive_name(name: &str, shown: &str) -> Option<String> {
    let r = ImageReference::parse(name).ok()?;
    if r.digest.is_some() {
        tracing::warn!(archive = %shown, name = %name, "ignoring an image name with a digest in the archive");
        return None;
    }
    Some(r.to_string())
}

fn read_json_file(ar: &Archive, name: &str, shown: &str) -> Result<Vec<u8>, StoreError> {
    ar.read_small(name, MAX_JSON)
        .map_err(|e| StoreError::Invalid {
            image: shown.into(),
            reason: format!("{name}: {e}"),
        })
}

/// A small blob, verified against its descriptor.
fn read_blob(ar: &Archive, d: &Descriptor, shown: &str) -> Result<Vec<u8>, StoreError> {
    let name = format!("blobs/sha256/{}", d.digest.hex());
    let bytes = ar
        .read_small(&name, MAX_JSON)
        .map_err(|e| StoreError::Invalid {
            image: shown.into(),
            reason: e.to_string(),
        })?;
    if bytes.len() as u64 != d.size {
        return Err(StoreError::BlobSize {
            image: shown.into(),
            blob: d.digest.to_string(),
            expected: d.size,
            actual: bytes.len().to_string(),
        });
    }
    let actual = Digest::of(&bytes);
    if actual != d.digest {
        return Err(StoreError::BlobDigest {
            image: shown.into(),
            blob: d.digest.to_string(),
            expected: d.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}

fn parse_manifest(bytes: &[u8], media_type: &str, shown: &str) -> Result<Manifest, StoreError> {
    Manifest::parse(bytes, Some(media_type).filter(|m| !m.is_empty())).map_err(|source| {
        StoreError::Manifest {
            image: shown.into(),
            source,
        }
    })
}

/// An OCI layout's manifest (or index) entry, resolved to this platform's image manifest.
struct Resolved {
    /// What the entry names: the manifest, or the index holding it.
    reference_digest: Digest,
    manifest_digest: Digest,
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    /// The index's bytes, when the entry is one.
    sub_index: Option<Vec<u8>>,
}

/// Resolves one entry of `index.json`: `None` when an index offers nothing for this platform.
fn resolve_oci_entry(
    ar: &Archive,
    desc: &Descriptor,
    bytes: Vec<u8>,
    host: &Platform,
    shown: &str,
) -> Result<Option<Resolved>, StoreError> {
    let idx = match parse_manifest(&bytes, &desc.media_type, shown)? {
        Manifest::Image(m) => {
            return Ok(Some(Resolved {
                reference_digest: desc.digest.clone(),
                manifest_digest: desc.digest.clone(),
                manifest: m,
                manifest_bytes: bytes,
                sub_index: None,
            }));
        }
        Manifest::Index(idx) => idx,
    };
    let offered: Vec<Platform> = idx
        .manifests
        .iter()
        .map(Descriptor::platform_or_unknown)
        .collect();
    let Some(i) = platform::select(host, &offered) else {
        tracing::info!(archive = %shown, digest = %desc.digest, "no manifest for this platform; skipped");
        return Ok(None);
    };
    let sub = &idx.manifests[i];
    let sb = read_blob(ar, sub, shown)?;
    match parse_manifest(&sb, &sub.media_type, shown)? {
        Manifest::Image(m) => Ok(Some(Resolved {
            reference_digest: desc.digest.clone(),
            manifest_digest: sub.digest.clone(),
            manifest: m,
            manifest_bytes: sb,
            sub_index: Some(bytes),
        })),
        Manifest::Index(_) => Err(StoreError::Invalid {
            image: shown.into(),
            reason: "nested index".into(),
        }),
    }
}

/// Where an OCI layout is: a dir (`oci:`) or an archive (`oci-archive:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OciLayout {
    Dir,
    Archive,
}

/// Whether an entry is the layout's first (which the bare layout name means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryOrder {
    First,
    Later,
}

/// The names an OCI layout's entry is found by: a dir's `oci:<dir>:<tag>` and, for its first
/// entry, `oci:<dir>`; an archive's first entry `oci-archive:<file>`.
fn oci_keys(
    abs: &Path,
    layout: OciLayout,
    ref_name: Option<&String>,
    entry: EntryOrder,
) -> Vec<String> {
    let first = entry == EntryOrder::First;
    let mut keys = Vec::new();
    if layout == OciLayout::Dir {
        if let Some(t) =
            ref_name.filter(|t| berth_spec::ImageSource::parse(&format!("oci:/x:{t}")).is_ok())
        {
            keys.push(format!("oci:{}:{t}", abs.display()));
        }
        if first {
            keys.push(format!("oci:{}", abs.display()));
        }
    } else if first {
        keys.push(format!("oci-archive:{}", abs.display()));
    }
    keys
}

/// A `docker save` entry's image config: its bytes, digest (checked against its file name)
/// and what it says, with a diff id per layer.
fn docker_save_config(
    ar: &Archive,
    e: &DockerSaveEntry,
    shown: &str,
) -> Result<(Vec<u8>, Digest, image_config::ParsedConfig), StoreError> {
    let config_bytes = ar
        .read_small(&e.config, MAX_JSON)
        .map_err(|err| StoreError::Invalid {
            image: shown.into(),
            reason: format!("{}: {err}", e.config),
        })?;
    let config_digest = Digest::of(&config_bytes);
    // The config's file name is its digest in both the old and the OCI-style layouts.
    let named = e
        .config
        .trim_end_matches(".json")
        .rsplit('/')
        .next()
        .unwrap_or("");
    if named.len() == 64 && format!("sha256:{named}") != config_digest {
        return Err(StoreError::BlobDigest {
            image: shown.into(),
            blob: e.config.clone(),
            expected: format!("sha256:{named}"),
            actual: config_digest.to_string(),
        });
    }
    let parsed = image_config::parse(&config_bytes).map_err(|reason| StoreError::Config {
        image: shown.into(),
        reason,
    })?;
    parsed.check_layer_count(shown, e.layers.len())?;
    Ok((config_bytes, config_digest, parsed))
}

/// A `docker save` entry's layers as manifest descriptors.
fn docker_save_layers(
    ar: &Archive,
    e: &DockerSaveEntry,
    diff_ids: &[DiffId],
    shown: &str,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let mut layers = Vec::new();
    for (path, diff_id) in e.layers.iter().zip(diff_ids) {
        let size = ar.size(path).map_err(|err| StoreError::Invalid {
            image: shown.into(),
            reason: err.to_string(),
        })?;
        // OCI-style saves name blobs by digest; old ones hold uncompressed tars, whose
        // digest is the diff id.
        let digest = match path.strip_prefix("blobs/sha256/") {
            Some(hex) => Digest::from_hex(hex).map_err(|reason| StoreError::Invalid {
                image: shown.into(),
                reason,
            })?,
            None => diff_id.as_digest().clone(),
        };
        layers.push(serde_json::json!({
            "mediaType": manifest::OCI_LAYER_TAR, "digest": digest, "size": size
        }));
    }
    Ok(layers)
}
