//! Pulls against the real test registries, compared with what umoci makes of the same image.

mod common;

use berth_agent::store::{PullOptions, no_progress};
use berth_e2e::image::Compression;
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::tree;
use berth_spec::{ImageReference, ImageSource};

use common::*;

fn pull_and_compare(c: Compression, docker: bool) {
    if !berth_e2e::require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("layered");
    let mut b = layered_image(c);
    if docker {
        b = b.docker();
    }
    let img = b.build();
    let digest = reg.push_image(&repo, "v1", &img);
    // umoci predates zstd layers: the reference for a zstd image is its gzip twin (same tar
    // streams, so the same diff ids).
    let reference_tag = if c == Compression::Zstd {
        let twin = layered_image(Compression::Gzip).build();
        reg.push_image(&repo, "gzip-twin", &twin);
        "gzip-twin"
    } else {
        "v1"
    };
    let t = store();
    let r: ImageReference = format!("{}/{repo}:v1", reg.addr).parse().unwrap();
    let resolved = t
        .store
        .pull(&client(), &r, &PullOptions::default(), &no_progress)
        .unwrap();
    assert_eq!(resolved.reference_digest, digest);
    assert_eq!(resolved.manifest_digest, digest);
    assert_eq!(resolved.layers.len(), 3);
    assert_eq!(resolved.config.env, ["PATH=/bin", "A=b"]);
    assert_eq!(resolved.config.working_dir.as_deref(), Some("/app"));
    assert_eq!(
        t.store.resolve(&ImageSource::Registry(r.clone())).unwrap(),
        Some(resolved.clone())
    );

    let ours = tree::overlay_snapshot(&resolved.layers);
    let work = tempfile::tempdir().unwrap();
    let bundle = tree::umoci_unpack(&reg.addr, &repo, reference_tag, work.path());
    let theirs = tree::snapshot(&bundle.join("rootfs"));
    let d = tree::diff(&theirs, &ours);
    assert!(
        d.is_empty(),
        "berth's tree differs from umoci's:\n{}",
        d.join("\n")
    );
    // And the shapes the image was built to exercise are really there.
    assert!(!ours.contains_key("app/data/old.txt"));
    assert!(!ours.contains_key("opq/hidden.txt"));
    assert!(ours.contains_key("opq/fresh.txt"));
    assert!(!ours.contains_key("bin/vi"));
    assert_eq!(ours["app/setuid"].mode, 0o4755);
    assert_eq!(ours["app/owned"].uid, 1000);
    assert_eq!(
        ours["app/owned"]
            .xattrs
            .get("user.berth")
            .map(|v| v.as_slice()),
        Some(&b"yes"[..])
    );
    assert_eq!(ours["app/null"].kind, "char");
    assert_eq!(ours["app/sticky"].mode, 0o1777);

    // By digest, into a fresh store: same image.
    let t2 = store();
    let by_digest: ImageReference = format!("{}/{repo}@{digest}", reg.addr).parse().unwrap();
    let again = t2
        .store
        .pull(&client(), &by_digest, &PullOptions::default(), &no_progress)
        .unwrap();
    assert_eq!(again.manifest_digest, digest);
}

#[test]
fn gzip_oci_matches_umoci() {
    pull_and_compare(Compression::Gzip, false);
}

#[test]
fn zstd_matches_umoci() {
    pull_and_compare(Compression::Zstd, false);
}

#[test]
fn uncompressed_matches_umoci() {
    pull_and_compare(Compression::None, false);
}

#[test]
fn docker_media_types_match_umoci() {
    pull_and_compare(Compression::Gzip, true);
}
