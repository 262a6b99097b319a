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

/// An image record and its layer's record as berth wrote them before digests were typed (main
/// at 4d47b8a, `berth image import` of an OCI layout whose `index.json` names a nested index, so
/// the reference's digest is the index's and not the manifest's; one gzip layer, so its blob
/// digest is not its diff id).
const RECORD_BEFORE: &str = include_str!("fixtures/image-record-4d47b8a.json");
const LAYER_BEFORE: &str = include_str!("fixtures/layer-record-4d47b8a.json");
const FIXTURE_NAME: &str = "registry.example/fixture/app:v1";
const FIXTURE_INDEX: &str =
    "sha256:9a130b5f284f227fde319cfb19ae0c59eefabbcbd1b0de3eb079e69f5142be29";
const FIXTURE_MANIFEST: &str =
    "sha256:92e5b4a931341e8ca130f560541782fd04788c9e0e18716c007ab8d386e53b42";
const FIXTURE_BLOB: &str =
    "sha256:093f0d021d02bf9ab9f29551c6b16cb86b05e3686f085539781169d8f33d2e15";
const FIXTURE_DIFF_ID: &str =
    "sha256:fc42ae95947889f89202878f754065edd2080ba714aeaaaa63bbd8a3fd85ff0c";

/// The on-disk format did not change with the `Digest` type: records an earlier berth wrote
/// read, resolve, and are written back byte for byte.
#[test]
fn records_written_before_digests_were_typed_read_and_write_the_same() {
    let t = store();
    let idx = Index::new(&t.layout.images_dir());
    std::fs::write(idx.record_path(FIXTURE_NAME), RECORD_BEFORE).unwrap();
    let diff_id = berth_spec::DiffId::parse(FIXTURE_DIFF_ID).unwrap();
    let layer_file = t
        .layout
        .images_dir()
        .join("layers")
        .join(format!("{}.json", diff_id.hex()));
    std::fs::write(&layer_file, LAYER_BEFORE).unwrap();

    let rec = idx.get(FIXTURE_NAME).unwrap().expect("the record reads");
    assert_eq!(rec.reference_digest, FIXTURE_INDEX);
    assert_eq!(rec.manifest_digest, FIXTURE_MANIFEST);
    assert_eq!(rec.layers.len(), 1);
    assert_eq!(rec.layers[0].blob_digest, FIXTURE_BLOB);
    assert_eq!(rec.layers[0].diff_id, diff_id);
    let layer = idx
        .layer(&diff_id)
        .unwrap()
        .expect("the layer record reads");
    assert_eq!(layer.diff_id, diff_id);

    idx.put(&rec).unwrap();
    idx.put_layer(&layer).unwrap();
    assert_eq!(
        std::fs::read_to_string(idx.record_path(FIXTURE_NAME)).unwrap(),
        RECORD_BEFORE
    );
    assert_eq!(std::fs::read_to_string(&layer_file).unwrap(), LAYER_BEFORE);

    let dir = t.layout.layers_dir().join(diff_id.hex());
    std::fs::create_dir_all(&dir).unwrap();
    let src = ImageSource::parse(FIXTURE_NAME).unwrap();
    let got = t.store.resolve(&src).unwrap().expect("it resolves");
    assert_eq!(got.layers, [dir]);
    assert_eq!(got.manifest_digest, FIXTURE_MANIFEST);
}

/// A digest reaches a store path only once it is known to be one: a record whose diff id is a
/// path (`sha256:../../../x`) is refused as it is read, naming the file, and never resolves to
/// a layer dir outside the store. (Before the `Digest` type, the store joined whatever followed
/// `sha256:` onto its layers dir, and such a record resolved to a lowerdir anywhere.)
#[test]
fn a_record_naming_a_path_as_a_digest_is_refused() {
    let t = store();
    // The layers dir is <tmp>/state/layers/sha256: three levels up is <tmp>.
    let outside = t.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    assert!(t.layout.layers_dir().join("../../../outside").is_dir());
    let idx = Index::new(&t.layout.images_dir());
    let path = idx.record_path(FIXTURE_NAME);
    let planted = RECORD_BEFORE.replace(FIXTURE_DIFF_ID, "sha256:../../../outside");
    assert_ne!(planted, RECORD_BEFORE);
    std::fs::write(&path, planted).unwrap();

    let src = ImageSource::parse(FIXTURE_NAME).unwrap();
    match t.store.resolve(&src) {
        Ok(Some(img)) => panic!("resolved to the layers {:?}", img.layers),
        Ok(None) => panic!("the record was silently ignored"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("invalid digest"), "{msg}");
        }
    }
    assert!(t.store.list().unwrap().is_empty(), "listed");
}
