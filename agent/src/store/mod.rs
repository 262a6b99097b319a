//! The content-addressed image store: verified blobs, one unpacked dir per layer (shared by
//! every image that uses it), and an index from reference to image.
//!
//! ```text
//! <state_dir>/blobs/sha256/<hex>            manifests, configs (layers only with Keep::BlobsOnly)
//! <state_dir>/blobs/sha256/<hex>.partial    an interrupted layer download, resumed next time
//! <state_dir>/layers/sha256/<diffid-hex>/   unpacked layers: overlay lowerdirs
//! <state_dir>/layers/sha256/.tmp-*          unpacks in progress (removed at open)
//! <state_dir>/images/refs/*.json            reference -> image record (see `index`)
//! <state_dir>/images/layers/*.json          layer sizes; `*.files.json`: their files by digest
//! ```
//!
//! Crash safety: a layer dir appears (by rename, after syncfs) only once its blob digest, size
//! and diff id matched; an image record appears (by atomic write) only once all its layers are
//! in place. A pull killed at any point leaves every record as it was; finished layers stay as
//! unreferenced dirs (reused by the next pull, or collected by GC) and the partial blob stays
//! for a resume.
//!
//! # Layout
//! - [`pull`]: registry -> store; [`layer`]: one layer's verified stream; [`unpack`]: tar -> dir;
//!   `partial`: resume data; `active`: what pulls in progress hold (shared downloads, GC);
//!   [`chunked`]: partial pulls of zstd:chunked layers, reusing files the store holds.
//! - [`index`]: image and layer records; [`image_config`]: the config blob.
//! - [`import`]: OCI layouts and `docker save` archives; [`scan`]: the import directory.
//! - [`gc`]: what to delete (pure) and deleting it; [`space`]: free space.
//! - [`lock`]: the state dir lock the CLI and agent share.

mod active;
pub mod chunked;
pub mod error;
pub mod gc;
pub mod image_config;
pub mod import;
pub mod index;
pub mod layer;
pub mod lock;
mod partial;
pub mod pull;
pub mod scan;
pub mod space;
pub mod unpack;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_spec::config::ImagesConfig;
use berth_spec::{DiffId, Digest, ImageSource};

use crate::fsutil;
use crate::image::ResolvedImage;
use crate::layout::Layout;

pub use error::{PullError, StoreError};
pub use gc::{GcReport, GcRoots};
pub use index::{ImageRecord, PIN_IMPORT, PIN_OPERATOR};
pub use pull::{Keep, Progress, PullEvent, PullOptions, no_progress};
pub use scan::{ImportOutcome, scan_import_dir};

/// The image store of one state dir. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("state_dir", &self.inner.layout.state_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    layout: Layout,
    limits: ImagesConfig,
    index: index::Index,
    /// One lock per layer or blob being fetched, so concurrent pulls share one download.
    inflight: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Layers and blobs that pulls in progress will reference: GC keeps them.
    active: Mutex<HashMap<String, usize>>,
    /// Serialises read-modify-write of records (pins, last use).
    records: Mutex<()>,
}

impl Store {
    /// Opens (creating) the store for writing and removes leftovers of crashed unpacks. The
    /// caller holds the state dir lock (see [`lock::StateLock`]).
    pub fn open(layout: &Layout, limits: &ImagesConfig) -> Result<Store, StoreError> {
        let store = Store::open_read_only(layout, limits);
        for d in [layout.blobs_dir(), layout.layers_dir()] {
            // Layer roots (with whatever devices and setuid files an image ships) sit in 0700
            // dirs: nobody but root ever reaches into one.
            fsutil::create_private_dir_all(&d).map_err(|e| StoreError::io(&d, e))?;
        }
        store
            .inner
            .index
            .create_dirs()
            .map_err(|e| StoreError::io(layout.images_dir(), e))?;
        store.remove_stale_temps()?;
        Ok(store)
    }

    /// Opens the store for reading only (`berth images`): creates and removes nothing.
    pub fn open_read_only(layout: &Layout, limits: &ImagesConfig) -> Store {
        Store {
            inner: Arc::new(Inner {
                layout: layout.clone(),
                limits: limits.clone(),
                index: index::Index::new(&layout.images_dir()),
                inflight: Mutex::default(),
                active: Mutex::default(),
                records: Mutex::default(),
            }),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    fn remove_stale_temps(&self) -> Result<(), StoreError> {
        let dir = self.inner.layout.layers_dir();
        let rd = fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        for entry in rd.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let p = entry.path();
                tracing::info!(path = %p.display(), "removing an unpack left by a crash");
                layer::remove_tree(&p).map_err(|e| StoreError::io(&p, e))?;
            }
        }
        Ok(())
    }

    // Store paths are made from typed digests only: a `Digest` or `DiffId` exists once its
    // text was checked, so its hex part is one plain file name (never `..` or a `/`).

    /// The unpacked dir of a layer.
    pub fn layer_dir(&self, diff_id: &DiffId) -> PathBuf {
        self.inner.layout.layers_dir().join(diff_id.hex())
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.layout.blobs_dir().join(digest.hex())
    }

