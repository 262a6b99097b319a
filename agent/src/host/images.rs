//! The host's [`Operations`]: image commands the agent runs for the CLI (it holds the store),
//! and `berth prune`; and the one pull the loop's `pull` makes.

use std::time::Duration;

use berth_spec::ImageSource;

use super::{Host, transient};
use crate::backend::{ActionError, Keep};
use crate::crashpoint;
use crate::operations::{ImageOp, ImageReply, Operations, Prune, PruneMode, Pulled, Volumes};
use crate::store::{PullEvent, PullOptions};

impl Host {
    /// One pull of an image into the store (an import for on-disk sources), counted in the
    /// metrics as its bytes arrive.
    pub(super) fn pull_once(
        &self,
        image: &ImageSource,
    ) -> Result<crate::image::ResolvedImage, crate::store::StoreError> {
        match image {
            ImageSource::Registry(r) => {
                let metrics = self.metrics.clone();
                let progress = move |e: &PullEvent<'_>| {
                    if let PullEvent::Bytes { n, .. } = e {
                        crashpoint::point("pull.blob");
                        if let Some(m) = &metrics {
                            m.pull_bytes.inc_by(*n);
                        }
                    }
                };
                let opts = PullOptions::from_config(&self.config.images);
                self.store.pull(&self.client, r, &opts, &progress)
            }
            _ => self.store.import_source(image),
        }
    }
}

impl Operations for Host {
    fn image_op(&self, op: &ImageOp) -> Result<ImageReply, ActionError> {
        let store_err = |e: crate::store::StoreError| {
            if e.is_transient() {
                ActionError::transient(e.to_string())
            } else {
                ActionError::permanent(e.to_string())
            }
        };
        match op {
            ImageOp::Pull { reference } => {
                let r = berth_spec::ImageReference::parse(reference)
                    .map_err(|e| ActionError::permanent(e.to_string()))?;
                let image = self
                    .store
                    .pull(
                        &self.client,
                        &r,
                        &PullOptions::from_config(&self.config.images),
                        &crate::store::no_progress,
                    )
                    .map_err(store_err)?;
                let record = self
                    .store
                    .record(&ImageSource::Registry(r.clone()))
                    .ok()
                    .flatten();
                Ok(ImageReply::Pulled(Box::new(Pulled {
                    reference: r.to_string(),
                    image,
                    record,
                })))
            }
            ImageOp::Import { path } => {
                let records = self.store.import_records(path, None).map_err(store_err)?;
                Ok(ImageReply::Imported(records))
            }
            ImageOp::Pin { image } | ImageOp::Unpin { image } => {
                let source =
                    ImageSource::parse(image).map_err(|e| ActionError::permanent(e.to_string()))?;
                let r = match op {
                    ImageOp::Pin { .. } => self.store.pin(&source, crate::store::PIN_OPERATOR),
                    _ => self.store.unpin(&source, crate::store::PIN_OPERATOR),
                }
                .map_err(store_err)?;
                Ok(ImageReply::Pinned(Box::new(r)))
            }
        }
    }

    fn prune(&self, keep: &Keep, prune: Prune) -> Result<crate::status::PruneReport, ActionError> {
        let dry_run = prune.mode == PruneMode::DryRun;
        let roots = crate::store::GcRoots {
            images: keep.images.clone(),
            digests: keep.digests.clone(),
            layer_dirs: self.live_layer_dirs(),
        };
        let plan = if dry_run {
            self.store.gc_plan(&roots, Duration::ZERO)
        } else {
            self.store.gc(&roots, Duration::ZERO)
        }
        .map_err(transient)?;
        let mut report = crate::status::PruneReport {
            dry_run,
            images: plan.remove_images,
            layers: plan.remove_layers.len(),
            blobs: plan.remove_blobs.len(),
            freed: plan.freed,
            volumes: Vec::new(),
        };
        if prune.volumes == Volumes::RemoveUnmounted {
            for e in std::fs::read_dir(self.layout.volumes_dir())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.volumes.contains(&name) {
                    continue;
                }
                if !dry_run {
                    crate::fsutil::remove_dir_all_if_exists(&e.path()).map_err(transient)?;
                }
                report.volumes.push(name);
            }
        }
        Ok(report)
    }
}
