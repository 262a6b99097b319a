//! What operators ask of the host, beside what the loop drives ([`crate::backend::Backend`]):
//! the image commands and `berth prune`. A running agent does them for the CLI (it holds the
//! store), its API carrying the requests and the typed replies below; without an agent the
//! CLI does them in process, under the state dir's lock.

use serde::{Deserialize, Serialize};

use crate::backend::{ActionError, Keep};
use crate::image::ResolvedImage;
use crate::status::PruneReport;
use crate::store::ImageRecord;

pub trait Operations: Send + Sync + 'static {
    /// `berth pull`, `image import`, `image pin|unpin` while the agent holds the store; the
    /// reply is what the command prints.
    fn image_op(&self, op: &ImageOp) -> Result<ImageReply, ActionError>;

    /// `berth prune`: removes every image, layer and blob `keep` does not protect (no grace
    /// period: an operator asked), and as `prune` says, every named volume no spec mounts.
    fn prune(&self, keep: &Keep, prune: Prune) -> Result<PruneReport, ActionError>;
}

/// An image command sent to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum ImageOp {
    Pull { reference: String },
    Import { path: std::path::PathBuf },
    Pin { image: String },
    Unpin { image: String },
}

/// The agent's answer to an [`ImageOp`], one variant per kind of command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageReply {
    /// The single images are boxed: a record is hundreds of bytes beside a list's 24.
    Pulled(Box<Pulled>),
    /// What an import put in the store (an archive may hold several images).
    Imported(Vec<ImageRecord>),
    /// After a pin or an unpin: the image's record, with the pins it has now.
    Pinned(Box<ImageRecord>),
}

impl ImageReply {
    pub fn into_pulled(self) -> Result<Pulled, String> {
        match self {
            ImageReply::Pulled(p) => Ok(*p),
            other => Err(other.unexpected("a pull")),
        }
    }

    pub fn into_imported(self) -> Result<Vec<ImageRecord>, String> {
        match self {
            ImageReply::Imported(r) => Ok(r),
            other => Err(other.unexpected("an import")),
        }
    }

    pub fn into_pinned(self) -> Result<ImageRecord, String> {
        match self {
            ImageReply::Pinned(r) => Ok(*r),
            other => Err(other.unexpected("a pin")),
        }
    }

    fn unexpected(&self, asked: &str) -> String {
        let got = match self {
            ImageReply::Pulled(_) => "a pull's",
            ImageReply::Imported(_) => "an import's",
            ImageReply::Pinned(_) => "a pin's",
        };
        format!("unexpected answer from the agent: {got} reply to {asked}")
    }
}

/// What `berth pull` reports: the reference as parsed, the image it resolved to, and the
/// store's record of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pulled {
    pub reference: String,
    pub image: ResolvedImage,
    pub record: Option<ImageRecord>,
}

impl Pulled {
    /// What `berth pull --json` prints. Through a `serde_json::Value`, as before the reply
    /// had a type: its maps order the keys (alphabetically), and scripts may compare the bytes.
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a pull's reply serialises");
        serde_json::to_string_pretty(&value).expect("json")
    }
}

/// What `berth prune` does beyond removing unused images. On the wire (and on the command
/// line) it is two flags, [`PruneFlags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PruneFlags", into = "PruneFlags")]
pub struct Prune {
    pub volumes: Volumes,
    pub mode: PruneMode,
}

/// Named volumes no spec mounts: kept, or removed with their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volumes {
    Keep,
    RemoveUnmounted,
}

/// Whether a prune removes what it finds or only reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneMode {
    Remove,
    DryRun,
}

/// `berth prune`'s flags, `--volumes` and `--dry-run`, as the API's `/v1/prune` takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneFlags {
    pub volumes: bool,
    pub dry_run: bool,
}

impl From<PruneFlags> for Prune {
    fn from(f: PruneFlags) -> Prune {
        Prune {
            volumes: if f.volumes {
                Volumes::RemoveUnmounted
            } else {
                Volumes::Keep
            },
            mode: if f.dry_run {
                PruneMode::DryRun
            } else {
                PruneMode::Remove
            },
        }
    }
}

