//! Unpacking a layer's tar stream into its own directory, safely: the tar crate only parses;
//! every path is resolved by the kernel inside the layer root (see [`root`]), and whiteouts
//! become overlayfs whiteouts so the layer dirs stack as overlay lowerdirs.
//!
//! # Layout
//! - [`path`]: entry paths and whiteout names (pure).
//! - [`root`]: openat2-confined directory access and removal (kernel edge).
//! - [`apply`]: one entry at a time: files, dirs, links, devices, owners, modes, xattrs, times.

pub mod apply;
pub mod path;
pub mod root;

use std::io::Read;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("tar entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What an unpack made.
#[derive(Debug, Default)]
pub struct Unpacked {
    pub entries: u64,
    /// Regular files: path in the layer -> (content digest, size).
    pub files: std::collections::HashMap<Vec<u8>, (String, u64)>,
}

/// Applies the tar stream `reader` to the empty directory `dir`. Stops at the tar's end
/// marker; the caller drains what follows (it still counts for the diff id).
pub fn unpack<R: Read>(dir: &Path, reader: R) -> Result<(Unpacked, R), UnpackError> {
    let root = root::LayerRoot::open(dir)?;
    let mut unpacker = apply::Unpacker::new(root);
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        unpacker.apply(&mut entry)?;
    }
    unpacker.finish()?;
    let done = Unpacked {
        entries: unpacker.entries,
        files: std::mem::take(&mut unpacker.files),
    };
    Ok((done, archive.into_inner()))
}
