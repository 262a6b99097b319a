//! Prometheus metrics: what the reconciler and the reporter update, the API's `/metrics` and
//! the `metrics_listen` TCP listener serve. Names and help texts are stable: docs/metrics.md
//! lists every family (a test checks);
//! every series carries this host's `host_id`, so a fleet's series stay apart whether
//! Prometheus scrapes the hosts or they push through remote_write.

mod containers;
pub mod text;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use containers::ContainerView;

use crate::status::{ContainerStatus, SourceSummary};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabel {
    pub container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub arch: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub passes: Counter,
    pub pass_duration: Histogram,
    pub containers: Family<StateLabel, Gauge>,
    pub pulls: Family<ResultLabel, Counter>,
    pub pull_bytes: Counter,
    /// Unix time (seconds) of the end of the last pass planned from a complete scan.
    pub last_pass: Gauge<f64, AtomicU64>,
    pub updates: Family<ContainerLabel, Counter>,
    pub rollbacks: Family<ContainerLabel, Counter>,
    /// 1 for the commit whose specs this host runs (one series at a time).
    pub source_commit: Family<CommitLabel, Gauge>,
    pub source_fetch_failures: Counter,
    pub source_refused: Family<ReasonLabel, Counter>,
    /// 1 when this host is in the rollout the tip carries, 0 when out; no series without one.
    pub rollout_in: Family<RolloutLabel, Gauge>,
    pub report: ReportMetrics,
    container_view: Arc<ContainerView>,
    /// The containers `updates` and `rollbacks` have series for (see `set_containers`).
    counted: Mutex<BTreeSet<String>>,
    /// The source summary's latest value, for the MQTT reporter (the same as the series).
    source_summary: tokio::sync::watch::Sender<Option<SourceSummary>>,
}

/// The MQTT reporter's own health.
#[derive(Clone, Default)]
pub struct ReportMetrics {
    /// 1 while connected to the broker.
    pub connected: Gauge,
    pub connect_failures: Counter,
    pub published: Family<KindLabel, Counter>,
    /// Events not sent because the broker was unreachable (the status says where things are).
    pub events_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics without a host id or labels (tests, in-process commands).
    pub fn new() -> Self {
        Self::for_host(None, &BTreeMap::new())
    }