impl From<Prune> for PruneFlags {
    fn from(p: Prune) -> PruneFlags {
        PruneFlags {
            volumes: p.volumes == Volumes::RemoveUnmounted,
            dry_run: p.mode == PruneMode::DryRun,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageConfig;
    use crate::registry::Platform;
    use crate::store::index::LayerRef;

    fn record() -> ImageRecord {
        ImageRecord {
            reference: "registry.example/app:1".into(),
            reference_digest: berth_spec::Digest::of(b"index"),
            manifest_digest: berth_spec::Digest::of(b"manifest"),
            config_digest: berth_spec::Digest::of(b"config"),
            platform: Platform::new("linux", "arm", Some("v7")),
            layers: vec![LayerRef {
                blob_digest: berth_spec::Digest::of(b"layer"),
                diff_id: berth_spec::DiffId::new(berth_spec::Digest::of(b"diff")),
                size: 42,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                annotations: [("k".to_string(), "v".to_string())].into(),
            }],
            config: config(),
            size: 42,
            unpacked_size: 100,
            pins: ["operator".to_string()].into(),
            pulled_at: 1_700_000_000,
            last_used: 1_700_000_100,
        }
    }

    fn config() -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/bin".into()],
            entrypoint: Some(vec!["/app".into()]),
            cmd: None,
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            exposed_ports: vec!["80/tcp".into()],
            stop_signal: Some("SIGQUIT".into()),
            healthcheck: Some(crate::image::ImageHealthcheck {
                test: vec!["CMD".into(), "true".into()],
                interval: Some(std::time::Duration::from_millis(1500)),
                timeout: None,
                start_period: None,
                retries: Some(3),
            }),
            labels: [("a".to_string(), "b".to_string())].into(),
            os: "linux".into(),
            architecture: "arm".into(),
            variant: Some("v7".into()),
        }
    }

    fn pulled() -> Pulled {
        Pulled {
            reference: "registry.example/app:1".into(),
            image: ResolvedImage {
                reference_digest: berth_spec::Digest::of(b"index"),
                manifest_digest: berth_spec::Digest::of(b"manifest"),
                config: config(),
                layers: vec!["/var/lib/berth/layers/a".into()],
            },
            record: Some(record()),
        }
    }

    /// Each reply is the same value after the trip through the API (the agent's JSON, read
    /// back by the CLI).
    #[test]
    fn every_reply_round_trips() {
        for reply in [
            ImageReply::Pulled(Box::new(pulled())),
            ImageReply::Pulled(Box::new(Pulled {
                record: None,
                ..pulled()
            })),
            ImageReply::Imported(vec![record(), record()]),
            ImageReply::Imported(vec![]),
            ImageReply::Pinned(Box::new(record())),
        ] {
            let wire = serde_json::to_vec(&reply).unwrap();
            let back: ImageReply = serde_json::from_slice(&wire).unwrap();
            assert_eq!(back, reply);
        }
    }

    /// `berth pull --json` prints what it printed when the reply was an untyped JSON value
    /// built in place, whether the agent pulled (its reply read back) or the CLI did.
    #[test]
    fn pull_json_is_the_same_bytes_as_before_the_reply_had_a_type() {
        let p = pulled();
        let before = serde_json::to_string_pretty(&serde_json::json!({
            "reference": p.reference,
            "image": p.image,
            "record": p.record,
        }))
        .unwrap();
        assert_eq!(p.to_json(), before);
        let wire = serde_json::to_vec(&ImageReply::Pulled(Box::new(p))).unwrap();
        let via_agent = serde_json::from_slice::<ImageReply>(&wire)
            .unwrap()
            .into_pulled()
            .unwrap();
        assert_eq!(via_agent.to_json(), before);
    }

    #[test]
    fn a_reply_of_another_kind_is_an_error_naming_both() {
        let e = ImageReply::Pinned(Box::new(record()))
            .into_pulled()
            .unwrap_err();
        assert!(e.contains("a pin's reply to a pull"), "{e}");
        let e = ImageReply::Pulled(Box::new(pulled()))
            .into_imported()
            .unwrap_err();
        assert!(e.contains("a pull's reply to an import"), "{e}");
        let e = ImageReply::Imported(vec![]).into_pinned().unwrap_err();
        assert!(e.contains("an import's reply to a pin"), "{e}");
    }

    /// The wire keeps the two flags it always had; every combination survives the trip.
    #[test]
    fn prune_travels_as_two_flags() {
        for volumes in [Volumes::Keep, Volumes::RemoveUnmounted] {
            for mode in [PruneMode::Remove, PruneMode::DryRun] {
                let p = Prune { volumes, mode };
                let wire = serde_json::to_value(p).unwrap();
                assert_eq!(
                    wire,
                    serde_json::json!({
                        "volumes": volumes == Volumes::RemoveUnmounted,
                        "dry_run": mode == PruneMode::DryRun,
                    })
                );
                assert_eq!(serde_json::from_value::<Prune>(wire).unwrap(), p);
            }
        }
        let asked: Prune = serde_json::from_str(r#"{"volumes":true,"dry_run":false}"#).unwrap();
        assert_eq!(
            asked,
            Prune {
                volumes: Volumes::RemoveUnmounted,
                mode: PruneMode::Remove
            }
        );
    }
}
