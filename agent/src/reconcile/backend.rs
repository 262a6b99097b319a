//! What the executor needs from the world: the store, the runtime and the network, behind one
//! narrow trait so the loop can be tested without a kernel and the kernel edges without a loop.
//!
//! Every method is blocking and idempotent (the executor runs them on blocking threads, never
//! on a tokio worker): re-running one after a crash at any point is fine.

use berth_spec::model::Resources;
use berth_spec::{ContainerSpec, ImageSource};
use tokio::sync::mpsc;

use super::model::{Observed, ObservedContainer};
use super::plan::RemoveReason;
use crate::names::IncarnationId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub message: String,
    /// Whether trying again later can help (a registry down, a port held by another process).
    pub transient: bool,
}

impl ActionError {
    pub fn transient(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            transient: true,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            transient: false,
        }
    }
}

pub trait Backend: Send + Sync + 'static {
    /// Prepares the host (bridge, firewall table) and removes what crashed incarnations left
    /// behind. Called once at start, before the first observation.
    fn startup(&self) -> Result<(), ActionError>;

    /// Everything there is now: every container record (adopting live shims), every image.
    fn observe(&self) -> Result<Observed, ActionError>;

    /// One container, after an action or an exit; `None` when it has no record.
    fn observe_one(&self, name: &str) -> Option<ObservedContainer>;

    /// Fetches an image (or imports an on-disk one) and returns the digest it resolves to.
    fn pull(&self, image: &ImageSource) -> Result<String, ActionError>;

    /// Makes and starts a new incarnation. On failure nothing of it is left.
    fn create(
        &self,
        name: &str,
        spec: &ContainerSpec,
        hash: &str,
        image_digest: &str,
    ) -> Result<(), ActionError>;

    /// Starts an existing incarnation again, recording the crash streak.
    fn start(&self, name: &str, id: &IncarnationId, crash_streak: u32) -> Result<(), ActionError>;

    fn pause(&self, name: &str, id: &IncarnationId) -> Result<(), ActionError>;
    fn resume(&self, name: &str, id: &IncarnationId) -> Result<(), ActionError>;

    /// Stops the process (its own stop signal, then SIGKILL), releases its published ports,
    /// keeps its rootfs and address.
    fn stop(&self, name: &str, id: &IncarnationId) -> Result<(), ActionError>;

    /// Stops it and removes everything the incarnation owns. On `Pruned`, also the
    /// container's dir (its named volumes stay).
    fn remove(&self, name: &str, id: &IncarnationId, why: RemoveReason) -> Result<(), ActionError>;

    fn update_resources(
        &self,
        name: &str,
        id: &IncarnationId,
        resources: &Resources,
    ) -> Result<(), ActionError>;

    /// Sends a container's name whenever one of its processes exits. Called once.
    fn watch_exits(&self, tx: mpsc::UnboundedSender<String>);

    /// Periodic repair: restore drifted network pieces, remove orphans of this instance,
    /// collect unused images.
    fn resync(&self, keep: &Keep) -> Result<(), ActionError>;

    /// Imports archives dropped in the import dir; one line per archive, for the event log.
    fn scan_imports(&self) -> Vec<String>;
}

/// What a resync must leave alone.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// Every container that should keep its kernel objects.
    pub containers: Vec<(String, IncarnationId)>,
    /// Images the specs name.
    pub images: Vec<ImageSource>,
    /// Image digests to keep for rollback.
    pub digests: Vec<String>,
}
