//! Pulling an image: resolve the reference to this host's manifest, check limits and free
//! space, fetch the config, then stream the missing layers (several at once) into the store,
//! and only then write the index record that makes the image visible.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use berth_spec::{DiffId, Digest, ImageReference};

use crate::image::ResolvedImage;
use crate::registry::manifest::{Compression, Descriptor, ImageManifest, Manifest};
use crate::registry::platform::{self, Platform};
use crate::registry::{BlobReader, RegistryClient, RegistryError};

use super::Store;
use super::error::StoreError;
use super::image_config;
use super::index::{ImageRecord, LayerRecord, LayerRef, now_secs};
use super::layer::{self, LayerSpec, Meter};
use super::partial::{PartialSource, Tee, prepare_partial};

/// The largest image config berth reads: 4 MiB, as containers/image (podman, skopeo); honest
/// configs are kilobytes. Its lists are bounded too (see `image_config`).
pub(crate) const MAX_CONFIG_SIZE: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Layers fetched and unpacked at once.
    pub concurrency: usize,
    /// What a pull leaves in the store.
    pub keep: Keep,
    /// The platform to resolve an index for; this host's by default.
    pub platform: Option<Platform>,
}

impl PullOptions {
    /// The agent's options: `[images] parallel_layers` layers at once.
    pub fn from_config(images: &berth_spec::config::ImagesConfig) -> Self {
        PullOptions {
            concurrency: images.parallel_layers as usize,
            ..PullOptions::default()
        }
    }
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            concurrency: 4,
            keep: Keep::Unpacked,
            platform: None,
        }
    }
}

/// What a pull leaves in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Layers unpacked into `layers/` (blobs only while they stream): what containers run on.
    Unpacked,
    /// The verified blobs in `blobs/`, not unpacked (pre-staging, benchmarks).
    BlobsOnly,
}

/// What a pull reports as it goes (for progress bars and metrics).
#[derive(Debug, Clone)]
pub enum PullEvent<'a> {
    Resolved {
        image: &'a str,
        /// What the reference resolved to: an index's digest, or the manifest's.
        reference_digest: &'a Digest,
        manifest_digest: &'a Digest,
        platform: &'a Platform,
        /// (blob digest, compressed size, already in the store)
        layers: &'a [(Digest, u64, bool)],
    },
    /// Layer events name the layer by its blob digest.
    LayerStarted {
        digest: &'a Digest,
        size: u64,
        /// Bytes already on disk from an interrupted pull.
        resumed_from: u64,
    },
    /// Compressed bytes received from the network.
    Bytes {
        digest: &'a Digest,
        n: u64,
    },
    LayerDone {
        digest: &'a Digest,
    },
    Retry {
        what: &'a str,
        attempt: u32,
        wait: Duration,
        error: &'a str,
    },
}

pub type Progress<'a> = &'a (dyn Fn(&PullEvent<'_>) + Sync);

/// One layer's download, as `fetch_layer` runs it.
struct LayerFetch<'a> {
    client: &'a RegistryClient,
    image: &'a ImageReference,
    l: &'a LayerRef,
    spec: LayerSpec<'a>,
    /// Where its unpacked tree goes.
    dest: PathBuf,
    /// Its blob's bytes so far, kept across tries.
    partial: PathBuf,
    progress: Progress<'a>,
    cancel: &'a AtomicBool,
}

impl LayerFetch<'_> {
    fn on_bytes(&self, n: u64) {
        (self.progress)(&PullEvent::Bytes {
            digest: &self.l.blob_digest,
            n,
        })
    }
}

/// A progress sink that ignores everything.
pub fn no_progress(_: &PullEvent<'_>) {}

/// An image as its registry describes it, before any layer is fetched.
struct Remote {
    top: crate::registry::FetchedManifest,
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    manifest_digest: Digest,
    config_bytes: Vec<u8>,
    parsed: image_config::ParsedConfig,
    layers: Vec<LayerRef>,
}

struct Job<'a> {
    layer: &'a LayerRef,
}

impl Store {
    /// Pulls `image` into the store and returns it ready to run. Blocking: on tokio, call it
    /// from `spawn_blocking`.
    pub fn pull(
        &self,
        client: &RegistryClient,
        image: &ImageReference,
        opts: &PullOptions,
        progress: Progress<'_>,
    ) -> Result<ResolvedImage, StoreError> {
        // Every error names the image, a full disk under a store file included.
        self.pull_unnamed(client, image, opts, progress)
            .map_err(|e| e.for_image(&image.to_string()))
    }

