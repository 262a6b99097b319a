//! One layer from a byte stream to a verified, unpacked dir, without holding it in memory:
//! blob bytes are hashed as they pass, decompressed (gzip, zstd or none, sniffed), hashed again
//! (the diff id) and untarred into a temp dir that is renamed into place only when the blob's
//! size and digest and the diff id all match.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use berth_spec::{DiffId, Digest};
use sha2::{Digest as _, Sha256};

use crate::registry::RegistryError;
use crate::registry::blob::registry_error;
use crate::registry::manifest::Compression;

use super::error::StoreError;
use super::unpack::{self, UnpackError};

/// What the pipeline checks a layer against.
#[derive(Debug, Clone)]
pub struct LayerSpec<'a> {
    /// The image, for error messages.
    pub image: &'a str,
    /// The blob's digest.
    pub digest: &'a Digest,
    pub size: u64,
    pub diff_id: &'a DiffId,
    /// `[images] max_layer_size`: uncompressed bytes.
    pub max_unpacked: u64,
    /// `[images] max_layer_entries`.
    pub max_entries: u64,
    /// `[images] min_free`: kept free (and the same share of inodes) while unpacking.
    pub min_free: u64,
}

impl LayerSpec<'_> {
    fn limits(&self) -> unpack::Limits {
        unpack::Limits {
            max_entries: self.max_entries,
            max_file_bytes: self.max_unpacked,
            min_free: self.min_free,
        }
    }
}

/// Counters and hashes shared by the two ends of the pipeline (one thread, so cells).
pub struct Meter<'a> {
    blob_hash: RefCell<Sha256>,
    blob_bytes: Cell<u64>,
    diff_hash: RefCell<Sha256>,
    diff_bytes: Cell<u64>,
    /// The first error the source returned, kept whole: the tar and decompression layers
    /// flatten errors into text.
    source_error: RefCell<Option<io::Error>>,
    over_limit: Cell<bool>,
    cancel: &'a AtomicBool,
    /// The unpacked layer's regular files: path -> (content digest, size).
    files: RefCell<HashMap<Vec<u8>, (Digest, u64)>>,
}

impl<'a> Meter<'a> {
    pub fn new(cancel: &'a AtomicBool) -> Self {
        Meter {
            blob_hash: RefCell::new(Sha256::new()),
            blob_bytes: Cell::new(0),
            diff_hash: RefCell::new(Sha256::new()),
            diff_bytes: Cell::new(0),
            source_error: RefCell::new(None),
            over_limit: Cell::new(false),
            cancel,
            files: RefCell::default(),
        }
    }

    pub fn unpacked_bytes(&self) -> u64 {
        self.diff_bytes.get()
    }

    /// The regular files the unpack wrote (path -> content digest, size).
    pub fn take_files(&self) -> HashMap<Vec<u8>, (Digest, u64)> {
        self.files.take()
    }
}

/// The compressed side: counts and hashes blob bytes, keeps the source's error.
struct BlobSide<'m, 'a, R> {
    inner: R,
    m: &'m Meter<'a>,
}

impl<R: Read> Read for BlobSide<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.m.source_error.borrow().as_ref() {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        if self.m.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.m.blob_hash.borrow_mut().update(&buf[..n]);
                self.m.blob_bytes.set(self.m.blob_bytes.get() + n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                *self.m.source_error.borrow_mut() = Some(e);
                Err(copy)
            }
        }
    }
}

/// The uncompressed side: counts, hashes, and stops a decompression bomb at the limit.
struct DiffSide<'m, 'a, R> {
    inner: R,
    m: &'m Meter<'a>,
    limit: u64,
}

impl<R: Read> Read for DiffSide<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.m.diff_bytes.get() + n as u64;
        self.m.diff_bytes.set(total);
        if total > self.limit {
            self.m.over_limit.set(true);
            return Err(io::Error::other("uncompressed layer over the size limit"));
        }
        self.m.diff_hash.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

enum Decoder<R: Read> {
    Plain(R),
    Gzip(Box<flate2::read::MultiGzDecoder<BufReader<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<R>>>),
}