    pub(crate) fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .layout
            .blobs_dir()
            .join(format!("{}.partial", digest.hex()))
    }

    pub(crate) fn layer_size(&self, diff_id: &DiffId) -> Option<u64> {
        self.inner
            .index
            .layer(diff_id)
            .ok()
            .flatten()
            .map(|r| r.size)
    }

    /// Writes a small verified blob (manifest, config).
    pub(crate) fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let p = self.blob_path(digest);
        // Concurrent pulls of one image write the same blob: one writes, the others find it.
        let lock = self.inflight(digest.as_str());
        let _g = lock.lock().expect("inflight");
        if p.exists() {
            return Ok(());
        }
        fsutil::atomic_write(&p, bytes).map_err(|e| StoreError::io(&p, e))
    }

    /// Moves a verified partial download into place as a blob.
    pub(crate) fn commit_blob(&self, partial: &Path, digest: &Digest) -> io::Result<()> {
        fs::File::open(partial)?.sync_all()?;
        let dest = self.blob_path(digest);
        fs::rename(partial, &dest)?;
        fsutil::sync_dir(&self.inner.layout.blobs_dir())
    }

    pub(crate) fn resolved(&self, r: &ImageRecord) -> ResolvedImage {
        ResolvedImage {
            reference_digest: r.reference_digest.clone(),
            manifest_digest: r.manifest_digest.clone(),
            config: r.config.clone(),
            layers: r
                .layers
                .iter()
                .map(|l| self.layer_dir(&l.diff_id))
                .collect(),
        }
    }

    /// The record for a source: by its exact reference, else (for a reference pinned by
    /// digest) any record of the same repository with that digest. A digest reference only
    /// ever resolves to that digest: a record found under its key that names other content
    /// (an older berth's import of an archive claiming the name, a hand-made file) is ignored.
    pub fn record(&self, source: &ImageSource) -> Result<Option<ImageRecord>, StoreError> {
        let key = source.to_string();
        let idx = &self.inner.index;
        let pinned = match source {
            ImageSource::Registry(r) => r.digest.as_deref(),
            _ => None,
        };
        let is_pinned =
            |rec: &ImageRecord, d: &str| rec.reference_digest == d || rec.manifest_digest == d;
        if let Some(r) = idx
            .get(&key)
            .map_err(|e| StoreError::io(idx.record_path(&key), e))?
        {
            match pinned {
                Some(d) if !is_pinned(&r, d) => {
                    tracing::warn!(
                        image = %key,
                        recorded = %r.manifest_digest,
                        "ignoring an image record whose content is not the digest its reference pins"
                    );
                }
                _ => return Ok(Some(r)),
            }
        }
        if let ImageSource::Registry(r) = source
            && let Some(d) = &r.digest
        {
            let name = r.name();
            let all = self.list()?;
            return Ok(all.into_iter().find(|rec| {
                is_pinned(rec, d)
                    && berth_spec::ImageReference::parse(&rec.reference)
                        .map(|x| x.name() == name)
                        .unwrap_or(false)
            }));
        }
        Ok(None)
    }

    /// The image for a source if it is in the store with every layer in place (local lookup;
    /// no network, no writes).
    pub fn resolve(&self, source: &ImageSource) -> Result<Option<ResolvedImage>, StoreError> {
        let Some(r) = self.record(source)? else {
            return Ok(None);
        };
        let resolved = self.resolved(&r);
        if resolved.layers.iter().all(|l| l.is_dir()) {
            Ok(Some(resolved))
        } else {
            tracing::warn!(image = %r.reference, "image record names a missing layer; treating it as absent");
            Ok(None)
        }
    }

    /// Every image, sorted by reference.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let idx = &self.inner.index;
        idx.all()
            .map_err(|e| StoreError::io(self.inner.layout.images_dir(), e))
    }

    fn update(
        &self,
        source: &ImageSource,
        f: impl FnOnce(&mut ImageRecord),
    ) -> Result<ImageRecord, StoreError> {
        let _g = self.inner.records.lock().expect("records");
        let mut r = self.record(source)?.ok_or_else(|| StoreError::NotFound {
            image: source.to_string(),
        })?;
        f(&mut r);
        self.inner
            .index
            .put(&r)
            .map_err(|e| StoreError::io(self.inner.index.record_path(&r.reference), e))?;
        Ok(r)
    }

    /// Protects an image from GC for `reason` (`operator`, `import`, or the agent's own).
    pub fn pin(&self, source: &ImageSource, reason: &str) -> Result<ImageRecord, StoreError> {
        self.update(source, |r| {
            r.pins.insert(reason.to_string());
        })
    }

    pub fn unpin(&self, source: &ImageSource, reason: &str) -> Result<ImageRecord, StoreError> {
        self.update(source, |r| {
            r.pins.remove(reason);
        })
    }

    /// Records that a container was made from the image now (GC removes the oldest-used first).
    pub fn mark_used(&self, source: &ImageSource) -> Result<(), StoreError> {
        self.update(source, |r| r.last_used = index::now_secs())
            .map(|_| ())
    }
}
