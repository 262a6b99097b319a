//! Garbage collection on a real store: pinned, rollback and in-use images and layers stay;
//! the rest goes, shared layers only with their last user.

mod common;

use std::time::Duration;

use berth_agent::store::{GcRoots, PIN_OPERATOR, PullOptions, no_progress};
use berth_e2e::image::{Compression, Entry, ImageBuilder};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_spec::{ImageReference, ImageSource};

use common::*;

#[test]
fn keeps_what_is_protected_and_removes_the_rest() {
    let reg = TestRegistry::plain();
    let repo = unique_repo("gc");
    let shared = [Entry::dir("etc"), Entry::file("etc/shared", b"shared")];
    let mut refs = Vec::new();
    for name in ["spec", "pinned", "rollback", "inuse", "stale"] {
        let img = ImageBuilder::new()
            .layer(&shared, Compression::Gzip)
            .layer(&[Entry::file(name, name.as_bytes())], Compression::Gzip)
            .build();
        reg.push_image(&repo, name, &img);
        refs.push(
            format!("{}/{repo}:{name}", reg.addr)
                .parse::<ImageReference>()
                .unwrap(),
        );
    }
    let t = store();
    let mut pulled = Vec::new();
    for r in &refs {
        pulled.push(
            t.store
                .pull(&client(), r, &PullOptions::default(), &no_progress)
                .unwrap(),
        );
    }
    let src = |i: usize| ImageSource::Registry(refs[i].clone());
    t.store.pin(&src(1), PIN_OPERATOR).unwrap();
    let roots = GcRoots {
        images: vec![src(0)],
        digests: vec![pulled[2].manifest_digest.clone()],
        layer_dirs: pulled[3].layers.clone(),
    };
    // Within the grace period nothing goes.
    let plan = t.store.gc(&roots, Duration::from_secs(3600)).unwrap();
    assert!(plan.remove_images.is_empty());
    // Past it, only the unprotected image and its own layer.
    let plan = t.store.gc(&roots, Duration::ZERO).unwrap();
    let mut expected = vec![refs[3].to_string(), refs[4].to_string()];
    expected.sort();
    assert_eq!(plan.remove_images, expected);
    assert!(
        !pulled[4].layers[1].exists(),
        "the stale image's own layer is gone"
    );
    assert!(pulled[4].layers[0].exists(), "the shared layer stays");
    // The in-use image's record went, but its layers stay while a container uses them.
    assert!(pulled[3].layers.iter().all(|l| l.exists()));
    for (i, r) in refs.iter().enumerate().take(3) {
        assert!(t.store.resolve(&src(i)).unwrap().is_some(), "{r} must stay");
    }
    // Unpinned and no longer a root: the next GC removes it, layer and blobs.
    t.store.unpin(&src(1), PIN_OPERATOR).unwrap();
    let plan = t
        .store
        .gc(
            &GcRoots {
                images: vec![src(0)],
                ..Default::default()
            },
            Duration::ZERO,
        )
        .unwrap();
    assert_eq!(plan.remove_images.len(), 2);
    assert!(!pulled[1].layers[1].exists());
    assert!(!pulled[3].layers[1].exists());
    assert!(pulled[0].layers.iter().all(|l| l.exists()));
}

#[test]
fn disk_budget_prunes_oldest_unused() {
    let reg = TestRegistry::plain();
    let repo = unique_repo("budget");
    let mut refs = Vec::new();
    for name in ["a", "b", "c"] {
        let img = ImageBuilder::new()
            .layer(
                &[Entry::file(name, &vec![name.as_bytes()[0]; 200_000])],
                Compression::Gzip,
            )
            .build();
        reg.push_image(&repo, name, &img);
        refs.push(
            format!("{}/{repo}:{name}", reg.addr)
                .parse::<ImageReference>()
                .unwrap(),
        );
    }
    let t = store_with(berth_spec::config::ImagesConfig {
        min_free: 0,
        max_disk: Some(450_000),
        ..Default::default()
    });
    for r in &refs {
        t.store
            .pull(&client(), r, &PullOptions::default(), &no_progress)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1100));
    }
    // "a" was pulled first, but has just been used: "b" is now the oldest-used.
    t.store
        .mark_used(&ImageSource::Registry(refs[0].clone()))
        .unwrap();
    let plan = t
        .store
        .gc(&GcRoots::default(), Duration::from_secs(3600))
        .unwrap();
    assert_eq!(plan.remove_images, [refs[1].to_string()]);
    assert!(!plan.over_budget);
}
