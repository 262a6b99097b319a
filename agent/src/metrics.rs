//! Prometheus metrics the reconciler updates and the API (and `metrics_listen`) serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabel {
    pub commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabel {
    pub id: String,
}

pub struct Metrics {
    registry: Registry,
    pub passes: Counter,
    pub pass_duration: Histogram,
    pub containers: Family<StateLabel, Gauge>,
    pub restarts: Counter,
    pub pulls: Family<ResultLabel, Counter>,
    pub pull_bytes: Counter,
    /// 1 for the commit whose specs this host runs (one series at a time).
    pub source_commit: Family<CommitLabel, Gauge>,
    pub source_fetch_failures: Counter,
    pub source_refused: Family<ReasonLabel, Counter>,
    /// 1 when this host is in the rollout the tip carries, 0 when out; no series without one.
    pub rollout_in: Family<RolloutLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let passes = Counter::default();
        registry.register("reconcile_passes", "Reconcile passes run", passes.clone());
        // 0.5 ms to ~4 s: a pass over unchanged specs is sub-millisecond, one with pulls long.
        let pass_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14),
        );
        registry.register(
            "reconcile_pass_duration_seconds",
            "How long a reconcile pass took",
            pass_duration.clone(),
        );
        let containers = Family::<StateLabel, Gauge>::default();
        registry.register("containers", "Containers by status", containers.clone());
        let restarts = Counter::default();
        registry.register(
            "container_restarts",
            "Containers restarted after an exit",
            restarts.clone(),
        );
        let pulls = Family::<ResultLabel, Counter>::default();
        registry.register("image_pulls", "Image pulls by result", pulls.clone());
        let pull_bytes = Counter::default();
        registry.register(
            "image_pull_bytes",
            "Bytes downloaded from registries",
            pull_bytes.clone(),
        );
        let source_commit = Family::<CommitLabel, Gauge>::default();
        registry.register(
            "source_commit_info",
            "The spec repository commit this host runs (value 1)",
            source_commit.clone(),
        );
        let source_fetch_failures = Counter::default();
        registry.register(
            "source_fetch_failures",
            "Fetches of the spec repository that failed",
            source_fetch_failures.clone(),
        );
        let source_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "source_refused",
            "Spec repository tips refused, by reason",
            source_refused.clone(),
        );
        let rollout_in = Family::<RolloutLabel, Gauge>::default();
        registry.register(
            "rollout_in",
            "Whether this host is in the staged rollout (1) or applies its from commit (0)",
            rollout_in.clone(),
        );
        Metrics {
            registry,
            passes,
            pass_duration,
            containers,
            restarts,
            pulls,
            pull_bytes,
            source_commit,
            source_fetch_failures,
            source_refused,
            rollout_in,
        }
    }

    /// Publishes the source's state: the applied commit and the rollout placement.
    pub fn set_source(&self, status: &crate::status::SourceState) {
        self.source_commit.clear();
        if let Some(a) = &status.applied {
            self.source_commit
                .get_or_create(&CommitLabel {
                    commit: a.commit.to_string(),
                })
                .set(1);
        }
        self.rollout_in.clear();
        if let Some(r) = &status.rollout {
            self.rollout_in
                .get_or_create(&RolloutLabel { id: r.id.clone() })
                .set(i64::from(r.included));
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_prefix() {
        let m = Metrics::new();
        m.passes.inc();
        m.pulls
            .get_or_create(&ResultLabel {
                result: "ok".into(),
            })
            .inc();
        m.containers
            .get_or_create(&StateLabel {
                state: "running".into(),
            })
            .set(3);
        let text = m.encode();
        assert!(text.contains("berth_reconcile_passes_total 1"), "{text}");
        assert!(
            text.contains("berth_image_pulls_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("berth_containers{state=\"running\"} 3"),
            "{text}"
        );
    }
}
