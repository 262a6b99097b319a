//! The import directory (`images_dir`): archives dropped there are imported, verified and
//! pinned. Which files were handled, at which size and mtime, is remembered in the state dir,
//! so the import dir itself may be read-only (a USB stick) and nothing is imported twice; a
//! file that changes (a copy that was still running) is tried again.
//!
//! An image there ends up run as root, so the dir gets the spec dir's owner policy: every dir
//! from `/` to it owned by root or a trusted owner and not writable by others, and each archive
//! too, judged on the fd it is read from (never a symlink, nothing but a file or a layout dir).

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsutil;
use crate::source::perms::TrustedOwners;

use super::Store;
use super::error::StoreError;
use super::import::archive::Archive;

/// What became of one archive in the import dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOutcome {
    pub path: PathBuf,
    /// The references recorded, or why the import failed.
    pub result: Result<Vec<String>, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Seen {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    outcome: ImportOutcome,
}

fn seen_path(store: &Store, archive: &Path) -> PathBuf {
    let key = hex::encode(Sha256::digest(archive.as_os_str().as_encoded_bytes()));
    store
        .layout()
        .images_dir()
        .join("imported")
        .join(format!("{key}.json"))
}

/// Imports every archive in `dir` not handled before (or changed since), and reports each one
/// handled now. Hidden files are skipped (a copy in progress is often named `.x.tmp`). A dir
/// or an archive that `owners` does not trust is refused with the reason. The caller holds
/// the state dir lock.
pub fn scan_import_dir(
    store: &Store,
    dir: &Path,
    owners: &TrustedOwners,
) -> Result<Vec<ImportOutcome>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    owners
        .check_dir_chain(dir)
        .map_err(|reason| StoreError::Invalid {
            image: dir.display().to_string(),
            reason,
        })?;
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        // Spec repository bundles share the dir: `[source]` imports those.
        .filter(|p| !crate::source::git::is_bundle(p))
        .collect();
    paths.sort();
    let seen_dir = store.layout().images_dir().join("imported");
    fsutil::create_private_dir_all(&seen_dir).map_err(|e| StoreError::io(&seen_dir, e))?;
    let mut out = Vec::new();
    for path in paths {
        let opened = open_judged(&path, owners);
        let (size, mtime_ns) = match &opened {
            Ok(f) => {
                let md = f.metadata().map_err(|e| StoreError::io(&path, e))?;
                let mtime_ns = i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec());
                (if md.is_dir() { 0 } else { md.len() }, mtime_ns)
            }
            // Refused: remembered by what it is now, so it is reported once per change.
            Err(_) => match fs::symlink_metadata(&path) {
                Ok(md) => (
                    md.len(),
                    i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
                ),
                Err(_) => continue,
            },
        };
        let marker = seen_path(store, &path);
        if let Ok(Some(s)) = fsutil::read_json::<Seen>(&marker)
            && s.size == size
            && s.mtime_ns == mtime_ns
        {
            continue;
        }
        let result = match opened.and_then(|f| {
            let ar = Archive::from_judged(f, owners, &store.scratch()).map_err(|e| {
                StoreError::Invalid {
                    image: path.display().to_string(),
                    reason: e.to_string(),
                }
            })?;
            let abs = std::path::absolute(&path).map_err(|e| StoreError::io(&path, e))?;
            store.import_archive(&ar, &abs, None)
        }) {
            Ok(records) => {
                let refs: Vec<String> = records.into_iter().map(|r| r.reference).collect();
                tracing::info!(archive = %path.display(), images = ?refs, "imported");
                Ok(refs)
            }
            Err(e) => {
                tracing::warn!(archive = %path.display(), error = %e, "import failed");
                Err(e.to_string())
            }
        };
        let outcome = ImportOutcome {
            path: path.clone(),
            result,
        };
        let seen = Seen {
            path: path.clone(),
            size,
            mtime_ns,
            outcome: outcome.clone(),
        };
        fsutil::atomic_write_json(&marker, &seen).map_err(|e| StoreError::io(&marker, e))?;
        out.push(outcome);
    }
    Ok(out)
}

/// Opens an entry of the import dir for reading, if the policy trusts it: no symlink (it could
/// lead anywhere), nothing but a regular file or a dir (looked at before opening: opening a
/// device can do things), owned by root or a trusted owner and not writable by others, as its
/// own fd says.
fn open_judged(path: &Path, owners: &TrustedOwners) -> Result<File, StoreError> {
    let refused = |reason: String| StoreError::Invalid {
        image: path.display().to_string(),
        reason: format!("refused: {reason}"),
    };
    let lmd = fs::symlink_metadata(path).map_err(|e| StoreError::io(path, e))?;
    let t = lmd.file_type();
    if t.is_symlink() {
        return Err(refused("a symlink (drop the archive itself here)".into()));
    }
    if !t.is_file() && !t.is_dir() {
        return Err(refused(
            "not a regular file or an OCI layout directory".into(),
        ));
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    let md = f.metadata().map_err(|e| StoreError::io(path, e))?;
    if !md.is_file() && !md.is_dir() {
        return Err(refused(
            "not a regular file or an OCI layout directory".into(),
        ));
    }
    owners.check_mode(md.uid(), md.mode()).map_err(refused)?;
    Ok(f)
}
