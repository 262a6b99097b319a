//! Garbage collection: which images, layers and blobs go ([`plan`], pure), and removing them
//! in an order that never leaves a record naming a missing layer ([`Store::gc`]).
//!
//! Kept: images a spec names, each spec's previous image (rollback), pinned images, images
//! unreferenced for less than the grace period, every layer a kept image or a live container
//! uses, and whatever a pull in progress is fetching. Past the disk budget (`max_disk`,
//! `min_free`) unprotected images go oldest-used first, grace or not.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::{DiffId, Digest, ImageSource};

use super::Store;
use super::error::StoreError;
use super::index::{ImageRecord, now_secs};

/// What must survive, as the agent knows it.
#[derive(Debug, Clone, Default)]
pub struct GcRoots {
    /// Images the specs name.
    pub images: Vec<ImageSource>,
    /// Image or manifest digests to keep: each spec's previous image, for rollback.
    pub digests: Vec<Digest>,
    /// Layer dirs that live containers' rootfs stack.
    pub layer_dirs: Vec<PathBuf>,
}

/// Everything the planner looks at, gathered from disk by [`Store::gc`].
#[derive(Debug, Clone)]
pub struct GcInput {
    pub records: Vec<ImageRecord>,
    /// Unpacked layers on disk: (diff id, bytes).
    pub layers: Vec<(DiffId, u64)>,
    /// Blob files: (file name, bytes, modified unix seconds).
    pub blobs: Vec<(String, u64, u64)>,
    /// Digests and diff ids of pulls in progress.
    pub active: HashSet<String>,
    pub root_images: HashSet<String>,
    pub root_digests: HashSet<Digest>,
    /// Diff ids of layers in use by containers.
    pub root_layers: HashSet<DiffId>,
    pub now: u64,
    pub grace: u64,
    pub max_disk: Option<u64>,
    pub min_free: u64,
    /// Free bytes on the state dir's filesystem now.
    pub free: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcPlan {
    pub remove_images: Vec<String>,
    pub remove_layers: Vec<DiffId>,
    pub remove_blobs: Vec<String>,
    /// Bytes the removals free.
    pub freed: u64,
    /// The budget is still exceeded after removing everything allowed.
    pub over_budget: bool,
}

/// What GC did.
pub type GcReport = GcPlan;

fn protected(r: &ImageRecord, input: &GcInput) -> bool {
    !r.pins.is_empty()
        || input.root_images.contains(&r.reference)
        || input.root_digests.contains(&r.reference_digest)
        || input.root_digests.contains(&r.manifest_digest)
}

/// Decides what to remove. Pure: the same input gives the same plan.
pub fn plan(input: &GcInput) -> GcPlan {
    let mut removed: BTreeSet<String> = input
        .records
        .iter()
        .filter(|r| !protected(r, input) && r.last_used.saturating_add(input.grace) <= input.now)
        .map(|r| r.reference.clone())
        .collect();

    let (mut layers, mut blobs) = unreferenced(input, &removed);
    let mut freed = sizes(input, &layers, &blobs);
    let over = |freed: u64| {
        let usage: u64 = input.layers.iter().map(|l| l.1).sum::<u64>()
            + input.blobs.iter().map(|b| b.1).sum::<u64>();
        let used_after = usage.saturating_sub(freed);
        input.max_disk.is_some_and(|m| used_after > m)
            || input.free.saturating_add(freed) < input.min_free
    };
    // Past the budget: drop unprotected images, least recently used first.
    let mut candidates: Vec<&ImageRecord> = input
        .records
        .iter()
        .filter(|r| !protected(r, input) && !removed.contains(&r.reference))
        .collect();
    candidates.sort_by(|a, b| (a.last_used, &a.reference).cmp(&(b.last_used, &b.reference)));
    for r in candidates {
        if !over(freed) {
            break;
        }
        removed.insert(r.reference.clone());
        (layers, blobs) = unreferenced(input, &removed);
        freed = sizes(input, &layers, &blobs);
    }
    GcPlan {
        remove_images: removed.into_iter().collect(),
        remove_layers: layers,
        remove_blobs: blobs,
        freed,
        over_budget: over(freed),
    }
}

/// Layers and blobs no kept record, container or pull needs, once `removed` records are gone.
fn unreferenced(input: &GcInput, removed: &BTreeSet<String>) -> (Vec<DiffId>, Vec<String>) {
    let kept: Vec<&ImageRecord> = input
        .records
        .iter()
        .filter(|r| !removed.contains(&r.reference))
        .collect();
    let mut needed: HashSet<&str> = HashSet::new();
    for r in &kept {
        needed.insert(r.reference_digest.as_str());
        needed.insert(r.manifest_digest.as_str());
        needed.insert(r.config_digest.as_str());
        for l in &r.layers {
            needed.insert(l.diff_id.as_str());
            needed.insert(l.blob_digest.as_str());
        }
    }
    let keep = |d: &str| needed.contains(d) || input.active.contains(d);
    let layers = input
        .layers
        .iter()
        .filter(|(d, _)| !keep(d.as_str()) && !input.root_layers.contains(d))
        .map(|(d, _)| d.clone())
        .collect();
    let blobs = input
        .blobs
        .iter()
        .filter(|(name, _, mtime)| match name.strip_suffix(".partial") {
            // Resume data: kept while a pull uses it or for the grace period.
            Some(hex) => {
                let d = format!("sha256:{hex}");
                !input.active.contains(&d) && mtime.saturating_add(input.grace) <= input.now
            }
            None => !keep(&format!("sha256:{name}")),
        })
        .map(|(n, _, _)| n.clone())
        .collect();
    (layers, blobs)
}

fn sizes(input: &GcInput, layers: &[DiffId], blobs: &[String]) -> u64 {
    let l: u64 = input
        .layers
        .iter()
        .filter(|(d, _)| layers.contains(d))
        .map(|l| l.1)
        .sum();
    let b: u64 = input
        .blobs
        .iter()
        .filter(|(n, _, _)| blobs.contains(n))
        .map(|b| b.1)
        .sum();
    l + b
}

impl Store {
    /// Gathers the planner's input from disk.
    pub fn gc_input(&self, roots: &GcRoots, grace: Duration) -> Result<GcInput, StoreError> {
        let layout = &self.inner.layout;
        let records = self.list()?;
        let mut layers = Vec::new();
        for name in dir_names(&layout.layers_dir())? {
            if name.starts_with('.') {
                continue;
            }
            let Ok(diff_id) = Digest::from_hex(&name).map(DiffId::new) else {
                // Not berth's: only a layer dir is ever removed.
                tracing::warn!(dir = %layout.layers_dir().join(&name).display(), "not a layer; left alone");
                continue;
            };
            let size = self.layer_size(&diff_id).unwrap_or(0);
            layers.push((diff_id, size));
        }
        let mut blobs = Vec::new();
        let bdir = layout.blobs_dir();
        for name in dir_names(&bdir)? {
            if name.starts_with('.') {
                continue;
            }
            let md = fs::symlink_metadata(bdir.join(&name))
                .map_err(|e| StoreError::io(bdir.join(&name), e))?;
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            blobs.push((name, md.len(), mtime));
        }
        let layers_dir = layout.layers_dir();
        let root_layers = roots
            .layer_dirs
            .iter()
            .filter(|p| p.parent() == Some(layers_dir.as_path()))
            .filter_map(|p| Digest::from_hex(p.file_name()?.to_str()?).ok())
            .map(DiffId::new)
            .collect();
        let free = super::space::available(&layout.state_dir)
            .map_err(|e| StoreError::io(&layout.state_dir, e))?;
        Ok(GcInput {
            records,
            layers,
            blobs,
            active: self
                .inner
                .active
                .lock()
                .expect("active")
                .keys()
                .cloned()
                .collect(),
            root_images: roots.images.iter().map(|s| s.to_string()).collect(),
            root_digests: roots.digests.iter().cloned().collect(),
            root_layers,
            now: now_secs(),
            grace: grace.as_secs(),
            max_disk: self.inner.limits.max_disk,
            min_free: self.inner.limits.min_free,
            free,
        })
    }

