//! The MQTT reporter: this host's status pushed to a broker the operator already runs.
//!
//! It lives outside the reconcile loop, on a thread and a runtime of its own, and reads only
//! what the loop already publishes for everyone: the statuses (a watch channel), the event
//! stream (a broadcast channel) and the source summary (a watch channel). None of these ever
//! makes the loop wait, so nothing about the broker (down, slow, stalled mid-write, a TLS
//! handshake) reaches a pass: the cost of a dead broker is this thread's retries.
//!
//! - `online` (retained): "true" on every connect; the last will (retained "false") says a host
//!   that died or lost its link is offline, and a clean stop says so itself.
//! - `status` (retained): [`document::StatusDocument`], on change (debounced) and every
//!   `interval`, and at once on every (re)connect.
//! - `events` (not retained): each event as `berth events --json` prints it.
//!
//! While the broker is unreachable nothing queues: the status is made from the latest state
//! when the link is back, and events in between are counted as dropped.

mod connect;
mod debounce;
pub mod document;
mod publisher;

use std::sync::Arc;
use std::time::Duration;

use berth_spec::config::ReportConfig;
use tokio::sync::{broadcast, oneshot, watch};

use crate::identity::HostIdentity;
use crate::metrics::ReportMetrics;
use crate::status::{ContainerStatus, EventRecord, SourceSummary};

/// What the reporter reads: the loop's published state.
pub struct Feeds {
    pub statuses: watch::Receiver<Arc<Vec<ContainerStatus>>>,
    pub events: broadcast::Receiver<EventRecord>,
    pub source: watch::Receiver<Option<SourceSummary>>,
}

/// The running reporter; [`Reporter::stop`] says goodbye to the broker.
pub struct Reporter {
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

impl Reporter {
    /// Reads the credentials and certificates, then starts the reporter's thread. An error
    /// (a missing file, no host id for the topic) names the key and the reason.
    pub fn spawn(
        report: &ReportConfig,
        id: HostIdentity,
        feeds: Feeds,
        metrics: ReportMetrics,
    ) -> Result<Reporter, String> {
        let topics = document::Topics::under(&document::prefix(report, &id)?);
        let options = connect::options(report, &id, &topics)?;
        let (stop, stop_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let settings = publisher::Settings {
            topics,
            id,
            interval: report.interval,
            broker: report.mqtt.to_string(),
        };
        std::thread::Builder::new()
            .name("berth-report".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("reporter runtime");
                rt.block_on(publisher::run(options, settings, feeds, metrics, stop_rx));
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start the reporter thread: {e}"))?;
        Ok(Reporter { stop, done })
    }

    /// Publishes `online` "false" and disconnects cleanly when connected; gives up after
    /// `within` (a stalled broker does not hold the agent's exit).
    pub async fn stop(self, within: Duration) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(within, self.done).await;
    }
}
