//! Partial pulls of zstd:chunked layers: fetch the layer's table of contents, plan which bytes
//! are needed ([`toc`]), fetch the header frames and the file contents the store lacks in as
//! few range requests as the registry allows into a sparse scratch file, rebuild the tar stream
//! with the other contents read from files already in the store ([`rebuild`]: any layer's file
//! with the same digest), and unpack it. The rebuilt stream is checked against the config's
//! diff id like any layer, so a partial pull makes the same tree a full pull makes, or fails
//! (and the caller pulls the layer whole).
//!
//! Every unpacked layer gets an index of its regular files by content digest
//! (`images/layers/<diffid-hex>.files.json`), whichever way it arrived: that is what a later
//! partial pull reuses. Reuse copies the bytes (through the unpacker, which writes every file
//! of the layer); the layer dirs never share inodes.
//!
//! # Layout
//! - [`toc`]: annotations, the TOC, the plan of segments and ranges (pure).
//! - [`rebuild`]: the rebuilt tar stream.

pub mod rebuild;
pub mod toc;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_spec::{Digest, ImageReference};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::Store;
use super::error::StoreError;
use super::index::FileEntry;
use super::layer::{self, LayerSpec, Meter};
use crate::registry::ranges::RangeReport;
use crate::registry::{RegistryClient, RegistryError};
use toc::{FileRange, TocLocation};

/// Ranges closer than this are fetched as one: a part of a multipart answer costs about this
/// much in headers.
const MERGE_GAP: u64 = 256;

/// What a partial pull did, for logs and the pull's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialReport {
    /// Compressed bytes fetched (TOC included).
    pub fetched: u64,
    pub requests: u32,
    pub reused_files: usize,
    /// Uncompressed content bytes taken from the store.
    pub reused: u64,
    /// The layer's unpacked size.
    pub size: u64,
}

/// The index entries of an unpack's files (those with content and a UTF-8 path).
pub(crate) fn file_entries(files: HashMap<Vec<u8>, (Digest, u64)>) -> Vec<FileEntry> {
    let mut out: Vec<FileEntry> = files
        .into_iter()
        .filter(|(_, (_, size))| *size > 0)
        .filter_map(|(path, (digest, size))| {
            Some(FileEntry {
                digest,
                size,
                path: String::from_utf8(path).ok()?,
            })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Opens a file of a layer dir for reading, never following a symlink (the path is the
/// store's own, the tree the image's).
fn open_in_layer(dir: &Path, path: &str) -> io::Result<File> {
    let root = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = rustix::fs::openat2(
        &root,
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let f = File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!("{path} is not a regular file")));
    }
    Ok(f)
}

impl Store {
    /// Every file content the store holds: digest -> (layer dir, path in it, size).
    fn reusable(&self) -> HashMap<Digest, (PathBuf, String, u64)> {
        let dir = self.inner.layout.layers_dir();
        let mut out = HashMap::new();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(diff_id) = Digest::from_hex(&name).map(berth_spec::DiffId::new) else {
                continue;
            };
            let Ok(Some(files)) = self.inner.index.layer_files(&diff_id) else {
                continue;
            };
            for f in files {
                out.entry(f.digest)
                    .or_insert_with(|| (dir.join(&name), f.path, f.size));
            }
        }
        out
    }

    /// Pulls a zstd:chunked layer partially into `dest`. `Ok(None)`: the store holds none of
    /// its files, so a full pull is the cheaper one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pull_partial(
        &self,
        client: &RegistryClient,
        image: &ImageReference,
        spec: &LayerSpec<'_>,
        loc: &TocLocation,
        dest: &Path,
        cancel: &AtomicBool,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Option<PartialReport>, StoreError> {
        let reg = |source| StoreError::Registry {
            image: spec.image.to_string(),
            source,
        };
        let hook = |_: &RegistryError, _: u32, _: Duration| {};
        let (files, got) = fetch_toc(client, image, spec, loc, on_bytes)?;

        let have = self.reusable();
        let plan = toc::plan(
            &files,
            loc,
            |f| have.get(&f.digest).is_some_and(|h| h.2 == f.size),
            MERGE_GAP,
        );
        if plan.reused_files == 0 {
            return Ok(None);
        }

        let layers_dir = self.inner.layout.layers_dir();
        let scratch_dir = layer::temp_dir(&layers_dir, spec.diff_id)
            .map_err(|e| StoreError::io(&layers_dir, e))?;
        let result = (|| -> Result<PartialReport, StoreError> {
            let path = scratch_dir.join("ranges");
            let scratch = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| StoreError::io(&path, e))?;
            let fetched = client
                .fetch_ranges(
                    image,
                    spec.digest,
                    &plan.fetch,
                    &mut |at, b| {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(io::Error::other("cancelled"));
                        }
                        scratch.write_all_at(b, at)?;
                        on_bytes(b.len() as u64);
                        Ok(())
                    },
                    &hook,
                )
                .map_err(reg)?;
            let open_local = |f: &FileRange| {
                let (dir, path, _) = have
                    .get(&f.digest)
                    .ok_or_else(|| io::Error::other("planned file is gone"))?;
                open_in_layer(dir, path)
            };
            let rebuilt =
                rebuild::Rebuild::new(plan.segments.clone(), &files, &scratch, &open_local);
            let meter = Meter::new(cancel);
            let tmp = layer::temp_dir(&layers_dir, spec.diff_id)
                .map_err(|e| StoreError::io(&layers_dir, e))?;
            let unpacked = layer::unpack_tar(spec, rebuilt, &tmp, &meter)
                .and_then(|()| self.commit_layer(spec, &tmp, &meter, dest));
            if unpacked.is_err() {
                let _ = layer::remove_tree(&tmp);
            }
            unpacked?;
            Ok(PartialReport {
                fetched: got.bytes + fetched.bytes,
                requests: got.requests + fetched.requests,
                reused_files: plan.reused_files,
                reused: plan.reused,
                size: meter.unpacked_bytes(),
            })
        })();
        let _ = layer::remove_tree(&scratch_dir);
        result.map(Some)
    }
}