impl<R: Read> Decoder<R> {
    fn new(c: Compression, r: R) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Decoder::Plain(r),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::read::MultiGzDecoder::new(
                BufReader::with_capacity(128 << 10, r),
            ))),
            Compression::Zstd => Decoder::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(
                BufReader::with_capacity(128 << 10, r),
            )?)),
        })
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// Reads up to `n` bytes (fewer only at EOF).
fn read_head<R: Read>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Streams `source` (the blob's bytes) through verification into `tmp` (an empty dir).
/// On success every check passed; on failure the caller removes `tmp`.
pub fn unpack_stream<R: Read>(
    spec: &LayerSpec<'_>,
    source: R,
    tmp: &Path,
    meter: &Meter<'_>,
) -> Result<(), StoreError> {
    let mut blob = BlobSide {
        inner: source,
        m: meter,
    };
    let result = (|| -> Result<(), UnpackError> {
        let head = read_head(&mut blob, 4)?;
        let compression = Compression::sniff(&head);
        let mut chained = io::Cursor::new(head).chain(&mut blob);
        let outcome = (|| -> Result<(), UnpackError> {
            let decoder = Decoder::new(compression, &mut chained)?;
            untar(spec, decoder, tmp, meter)
        })();
        // Whatever happened, read the blob to its end: its size and digest decide first
        // whether the bytes were what the manifest promised.
        let _ = io::copy(&mut chained, &mut io::sink());
        outcome
    })();
    check_blob(spec, meter)?;
    if let Err(e) = result {
        return Err(layer_failure(spec, meter, e));
    }
    check_diff_id(spec, meter)
}

/// Unpacks an uncompressed tar stream whose only check is the diff id: a layer rebuilt by a
/// partial pull (its blob was never fetched whole, so it has no blob digest to check).
pub fn unpack_tar<R: Read>(
    spec: &LayerSpec<'_>,
    tar: R,
    tmp: &Path,
    meter: &Meter<'_>,
) -> Result<(), StoreError> {
    let mut source = BlobSide {
        inner: tar,
        m: meter,
    };
    let result = untar(spec, &mut source, tmp, meter);
    if let Some(e) = meter.source_error.borrow_mut().take() {
        return Err(source_failure(spec, e));
    }
    if meter.cancel.load(Ordering::Relaxed) {
        return Err(StoreError::Cancelled {
            image: spec.image.to_string(),
        });
    }
    result.map_err(|e| layer_failure(spec, meter, e))?;
    check_diff_id(spec, meter)
}

/// The uncompressed side of an unpack: counted, hashed, limited, untarred, drained.
fn untar<R: Read>(
    spec: &LayerSpec<'_>,
    decoded: R,
    tmp: &Path,
    meter: &Meter<'_>,
) -> Result<(), UnpackError> {
    let diff = DiffSide {
        inner: decoded,
        m: meter,
        limit: spec.max_unpacked,
    };
    let (done, mut rest) = unpack::unpack_with(tmp, diff, &spec.limits())?;
    // The diff id covers the whole stream, padding after the tar's end included.
    io::copy(&mut rest, &mut io::sink())?;
    *meter.files.borrow_mut() = done.files;
    Ok(())
}

fn check_diff_id(spec: &LayerSpec<'_>, meter: &Meter<'_>) -> Result<(), StoreError> {
    let diff = Digest::from_sha256(meter.diff_hash.replace(Sha256::new()).finalize().into());
    if diff != *spec.diff_id.as_digest() {
        return Err(StoreError::DiffId {
            image: spec.image.to_string(),
            blob: spec.digest.to_string(),
            expected: spec.diff_id.to_string(),
            actual: diff.to_string(),
        });
    }
    Ok(())
}

/// Streams `source` into nothing but the hash: the download-only path (the bytes are kept by
/// the source's tee).
pub fn verify_stream<R: Read>(
    spec: &LayerSpec<'_>,
    source: R,
    meter: &Meter<'_>,
) -> Result<(), StoreError> {
    let mut blob = BlobSide {
        inner: source,
        m: meter,
    };
    let copied = io::copy(&mut blob, &mut io::sink());
    check_blob(spec, meter)?;
    copied.map_err(|e| layer_failure(spec, meter, UnpackError::Io(e)))?;
    Ok(())
}

/// The source's own error first, then size, then digest.
fn check_blob(spec: &LayerSpec<'_>, meter: &Meter<'_>) -> Result<(), StoreError> {
    if let Some(e) = meter.source_error.borrow_mut().take() {
        return Err(source_failure(spec, e));
    }
    if meter.cancel.load(Ordering::Relaxed) {
        return Err(StoreError::Cancelled {
            image: spec.image.to_string(),
        });
    }
    let got = meter.blob_bytes.get();
    if got != spec.size {
        return Err(StoreError::BlobSize {
            image: spec.image.to_string(),
            blob: spec.digest.to_string(),
            expected: spec.size,
            actual: if got > spec.size {
                format!("more than {}", spec.size)
            } else {
                got.to_string()
            },
        });
    }
    let actual = Digest::from_sha256(meter.blob_hash.replace(Sha256::new()).finalize().into());
    if actual != *spec.digest {
        return Err(StoreError::BlobDigest {
            image: spec.image.to_string(),
            blob: spec.digest.to_string(),
            expected: spec.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

fn source_failure(spec: &LayerSpec<'_>, e: io::Error) -> StoreError {
    if registry_error(&e).is_some() {
        let inner = e
            .into_inner()
            .and_then(|b| b.downcast::<RegistryError>().ok())
            .expect("checked above");
        return match *inner {
            RegistryError::SizeMismatch {
                expected, actual, ..
            } => StoreError::BlobSize {
                image: spec.image.to_string(),
                blob: spec.digest.to_string(),
                expected,
                actual,
            },
            other => StoreError::Registry {
                image: spec.image.to_string(),
                source: other,
            },
        };
    }
    StoreError::BlobIo {
        image: spec.image.to_string(),
        blob: spec.digest.to_string(),
        source: e,
    }
}

fn layer_failure(spec: &LayerSpec<'_>, meter: &Meter<'_>, e: UnpackError) -> StoreError {
    let limit = |what: String, limit: u64, setting: &'static str| StoreError::Limit {
        image: spec.image.to_string(),
        what,
        limit,
        setting,
    };
    if meter.over_limit.get() {
        return limit(
            format!("layer {} uncompressed", spec.digest),
            spec.max_unpacked,
            "max_layer_size",
        );
    }
    match e {
        UnpackError::TooManyEntries { limit: n } => {
            return limit(
                format!("the number of tar entries in layer {}", spec.digest),
                n,
                "max_layer_entries",
            );
        }
        UnpackError::TooLarge { limit: n } => {
            return limit(
                format!(
                    "layer {} unpacked (file contents, sparse holes included)",
                    spec.digest
                ),
                n,
                "max_layer_size",
            );
        }
        UnpackError::Reserve(reserve) => {
            return StoreError::Reserve {
                image: spec.image.to_string(),
                blob: spec.digest.to_string(),
                reserve,
            };
        }
        _ => {}
    }
    StoreError::Unpack {
        image: spec.image.to_string(),
        blob: spec.digest.to_string(),
        source: e,
    }
}

/// A temp dir for unpacking beside the layer dirs (same filesystem, so the rename is atomic).
pub fn temp_dir(layers_dir: &Path, diff_id: &DiffId) -> io::Result<PathBuf> {
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    let p = layers_dir.join(format!(
        ".tmp-{}-{}",
        &diff_id.hex()[..12],
        hex::encode(nonce)
    ));
    fs::create_dir(&p)?;
    Ok(p)
}

/// Makes a verified temp dir durable and puts it in place as `layers/sha256/<hex>`.
pub fn commit(tmp: &Path, dest: &Path) -> io::Result<()> {
    let f = File::open(tmp)?;
    // One syncfs instead of an fsync per file: the layer's data must be on disk before the
    // rename makes it visible, or a power cut could leave a complete-looking empty file.
    rustix::fs::syncfs(&f)?;
    match fs::rename(tmp, dest) {
        Ok(()) => {}
        // Another pull put the same layer in place first; ours is redundant.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
            remove_tree(tmp)?;
        }
        Err(e) => return Err(e),
    }
    crate::fsutil::sync_dir(dest.parent().unwrap_or(Path::new("/")))
}

/// Removes an unpacked tree, safely: a layer may contain anything, so this never follows a
/// symlink (std's `remove_dir_all` does not either).
pub fn remove_tree(p: &Path) -> io::Result<()> {
    crate::fsutil::remove_dir_all_if_exists(p)
}
