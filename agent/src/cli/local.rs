//! Acting without an agent (`apply`, `plan`, `status`, `agent --stop-all` when no agent
//! answers): the state dir lock, the host backend and the spec source, in this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::store::error::StoreError;
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
        Self::with_lock(config, lock)
    }

    /// Like [`Local::open`], but waits up to `patience` for a short-lived holder (a CLI
    /// command) to let go of the lock.
    pub fn open_patiently(config: &Config, patience: Duration) -> Result<Local, String> {
        let deadline = Instant::now() + patience;
        loop {
            match StateLock::try_acquire(&Layout::new(config)) {
                Ok(lock) => return Self::with_lock(config, lock),
                // Only a holder is worth waiting for; a lock that can't be opened at all (not
                // root) never will be.
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn with_lock(config: &Config, lock: StateLock) -> Result<Local, String> {
        let id = crate::identity::HostIdentity::of(config);
        let metrics = Arc::new(Metrics::for_host(id.host_id.as_deref(), &id.labels));
        let host = Host::open(config, Some(metrics.clone())).map_err(|e| e.to_string())?;
        // Health checks run `berth exec` as a child: it must read the same config.
        let host = host.with_config_path(config.source.clone());
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
    let defaults: SpecDefaults = config.spec_defaults();
    let src = DirSource::new(&config.specs_dir, defaults, trusted, SETTLE)
        .for_host(crate::config::host_facts(config));
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

/// Where a command should go: the agent when one answers, else this process with the lock.
/// An agent that holds the lock but does not answer yet is starting: wait for it a while.
pub enum Target {
    Agent(Client),
    Local(Local),
}

pub async fn agent_or_local(config: &Config) -> Result<Target, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = agent(config).await {
            return Ok(Target::Agent(c));
        }
        match StateLock::try_acquire(&Layout::new(config)) {
            Ok(lock) => return Local::with_lock(config, lock).map(Target::Local),
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Sends an image command to the running agent (which holds the store); `None` when no agent
/// answers, so the caller does it itself under the lock.
pub fn image_op_via_agent(
    config: &Config,
    op: &crate::operations::ImageOp,
) -> Option<Result<crate::operations::ImageReply, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let agent = agent(config).await?;
        Some(
            agent
                .post_json("/v1/images", op)
                .await
                .map_err(|e| e.to_string()),
        )
    })
}