/// A layer's table of contents, checked against the manifest's annotation (digest and size),
/// with what fetching it took.
fn fetch_toc(
    client: &RegistryClient,
    image: &ImageReference,
    spec: &LayerSpec<'_>,
    loc: &TocLocation,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(Vec<FileRange>, RangeReport), StoreError> {
    let invalid = |reason: String| StoreError::Invalid {
        image: spec.image.to_string(),
        reason: format!("layer {}: {reason}", spec.digest),
    };
    let hook = |_: &RegistryError, _: u32, _: Duration| {};
    let mut toc_bytes = Vec::new();
    let got = client
        .fetch_ranges(
            image,
            spec.digest,
            &[(loc.offset, loc.offset + loc.length)],
            &mut |_, b| {
                toc_bytes.extend_from_slice(b);
                on_bytes(b.len() as u64);
                Ok(())
            },
            &hook,
        )
        .map_err(|source| StoreError::Registry {
            image: spec.image.to_string(),
            source,
        })?;
    let actual = Digest::of(&toc_bytes);
    if actual != loc.digest {
        return Err(invalid(format!(
            "TOC digest {actual}, the manifest says {}",
            loc.digest
        )));
    }
    let mut json = Vec::new();
    zstd::stream::read::Decoder::new(&toc_bytes[..])
        .and_then(|d| d.take(loc.uncompressed + 1).read_to_end(&mut json))
        .map_err(|e| invalid(format!("TOC: {e}")))?;
    if json.len() as u64 != loc.uncompressed {
        return Err(invalid(format!(
            "TOC of {} bytes, the manifest says {}",
            json.len(),
            loc.uncompressed
        )));
    }
    let files = toc::parse(&json, loc).map_err(invalid)?;
    Ok((files, got))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_skip_empty_files_and_odd_names() {
        let files = HashMap::from([
            (b"b/x".to_vec(), (Digest::of(b"1"), 3)),
            (b"a".to_vec(), (Digest::of(b"2"), 1)),
            (b"empty".to_vec(), (Digest::of(b"3"), 0)),
            (vec![0xff, 0xfe], (Digest::of(b"4"), 5)),
        ]);
        let e = file_entries(files);
        let paths: Vec<&str> = e.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a", "b/x"]);
    }

    #[test]
    fn layer_files_open_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("d", dir.path().join("dl")).unwrap();
        assert!(open_in_layer(dir.path(), "d/f").is_ok());
        assert!(open_in_layer(dir.path(), "link").is_err());
        assert!(open_in_layer(dir.path(), "dl/f").is_err());
        assert!(open_in_layer(dir.path(), "d").is_err());
    }
}
