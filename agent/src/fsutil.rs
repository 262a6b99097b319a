//! Crash-safe file writes: every state file berth keeps is written here, private to root.
//!
//! State is root's alone (docs/SECURITY.md): records carry environments, bundles carry what
//! container root made, layers carry whatever an image shipped (device nodes, setuid files).
//! Every file written here is 0600 and every dir made here 0700, whatever the umask.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every state file berth writes.
pub const PRIVATE_FILE: u32 = 0o600;
/// The mode of every dir berth makes under its state and run dirs.
pub const PRIVATE_DIR: u32 = 0o700;

/// Opens `path` for writing as a new private file (truncating a leftover of the same name and
/// making it private too: a temp name may be left by a crashed process of the same pid).
fn create_private(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))?;
    Ok(f)
}

/// Opens (creating, 0600) a file to append to: logs, partial downloads.
pub fn open_private_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE_FILE)
        .open(path)
}

/// Creates `path` and any missing parent as 0700 dirs. Existing dirs are left as they are
/// (see [`ensure_private_dir`] for the ones whose mode berth owns).
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)
}

/// Makes `path` a dir only root reaches: created 0700 if missing; if it exists, it must be a
/// dir owned by us (root), and its mode loses every group and other bit. The checks and the
/// chmod go through one fd, so what is judged is what is changed. Whether it had to be
/// tightened (an existing dir others could enter).
pub fn ensure_private_dir(path: &Path) -> io::Result<bool> {
    create_private_dir_all(path)?;
    let dir = File::open(path)?;
    let meta = dir.metadata()?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            path.display()
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(io::Error::other(format!(
            "{} is owned by uid {}, not by uid {me} (berth): whoever owns it controls berth's state; chown it to root",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        dir.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7700))?;
        return Ok(true);
    }
    Ok(false)
}

/// Takes group and other bits off an existing file or dir of berth's (not following a
/// symlink); a missing one is fine. For what an older berth wrote world-readable. One owned by
/// anyone else was not made by berth: refused.
pub fn make_private(path: &Path) -> io::Result<()> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if m.file_type().is_symlink() {
        return Ok(());
    }
    let me = rustix::process::geteuid().as_raw();
    if m.uid() != me {
        return Err(io::Error::other(format!(
            "owned by uid {}, not by uid {me} (berth): not berth's; remove it",
            m.uid()
        )));
    }
    if m.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(m.mode() & 0o7700))?;
    }
    Ok(())
}

/// Writes `data` to `path` so that after a crash at any instant the file holds either its old
/// contents or the new ones: write a temp file beside it, fsync, rename over, fsync the dir.
///
/// Not for files bind-mounted into a running container (their inode must stay): see
/// [`rewrite_in_place`].
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let (dir, tmp) = temp_beside(path)?;
    let result = (|| {
        let mut f = create_private(&tmp)?;
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
    let result = create_private(&tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|_| fs::rename(&tmp, path));
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
/// (/etc/hosts): a rename would leave the container looking at the old inode. These are 0644:
/// a container's non-root user reads them (through the bind, never through the state dir).
pub fn rewrite_in_place(path: &Path, data: &[u8]) -> io::Result<()> {
    rewrite_in_place_unsynced(path, data)?.sync_all()
}

/// [`rewrite_in_place`] without the fsync: for a caller that syncs the file later, off its
/// hot path (and before anything that relies on it being durable). Returns the open file.
pub fn rewrite_in_place_unsynced(path: &Path, data: &[u8]) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)?;
    f.write_all(data)?;
    f.set_len(data.len() as u64)?;
    Ok(f)
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
    fn state_files_and_dirs_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        // A leftover temp of a crashed process with this pid, world-readable.
        let (_, tmp) = temp_beside(&p).unwrap();
        fs::write(&tmp, b"old").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).unwrap();
        atomic_write(&p, b"one").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let q = dir.path().join("spec.json");
        atomic_replace(&q, b"two").unwrap();
        assert_eq!(fs::metadata(&q).unwrap().mode() & 0o777, 0o600);
        let log = dir.path().join("a.log");
        drop(open_private_append(&log).unwrap());
        assert_eq!(fs::metadata(&log).unwrap().mode() & 0o777, 0o600);

        let d = dir.path().join("a/b/c");
        create_private_dir_all(&d).unwrap();
        for x in ["a", "a/b", "a/b/c"] {
            let m = fs::metadata(dir.path().join(x)).unwrap().mode();
            assert_eq!(m & 0o777, 0o700, "{x}");
        }
        // An existing world-readable dir is tightened.
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ensure_private_dir(&open).unwrap());
        assert!(!ensure_private_dir(&open).unwrap());
        assert_eq!(fs::metadata(&open).unwrap().mode() & 0o7777, 0o700);
        fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
        make_private(&log).unwrap();
        assert_eq!(fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
        make_private(&dir.path().join("missing")).unwrap();
    }

    #[test]
    fn a_private_dir_owned_by_someone_else_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let e = ensure_private_dir(&theirs).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }

    #[test]
    fn rewrite_in_place_keeps_inode() {
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
