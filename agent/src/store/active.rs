//! Bookkeeping shared by pulls in one process: which layers and blobs pulls in progress will
//! reference (GC keeps them), and one lock per layer so concurrent pulls share one download.

use std::sync::{Arc, Mutex};

use super::Store;
use super::index::LayerRef;

/// Drops the registration of a pull's layers when it ends, however it ends.
pub(crate) struct ActiveGuard {
    store: Store,
    keys: Vec<String>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut active = self.store.inner.active.lock().expect("active");
        for k in &self.keys {
            if let Some(n) = active.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    active.remove(k);
                }
            }
        }
    }
}

impl Store {
    /// Marks layers and blobs as in use by a pull, so GC leaves them alone.
    pub(crate) fn activate(&self, layers: &[LayerRef]) -> ActiveGuard {
        let keys: Vec<String> = layers
            .iter()
            .flat_map(|l| [l.diff_id.to_string(), l.blob_digest.to_string()])
            .collect();
        let mut active = self.inner.active.lock().expect("active");
        for k in &keys {
            *active.entry(k.clone()).or_default() += 1;
        }
        ActiveGuard {
            store: self.clone(),
            keys,
        }
    }

    pub(crate) fn inflight(&self, key: &str) -> Arc<Mutex<()>> {
        self.inner
            .inflight
            .lock()
            .expect("inflight")
            .entry(key.to_string())
            .or_default()
            .clone()
    }
}
