//! Which commit this host applies: the verified tip, or, during a staged rollout that does not
//! include this host, the rollout's `from`.

use berth_spec::rollout::{Rollout, bucket};
use serde::{Deserialize, Serialize};

use super::commit::CommitId;

/// Where this host stands in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub id: String,
    pub from: CommitId,
    /// `percent` in hundredths (0..=10000).
    pub percent_hundredths: u16,
    /// This host's bucket (0..10000); `None` without a host id.
    pub bucket: Option<u16>,
    /// Whether this host applies the tip.
    pub included: bool,
}

/// The commit to apply, and the rollout that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub commit: CommitId,
    pub rollout: Option<Placement>,
}

/// Decides for the verified `tip`, given the `rollout.toml` it carries. A host without an id
/// has no bucket and stays on `from` until the rollout completes.
pub fn target(
    tip: &CommitId,
    rollout: Option<&Rollout>,
    host_id: Option<&str>,
) -> Result<Target, String> {
    let Some(r) = rollout else {
        return Ok(Target {
            commit: tip.clone(),
            rollout: None,
        });
    };
    let from = CommitId::parse(&r.from)?;
    let bucket = host_id.map(|h| bucket(h, &r.id));
    let included = host_id.is_some_and(|h| r.includes(h));
    Ok(Target {
        commit: if included { tip.clone() } else { from.clone() },
        rollout: Some(Placement {
            id: r.id.clone(),
            from,
            percent_hundredths: r.percent.hundredths(),
            bucket,
            included,
        }),
    })
}

#[cfg(test)]
mod tests {
    use berth_spec::rollout::Percent;
    use proptest::prelude::*;

    use super::*;

    fn cid(c: char) -> CommitId {
        CommitId::parse(&c.to_string().repeat(40)).unwrap()
    }

    fn rollout(percent: u16) -> Rollout {
        Rollout {
            id: "web-1.28".into(),
            from: "a".repeat(40),
            percent: Percent::from_hundredths(percent).unwrap(),
        }
    }

    #[test]
    fn no_rollout_is_the_tip() {
        let t = target(&cid('b'), None, Some("h")).unwrap();
        assert_eq!(t.commit, cid('b'));
        assert!(t.rollout.is_none());
    }

    #[test]
    fn no_host_id_stays_on_from() {
        let t = target(&cid('b'), Some(&rollout(10_000)), None).unwrap();
        assert_eq!(t.commit, cid('a'));
        let p = t.rollout.unwrap();
        assert!(!p.included && p.bucket.is_none());
    }

    proptest! {
        /// In means the tip, out means `from`; the bucket is the spec crate's; halting (0)
        /// puts everyone on `from`, 100% everyone on the tip.
        #[test]
        fn target_follows_the_bucket(host in "[a-z0-9-]{1,20}", percent in 0u16..=10_000) {
            let r = rollout(percent);
            let t = target(&cid('b'), Some(&r), Some(&host)).unwrap();
            let p = t.rollout.clone().unwrap();
            prop_assert_eq!(p.bucket, Some(bucket(&host, "web-1.28")));
            prop_assert_eq!(p.included, bucket(&host, "web-1.28") < percent);
            prop_assert_eq!(t.commit, if p.included { cid('b') } else { cid('a') });
            prop_assert_eq!(target(&cid('b'), Some(&rollout(0)), Some(&host)).unwrap().commit, cid('a'));
            prop_assert_eq!(target(&cid('b'), Some(&rollout(10_000)), Some(&host)).unwrap().commit, cid('b'));
        }
    }
}
