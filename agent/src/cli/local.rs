//! Acting without an agent (`apply`, `plan`, `status`, `agent --stop-all` when no agent
//! answers): the state dir lock, the host backend and the spec source, in this process.

use std::sync::Arc;

use berth_spec::{Config, SpecDefaults};
use tokio::sync::mpsc;

use crate::api::client::Client;
use crate::daemon::SETTLE;
use crate::host::Host;
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::source::dir::DirSource;
use crate::source::perms::TrustedOwners;
use crate::source::watch::SpecWatcher;
use crate::store::lock::StateLock;

/// What acting on this host needs, with the lock held for as long as it lives.
pub struct Local {
    pub host: Arc<Host>,
    pub metrics: Arc<Metrics>,
    _lock: StateLock,
}

impl Local {
    /// Takes the state dir lock (failing at once if an agent or another command holds it)
    /// and opens the host.
    pub fn open(config: &Config) -> Result<Local, String> {
        let lock = StateLock::try_acquire(&Layout::new(config)).map_err(|e| e.to_string())?;
        let metrics = Arc::new(Metrics::new());
        let host = Host::open(config, Some(metrics.clone())).map_err(|e| e.to_string())?;
        Ok(Local {
            host: Arc::new(host),
            metrics,
            _lock: lock,
        })
    }
}

/// The spec dir as a source, with the host's defaults and owner policy; watched when `wake`
/// is given.
pub fn source(config: &Config, wake: Option<mpsc::Sender<()>>) -> Result<DirSource, String> {
    let trusted = TrustedOwners::resolve(&config.trusted_owners)?;
    let defaults = SpecDefaults {
        logging: config.logging,
    };
    let src = DirSource::new(&config.specs_dir, defaults, trusted, SETTLE);
    match wake {
        Some(tx) => {
            let w = SpecWatcher::new(&config.specs_dir, tx)
                .map_err(|e| format!("cannot watch {}: {e}", config.specs_dir.display()))?;
            Ok(src.with_watcher(w))
        }
        None => Ok(src),
    }
}

/// The async runtime the agent and the in-process commands run on.
pub fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A client for the agent's socket, if an agent answers on it.
pub async fn agent(config: &Config) -> Option<Client> {
    let c = Client::new(&Layout::new(config).socket());
    c.is_up().await.then_some(c)
}
