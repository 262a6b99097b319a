//! Network namespaces: created on a dedicated OS thread and bind-mounted at a path berth owns,
//! entered only from dedicated threads.
//!
//! `setns` and `unshare` change the calling *thread*'s namespace. Doing that on a tokio worker
//! (or any pooled thread) would leave later, unrelated work in the wrong namespace, so every
//! namespace switch here happens on a fresh scoped thread that exits when the work is done: no
//! guard has to restore anything, and a panic cannot leak a namespace into another task.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::names::{IncarnationId, Names};

/// Runs `f` on a new OS thread that has joined the network namespace `ns` (an open nsfs file,
/// such as a bind-mounted netns or `/proc/<pid>/ns/net`).
pub fn in_netns<F, R>(ns: &File, f: F) -> io::Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The `f_type` of nsfs (linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether `path` is a bind-mounted namespace (an nsfs inode), not merely a file.
pub fn is_mounted(path: &Path) -> bool {
    // f_type's integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as i64 == NSFS_MAGIC)
}

/// Creates a new network namespace bind-mounted at `path` and runs `init` inside it (on the
/// creating thread), unless `path` already holds one. Returns whether it was created.
///
/// Crash-safe: the namespace exists only once the bind mount does. A crash before that leaves at
/// most an empty file, which the next call mounts over.
pub fn create<F>(path: &Path, init: F) -> io::Result<bool>
where
    F: FnOnce() -> io::Result<()> + Send,
{
    if is_mounted(path) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        crate::fsutil::create_private_dir_all(dir)?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::fsutil::PRIVATE_FILE)
        .open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io::Error::from)?;
            init()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    Ok(true)
}

/// Unmounts and removes a namespace file; an absent one counts as removed. The namespace itself
/// lives on until its last process exits (a running container keeps it).
pub fn remove(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The `<name>-<id>` namespace files under `dir`, with their paths.
pub fn list(dir: &Path) -> io::Result<Vec<(String, IncarnationId, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(key) = file_name.to_str() else {
            continue;
        };
        if let Some((name, id)) = Names::parse_container_key(key) {
            out.push((name.to_string(), id, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Opens the current thread's own network namespace (to hand to [`in_netns`] later).
pub fn current() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}
