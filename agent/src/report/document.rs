//! What the reporter publishes, and where: pure functions of the loop's published state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::HostIdentity;
use crate::status::{ContainerStatus, RolloutMembership, SourceSummary};

/// The retained `status` message: `berth status --json`'s containers, with who this host is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    pub host_id: Option<String>,
    /// The agent's `instance` (several agents may share a host).
    pub instance: String,
    pub labels: BTreeMap<String, String>,
    /// The agent's version.
    pub version: String,
    /// RFC 3339 time this document was made.
    pub time: String,
    /// The spec repository commit this host runs (with a `[source]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// This host's place in the source's staged rollout, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutMembership>,
    /// Exactly what `berth status --json` prints.
    pub containers: Vec<ContainerStatus>,
}

/// What a status message says, without its time: equal snapshots need no new message.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub containers: std::sync::Arc<Vec<ContainerStatus>>,
    pub source: Option<SourceSummary>,
}

impl Snapshot {
    pub fn document(&self, id: &HostIdentity, time: String) -> StatusDocument {
        let source = self.source.clone().unwrap_or_default();
        StatusDocument {
            host_id: id.host_id.clone(),
            instance: id.instance.clone(),
            labels: id.labels.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            time,
            commit: source.commit,
            rollout: source.rollout,
            containers: self.containers.as_ref().clone(),
        }
    }
}

/// The topics under this host's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Retained "true"; the last will (retained "false") says the host went away.
    pub online: String,
    /// Retained [`StatusDocument`].
    pub status: String,
    /// Not retained: one `berth events --json` object per message.
    pub events: String,
}

impl Topics {
    pub fn under(prefix: &str) -> Topics {
        Topics {
            online: format!("{prefix}/online"),
            status: format!("{prefix}/status"),
            events: format!("{prefix}/events"),
        }
    }
}

/// The topic prefix for this host: the template with `{host_id}` and `{instance}` filled in.
pub fn prefix(
    report: &berth_spec::config::ReportConfig,
    id: &HostIdentity,
) -> Result<String, String> {
    let host_id = match &id.host_id {
        Some(h) => h.as_str(),
        None if report.topic.contains("{host_id}") => {
            return Err(format!(
                "the topic {:?} names {{host_id}}, and this host has none: set host_id in the config (or give {} a machine id)",
                report.topic,
                crate::identity::MACHINE_ID
            ));
        }
        None => "",
    };
    report.topic_prefix(host_id, &id.instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(host: Option<&str>) -> HostIdentity {
        HostIdentity {
            host_id: host.map(str::to_string),
            labels: BTreeMap::from([("site".into(), "berlin".into())]),
            instance: "edge".into(),
        }
    }

    fn report(topic: &str) -> berth_spec::config::ReportConfig {
        let text = format!("[report]\nmqtt = \"mqtt://h\"\ntopic = {topic:?}\n");
        berth_spec::Config::from_toml_str(&text)
            .unwrap()
            .report
            .unwrap()
    }

    #[test]
    fn prefixes_and_topics() {
        assert_eq!(
            prefix(&report("fleet/{host_id}/{instance}"), &id(Some("h1"))).unwrap(),
            "fleet/h1/edge"
        );
        assert!(
            prefix(&report("fleet/{host_id}"), &id(None))
                .unwrap_err()
                .contains("set host_id")
        );
        assert_eq!(
            prefix(&report("site-a/{instance}"), &id(None)).unwrap(),
            "site-a/edge"
        );
        assert!(prefix(&report("f/{host_id}"), &id(Some("a#b"))).is_err());
        let t = Topics::under("fleet/h1");
        assert_eq!(
            (t.online.as_str(), t.status.as_str(), t.events.as_str()),
            ("fleet/h1/online", "fleet/h1/status", "fleet/h1/events")
        );
    }

    #[test]
    fn document_carries_identity_and_source_only_when_set() {
        let snap = Snapshot {
            containers: Default::default(),
            source: None,
        };
        let doc = serde_json::to_value(snap.document(&id(Some("h1")), "t".into())).unwrap();
        assert_eq!(doc["host_id"], "h1");
        assert_eq!(doc["labels"]["site"], "berlin");
        assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
        assert!(doc.get("commit").is_none() && doc.get("rollout").is_none());
        assert_eq!(doc["containers"], serde_json::json!([]));
        let snap = Snapshot {
            source: Some(SourceSummary {
                commit: Some("9c1e".into()),
                rollout: Some(RolloutMembership {
                    id: "r1".into(),
                    included: false,
                    applies: "77aa".into(),
                }),
            }),
            ..snap
        };
        let doc = serde_json::to_value(snap.document(&id(Some("h1")), "t".into())).unwrap();
        assert_eq!(doc["commit"], "9c1e");
        assert_eq!(doc["rollout"]["in"], false);
        assert_eq!(doc["rollout"]["applies"], "77aa");
    }
}
