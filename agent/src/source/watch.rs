//! Watching the spec dir with inotify: any relevant event means "rescan the whole dir".
//!
//! Events never say what changed (a `..data` symlink swap names only `..data`), so they only
//! wake the loop; the loader rereads everything. Writes in progress (IN_MODIFY) are ignored:
//! a file is acted on when it is closed after writing or renamed into place. The dir's parent
//! is watched too, so a spec dir that is created late, deleted or swapped (a symlink to a new
//! checkout) is picked up again by [`SpecWatcher::refresh`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps inotify watches on a spec dir (recursively, for `.toml.d` drop-ins and `..data`
/// checkouts) and its parent; sends `()` on `wake` whenever something relevant happens.
pub struct SpecWatcher {
    dir: PathBuf,
    watcher: RecommendedWatcher,
    /// (device, inode) of the dir currently watched, `None` when it could not be watched.
    watched: Option<(u64, u64)>,
    parent_watched: bool,
}

impl SpecWatcher {
    pub fn new(dir: &Path, wake: mpsc::Sender<()>) -> notify::Result<Self> {
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let relevant = match &res {
                Ok(ev) => is_relevant(ev),
                // An error (e.g. a queue overflow) may hide changes: rescan.
                Err(_) => true,
            };
            if relevant {
                // A full channel already holds a pending wake-up: the burst coalesces.
                let _ = wake.try_send(());
            }
        })?;
        let mut w = SpecWatcher {
            dir: dir.to_path_buf(),
            watcher,
            watched: None,
            parent_watched: false,
        };
        w.refresh();
        Ok(w)
    }

    /// Re-establishes the watches when the dir appeared, vanished or was replaced. Cheap when
    /// nothing changed (two stats); the loop calls it before every scan.
    pub fn refresh(&mut self) {
        if !self.parent_watched
            && let Some(parent) = self.dir.parent()
        {
            self.parent_watched = self
                .watcher
                .watch(parent, RecursiveMode::NonRecursive)
                .is_ok();
        }
        let identity = std::fs::metadata(&self.dir)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if identity == self.watched {
            return;
        }
        if self.watched.is_some() {
            let _ = self.watcher.unwatch(&self.dir);
        }
        self.watched = None;
        if identity.is_some()
            && self
                .watcher
                .watch(&self.dir, RecursiveMode::Recursive)
                .is_ok()
        {
            self.watched = identity;
        }
    }

    pub fn is_watching(&self) -> bool {
        self.watched.is_some()
    }
}

/// Watches one dir (not recursively) and sends `()` on `wake` when something lands in it:
/// the image import dir.
pub fn watch_dir(dir: &Path, wake: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.as_ref().map_or(true, is_relevant) {
            let _ = wake.try_send(());
        }
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}

fn is_relevant(ev: &notify::Event) -> bool {
    let kind_matters = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        // Data written to a file still open for writing: wait for its close.
        EventKind::Modify(ModifyKind::Data(_)) => false,
        _ => true,
    };
    kind_matters && (ev.paths.is_empty() || ev.paths.iter().any(|p| !is_editor_leftover(p)))
}

/// Swap files and backups editors leave beside the files they edit.
pub fn is_editor_leftover(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name.starts_with(".#")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn woken(rx: &mut mpsc::Receiver<()>) -> bool {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .is_ok()
    }

    fn drain(rx: &mut mpsc::Receiver<()>) {
        while rx.try_recv().is_ok() {}
    }

    /// One real-inotify smoke test: the events that matter wake the loop.
    #[tokio::test]
    async fn wakes_on_close_write_rename_delete_and_dir_swap() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("specs");
        let (tx, mut rx) = mpsc::channel(1);
        // The dir does not exist yet: its creation is seen through the parent.
        let mut w = SpecWatcher::new(&dir, tx).unwrap();
        assert!(!w.is_watching());
        std::fs::create_dir(&dir).unwrap();
        assert!(woken(&mut rx).await, "dir creation");
        w.refresh();
        assert!(w.is_watching());
        drain(&mut rx);

        std::fs::write(dir.join("web.toml"), "image = \"x\"\n").unwrap();
        assert!(woken(&mut rx).await, "write + close");
        drain(&mut rx);

        std::fs::write(dir.join(".web.toml.tmp"), "image = \"y\"\n").unwrap();
        drain(&mut rx);
        std::fs::rename(dir.join(".web.toml.tmp"), dir.join("web.toml")).unwrap();
        assert!(woken(&mut rx).await, "rename into place");
        drain(&mut rx);

        std::fs::create_dir(dir.join("web.toml.d")).unwrap();
        drain(&mut rx);
        std::fs::write(dir.join("web.toml.d/10-host.toml"), "env = {}\n").unwrap();
        assert!(woken(&mut rx).await, "drop-in");
        drain(&mut rx);

        std::fs::remove_file(dir.join("web.toml")).unwrap();
        assert!(woken(&mut rx).await, "delete");
        drain(&mut rx);

        // The whole dir replaced by another one: refresh follows the new inode.
        let other = root.path().join("specs.new");
        std::fs::create_dir(&other).unwrap();
        drain(&mut rx);
        std::fs::rename(&dir, root.path().join("specs.old")).unwrap();
        std::fs::rename(&other, &dir).unwrap();
        assert!(woken(&mut rx).await, "dir swap seen through the parent");
        w.refresh();
        drain(&mut rx);
        std::fs::write(dir.join("db.toml"), "image = \"x\"\n").unwrap();
        assert!(woken(&mut rx).await, "write in the new dir");
    }

    #[test]
    fn leftovers() {
        for p in [".web.toml.swp", "web.toml~", ".#web.toml", "x.swx"] {
            assert!(is_editor_leftover(Path::new(p)), "{p}");
        }
        for p in ["web.toml", "..data", ".hidden.toml"] {
            assert!(!is_editor_leftover(Path::new(p)), "{p}");
        }
    }
}
