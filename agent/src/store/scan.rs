//! The import directory (`images_dir`): archives dropped there are imported, verified and
//! pinned. Which files were handled, at which size and mtime, is remembered in the state dir,
//! so the import dir itself may be read-only (a USB stick) and nothing is imported twice; a
//! file that changes (a copy that was still running) is tried again.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsutil;

use super::Store;
use super::error::StoreError;

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
/// handled now. Hidden files are skipped (a copy in progress is often named `.x.tmp`). The
/// caller holds the state dir lock.
pub fn scan_import_dir(store: &Store, dir: &Path) -> Result<Vec<ImportOutcome>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        // Spec repository bundles share the dir: `[source]` imports those.
        .filter(|p| !crate::source::git::is_bundle(p))
        .collect();
    paths.sort();
    let seen_dir = store.layout().images_dir().join("imported");
    fs::create_dir_all(&seen_dir).map_err(|e| StoreError::io(&seen_dir, e))?;
    let mut out = Vec::new();
    for path in paths {
        let Ok(md) = fs::metadata(&path) else {
            continue;
        };
        let mtime_ns = i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec());
        let size = if md.is_dir() { 0 } else { md.len() };
        let marker = seen_path(store, &path);
        if let Ok(Some(s)) = fsutil::read_json::<Seen>(&marker)
            && s.size == size
            && s.mtime_ns == mtime_ns
        {
            continue;
        }
        let result = match store.import_records(&path, None) {
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
