//! What the executor needs from the world: the store, the runtime and the network, behind one
//! narrow trait so the loop can be tested without a kernel and the kernel edges without a loop.
//! What operators ask (image commands, prune) is the other trait, [`crate::operations`].
//!
//! Every method is blocking and idempotent (the executor runs them on blocking threads, never
//! on a tokio worker): re-running one after a crash at any point is fine.

use berth_spec::ImageSource;
use berth_spec::model::Resources;
use tokio::sync::mpsc;

use crate::names::IncarnationId;
use crate::reconcile::action::{Create, RemoveReason, StopCause};
use crate::reconcile::health::CheckRun;
use crate::reconcile::model::{Observed, ObservedContainer, Retry, UpdateState};
use berth_spec::model::HealthCheck;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub message: String,
    pub retry: Retry,
}

impl ActionError {
    pub fn transient(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            retry: Retry::Backoff,
        }
    }
    /// The download does not fit on the disk now; tried again later, never written meanwhile.
    pub fn deferred(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            retry: Retry::WhenRoom,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        ActionError {
            message: message.into(),
            retry: Retry::Never,
        }
    }
}

/// What the reconcile loop drives: observing the host and carrying out the planner's actions.
pub trait Backend: Send + Sync + 'static {
    /// Prepares the host (bridge, firewall table) and removes what crashed incarnations left
    /// behind. Called once at start, before the first observation.
    fn startup(&self) -> Result<(), ActionError>;

    /// Everything there is now: every container record (adopting live shims), every image.
    fn observe(&self) -> Result<Observed, ActionError>;

    /// One container, after an action or an exit; `None` when it has no record.
    fn observe_one(&self, name: &str) -> Option<ObservedContainer>;

    /// A container's update history (kept across its incarnations).
    fn update_state(&self, _name: &str) -> UpdateState {
        UpdateState::default()
    }

    /// Fetches an image (or imports an on-disk one) and returns the digest it resolves to.
    /// When the store cannot hold it, images `keep` does not protect are collected first
    /// (none without `keep`); if it still does not fit, the error is
    /// [`ActionError::deferred`] and nothing was written.
    fn pull(
        &self,
        image: &ImageSource,
        keep: Option<&Keep>,
    ) -> Result<berth_spec::Digest, ActionError>;

    /// Asks the registry what a tag points to now, without downloading the image.
    fn check(&self, image: &ImageSource) -> Result<RemoteImage, ActionError>;

    /// Makes and starts a new incarnation from the image with `image_digest`, records what it
    /// means for the update history, and with `replacing` removes that incarnation once the
    /// new one runs. On failure nothing of the new one is left (and `replacing` still runs).
    fn create(&self, req: &Create) -> Result<(), ActionError>;

    /// The updated image passed its verification.
    fn mark_verified(&self, name: &str) -> Result<(), ActionError>;

    /// Runs a health check inside the container: whether it passed, and its output.
    fn health_check(&self, name: &str, check: &HealthCheck) -> CheckRun;

    /// Starts an existing incarnation again, recording the crash streak.
    fn start(&self, name: &str, id: &IncarnationId, crash_streak: u32) -> Result<(), ActionError>;

    fn pause(&self, name: &str, id: &IncarnationId) -> Result<(), ActionError>;
    fn resume(&self, name: &str, id: &IncarnationId) -> Result<(), ActionError>;

    /// Stops the process (its own stop signal, then SIGKILL), releases its published ports,
    /// keeps its rootfs and address; `cause` says what its exit counts as.
    fn stop(&self, name: &str, id: &IncarnationId, cause: StopCause) -> Result<(), ActionError>;

    /// Stops it and removes everything the incarnation owns. On `Pruned`, also the
    /// container's dir (its named volumes stay).
    fn remove(&self, name: &str, id: &IncarnationId, why: RemoveReason) -> Result<(), ActionError>;

    fn update_resources(
        &self,
        name: &str,
        id: &IncarnationId,
        resources: &Resources,
    ) -> Result<(), ActionError>;

    /// Starts reporting what happens behind the loop's back: exits, repairs. Called once, on
    /// the async runtime.
    fn watch(&self, tx: mpsc::UnboundedSender<Notice>);

    /// Periodic repair: restore drifted network pieces, remove orphans of this instance,
    /// collect unused images. Which containers exist it judges from its own records at that
    /// moment, not from the caller's earlier observation.
    fn resync(&self, keep: &Keep) -> Result<(), ActionError>;

    /// Problems of the host that containers suffer from (another firewall dropping the bridge's
    /// forwarded traffic), each with its fix; looked at on start and at every resync.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// A spec may have changed and a create may follow: begin now what its first kernel step
    /// would wait for (the cgroup migration lock's grace period after idle), so the wait runs
    /// beside the spec read and the plan instead of after them. Called on the loop: it only
    /// signals, never blocks; nothing changes.
    fn prepare_for_changes(&self) {}

    /// Imports archives dropped in the import dir; one line per archive, for the event log.
    /// The loop's, not an operator's: it runs when the dir changes, on SIGHUP and at every
    /// resync.
    fn scan_imports(&self) -> Vec<String>;
}

/// What a registry says a tag points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    /// The platform manifest digest.
    pub digest: berth_spec::Digest,
    /// The image config's `created`, Unix seconds.
    pub created: Option<u64>,
}

/// What the backend reports on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A container's process exited.
    Exited(String),
    /// Something changed behind berth's back was put back (for the event log).
    Repaired(String),
}

impl Keep {
    /// What the specs (last valid ones too) and the containers protect.
    pub fn of(desired: &crate::reconcile::model::Desired, observed: &Observed) -> Keep {
        let specs = || {
            desired
                .specs
                .values()
                .filter_map(|e| e.spec.as_ref())
                .map(|d| &d.spec)
        };
        let mut digests: Vec<berth_spec::Digest> = observed
            .containers
            .values()
            .map(|o| o.image_digest.clone())
            .collect();
        // What they would roll back to, and what a lost incarnation is made again from while
        // its tag names a rejected or held digest.
        digests.extend(
            observed
                .updates
                .values()
                .flat_map(|h| [h.previous.clone(), h.last_digest.clone()])
                .flatten(),
        );
        Keep {
            images: specs().map(|s| s.image.clone()).collect(),
            digests,
            volumes: specs()
                .flat_map(|s| s.extra.mounts.iter())
                .filter_map(|m| match &m.kind {
                    berth_spec::model::MountKind::Volume { name } => Some(name.clone()),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// What a resync must leave alone.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// Images the specs name.
    pub images: Vec<ImageSource>,
    /// Image digests to keep: what containers run and what they would roll back to.
    pub digests: Vec<berth_spec::Digest>,
    /// Named volumes the specs mount.
    pub volumes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::model::{UpdateState, test_digest};

    #[test]
    fn keep_protects_what_a_container_would_be_made_from_again() {
        let mut observed = Observed::default();
        observed.updates.insert(
            "app".into(),
            UpdateState {
                last_digest: Some(test_digest("last")),
                previous: Some(test_digest("previous")),
                ..UpdateState::default()
            },
        );
        // No container runs: its incarnation was lost, a replacement is due.
        let keep = Keep::of(&crate::reconcile::model::Desired::default(), &observed);
        assert!(keep.digests.contains(&test_digest("last")));
        assert!(keep.digests.contains(&test_digest("previous")));
    }
}