    fn pull_unnamed(
        &self,
        client: &RegistryClient,
        image: &ImageReference,
        opts: &PullOptions,
        progress: Progress<'_>,
    ) -> Result<ResolvedImage, StoreError> {
        let name = image.to_string();
        let hook = |e: &RegistryError, attempt: u32, wait: Duration| {
            progress(&PullEvent::Retry {
                what: &name,
                attempt,
                wait,
                error: &e.to_string(),
            })
        };
        let Remote {
            top,
            manifest,
            manifest_bytes,
            manifest_digest,
            config_bytes,
            parsed,
            layers,
        } = self.remote(client, image, opts, &hook)?;

        let _active = self.activate(&layers);
        let summary: Vec<(Digest, u64, bool)> = layers
            .iter()
            .map(|l| (l.blob_digest.clone(), l.size, self.has_layer(l, opts.keep)))
            .collect();
        progress(&PullEvent::Resolved {
            image: &name,
            reference_digest: &top.digest,
            manifest_digest: &manifest_digest,
            platform: &parsed.platform,
            layers: &summary,
        });
        let missing: Vec<&LayerRef> = layers
            .iter()
            .zip(&summary)
            .filter(|(_, s)| !s.2)
            .map(|(l, _)| l)
            .collect();
        self.check_space(&name, &missing, opts.keep)?;

        let jobs: Vec<Job<'_>> = missing.into_iter().map(|layer| Job { layer }).collect();
        let unpacked = self.run_jobs(client, image, &name, &jobs, opts, progress)?;

        self.put_blob(&manifest_digest, &manifest_bytes)?;
        if top.digest != manifest_digest {
            self.put_blob(&top.digest, &top.bytes)?;
        }
        self.put_blob(&manifest.config.digest, &config_bytes)?;
        let unpacked_size = layers
            .iter()
            .map(|l| {
                let fresh = unpacked.iter().find(|(d, _)| d == &l.diff_id);
                fresh
                    .map(|(_, size)| *size)
                    .or_else(|| self.layer_size(&l.diff_id))
                    .unwrap_or(0)
            })
            .sum();
        let now = now_secs();
        let previous = self
            .inner
            .index
            .get(&name)
            .map_err(|e| StoreError::io(self.inner.index.record_path(&name), e))?;
        let record = ImageRecord {
            reference: name.clone(),
            reference_digest: top.digest.clone(),
            manifest_digest,
            config_digest: manifest.config.digest.clone(),
            platform: parsed.platform.clone(),
            size: layers.iter().map(|l| l.size).sum(),
            unpacked_size,
            layers,
            config: parsed.config,
            pins: previous.map(|p| p.pins).unwrap_or_default(),
            pulled_at: now,
            last_used: now,
        };
        if opts.keep == Keep::BlobsOnly {
            // Nothing is runnable yet: no record, so `resolve` does not offer it.
            return Ok(self.resolved(&record));
        }
        self.save_record(image, &record)?;
        Ok(self.resolved(&record))
    }

    /// Saves a pulled image's record under its name; when the tag moved, the image it pointed
    /// to stays known by its digest, so a container can be rolled back to it (GC decides when
    /// it goes).
    fn save_record(&self, image: &ImageReference, record: &ImageRecord) -> Result<(), StoreError> {
        let name = &record.reference;
        let _g = self.inner.records.lock().expect("records");
        if let Some(old) = self.inner.index.get(name).ok().flatten()
            && old.manifest_digest != record.manifest_digest
        {
            let key = format!("{}@{}", image.name(), old.manifest_digest);
            let kept = ImageRecord {
                reference: key.clone(),
                ..old
            };
            if let Err(e) = self.inner.index.put(&kept) {
                tracing::warn!(image = %key, "cannot keep the previous image: {e}");
            }
        }
        self.inner
            .index
            .put(record)
            .map_err(|e| StoreError::io(self.inner.index.record_path(name), e))
    }

