//! The store's errors. Each names the image (or archive) and, for blobs, the blob and both
//! digests; `is_transient` says by type whether a retry may help.

use std::path::PathBuf;

use crate::registry::RegistryError;
use crate::registry::manifest::ManifestError;

use super::unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("{image}: {source}")]
    Manifest {
        image: String,
        #[source]
        source: ManifestError,
    },
    #[error("{image}: no manifest for this host's platform {wanted}; the image offers: {offered}")]
    NoPlatform {
        image: String,
        wanted: String,
        offered: String,
    },
    #[error("{image}: blob {blob}: digest mismatch: expected {expected}, got {actual}")]
    BlobDigest {
        image: String,
        blob: String,
        expected: String,
        actual: String,
    },
    #[error("{image}: blob {blob}: size mismatch: descriptor says {expected} bytes, got {actual}")]
    BlobSize {
        image: String,
        blob: String,
        expected: u64,
        actual: String,
    },
    #[error(
        "{image}: layer {blob}: uncompressed content has diff id {actual}, the image config says {expected}"
    )]
    DiffId {
        image: String,
        blob: String,
        expected: String,
        actual: String,
    },
    #[error("{image}: {what} exceeds the limit of {limit} ([images] {setting})")]
    Limit {
        image: String,
        what: String,
        limit: u64,
        setting: &'static str,
    },
    #[error(
        "{image}: not enough disk space on {path}: the pull needs about {needed} bytes and {min_free} must stay free ([images] min_free), but only {available} are available"
    )]
    NoSpace {
        image: String,
        path: PathBuf,
        needed: u64,
        available: u64,
        min_free: u64,
    },
    /// A layer grew past the free space (or inodes) `[images] min_free` keeps.
    #[error("{image}: layer {blob}: {reserve}")]
    Reserve {
        image: String,
        blob: String,
        reserve: super::unpack::space::Reserve,
    },
    #[error("{image}: layer {blob}: {source}")]
    Unpack {
        image: String,
        blob: String,
        #[source]
        source: UnpackError,
    },
    #[error("{image}: invalid image config: {reason}")]
    Config { image: String, reason: String },
    #[error("{image}: {reason}")]
    Invalid { image: String, reason: String },
    #[error("{image}: not in the store")]
    NotFound { image: String },
    #[error(
        "state dir {path} is locked by another berth process (the agent?); try again when it is done"
    )]
    Locked { path: PathBuf },
    /// Reading or keeping a blob's bytes failed (a full disk under the partial download).
    #[error("{image}: blob {blob}: {source}")]
    BlobIo {
        image: String,
        blob: String,
        #[source]
        source: std::io::Error,
    },
    /// A file of the store could not be written while pulling this image.
    #[error("{image}: {path}: {source}", path = .path.display())]
    ImageIo {
        image: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{image}: pull cancelled")]
    Cancelled { image: String },
}

/// The error type of `Store::pull`.
pub type PullError = StoreError;

impl StoreError {
    /// A later attempt may succeed: network trouble and server errors; not bad images, missing
    /// images, refused access or a full disk.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Registry { source, .. } => source.is_transient(),
            StoreError::Locked { .. } => true,
            // Room may be made (images go, a volume shrinks): the pull waits for it.
            StoreError::NoSpace { .. } => true,
            _ => false,
        }
    }

    /// Names the image in an I/O error that lacks it.
    pub(crate) fn for_image(self, image: &str) -> Self {
        match self {
            StoreError::Io { path, source } => StoreError::ImageIo {
                image: image.to_string(),
                path,
                source,
            },
            other => other,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}