    /// Metrics whose every series carries `host_id`, with the host's labels as
    /// `berth_host_labels`.
    /// Long because: one registration per metric with its help text, the whole set in one
    /// place as `/metrics` lists it.
    pub fn for_host(host_id: Option<&str>, labels: &BTreeMap<String, String>) -> Self {
        let const_labels: Vec<(Cow<'static, str>, Cow<'static, str>)> = host_id
            .map(|h| (Cow::Borrowed("host_id"), Cow::Owned(h.to_string())))
            .into_iter()
            .collect();
        let mut registry = Registry::with_prefix_and_labels("berth", const_labels.into_iter());
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
        let last_pass = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_successful_pass_timestamp_seconds",
            "Unix time at the end of the last reconcile pass planned from a complete read of the specs",
            last_pass.clone(),
        );
        let containers = Family::<StateLabel, Gauge>::default();
        registry.register("containers", "Containers by status", containers.clone());
        let pulls = Family::<ResultLabel, Counter>::default();
        registry.register("image_pulls", "Image pulls by result", pulls.clone());
        let pull_bytes = Counter::default();
        registry.register(
            "image_pull_bytes",
            "Bytes downloaded from registries",
            pull_bytes.clone(),
        );
        let updates = Family::<ContainerLabel, Counter>::default();
        registry.register(
            "container_updates",
            "Containers recreated on a new image digest (an update to verify)",
            updates.clone(),
        );
        let rollbacks = Family::<ContainerLabel, Counter>::default();
        registry.register(
            "container_rollbacks",
            "Containers rolled back to their previous image after a failed verification",
            rollbacks.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                arch: std::env::consts::ARCH.into(),
            })
            .set(1);
        registry.register("build_info", "The agent's version (value 1)", build);
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
        let report = ReportMetrics::default();
        registry.register(
            "report_connected",
            "Whether the MQTT reporter is connected to its broker (1) or not (0)",
            report.connected.clone(),
        );
        registry.register(
            "report_connect_failures",
            "Connections to the MQTT broker that failed or broke",
            report.connect_failures.clone(),
        );
        registry.register(
            "report_published",
            "MQTT messages handed to the broker, by kind (online, status, event)",
            report.published.clone(),
        );
        registry.register(
            "report_events_dropped",
            "Events not published because the MQTT broker was unreachable",
            report.events_dropped.clone(),
        );
        let container_view = Arc::new(ContainerView::new(labels));
        registry.register_collector(Box::new(container_view.clone()));
        Metrics {
            registry,
            passes,
            pass_duration,
            containers,
            pulls,
            pull_bytes,
            last_pass,
            updates,
            rollbacks,
            source_commit,
            source_fetch_failures,
            source_refused,
            rollout_in,
            report,
            container_view,
            counted: Mutex::default(),
            source_summary: tokio::sync::watch::channel(None).0,
        }
    }

    /// The statuses the per-container series come from (the loop's last published ones).
    /// Each container's update and rollback counters exist from its first status, at 0: a
    /// counter that first appears at 1 shows no `increase()` in Prometheus, so an alert on a
    /// host's first rollback would never fire. They go with the container, as its other
    /// series do.
    pub fn set_containers(&self, statuses: Arc<Vec<ContainerStatus>>) {
        let now: BTreeSet<String> = statuses.iter().map(|s| s.name.clone()).collect();
        {
            let mut counted = self.counted.lock().expect("counted containers");
            for gone in counted.difference(&now) {
                let label = ContainerLabel {
                    container: gone.clone(),
                };
                self.updates.remove(&label);
                self.rollbacks.remove(&label);
            }
            for name in now.difference(&counted) {
                let label = ContainerLabel {
                    container: name.clone(),
                };
                let _ = self.updates.get_or_create(&label);
                let _ = self.rollbacks.get_or_create(&label);
            }
            *counted = now;
        }
        self.container_view.set(statuses);
    }

    /// With a `[source]`: every refusal reason counted from 0 (a first refusal must show as an
    /// `increase()`, see `set_containers`).
    pub fn count_refusals(&self, reasons: impl IntoIterator<Item = &'static str>) {
        for reason in reasons {
            let _ = self.source_refused.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
    }

    /// Publishes the spec repository's state (`[source]`): the series and the reporter's
    /// summary.
    pub fn set_source(&self, state: &crate::status::SourceState) {
        self.set_source_summary(Some(&SourceSummary::of(state)));
    }

    /// The source summary as it changes (the MQTT reporter's view).
    pub fn source_summaries(&self) -> tokio::sync::watch::Receiver<Option<SourceSummary>> {
        self.source_summary.subscribe()
    }

    /// Publishes the source's state: the applied commit and the rollout placement.
    pub fn set_source_summary(&self, source: Option<&SourceSummary>) {
        self.source_summary.send_replace(source.cloned());
        self.source_commit.clear();
        self.rollout_in.clear();
        let Some(s) = source else { return };
        if let Some(c) = &s.commit {
            self.source_commit
                .get_or_create(&CommitLabel { commit: c.clone() })
                .set(1);
        }
        if let Some(r) = &s.rollout {
            self.rollout_in
                .get_or_create(&RolloutLabel { id: r.id.clone() })
                .set(i64::from(r.included));
        }
    }

    /// The Prometheus text format (0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        text::from_openmetrics(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{RolloutMembership, Status};

    fn status(name: &str, status: Status, health: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            desired: "running".into(),
            status,
            reason: None,
            pid: None,
            exit_code: None,
            oom_killed: false,
            image: "reg/web:1".into(),
            digest: Some(berth_spec::Digest::from_sha256([0xab; 32])),
            ip: None,
            ip6: None,
            network_of: None,
            ports: vec![],
            restarts: 4,
            health: health.map(str::to_string),
            error: None,
            since: None,
            id: None,
            previous_digest: None,
            rejected_digests: vec![berth_spec::Digest::from_sha256([0xcd; 32])],
        }
    }

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
            text.contains("# TYPE berth_reconcile_passes_total counter"),
            "{text}"
        );
        assert!(
            text.contains("berth_image_pulls_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("berth_containers{state=\"running\"} 3"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn per_container_host_and_source_series() {
        let labels = BTreeMap::from([
            ("site".to_string(), "berlin".to_string()),
            ("example.com/tier".to_string(), "edge".to_string()),
        ]);
        let m = Metrics::for_host(Some("edge-7"), &labels);
        m.set_containers(Arc::new(vec![
            status("web", Status::Running, Some("healthy")),
            status("job", Status::Exited, None),
        ]));
        m.set_source_summary(Some(&SourceSummary {
            commit: Some("9c1e".into()),
            rollout: Some(RolloutMembership {
                id: "r1".into(),
                included: true,
                applies: "9c1e".into(),
            }),
        }));
        let text = m.encode();
        for want in [
            "berth_container_state{host_id=\"edge-7\",container=\"web\",state=\"running\"} 1",
            "berth_container_state{host_id=\"edge-7\",container=\"web\",state=\"exited\"} 0",
            "berth_container_state{host_id=\"edge-7\",container=\"job\",state=\"exited\"} 1",
            "# TYPE berth_container_restarts_total counter",
            "berth_container_restarts_total{host_id=\"edge-7\",container=\"web\"} 4",
            "berth_container_health{host_id=\"edge-7\",container=\"web\",health=\"healthy\"} 1",
            "berth_container_health{host_id=\"edge-7\",container=\"web\",health=\"unhealthy\"} 0",
            &format!(
                "berth_container_image_info{{host_id=\"edge-7\",container=\"web\",image=\"reg/web:1\",digest=\"sha256:{}\"}} 1",
                "ab".repeat(32)
            ),
            "berth_container_rejected_digests{host_id=\"edge-7\",container=\"job\"} 1",
            "berth_host_labels{host_id=\"edge-7\",label_example_com_tier=\"edge\",label_site=\"berlin\"} 1",
            "berth_source_commit_info{host_id=\"edge-7\",commit=\"9c1e\"} 1",
            "berth_rollout_in{host_id=\"edge-7\",id=\"r1\"} 1",
            "berth_build_info{host_id=\"edge-7\",version=\"",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
        assert!(
            !text.contains("container=\"job\",health"),
            "no health series without a check:\n{text}"
        );
        m.set_containers(Arc::new(vec![]));
        m.set_source_summary(None);
        let text = m.encode();
        assert!(!text.contains("container=\"web\""), "{text}");
        assert!(!text.contains("berth_rollout_in{"), "{text}");
    }

    /// Counters an alert takes `increase()` of exist at 0 before their first count, and the
    /// per-container ones go with their container.
    #[test]
    fn alerted_counters_start_at_zero() {
        let m = Metrics::for_host(Some("h"), &BTreeMap::new());
        m.set_containers(Arc::new(vec![status("web", Status::Running, None)]));
        m.count_refusals(["unsigned", "not_fast_forward"]);
        let text = m.encode();
        for want in [
            "berth_container_rollbacks_total{host_id=\"h\",container=\"web\"} 0",
            "berth_container_updates_total{host_id=\"h\",container=\"web\"} 0",
            "berth_source_refused_total{host_id=\"h\",reason=\"unsigned\"} 0",
            "berth_source_refused_total{host_id=\"h\",reason=\"not_fast_forward\"} 0",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
        let web = ContainerLabel {
            container: "web".into(),
        };
        m.rollbacks.get_or_create(&web).inc();
        // Published again (every pass does): the count stays.
        m.set_containers(Arc::new(vec![status("web", Status::Running, None)]));
        assert!(
            m.encode()
                .contains("berth_container_rollbacks_total{host_id=\"h\",container=\"web\"} 1")
        );
        m.set_containers(Arc::new(vec![status("db", Status::Running, None)]));
        let text = m.encode();
        assert!(!text.contains("container=\"web\""), "{text}");
        assert!(
            text.contains("berth_container_rollbacks_total{host_id=\"h\",container=\"db\"} 0"),
            "{text}"
        );
    }

    /// docs/metrics.md lists every family `/metrics` can carry, and nothing else.
    #[test]
    fn every_family_is_documented() {
        let labels = BTreeMap::from([("site".to_string(), "berlin".to_string())]);
        let m = Metrics::for_host(Some("h"), &labels);
        m.set_containers(Arc::new(vec![status(
            "web",
            Status::Running,
            Some("healthy"),
        )]));
        // A labelled family shows only once it has a series.
        let web = ContainerLabel {
            container: "web".into(),
        };
        m.updates.get_or_create(&web).inc();
        m.rollbacks.get_or_create(&web).inc();
        m.pulls
            .get_or_create(&ResultLabel {
                result: "ok".into(),
            })
            .inc();
        m.containers
            .get_or_create(&StateLabel {
                state: "running".into(),
            })
            .set(1);
        m.source_refused
            .get_or_create(&ReasonLabel {
                reason: "unsigned".into(),
            })
            .inc();
        m.report
            .published
            .get_or_create(&KindLabel {
                kind: "status".into(),
            })
            .inc();
        m.set_source_summary(Some(&SourceSummary {
            commit: Some("9c1e".into()),
            rollout: Some(RolloutMembership {
                id: "r1".into(),
                included: true,
                applies: "9c1e".into(),
            }),
        }));
        let text = m.encode();
        let served: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let doc = include_str!("../../docs/metrics.md");
        let documented: std::collections::BTreeSet<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .filter(|n| n.starts_with("berth_"))
            .collect();
        assert_eq!(served, documented);
    }
}
