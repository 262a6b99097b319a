//! Hostile layers against the store (issue 13), pushed to the real registry and pulled through
//! the fault proxy: a layer is bounded while it unpacks (entries, free space, inodes), and a
//! layer whose bytes fail verification leaves nothing, and nothing of it is ever visible
//! outside its quarantine dir.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_agent::layout::Layout;
use berth_agent::registry::RegistryClient;
use berth_agent::store::unpack::space::Scarce;
use berth_agent::store::{PullOptions, Store, StoreError, no_progress};
use berth_e2e::image::{Blob, Compression, Entry, ImageBuilder};
use berth_e2e::proxy::{Fault, FaultProxy};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::tmpfs::Tmpfs;
use berth_spec::config::ImagesConfig;
use berth_spec::{ImageReference, ImageSource};

use common::*;

/// One image of `layer`, pushed, and a client that reaches it through an honest proxy.
struct Pushed {
    reference: ImageReference,
    digest: String,
    proxy: FaultProxy,
    client: RegistryClient,
}

fn push(layer: Blob) -> Pushed {
    let reg = TestRegistry::plain();
    let repo = unique_repo("bounded");
    let img = ImageBuilder::new().blob(layer).build();
    reg.push_image(&repo, "v1", &img);
    let proxy = FaultProxy::start(&reg.addr);
    let addr = proxy.addr.clone();
    let client = client_with(|s| insecure(s, &addr));
    Pushed {
        reference: format!("{}/{repo}:v1", proxy.addr).parse().unwrap(),
        digest: img.layers[0].digest.clone(),
        proxy,
        client,
    }
}

fn files(n: usize) -> Vec<Entry> {
    (0..n).map(|i| Entry::file(&format!("f{i}"), b"")).collect()
}

/// A store whose state dir is a small tmpfs (`inodes`: its inode count, if limited).
struct SmallDisk {
    _dir: tempfile::TempDir,
    disk: Tmpfs,
    layout: Layout,
    store: Store,
}

fn small_disk(size: u64, inodes: Option<u64>, limits: ImagesConfig) -> SmallDisk {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let disk = match inodes {
        Some(n) => Tmpfs::mount_with_inodes(&state, size, n),
        None => Tmpfs::mount(&state, size),
    };
    let layout = Layout {
        state_dir: state,
        run_dir: dir.path().join("run"),
    };
    let store = Store::open(&layout, &limits).unwrap();
    SmallDisk {
        _dir: dir,
        disk,
        layout,
        store,
    }
}

