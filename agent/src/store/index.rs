//! The image index: one record per reference (what it resolved to, its config, layers, pins and
//! last use), and one small record per unpacked layer (its size).
//!
//! ```text
//! images/refs/<sha256 of the reference>.json   ImageRecord
//! images/layers/<diffid-hex>.json              LayerRecord
//! images/layers/<diffid-hex>.files.json        its regular files by content digest
//! ```
//! Records are written with `atomic_write`: a record exists only once everything it names is
//! in place.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use berth_spec::{DiffId, Digest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsutil;
use crate::image::ImageConfig;
use crate::registry::Platform;

/// A pin an operator sets with `berth image pin`.
pub const PIN_OPERATOR: &str = "operator";
/// Images imported from an archive are pinned: there may be no registry to pull them again.
pub const PIN_IMPORT: &str = "import";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// The blob's digest (compressed, as the manifest lists it).
    #[serde(rename = "digest")]
    pub blob_digest: Digest,
    /// The digest of the uncompressed tar (the image config's `rootfs.diff_ids`): it names the
    /// unpacked dir.
    pub diff_id: DiffId,
    /// Compressed bytes.
    pub size: u64,
    pub media_type: String,
    /// The manifest's annotations of the layer (a zstd:chunked table of contents' position).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The key: a normalised registry reference, or `oci-archive:`/`oci:` source.
    pub reference: String,
    /// What the reference resolved to at the registry or in the archive: an index's digest,
    /// or the manifest's when there is no index.
    #[serde(rename = "digest")]
    pub reference_digest: Digest,
    /// The platform manifest's digest: the image's identity (what containers are made from).
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub platform: Platform,
    /// Bottom layer first.
    pub layers: Vec<LayerRef>,
    pub config: ImageConfig,
    /// Compressed bytes of all layers.
    pub size: u64,
    /// Unpacked bytes of all layers.
    pub unpacked_size: u64,
    /// Why the image must stay: `operator`, `import`, or names the agent chooses.
    #[serde(default)]
    pub pins: BTreeSet<String>,
    /// Unix seconds.
    pub pulled_at: u64,
    pub last_used: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub diff_id: DiffId,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
}

/// A regular file of an unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The digest of the content.
    pub digest: Digest,
    pub size: u64,
    /// Relative to the layer dir.
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct Index {
    refs: PathBuf,
    layers: PathBuf,
}

impl Index {
    pub fn new(images_dir: &Path) -> Self {
        Index {
            refs: images_dir.join("refs"),
            layers: images_dir.join("layers"),
        }
    }

    pub fn create_dirs(&self) -> io::Result<()> {
        fsutil::create_private_dir_all(&self.refs)?;
        fsutil::create_private_dir_all(&self.layers)
    }

    pub fn record_path(&self, reference: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(reference.as_bytes()));
        self.refs.join(format!("{key}.json"))
    }

    pub fn get(&self, reference: &str) -> io::Result<Option<ImageRecord>> {
        let r: Option<ImageRecord> = fsutil::read_json(&self.record_path(reference))?;
        // A hash collision is not a concern; a hand-copied file is.
        Ok(r.filter(|r| r.reference == reference))
    }

    pub fn put(&self, record: &ImageRecord) -> io::Result<()> {
        fsutil::atomic_write_json(&self.record_path(&record.reference), record)
    }

    pub fn remove(&self, reference: &str) -> io::Result<()> {
        fsutil::remove_file_if_exists(&self.record_path(reference))
    }

    /// Every record, sorted by reference. Unreadable records are reported, not fatal.
    pub fn all(&self) -> io::Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.refs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in rd {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fsutil::read_json::<ImageRecord>(&path) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable image record")
                }
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    fn layer_path(&self, diff_id: &DiffId) -> PathBuf {
        self.layers.join(format!("{}.json", diff_id.hex()))
    }

    pub fn layer(&self, diff_id: &DiffId) -> io::Result<Option<LayerRecord>> {
        fsutil::read_json(&self.layer_path(diff_id))
    }

    pub fn put_layer(&self, rec: &LayerRecord) -> io::Result<()> {
        fsutil::atomic_write_json(&self.layer_path(&rec.diff_id), rec)
    }

    pub fn remove_layer(&self, diff_id: &DiffId) -> io::Result<()> {
        fsutil::remove_file_if_exists(&self.files_path(diff_id))?;
        fsutil::remove_file_if_exists(&self.layer_path(diff_id))
    }

    fn files_path(&self, diff_id: &DiffId) -> PathBuf {
        self.layers.join(format!("{}.files.json", diff_id.hex()))
    }

    /// The regular files of an unpacked layer, by content digest (what a partial pull reuses).
    pub fn layer_files(&self, diff_id: &DiffId) -> io::Result<Option<Vec<FileEntry>>> {
        fsutil::read_json(&self.files_path(diff_id))
    }

    pub fn put_layer_files(&self, diff_id: &DiffId, files: &[FileEntry]) -> io::Result<()> {
        fsutil::atomic_write_json(&self.files_path(diff_id), &files)
    }
}

/// Seconds since the epoch, for records.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
