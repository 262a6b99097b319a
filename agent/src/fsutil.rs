//! Crash-safe file writes: every state file berth keeps is written here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Writes `data` to `path` so that after a crash at any instant the file holds either its old
/// contents or the new ones: write a temp file beside it, fsync, rename over, fsync the dir.
///
/// Not for files bind-mounted into a running container (their inode must stay): see
/// [`rewrite_in_place`].
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let (dir, tmp) = temp_beside(path)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `path` atomically (temp + rename) without waiting for the disk: after a crash of
/// berth the file holds the old or the new contents; after a power loss it may hold the old
/// ones (ext4 and xfs flush a file renamed over another before the rename, so never a torn
/// or empty one). For state that a power loss makes moot anyway (what ran before the loss is
/// restarted from scratch) and that sits on the path from a spec to a running container,
/// where each fsync costs milliseconds.
pub fn atomic_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    let (_, tmp) = temp_beside(path)?;
    let result = std::fs::write(&tmp, data).and_then(|_| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The dir of `path` and a temp name beside it (hidden, this process's).
fn temp_beside(path: &Path) -> io::Result<(&Path, std::path::PathBuf)> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    Ok((dir, tmp))
}

/// Removes the temp files that writes of another process left in `dir` (a kill -9 between a
/// temp file and its rename): one agent per state dir, so another pid's temp is never in use.
pub fn remove_stale_temps(dir: &Path) {
    let ours = format!(".tmp{}", std::process::id());
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let is_temp = name.starts_with('.')
            && name
                .rsplit_once(".tmp")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if is_temp && !name.ends_with(&ours) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Serialises `value` as pretty JSON and writes it with [`atomic_write`].
pub fn atomic_write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    data.push(b'\n');
    atomic_write(path, &data)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Rewrites a file keeping its inode, for files bind-mounted into running containers
/// (/etc/hosts): a rename would leave the container looking at the old inode.
pub fn rewrite_in_place(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(data)?;
    f.set_len(data.len() as u64)?;
    f.sync_all()
}

/// fsyncs a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file; a missing file counts as removed.
pub fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a directory tree; a missing tree counts as removed.
pub fn remove_dir_all_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn rewrite_in_place_keeps_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        fs::write(&p, b"a long first version\n").unwrap();
        let ino = fs::metadata(&p).unwrap().ino();
        rewrite_in_place(&p, b"short\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"short\n");
        assert_eq!(fs::metadata(&p).unwrap().ino(), ino);
    }

    #[test]
    fn json_roundtrip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), None);
        atomic_write_json(&p, &vec![1u32, 2]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2]));
    }
}