    /// What `image` is at its registry now: its manifest (resolved to this platform), its
    /// config and layers, all checked against limits and digests; nothing downloaded beyond
    /// the manifest and config.
    fn remote(
        &self,
        client: &RegistryClient,
        image: &ImageReference,
        opts: &PullOptions,
        hook: &(dyn Fn(&RegistryError, u32, Duration) + Sync),
    ) -> Result<Remote, StoreError> {
        let name = image.to_string();
        let limits = &self.inner.limits;
        let reg = |source| StoreError::Registry {
            image: name.clone(),
            source,
        };
        let top = client
            .fetch_manifest(image, image.reference(), limits.max_manifest_size, hook)
            .map_err(reg)?;
        let want = opts.platform.clone().unwrap_or_else(Platform::host);
        let parse = |bytes: &[u8], ct: Option<&str>| {
            Manifest::parse(bytes, ct).map_err(|source| StoreError::Manifest {
                image: name.clone(),
                source,
            })
        };
        let (manifest, manifest_bytes, manifest_digest) =
            match parse(&top.bytes, top.content_type.as_deref())? {
                Manifest::Image(m) => (m, top.bytes.clone(), top.digest.clone()),
                Manifest::Index(idx) => {
                    let desc = select_platform(&name, &want, &idx.manifests)?;
                    self.platform_manifest(client, image, desc, hook)?
                }
            };
        self.check_manifest(&name, &manifest)?;
        let config_bytes = client
            .fetch_small_blob(
                image,
                &manifest.config.digest,
                manifest.config.size,
                MAX_CONFIG_SIZE,
                &hook,
            )
            .map_err(reg)?;
        let parsed = image_config::parse(&config_bytes).map_err(|reason| StoreError::Config {
            image: name.clone(),
            reason,
        })?;
        parsed.check_layer_count(&name, manifest.layers.len())?;
        if platform::score(&want, &parsed.platform).is_none() {
            return Err(StoreError::NoPlatform {
                image: name.clone(),
                wanted: want.to_string(),
                offered: parsed.platform.to_string(),
            });
        }
        let layers: Vec<LayerRef> = manifest
            .layers
            .iter()
            .zip(&parsed.diff_ids)
            .map(|(d, diff)| LayerRef {
                blob_digest: d.digest.clone(),
                diff_id: diff.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
                annotations: d.annotations.clone(),
            })
            .collect();
        Ok(Remote {
            top,
            manifest,
            manifest_bytes,
            manifest_digest,
            config_bytes,
            parsed,
            layers,
        })
    }

    /// An index's entry for the wanted platform: its manifest, bytes and digest (an index
    /// again is refused).
    fn platform_manifest(
        &self,
        client: &RegistryClient,
        image: &ImageReference,
        desc: &Descriptor,
        hook: &(dyn Fn(&RegistryError, u32, Duration) + Sync),
    ) -> Result<(ImageManifest, Vec<u8>, Digest), StoreError> {
        let name = image.to_string();
        let sub = client
            .fetch_manifest(
                image,
                desc.digest.as_str(),
                self.inner.limits.max_manifest_size,
                hook,
            )
            .map_err(|source| StoreError::Registry {
                image: name.clone(),
                source,
            })?;
        if sub.bytes.len() as u64 != desc.size {
            return Err(StoreError::BlobSize {
                image: name,
                blob: desc.digest.to_string(),
                expected: desc.size,
                actual: sub.bytes.len().to_string(),
            });
        }
        match Manifest::parse(&sub.bytes, sub.content_type.as_deref()) {
            Ok(Manifest::Image(m)) => Ok((m, sub.bytes, sub.digest)),
            Ok(Manifest::Index(_)) => Err(StoreError::Invalid {
                image: name,
                reason: format!("index entry {} is itself an index", desc.digest),
            }),
            Err(source) => Err(StoreError::Manifest {
                image: name,
                source,
            }),
        }
    }

    /// What a tag points to now (platform manifest digest, and the config's created time),
    /// without downloading layers: how `pull = "always"` notices a moved tag.
    pub fn check(
        &self,
        client: &RegistryClient,
        image: &ImageReference,
    ) -> Result<(Digest, Option<u64>), StoreError> {
        let hook = |_: &RegistryError, _: u32, _: Duration| {};
        let r = self.remote(client, image, &PullOptions::default(), &hook)?;
        Ok((r.manifest_digest, r.parsed.created))
    }

