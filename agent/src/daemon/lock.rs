//! One reconciler per state dir: an exclusive flock held for the process's lifetime.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

pub struct StateLock {
    _lock: Flock<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open lock file {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("another berth (agent or apply) is acting on this state dir (lock {path} is held)")]
    Held { path: String },
    #[error("cannot lock {path}: {source}")]
    Lock { path: String, source: nix::Error },
}

impl StateLock {
    /// Takes the lock, or fails at once when another process holds it.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let p = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LockError::Open {
                path: p.clone(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| LockError::Open {
                path: p.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Held { path: p }),
            Err((_, source)) => Err(LockError::Lock { path: p, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state/lock");
        let first = StateLock::acquire(&p).unwrap();
        assert!(matches!(
            StateLock::acquire(&p),
            Err(LockError::Held { .. })
        ));
        drop(first);
        StateLock::acquire(&p).unwrap();
    }
}
