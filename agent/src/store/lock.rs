//! The state dir lock (`<state_dir>/lock`, flock): one writer at a time, the agent or a CLI
//! command. Readers (`berth images`) do not take it: records are replaced atomically.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use rustix::fs::FlockOperation;

use crate::layout::Layout;

use super::error::StoreError;

/// Held for as long as it lives; the kernel releases it if the process dies.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    pub path: PathBuf,
}

impl StateLock {
    /// Takes the lock, or fails at once with [`StoreError::Locked`] when another process has
    /// it.
    pub fn try_acquire(layout: &Layout) -> Result<StateLock, StoreError> {
        Self::take(layout, FlockOperation::NonBlockingLockExclusive)
    }

    /// Takes the lock, waiting for the holder to let go.
    pub fn acquire(layout: &Layout) -> Result<StateLock, StoreError> {
        Self::take(layout, FlockOperation::LockExclusive)
    }

    fn take(layout: &Layout, op: FlockOperation) -> Result<StateLock, StoreError> {
        let path = layout.lock_file();
        crate::fsutil::create_private_dir_all(&layout.state_dir)
            .map_err(|e| StoreError::io(&layout.state_dir, e))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::fsutil::PRIVATE_FILE)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        match rustix::fs::flock(&file, op) {
            Ok(()) => Ok(StateLock { _file: file, path }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Locked {
                path: layout.state_dir.clone(),
            }),
            Err(e) => Err(StoreError::io(&path, e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_is_refused_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            state_dir: dir.path().to_path_buf(),
            run_dir: dir.path().join("run"),
        };
        let first = StateLock::try_acquire(&layout).unwrap();
        // flock locks belong to the open file description: a second open conflicts even
        // within one process.
        let err = StateLock::try_acquire(&layout).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        drop(first);
        StateLock::try_acquire(&layout).unwrap();
    }
}