/// Nothing of the layer stayed: no layer dir, no quarantine, no blob, no partial, no record.
fn nothing_left(store: &Store, layout: &Layout, digest: &str) {
    assert!(store.list().unwrap().is_empty());
    let layers: Vec<String> = names(&layout.layers_dir());
    assert!(layers.is_empty(), "left in layers/: {layers:?}");
    let hex = &digest[7..];
    for n in names(&layout.blobs_dir()) {
        assert!(!n.starts_with(hex), "left in blobs/: {n}");
    }
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_layer_over_max_layer_entries_is_refused_and_leaves_nothing() {
    let limits = ImagesConfig {
        min_free: 0,
        max_layer_entries: 300,
        ..Default::default()
    };
    // 300 entries fit; 301 do not.
    let fits = push(Blob::layer(&files(300), Compression::Gzip, false));
    let t = store_with(limits.clone());
    t.store
        .pull(
            &fits.client,
            &fits.reference,
            &PullOptions::default(),
            &no_progress,
        )
        .unwrap();

    let over = push(Blob::layer(&files(301), Compression::Gzip, false));
    let t = store_with(limits);
    let err = t
        .store
        .pull(
            &over.client,
            &over.reference,
            &PullOptions::default(),
            &no_progress,
        )
        .unwrap_err();
    match &err {
        StoreError::Limit { setting, limit, .. } => {
            assert_eq!((*setting, *limit), ("max_layer_entries", 300), "{err}");
        }
        other => panic!("expected the entry limit, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&over.reference.to_string()) && msg.contains(&over.digest),
        "{msg}"
    );
    nothing_left(&t.store, &t.layout, &over.digest);
    assert!(over.proxy.stats().count_for(&over.digest) >= 1);
}

/// 48 MiB of zeros (a few dozen KiB gzipped, so the estimate before the download passes) on a
/// 40 MiB disk that must keep 12 MiB free: the unpack stops at the reserve, never at a full
/// disk, and gives the space back.
#[test]
fn a_layer_that_would_fill_the_disk_stops_at_min_free() {
    let limits = ImagesConfig {
        min_free: 12 << 20,
        ..Default::default()
    };
    let d = small_disk(40 << 20, None, limits);
    let free_before = d.disk.free();
    let big = Entry::File {
        path: "zeros".into(),
        data: vec![0; 48 << 20],
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattrs: vec![],
    };
    let p = push(Blob::layer(&[big], Compression::Gzip, false));
    let err = d
        .store
        .pull(
            &p.client,
            &p.reference,
            &PullOptions::default(),
            &no_progress,
        )
        .unwrap_err();
    match &err {
        StoreError::Reserve { reserve, .. } => {
            assert_eq!(reserve.scarce, Scarce::Bytes, "{err}");
            assert!(reserve.available >= 8 << 20, "{err}");
        }
        other => panic!("expected the min_free reserve, got {other}"),
    }
    assert!(err.to_string().contains("min_free"), "{err}");
    nothing_left(&d.store, &d.layout, &p.digest);
    assert!(
        d.disk.free() + (1 << 20) >= free_before,
        "space not given back"
    );
}

/// 1200 empty files on a disk of 512 inodes that keeps a quarter of its bytes (so a quarter
/// of its inodes) free: stopped at the inode reserve, never at an exhausted filesystem.
#[test]
fn a_layer_that_would_take_every_inode_stops_at_min_free() {
    let limits = ImagesConfig {
        min_free: 8 << 20,
        ..Default::default()
    };
    let d = small_disk(32 << 20, Some(512), limits);
    let inodes_before = d.disk.free_inodes();
    let p = push(Blob::layer(&files(1200), Compression::Gzip, false));
    let err = d
        .store
        .pull(
            &p.client,
            &p.reference,
            &PullOptions::default(),
            &no_progress,
        )
        .unwrap_err();
    match &err {
        StoreError::Reserve { reserve, .. } => {
            assert_eq!(reserve.scarce, Scarce::Inodes, "{err}");
            assert_eq!(reserve.reserve, 128, "{err}");
            assert!(reserve.available >= 64, "{err}");
        }
        other => panic!("expected the inode reserve, got {other}"),
    }
    nothing_left(&d.store, &d.layout, &p.digest);
    assert!(d.disk.free_inodes() + 2 >= inodes_before);
}

/// A hostile layer (a block device, a setuid file, a fifo, hundreds of files) whose bytes
/// fail their digest only at the very end, after the whole tar was unpacked into quarantine:
/// refused, nothing left, and no path of it ever appeared outside its `.tmp-*` dir.
#[test]
fn a_layer_failing_its_digest_leaves_nothing_and_is_never_visible() {
    let mut entries = files(400);
    entries.extend([
        Entry::Block {
            path: "disk".into(),
            major: 8,
            minor: 0,
        },
        Entry::File {
            path: "suid".into(),
            data: b"#!/bin/sh\n".to_vec(),
            mode: 0o4755,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        },
        Entry::Fifo {
            path: "fifo".into(),
        },
    ]);
    let layer = Blob::layer(&entries, Compression::None, false);
    let len = layer.bytes.len() as u64;
    let p = push(layer);
    // The last byte is the tar's trailing padding: every entry unpacks before the digest fails.
    p.proxy.add(&p.digest, Fault::Corrupt(len - 1), usize::MAX);
    let t = store();
    let layers = t.layout.layers_dir();
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let done = AtomicBool::new(false);
    let err = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                for n in names(&layers) {
                    if !n.starts_with(".tmp-") {
                        seen.lock().unwrap().insert(n);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let r = t.store.pull(
            &p.client,
            &p.reference,
            &PullOptions::default(),
            &no_progress,
        );
        done.store(true, Ordering::Relaxed);
        r.unwrap_err()
    });
    assert!(
        matches!(&err, StoreError::BlobDigest { blob, .. } if *blob == p.digest),
        "{err}"
    );
    let seen = seen.into_inner().unwrap();
    assert!(seen.is_empty(), "an unverified layer was visible: {seen:?}");
    nothing_left(&t.store, &t.layout, &p.digest);
    assert!(
        t.store
            .resolve(&ImageSource::Registry(p.reference.clone()))
            .unwrap()
            .is_none()
    );
}