    /// Plans without removing anything (`berth prune --dry-run`).
    pub fn gc_plan(&self, roots: &GcRoots, grace: Duration) -> Result<GcPlan, StoreError> {
        Ok(plan(&self.gc_input(roots, grace)?))
    }

    /// Removes what [`plan`] says: records first, then layers, then blobs, so that a crash
    /// midway leaves only unreferenced leftovers for the next run. The caller holds the state
    /// dir lock.
    pub fn gc(&self, roots: &GcRoots, grace: Duration) -> Result<GcReport, StoreError> {
        self.gc_making_room(roots, grace, 0)
    }

    /// [`Store::gc`] that also makes `room` bytes above `min_free` for a download: unprotected
    /// images go, least recently used first, until it fits (or nothing more may go).
    pub fn gc_making_room(
        &self,
        roots: &GcRoots,
        grace: Duration,
        room: u64,
    ) -> Result<GcReport, StoreError> {
        let _g = self.inner.records.lock().expect("records");
        let mut input = self.gc_input(roots, grace)?;
        input.min_free = input.min_free.saturating_add(room);
        let plan = plan(&input);
        let idx = &self.inner.index;
        for r in &plan.remove_images {
            idx.remove(r)
                .map_err(|e| StoreError::io(idx.record_path(r), e))?;
            tracing::info!(image = %r, "removed image");
        }
        for d in &plan.remove_layers {
            // Re-checked under the active lock: a pull may have started since planning.
            if self
                .inner
                .active
                .lock()
                .expect("active")
                .contains_key(d.as_str())
            {
                continue;
            }
            let dir = self.layer_dir(d);
            super::layer::remove_tree(&dir).map_err(|e| StoreError::io(&dir, e))?;
            idx.remove_layer(d).map_err(|e| StoreError::io(&dir, e))?;
        }
        let bdir = self.inner.layout.blobs_dir();
        for b in &plan.remove_blobs {
            let key = format!("sha256:{}", b.trim_end_matches(".partial"));
            if self.inner.active.lock().expect("active").contains_key(&key) {
                continue;
            }
            crate::fsutil::remove_file_if_exists(&bdir.join(b))
                .map_err(|e| StoreError::io(bdir.join(b), e))?;
        }
        Ok(plan)
    }
}

fn dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| StoreError::io(dir, e))?;
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
