//! From a scan of the spec source and the last valid specs to the desired set: the rule that a
//! file that stops parsing, or a source that cannot be read, never takes a running container
//! down. Keeping the last valid specs on disk, across restarts, is `crate::desired`'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_spec::ContainerSpec;

use super::model::{Desired, DesiredEntry, DesiredSpec};

/// One complete read of the spec source.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Set when the source as a whole could not be read (dir missing or unreadable).
    pub error: Option<String>,
    /// Every spec file by container name: its normalised spec (shared with the source's cache,
    /// never copied), or why it was refused.
    pub specs: BTreeMap<String, Result<Arc<ContainerSpec>, String>>,
    /// A refused file changed moments ago and may be half-written: scan again shortly.
    pub unsettled: bool,
}

/// The last valid spec of every container a scan ever read valid, by name.
pub type LastValidSpecs = BTreeMap<String, DesiredSpec>;

/// The desired set for `scan`, with `last` brought up to date: a valid spec becomes the last
/// valid one; a refused file keeps its container's last valid spec beside the error; an
/// unreadable source keeps every known container's. Returns the names whose last valid spec
/// changed, for the caller to keep.
pub fn desired(last: &mut LastValidSpecs, scan: &Scan) -> (Desired, Vec<String>) {
    let known = last.len();
    let mut changed = Vec::new();
    // In name order, so that the map is built packed (see [`super::packed`]).
    let mut specs = Vec::with_capacity(scan.specs.len());
    for (name, result) in &scan.specs {
        let entry = match result {
            Ok(spec) => {
                match last.get_mut(name) {
                    // The source's cache handed back the spec already held: nothing to compare.
                    Some(old) if Arc::ptr_eq(&old.spec, spec) => {}
                    // The same spec read again: hold the scan's allocation, not a second one
                    // (a spec read back from disk at startup is one).
                    Some(old) if *old.spec == **spec => old.spec = spec.clone(),
                    _ => {
                        last.insert(name.clone(), DesiredSpec::new(spec.clone()));
                        changed.push(name.clone());
                    }
                }
                DesiredEntry {
                    spec: Some(last[name].clone()),
                    error: None,
                }
            }
            Err(error) => DesiredEntry {
                spec: last.get(name).cloned(),
                error: Some(error.clone()),
            },
        };
        specs.push((name.clone(), entry));
    }
    let mut out = Desired {
        specs: specs.into_iter().collect(),
        trustworthy: scan.error.is_none(),
    };
    if last.len() > known {
        *last = super::packed(std::mem::take(last));
    }
    if let Some(error) = &scan.error {
        // The source is unreadable: every known container keeps its last valid spec.
        for (name, spec) in last.iter() {
            out.specs
                .entry(name.clone())
                .or_insert_with(|| DesiredEntry {
                    spec: Some(spec.clone()),
                    error: Some(error.clone()),
                });
        }
    }
    (out, changed)
}

#[cfg(test)]
mod tests {
    use berth_spec::ImageSource;

    use super::*;

    fn spec(name: &str, tag: &str) -> Arc<ContainerSpec> {
        Arc::new(ContainerSpec::with_defaults(
            name,
            ImageSource::parse(&format!("x/{name}:{tag}")).unwrap(),
        ))
    }

    fn scan(entries: &[(&str, Result<Arc<ContainerSpec>, &str>)]) -> Scan {
        Scan {
            specs: entries
                .iter()
                .map(|(n, r)| (n.to_string(), r.clone().map_err(str::to_string)))
                .collect(),
            ..Scan::default()
        }
    }

    #[test]
    fn a_refused_file_keeps_its_last_valid_spec_beside_the_error() {
        let mut last = LastValidSpecs::new();
        let (d, changed) = desired(&mut last, &scan(&[("web", Ok(spec("web", "1")))]));
        assert!(d.trustworthy);
        assert_eq!(changed, ["web"]);
        let (d, changed) = desired(&mut last, &scan(&[("web", Err("web.toml:1:1: bad"))]));
        assert!(changed.is_empty());
        assert_eq!(
            *d.specs["web"].spec.as_ref().unwrap().spec,
            *spec("web", "1")
        );
        assert_eq!(d.specs["web"].error.as_deref(), Some("web.toml:1:1: bad"));
        // Never valid: no spec, only the error; nothing to keep.
        let (d, changed) = desired(&mut last, &scan(&[("db", Err("db.toml: bad"))]));
        assert!(d.specs["db"].spec.is_none() && changed.is_empty());
        // A spec no longer in the source leaves the desired set (its container is pruned).
        assert!(!d.specs.contains_key("web"));
    }

    #[test]
    fn an_unreadable_source_keeps_every_known_container_and_is_not_trustworthy() {
        let mut last = LastValidSpecs::new();
        desired(&mut last, &scan(&[("web", Ok(spec("web", "1")))]));
        let unreadable = Scan {
            error: Some("specs dir missing".into()),
            ..Scan::default()
        };
        let (d, changed) = desired(&mut last, &unreadable);
        assert!(!d.trustworthy && changed.is_empty());
        assert!(d.specs["web"].spec.is_some());
        assert_eq!(d.specs["web"].error.as_deref(), Some("specs dir missing"));
    }

    #[test]
    fn only_a_changed_spec_is_reported_changed_and_one_copy_is_held() {
        let mut last = LastValidSpecs::new();
        desired(&mut last, &scan(&[("web", Ok(spec("web", "1")))]));
        // The same spec in a new allocation (a fresh read): not changed, and the new one held.
        let again = spec("web", "1");
        let (d, changed) = desired(&mut last, &scan(&[("web", Ok(again.clone()))]));
        assert!(changed.is_empty());
        assert!(Arc::ptr_eq(&last["web"].spec, &again));
        assert!(Arc::ptr_eq(
            &d.specs["web"].spec.as_ref().unwrap().spec,
            &again
        ));
        let (_, changed) = desired(&mut last, &scan(&[("web", Ok(spec("web", "2")))]));
        assert_eq!(changed, ["web"]);
        assert_eq!(*last["web"].spec, *spec("web", "2"));
    }
}
