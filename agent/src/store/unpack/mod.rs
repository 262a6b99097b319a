//! Unpacking a layer's tar stream into its own directory, safely: the tar crate only parses;
//! every path is resolved by the kernel inside the layer root (see [`root`]), and whiteouts
//! become overlayfs whiteouts so the layer dirs stack as overlay lowerdirs.
//!
//! A layer is hostile input, so everything it can make berth spend is bounded: entries
//! ([`Limits::max_entries`]), bytes written into files, holes of sparse files included
//! ([`Limits::max_file_bytes`]), free space and inodes, looked at again every few entries and
//! megabytes ([`Limits::min_free`], see [`space`]), the memory a header takes (PAX records and
//! GNU long names: [`MAX_HEADER_BYTES`] per entry, see [`budget`]) and the memory kept for
//! directory times ([`apply`]).
//!
//! # Layout
//! - [`path`]: entry paths and whiteout names (pure).
//! - [`root`]: openat2-confined directory access and removal (kernel edge).
//! - [`apply`]: one entry at a time: files, dirs, links, devices, owners, modes, xattrs, times.
//! - [`budget`]: the reader under the tar parser that bounds what one header may take.
//! - [`space`]: the free space and inode reserve, re-checked while the layer grows.

pub mod apply;
pub(crate) mod budget;
pub mod path;
pub mod root;
pub mod space;

use std::io::{self, Read};
use std::path::Path;

/// The most bytes the tar parser may read for one entry's headers: its 512-byte header plus
/// the PAX records and GNU long names before it, which the parser holds in memory whole.
/// Paths are at most 4 KiB and xattr values 64 KiB on Linux: 1 MiB is far beyond any honest
/// layer.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("tar entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("more than {limit} tar entries")]
    TooManyEntries { limit: u64 },
    #[error("more than {limit} bytes written into files (holes of sparse files included)")]
    TooLarge { limit: u64 },
    #[error("a tar entry's headers (PAX records, GNU long names) take more than {limit} bytes")]
    HeaderTooLarge { limit: u64 },
    #[error("{0}")]
    Reserve(space::Reserve),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What one layer may take while it unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `[images] max_layer_entries`: tar entries, of every type.
    pub max_entries: u64,
    /// `[images] max_layer_size`, as bytes written into files (the stream's own size is
    /// bounded by the caller; a sparse entry writes more than it carries).
    pub max_file_bytes: u64,
    /// `[images] min_free`: bytes to keep free on the layer's filesystem, and the same share
    /// of its inodes.
    pub min_free: u64,
}

impl Default for Limits {
    /// No entry, size or space limit (tools and tests); headers and directory bookkeeping are
    /// bounded whatever the limits.
    fn default() -> Self {
        Limits {
            max_entries: u64::MAX,
            max_file_bytes: u64::MAX,
            min_free: 0,
        }
    }
}

/// What an unpack made.
#[derive(Debug, Default)]
pub struct Unpacked {
    pub entries: u64,
    /// Regular files: path in the layer -> (content digest, size).
    pub files: std::collections::HashMap<Vec<u8>, (berth_spec::Digest, u64)>,
}

/// Applies the tar stream `reader` to the empty directory `dir` with default [`Limits`].
pub fn unpack<R: Read>(dir: &Path, reader: R) -> Result<(Unpacked, R), UnpackError> {
    unpack_with(dir, reader, &Limits::default())
}

/// Applies the tar stream `reader` to the empty directory `dir`. Stops at the tar's end
/// marker; the caller drains what follows (it still counts for the diff id).
pub fn unpack_with<R: Read>(
    dir: &Path,
    reader: R,
    limits: &Limits,
) -> Result<(Unpacked, R), UnpackError> {
    let root = root::LayerRoot::open(dir)?;
    let mut unpacker = apply::Unpacker::with_limits(root, *limits);
    let (budgeted, budget) = budget::Budgeted::new(reader);
    let mut archive = tar::Archive::new(budgeted);
    {
        let mut entries = archive.entries()?;
        loop {
            // Only here does the parser read on its own: headers, and the data of an entry
            // that was not read to its end (none: see the drain below).
            let next = budget.during_headers(MAX_HEADER_BYTES, || entries.next());
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|e| budget.explain(e))?;
            unpacker.apply(&mut entry)?;
            // What `apply` did not read (a directory's or a link's data, an unsupported
            // entry's) is read here, under the layer's size limit, not inside the parser.
            io::copy(&mut entry, &mut io::sink())?;
        }
    }
    unpacker.finish()?;
    let done = Unpacked {
        entries: unpacker.entries,
        files: std::mem::take(&mut unpacker.files),
    };
    Ok((done, archive.into_inner().into_inner()))
}
