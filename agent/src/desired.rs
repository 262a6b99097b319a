//! The spec source and the last valid specs on disk: each container's last valid spec is kept
//! in `containers/<name>/spec.json` so that a file that stops parsing, or a spec dir that
//! vanishes, never takes a running container down, also across restarts. What the desired set
//! is, given a scan and those specs, is the pure core's (`reconcile::desired_set`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_spec::ContainerSpec;

use crate::fsutil;
use crate::layout::Layout;
use crate::reconcile::desired_set::{self, LastValidSpecs, Scan};
use crate::reconcile::model::{Desired, DesiredSpec};

/// A full-snapshot spec source: a directory today, anything that can list specs tomorrow.
pub trait SpecSource: Send {
    fn scan(&mut self) -> Scan;
}

/// Whether the last valid specs are written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    OnDisk,
    /// Read-only users (`berth plan`, `berth status` without an agent) change nothing on disk.
    InMemory,
}

pub struct LastValid {
    dir: PathBuf,
    specs: LastValidSpecs,
    keep: Persist,
}

impl LastValid {
    /// Reads every persisted last valid spec.
    pub fn load(layout: &Layout) -> Self {
        let dir = layout.containers_dir();
        let mut specs = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                match fsutil::read_json::<ContainerSpec>(&e.path().join("spec.json")) {
                    Ok(Some(spec)) if spec.name == name => {
                        specs.insert(name, DesiredSpec::new(Arc::new(spec)));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(container = %name, "ignoring unreadable last valid spec: {e}")
                    }
                }
            }
        }
        LastValid {
            dir,
            specs,
            keep: Persist::OnDisk,
        }
    }

    /// As [`LastValid::load`], for a reader that must not write.
    pub fn load_read_only(layout: &Layout) -> Self {
        LastValid {
            keep: Persist::InMemory,
            ..Self::load(layout)
        }
    }

    /// The desired set for a scan; keeps the specs that changed.
    pub fn desired(&mut self, scan: &Scan) -> Desired {
        let (desired, changed) = desired_set::desired(&mut self.specs, scan);
        if self.keep == Persist::OnDisk {
            for name in changed {
                self.persist(&name);
            }
        }
        desired
    }

    fn persist(&self, name: &str) {
        let spec = &self.specs[name].spec;
        let dir = self.dir.join(name);
        // Not fsynced: it sits on the path from a spec to its running container; a power
        // loss can only cost the newest version (the file is re-read valid in the usual case).
        let result = fsutil::create_private_dir_all(&dir).and_then(|_| {
            let data = serde_json::to_vec_pretty(&**spec).map_err(std::io::Error::other)?;
            fsutil::atomic_replace(&dir.join("spec.json"), &data)
        });
        if let Err(e) = result {
            // Still usable in memory; only an agent restart with an invalid file would miss it.
            tracing::warn!(container = %name, "cannot persist the last valid spec: {e}");
        }
    }

    /// Each known container's `depends_on` names.
    pub fn dependencies(&self) -> BTreeMap<String, Vec<String>> {
        self.specs
            .iter()
            .map(|(n, d)| {
                (
                    n.clone(),
                    d.spec.dependencies().into_iter().map(|x| x.name).collect(),
                )
            })
            .collect()
    }

    /// The names with a last valid spec.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.specs.keys().map(String::as_str)
    }

    /// Forgets a pruned container's spec.
    pub fn forget(&mut self, name: &str) {
        self.specs.remove(name);
        let _ = fsutil::remove_file_if_exists(&self.dir.join(name).join("spec.json"));
    }
}

#[cfg(test)]
mod tests {
    use berth_spec::ImageSource;

    use super::*;

    fn layout(dir: &std::path::Path) -> Layout {
        Layout {
            state_dir: dir.to_path_buf(),
            run_dir: dir.join("run"),
        }
    }

    fn spec(name: &str, tag: &str) -> ContainerSpec {
        ContainerSpec::with_defaults(
            name,
            ImageSource::parse(&format!("x/{name}:{tag}")).unwrap(),
        )
    }

    #[test]
    fn invalid_file_keeps_the_last_valid_spec_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut lv = LastValid::load(&layout(dir.path()));
        let mut scan = Scan::default();
        scan.specs.insert("web".into(), Ok(spec("web", "1").into()));
        let d = lv.desired(&scan);
        assert!(d.trustworthy);
        assert_eq!(
            *d.specs["web"].spec.as_ref().unwrap().spec,
            spec("web", "1")
        );

        // A fresh agent reads it back from disk.
        let mut lv = LastValid::load(&layout(dir.path()));
        scan.specs
            .insert("web".into(), Err("web.toml:1:1: bad".into()));
        let d = lv.desired(&scan);
        assert_eq!(
            *d.specs["web"].spec.as_ref().unwrap().spec,
            spec("web", "1")
        );
        assert_eq!(d.specs["web"].error.as_deref(), Some("web.toml:1:1: bad"));

        // Never valid: no spec, only the error.
        scan.specs.insert("db".into(), Err("db.toml: bad".into()));
        assert!(lv.desired(&scan).specs["db"].spec.is_none());
    }

    #[test]
    fn unreadable_source_keeps_everything_and_is_not_trustworthy() {
        let dir = tempfile::tempdir().unwrap();
        let mut lv = LastValid::load(&layout(dir.path()));
        let mut scan = Scan::default();
        scan.specs.insert("web".into(), Ok(spec("web", "1").into()));
        lv.desired(&scan);
        let d = lv.desired(&Scan {
            error: Some("specs dir missing".into()),
            ..Scan::default()
        });
        assert!(!d.trustworthy);
        assert!(d.specs["web"].spec.is_some());
        lv.forget("web");
        let d = lv.desired(&Scan {
            error: Some("specs dir missing".into()),
            ..Scan::default()
        });
        assert!(d.specs.is_empty());
        assert!(LastValid::load(&layout(dir.path())).specs.is_empty());
    }

    #[test]
    fn a_spec_read_again_is_held_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut scan = Scan::default();
        scan.specs.insert("web".into(), Ok(spec("web", "1").into()));
        LastValid::load(&layout(dir.path())).desired(&scan);
        // A fresh agent holds the copy it read from spec.json until the source reads the same
        // spec: then the source's allocation is the only one, in the last valid specs and in
        // the desired set alike.
        let mut lv = LastValid::load(&layout(dir.path()));
        let read: Arc<ContainerSpec> = Arc::new(spec("web", "1"));
        scan.specs.insert("web".into(), Ok(read.clone()));
        let d = lv.desired(&scan);
        assert!(Arc::ptr_eq(&lv.specs["web"].spec, &read));
        assert!(Arc::ptr_eq(
            &d.specs["web"].spec.as_ref().unwrap().spec,
            &read
        ));
        // Here, in the scan, in the last valid specs, in the desired set: no other copy.
        assert_eq!(Arc::strong_count(&read), 4);
    }

    #[test]
    fn changed_spec_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut lv = LastValid::load(&layout(dir.path()));
        let mut scan = Scan::default();
        scan.specs.insert("web".into(), Ok(spec("web", "1").into()));
        lv.desired(&scan);
        scan.specs.insert("web".into(), Ok(spec("web", "2").into()));
        lv.desired(&scan);
        let lv = LastValid::load(&layout(dir.path()));
        assert_eq!(*lv.specs["web"].spec, spec("web", "2"));
    }
}