    fn check_manifest(&self, name: &str, m: &ImageManifest) -> Result<(), StoreError> {
        let limits = &self.inner.limits;
        if m.layers.len() > limits.max_layers as usize {
            return Err(StoreError::Limit {
                image: name.to_string(),
                what: format!("{} layers", m.layers.len()),
                limit: limits.max_layers.into(),
                setting: "max_layers",
            });
        }
        Ok(())
    }

    fn has_layer(&self, l: &LayerRef, keep: Keep) -> bool {
        match keep {
            Keep::BlobsOnly => self.blob_path(&l.blob_digest).exists(),
            Keep::Unpacked => self.layer_dir(&l.diff_id).exists(),
        }
    }

    /// Fails early when the missing layers cannot fit: a compressed layer needs its blob while
    /// it streams plus (typically) two to three times its size unpacked.
    fn check_space(&self, name: &str, missing: &[&LayerRef], keep: Keep) -> Result<(), StoreError> {
        let needed: u64 = missing
            .iter()
            .map(|l| {
                let factor = match (keep, Compression::of_media_type(&l.media_type)) {
                    (Keep::BlobsOnly, _) => 1,
                    (Keep::Unpacked, Some(Compression::None)) => 2,
                    _ => 3,
                };
                l.size.saturating_mul(factor)
            })
            .sum();
        let dir = self.inner.layout.state_dir.clone();
        let available = super::space::available(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let min_free = self.inner.limits.min_free;
        if !super::space::fits(needed, available, min_free) {
            return Err(StoreError::NoSpace {
                image: name.to_string(),
                path: dir,
                needed,
                available,
                min_free,
            });
        }
        Ok(())
    }

    /// Runs the layer jobs on up to `concurrency` threads; the first failure cancels the rest.
    /// Returns (diff id, unpacked size) for each layer done.
    fn run_jobs(
        &self,
        client: &RegistryClient,
        image: &ImageReference,
        name: &str,
        jobs: &[Job<'_>],
        opts: &PullOptions,
        progress: Progress<'_>,
    ) -> Result<Vec<(DiffId, u64)>, StoreError> {
        let cancel = AtomicBool::new(false);
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, Result<u64, StoreError>)>> = Mutex::new(Vec::new());
        let workers = opts.concurrency.clamp(1, 16).min(jobs.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        if cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let r = self
                            .fetch_layer(client, image, name, job.layer, opts, progress, &cancel);
                        if r.is_err() {
                            cancel.store(true, Ordering::Relaxed);
                        }
                        results.lock().expect("results").push((i, r));
                    }
                });
            }
        });
        let mut results = results.into_inner().expect("results");
        results.sort_by_key(|(i, _)| *i);
        let mut done = Vec::new();
        let mut first_err = None;
        for (i, r) in results {
            match r {
                Ok(size) => done.push((jobs[i].layer.diff_id.clone(), size)),
                // A cancelled layer only echoes the failure that cancelled it.
                Err(StoreError::Cancelled { .. }) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None if cancel.load(Ordering::Relaxed) => Err(StoreError::Cancelled {
                image: name.to_string(),
            }),
            None => Ok(done),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fetch_layer(
        &self,
        client: &RegistryClient,
        image: &ImageReference,
        name: &str,
        l: &LayerRef,
        opts: &PullOptions,
        progress: Progress<'_>,
        cancel: &AtomicBool,
    ) -> Result<u64, StoreError> {
        let key = if opts.keep == Keep::BlobsOnly {
            l.blob_digest.as_str()
        } else {
            l.diff_id.as_str()
        };
        // One download per layer in this process: a second pull of it waits, then finds it.
        let lock = self.inflight(key);
        let _guard = lock.lock().expect("inflight");
        if self.has_layer(l, opts.keep) {
            progress(&PullEvent::LayerDone {
                digest: &l.blob_digest,
            });
            return Ok(self.layer_size(&l.diff_id).unwrap_or(0));
        }
        let job = LayerFetch {
            client,
            image,
            l,
            spec: LayerSpec {
                image: name,
                digest: &l.blob_digest,
                size: l.size,
                diff_id: &l.diff_id,
                max_unpacked: self.inner.limits.max_layer_size,
                max_entries: self.inner.limits.max_layer_entries,
                min_free: self.inner.limits.min_free,
            },
            dest: self.layer_dir(&l.diff_id),
            partial: self.partial_path(&l.blob_digest),
            progress,
            cancel,
        };
        if opts.keep == Keep::Unpacked
            && let Some(size) = self.fetch_chunks(&job)?
        {
            return Ok(size);
        }
        self.fetch_whole(&job, opts)
    }

    /// A zstd:chunked layer, by the chunks the store does not hold yet: its size, or `None`
    /// when it must be pulled whole (no usable table of contents, a failed partial pull, or
    /// an interrupted full download to resume).
    fn fetch_chunks(&self, job: &LayerFetch<'_>) -> Result<Option<u64>, StoreError> {
        let l = job.l;
        let Some(loc) = super::chunked::toc::locate(&l.annotations, l.size) else {
            return Ok(None);
        };
        if fs::metadata(&job.partial).map(|m| m.len()).unwrap_or(0) > 0 {
            return Ok(None);
        }
        let loc = match loc {
            Ok(loc) => loc,
            Err(reason) => {
                tracing::info!(layer = %l.blob_digest, "zstd:chunked annotations unusable, pulling whole: {reason}");
                return Ok(None);
            }
        };
        (job.progress)(&PullEvent::LayerStarted {
            digest: &l.blob_digest,
            size: l.size,
            resumed_from: 0,
        });
        let on_bytes = |n| job.on_bytes(n);
        match self.pull_partial(
            job.client, job.image, &job.spec, &loc, &job.dest, job.cancel, &on_bytes,
        ) {
            Ok(Some(r)) => {
                tracing::info!(
                    layer = %l.blob_digest,
                    fetched = r.fetched,
                    of = l.size,
                    requests = r.requests,
                    reused_files = r.reused_files,
                    reused_bytes = r.reused,
                    "partial pull"
                );
                self.index_layer(job, r.size)?;
                Ok(Some(r.size))
            }
            Ok(None) => Ok(None),
            Err(_) if job.cancel.load(Ordering::Relaxed) => Err(StoreError::Cancelled {
                image: job.spec.image.to_string(),
            }),
            Err(e) => {
                tracing::warn!(layer = %l.blob_digest, "partial pull failed, pulling the layer whole: {e}");
                Ok(None)
            }
        }
    }

    /// The whole blob, resumed from the bytes an earlier try kept: unpacked as it streams in
    /// (or only verified and kept, to download without unpacking).
    fn fetch_whole(&self, job: &LayerFetch<'_>, opts: &PullOptions) -> Result<u64, StoreError> {
        let (l, partial) = (job.l, &job.partial);
        let hook = |e: &RegistryError, attempt: u32, wait: Duration| {
            (job.progress)(&PullEvent::Retry {
                what: l.blob_digest.as_str(),
                attempt,
                wait,
                error: &e.to_string(),
            })
        };
        let on_bytes = |n| job.on_bytes(n);
        let mut fresh_retry_done = false;
        loop {
            let resumed =
                prepare_partial(partial, l.size).map_err(|e| StoreError::io(partial, e))?;
            (job.progress)(&PullEvent::LayerStarted {
                digest: &l.blob_digest,
                size: l.size,
                resumed_from: resumed,
            });
            let source = PartialSource::open(partial, resumed)
                .map_err(|e| StoreError::io(partial, e))?
                .then(Tee {
                    inner: BlobReader::new(job.client, job.image, &l.blob_digest, l.size, resumed)
                        .on_reconnect(&hook),
                    out: OpenOptions::new()
                        .append(true)
                        .open(partial)
                        .map_err(|e| StoreError::io(partial, e))?,
                    on_bytes: &on_bytes,
                });
            let meter = Meter::new(job.cancel);
            let result = if opts.keep == Keep::BlobsOnly {
                layer::verify_stream(&job.spec, source, &meter).and_then(|()| {
                    self.commit_blob(partial, &l.blob_digest)
                        .map_err(|e| StoreError::io(partial, e))
                })
            } else {
                self.unpack_layer_from(&job.spec, source, &meter, &job.dest)
            };
            match result {
                Ok(()) => {
                    let size = meter.unpacked_bytes();
                    if opts.keep == Keep::BlobsOnly {
                        (job.progress)(&PullEvent::LayerDone {
                            digest: &l.blob_digest,
                        });
                    } else {
                        let _ = fs::remove_file(partial);
                        self.index_layer(job, size)?;
                    }
                    return Ok(size);
                }
                // Bytes kept from an earlier run may be what is wrong: start once from zero.
                Err(StoreError::BlobDigest { .. }) if resumed > 0 && !fresh_retry_done => {
                    fresh_retry_done = true;
                    let _ = fs::remove_file(partial);
                }
                Err(e) => {
                    // Keep the partial blob only when a later try can resume it.
                    if !e.is_transient() && !matches!(e, StoreError::Cancelled { .. }) {
                        let _ = fs::remove_file(partial);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Records an unpacked layer in the index, and says it is done.
    fn index_layer(&self, job: &LayerFetch<'_>, size: u64) -> Result<(), StoreError> {
        self.inner
            .index
            .put_layer(&LayerRecord {
                diff_id: job.l.diff_id.clone(),
                size,
            })
            .map_err(|e| StoreError::io(&job.dest, e))?;
        (job.progress)(&PullEvent::LayerDone {
            digest: &job.l.blob_digest,
        });
        Ok(())
    }

    /// Unpacks a stream into a quarantine dir (`.tmp-*`, inside the 0700 layers dir) and
    /// renames it to `dest` only once the blob's size and digest and the diff id matched: a
    /// layer that fails them is removed, and nothing reads a quarantine dir. Unpacking while
    /// the bytes stream in, rather than after a verified download, saves writing and reading
    /// every layer twice; the tar is hostile either way (a registry's manifest vouches for
    /// nothing), so it is bounded either way (see `unpack`).
    pub(crate) fn unpack_layer_from<R: Read>(
        &self,
        spec: &LayerSpec<'_>,
        source: R,
        meter: &Meter<'_>,
        dest: &Path,
    ) -> Result<(), StoreError> {
        let layers_dir = self.inner.layout.layers_dir();
        let tmp = layer::temp_dir(&layers_dir, spec.diff_id)
            .map_err(|e| StoreError::io(&layers_dir, e))?;
        let result = layer::unpack_stream(spec, source, &tmp, meter)
            .and_then(|()| self.commit_layer(spec, &tmp, meter, dest));
        if result.is_err()
            && let Err(e) = layer::remove_tree(&tmp)
        {
            // Never used (only a rename after verification makes a layer), and removed at the
            // next open of the store.
            tracing::warn!(path = %tmp.display(), "cannot remove a refused layer's quarantine: {e}");
        }
        result
    }

    /// Puts a verified unpack in place, with the index of its files (for partial pulls).
    pub(crate) fn commit_layer(
        &self,
        spec: &LayerSpec<'_>,
        tmp: &Path,
        meter: &Meter<'_>,
        dest: &Path,
    ) -> Result<(), StoreError> {
        let files = super::chunked::file_entries(meter.take_files());
        // The index first: a layer dir without one is only never reused, one without its dir
        // is never looked at.
        if let Err(e) = self.inner.index.put_layer_files(spec.diff_id, &files) {
            tracing::warn!(layer = %spec.diff_id, "cannot index the layer's files: {e}");
        }
        layer::commit(tmp, dest).map_err(|e| StoreError::io(dest, e))
    }
}

/// The index entry for `want`, or an error naming what the image offers.
fn select_platform<'m>(
    name: &str,
    want: &Platform,
    entries: &'m [crate::registry::manifest::Descriptor],
) -> Result<&'m crate::registry::manifest::Descriptor, StoreError> {
    let offered: Vec<Option<Platform>> = entries
        .iter()
        .map(|d| d.platform.as_ref().map(|p| p.platform()))
        .collect();
    let candidates: Vec<Platform> = entries
        .iter()
        .map(crate::registry::manifest::Descriptor::platform_or_unknown)
        .collect();
    match platform::select(want, &candidates) {
        Some(i) => Ok(&entries[i]),
        None => {
            let listed: Vec<String> = offered
                .iter()
                .flatten()
                .filter(|p| p.os != "unknown")
                .map(|p| p.to_string())
                .collect();
            Err(StoreError::NoPlatform {
                image: name.to_string(),
                wanted: want.to_string(),
                offered: if listed.is_empty() {
                    "no platforms".into()
                } else {
                    listed.join(", ")
                },
            })
        }
    }
}
