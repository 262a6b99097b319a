//! Image identity (issue 13): a reference pinned by digest resolves only to content with that
//! digest. An archive may carry names (`RepoTags`, `io.containerd.image.name`,
//! `org.opencontainers.image.ref.name`) but never a digest: its content has its own, and a
//! claimed one would re-point a digest-pinned spec at other content.

mod common;

use berth_agent::store::index::Index;
use berth_agent::store::{PullOptions, no_progress};
use berth_e2e::image::{Compression, Entry, Image, ImageBuilder};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_spec::{ImageReference, ImageSource};

use common::*;

fn image(who: &str) -> Image {
    ImageBuilder::new()
        .layer(&[Entry::file("who", who.as_bytes())], Compression::None)
        .build()
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// An OCI layout tar of `img` whose index entry carries both name annotations.
fn oci_archive(img: &Image, ref_name: &str, containerd_name: &str) -> Vec<u8> {
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": img.media_type, "digest": img.digest(), "size": img.manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": ref_name,
                                       "io.containerd.image.name": containerd_name}}],
    }))
    .unwrap();
    let mut files = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index),
        (
            format!("blobs/sha256/{}", &img.digest()[7..]),
            img.manifest.clone(),
        ),
        (
            format!("blobs/sha256/{}", &img.config_digest()[7..]),
            img.config.clone(),
        ),
    ];
    for l in &img.layers {
        files.push((format!("blobs/sha256/{}", &l.digest[7..]), l.bytes.clone()));
    }
    tar_of(&files)
}

/// A `docker save` tar of `img` (uncompressed layers) with these `RepoTags`.
fn docker_save(img: &Image, tags: &[&str]) -> Vec<u8> {
    let cfg = format!("{}.json", &img.config_digest()[7..]);
    let layers: Vec<String> = img
        .layers
        .iter()
        .map(|l| format!("{}/layer.tar", &l.diff_id[7..]))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": cfg, "RepoTags": tags, "Layers": layers}
    ]))
    .unwrap();
    let mut files = vec![
        ("manifest.json".to_string(), manifest),
        (cfg, img.config.clone()),
    ];
    for (l, name) in img.layers.iter().zip(&layers) {
        files.push((name.clone(), l.bytes.clone()));
    }
    tar_of(&files)
}

#[test]
fn a_digest_reference_resolves_only_to_that_digest() {
    let reg = TestRegistry::plain();
    let repo = unique_repo("identity");
    let a = image("A");
    reg.push_image(&repo, "a", &a);
    let b = image("B");
    assert_ne!(a.digest(), b.digest());
    let pinned = format!("{}/{repo}@{}", reg.addr, a.digest());
    let pinned_source = ImageSource::parse(&pinned).unwrap();
    let tag_b = format!("{}/{repo}:b", reg.addr);

    let t = store();
    let work = tempfile::tempdir().unwrap();
    let oci = work.path().join("b-oci.tar");
    std::fs::write(
        &oci,
        oci_archive(
            &b,
            &pinned,
            &format!("{}/{repo}:b@{}", reg.addr, a.digest()),
        ),
    )
    .unwrap();
    let save = work.path().join("b-save.tar");
    std::fs::write(&save, docker_save(&b, &[&pinned, &tag_b])).unwrap();

    let mut keys = Vec::new();
    for archive in [&oci, &save] {
        let imported = t.store.import(archive).unwrap();
        let who = imported[0].layers.last().unwrap().join("who");
        assert_eq!(std::fs::read(who).unwrap(), b"B");
        keys.extend(t.store.list().unwrap().into_iter().map(|r| r.reference));
    }
    assert!(
        keys.iter().all(|k| !k.contains('@')),
        "an archive named a digest: {keys:?}"
    );
    assert!(keys.contains(&tag_b), "{keys:?}");
    assert!(
        t.store.resolve(&pinned_source).unwrap().is_none(),
        "the digest-pinned reference resolved to the archive's content"
    );

    // A record under the digest's key naming other content (what an older berth's import of
    // such an archive left, or a hand-made file) is not believed.
    let mut planted = t
        .store
        .record(&ImageSource::parse(&tag_b).unwrap())
        .unwrap()
        .unwrap();
    planted.reference = pinned_source.to_string();
    Index::new(&t.layout.images_dir()).put(&planted).unwrap();
    assert!(
        t.store.resolve(&pinned_source).unwrap().is_none(),
        "a record under {pinned} with digest {} was believed",
        b.digest()
    );

    // Pulled by its digest, the reference resolves to exactly that content.
    let r: ImageReference = pinned.parse().unwrap();
    t.store
        .pull(&client(), &r, &PullOptions::default(), &no_progress)
        .unwrap();
    let got = t.store.resolve(&pinned_source).unwrap().unwrap();
    assert_eq!(got.manifest_digest, a.digest());
    let by_tag = t
        .store
        .resolve(&ImageSource::parse(&tag_b).unwrap())
        .unwrap()
        .unwrap();
    let who = by_tag.layers.last().unwrap().join("who");
    assert_eq!(std::fs::read(who).unwrap(), b"B");
}
