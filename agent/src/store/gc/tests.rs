//! The GC planner's rules, by example and as properties.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;

use super::*;
use crate::image::ImageConfig;
use crate::registry::Platform;
use crate::store::index::LayerRef;

fn d(n: u32) -> Digest {
    Digest::parse(&format!("sha256:{n:064x}")).unwrap()
}

fn diff(n: u32) -> DiffId {
    DiffId::new(d(n))
}

fn rec(name: &str, id: u32, layers: &[u32], last_used: u64, pins: &[&str]) -> ImageRecord {
    ImageRecord {
        reference: name.to_string(),
        reference_digest: d(1000 + id),
        manifest_digest: d(2000 + id),
        config_digest: d(3000 + id),
        platform: Platform::new("linux", "amd64", None),
        layers: layers
            .iter()
            .map(|l| LayerRef {
                blob_digest: d(4000 + l),
                diff_id: diff(*l),
                size: 10,
                media_type: String::new(),
                annotations: Default::default(),
            })
            .collect(),
        config: ImageConfig::default(),
        size: 0,
        unpacked_size: 0,
        pins: pins.iter().map(|p| p.to_string()).collect::<BTreeSet<_>>(),
        pulled_at: 0,
        last_used,
    }
}

fn input(records: Vec<ImageRecord>, layers: &[u32]) -> GcInput {
    let mut blobs = Vec::new();
    for r in &records {
        for x in [&r.reference_digest, &r.manifest_digest, &r.config_digest] {
            blobs.push((x.hex().to_string(), 1, 0));
        }
    }
    GcInput {
        records,
        layers: layers.iter().map(|l| (diff(*l), 100)).collect(),
        blobs,
        active: HashSet::new(),
        root_images: HashSet::new(),
        root_digests: HashSet::new(),
        root_layers: HashSet::new(),
        now: 10_000,
        grace: 100,
        max_disk: None,
        min_free: 0,
        free: u64::MAX / 2,
    }
}

#[test]
fn keeps_roots_pins_rollback_and_recent() {
    let mut i = input(
        vec![
            rec("spec", 1, &[1, 2], 0, &[]),
            rec("pinned", 2, &[3], 0, &["operator"]),
            rec("rollback", 3, &[4], 0, &[]),
            rec("recent", 4, &[5], 9_950, &[]),
            rec("old", 5, &[2, 6], 0, &[]),
        ],
        &[1, 2, 3, 4, 5, 6, 7],
    );
    i.root_images.insert("spec".into());
    i.root_digests.insert(d(2003));
    i.root_layers.insert(diff(7));
    let p = plan(&i);
    assert_eq!(p.remove_images, ["old"]);
    // Layer 2 is shared with a kept image; 7 is a live container's.
    assert_eq!(p.remove_layers, [diff(6)]);
    assert!(p.remove_blobs.contains(&d(1005).hex().to_string()));
    assert!(!p.remove_blobs.contains(&d(1001).hex().to_string()));
    assert_eq!(p.freed, 100 + 3);
    assert!(!p.over_budget);
}

#[test]
fn active_pulls_keep_their_layers_and_partials() {
    let mut i = input(vec![], &[1, 2]);
    i.active.insert(d(1).to_string());
    i.blobs.push((format!("{}.partial", d(4001).hex()), 5, 0));
    i.blobs.push((format!("{}.partial", d(4002).hex()), 5, 0));
    i.active.insert(d(4001).to_string());
    let p = plan(&i);
    assert_eq!(p.remove_layers, [diff(2)]);
    assert_eq!(p.remove_blobs, [format!("{}.partial", d(4002).hex())]);
}

#[test]
fn budget_prunes_oldest_unprotected_first() {
    let mut i = input(
        vec![
            rec("a", 1, &[1], 9_990, &[]),
            rec("b", 2, &[2], 9_980, &[]),
            rec("c", 3, &[3], 9_970, &["import"]),
            rec("d", 4, &[4], 9_960, &[]),
        ],
        &[1, 2, 3, 4],
    );
    // 400 bytes of layers and 12 of blobs; allow 250.
    i.max_disk = Some(250);
    let p = plan(&i);
    assert_eq!(p.remove_images, ["b", "d"]);
    assert!(!p.over_budget);
    i.max_disk = Some(50);
    let p = plan(&i);
    assert_eq!(p.remove_images, ["a", "b", "d"]);
    assert!(p.over_budget, "the pinned image alone is over 50 bytes");
}

#[test]
fn min_free_counts_as_a_budget() {
    let mut i = input(
        vec![rec("a", 1, &[1], 9_990, &[]), rec("b", 2, &[2], 9_980, &[])],
        &[1, 2],
    );
    i.free = 1000;
    i.min_free = 1050;
    let p = plan(&i);
    assert_eq!(p.remove_images, ["b"]);
}

fn arb_input() -> impl Strategy<Value = GcInput> {
    let rec_s = (
        0u32..6,
        prop::collection::vec(0u32..8, 0..4),
        0u64..20_000,
        any::<bool>(),
    );
    (
        prop::collection::vec(rec_s, 0..6),
        prop::collection::vec(0u32..10, 0..10),
        prop::collection::vec(0u32..6, 0..3),
        prop::collection::vec(0u32..10, 0..3),
        prop::option::of(0u64..2000),
        0u64..3000,
    )
        .prop_map(|(recs, mut layers, roots, in_use, max_disk, free)| {
            layers.sort();
            layers.dedup();
            let records: Vec<ImageRecord> = recs
                .iter()
                .enumerate()
                .map(|(n, (id, ls, used, pinned))| {
                    rec(
                        &format!("img{n}"),
                        *id,
                        ls,
                        *used,
                        if *pinned { &["p"] } else { &[] },
                    )
                })
                .collect();
            let mut i = input(records, &layers);
            i.root_images = roots.iter().map(|r| format!("img{r}")).collect();
            i.root_layers = in_use.iter().map(|l| diff(*l)).collect();
            i.max_disk = max_disk;
            i.free = free;
            i.min_free = 1000;
            i
        })
}

proptest! {
    #[test]
    fn never_removes_what_must_stay(i in arb_input()) {
        let p = plan(&i);
        let removed: HashSet<&String> = p.remove_images.iter().collect();
        for r in &i.records {
            if protected(r, &i) {
                prop_assert!(!removed.contains(&r.reference), "protected {} removed", r.reference);
            }
            if !removed.contains(&r.reference) {
                for l in &r.layers {
                    prop_assert!(!p.remove_layers.contains(&l.diff_id), "layer of kept {} removed", r.reference);
                }
                prop_assert!(!p.remove_blobs.contains(&r.manifest_digest.hex().to_string()));
            }
        }
        for l in &i.root_layers {
            prop_assert!(!p.remove_layers.contains(l));
        }
        // Everything removed exists, once.
        let set: HashSet<&DiffId> = p.remove_layers.iter().collect();
        prop_assert_eq!(set.len(), p.remove_layers.len());
    }

    #[test]
    fn without_budget_pressure_only_stale_unprotected_go(mut i in arb_input()) {
        i.max_disk = None;
        i.free = u64::MAX / 2;
        let p = plan(&i);
        for r in &i.records {
            let stale = r.last_used + i.grace <= i.now;
            prop_assert_eq!(p.remove_images.contains(&r.reference), stale && !protected(r, &i));
        }
    }
}
