//! Per-container and per-host series, made at scrape time from the status the reconciler last
//! published: a container whose spec is gone leaves no series behind, and nothing has to be
//! kept in step with the loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::status::{ContainerStatus, Status};

/// Every status a container can be in: each container has one series per state, 1 for its
/// own, so a dashboard's query never meets a series that vanished.
const STATES: [Status; 10] = [
    Status::Waiting,
    Status::Pulling,
    Status::Creating,
    Status::Running,
    Status::Paused,
    Status::Stopped,
    Status::Exited,
    Status::Restarting,
    Status::Failed,
    Status::Removing,
];
const HEALTH: [&str; 3] = ["starting", "healthy", "unhealthy"];

/// The last published statuses, shared between the loop (which replaces them) and scrapes
/// (which read them). The lock is held only to swap or clone an `Arc`.
#[derive(Debug, Default)]
pub struct ContainerView {
    statuses: Mutex<Arc<Vec<ContainerStatus>>>,
    /// This host's labels, as `label_<name>` label pairs.
    host_labels: Vec<(String, String)>,
}

impl ContainerView {
    pub fn new(labels: &BTreeMap<String, String>) -> Self {
        ContainerView {
            statuses: Mutex::default(),
            host_labels: labels
                .iter()
                .map(|(k, v)| (format!("label_{}", label_name(k)), v.clone()))
                .collect(),
        }
    }

    pub fn set(&self, statuses: Arc<Vec<ContainerStatus>>) {
        *self.statuses.lock().expect("container view") = statuses;
    }

    fn get(&self) -> Arc<Vec<ContainerStatus>> {
        self.statuses.lock().expect("container view").clone()
    }
}

/// A host label name as a Prometheus label name: `[a-zA-Z0-9_]`, everything else `_`
/// (`example.com/tier` becomes `label_example_com_tier`).
fn label_name(k: &str) -> String {
    k.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

type Labels = Vec<(&'static str, String)>;

fn container(c: &ContainerStatus) -> Labels {
    vec![("container", c.name.clone())]
}

impl Collector for ContainerView {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all = self.get();
        let with = |c: &ContainerStatus, k: &'static str, v: &str| {
            let mut l = container(c);
            l.push((k, v.to_string()));
            l
        };
        let states = all.iter().flat_map(|c| {
            STATES
                .iter()
                .map(move |s| (with(c, "state", s.as_str()), i64::from(c.status == *s)))
        });
        gauges(
            &mut encoder,
            "container_state",
            "Whether a container is in this state (1) or not (0), one series per state",
            states,
        )?;
        let mut e = encoder.encode_descriptor(
            "container_restarts",
            "Restarts of a container's current incarnation after its process exited",
            None,
            MetricType::Counter,
        )?;
        for c in all.iter() {
            ConstCounter::new(u64::from(c.restarts)).encode(e.encode_family(&container(c))?)?;
        }
        let health = all.iter().flat_map(|c| {
            let now = c.health.as_deref();
            HEALTH
                .iter()
                .filter(move |_| now.is_some())
                .map(move |h| (with(c, "health", h), i64::from(now == Some(*h))))
        });
        gauges(
            &mut encoder,
            "container_health",
            "A container's health check state (1 for the current one); no series without a check",
            health,
        )?;
        let images = all.iter().map(|c| {
            let mut l = with(c, "image", &c.image);
            l.push((
                "digest",
                c.digest.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            ));
            (l, 1)
        });
        gauges(
            &mut encoder,
            "container_image_info",
            "The image a container runs: its reference and digest (value 1)",
            images,
        )?;
        gauges(
            &mut encoder,
            "container_rejected_digests",
            "Image digests that failed their verification and stay rejected until the tag moves",
            all.iter()
                .map(|c| (container(c), c.rejected_digests.len() as i64)),
        )?;
        if !self.host_labels.is_empty() {
            let mut e = encoder.encode_descriptor(
                "host_labels",
                "This host's labels from the agent config, as label_<name> (value 1)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64).encode(e.encode_family(&self.host_labels)?)?;
        }
        Ok(())
    }
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (Labels, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}
