//! Importing without a registry: an OCI layout dir, a tar of one, and a `docker save` archive,
//! each verified and giving the same tree as a pull.

mod common;

use std::process::Command;

use berth_agent::source::perms::TrustedOwners;
use berth_agent::store::{PIN_IMPORT, PullOptions, StoreError, no_progress};
use berth_e2e::image::{Compression, Entry, ImageBuilder, sha256, tar_bytes};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::tree;
use berth_spec::{ImageReference, ImageSource};

use common::*;

/// Pushes the layered image and copies it into an OCI layout with skopeo.
fn oci_layout(work: &std::path::Path) -> (std::path::PathBuf, tree::Snapshot) {
    let reg = TestRegistry::plain();
    let repo = unique_repo("import");
    let img = layered_image(Compression::Gzip).build();
    reg.push_image(&repo, "v1", &img);
    let layout = work.join("layout");
    let st = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{repo}:v1", reg.addr))
        .arg(format!("oci:{}:v1", layout.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let t = store();
    let r: ImageReference = format!("{}/{repo}:v1", reg.addr).parse().unwrap();
    let pulled = t
        .store
        .pull(&client(), &r, &PullOptions::default(), &no_progress)
        .unwrap();
    (layout, tree::overlay_snapshot(&pulled.layers))
}

#[test]
fn oci_layout_dir_and_tar() {
    if !berth_e2e::require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (layout, pulled) = oci_layout(work.path());

    let t = store();
    let got = t.store.import(&layout).unwrap();
    assert_eq!(got.len(), 1);
    let d = tree::diff(&pulled, &tree::overlay_snapshot(&got[0].layers));
    assert!(d.is_empty(), "{}", d.join("\n"));
    let src = ImageSource::parse(&format!("oci:{}:v1", layout.display())).unwrap();
    let rec = t
        .store
        .record(&src)
        .unwrap()
        .expect("keyed by the layout and its tag");
    assert!(rec.pins.contains(PIN_IMPORT));
    assert!(
        t.store
            .resolve(&ImageSource::parse(&format!("oci:{}", layout.display())).unwrap())
            .unwrap()
            .is_some()
    );

    let tarball = work.path().join("image.tar");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let t2 = store();
    let src = ImageSource::OciArchive {
        path: tarball.clone(),
    };
    let got = t2.store.import_source(&src).unwrap();
    let d = tree::diff(&pulled, &tree::overlay_snapshot(&got.layers));
    assert!(d.is_empty(), "{}", d.join("\n"));

    // Compressed, as `docker save | gzip` and zstd ship them: inflated beside the store into a
    // file without a name, so nothing of it stays.
    let plain = std::fs::read(&tarball).unwrap();
    let gz = work.path().join("image.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &plain).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let zst = work.path().join("image.tar.zst");
    std::fs::write(&zst, zstd::encode_all(plain.as_slice(), 1).unwrap()).unwrap();
    for compressed in [gz, zst] {
        let t3 = store();
        let got = t3.store.import(&compressed).unwrap();
        let d = tree::diff(&pulled, &tree::overlay_snapshot(&got[0].layers));
        assert!(d.is_empty(), "{}: {}", compressed.display(), d.join("\n"));
        let blobs = t3.store.layout().blobs_dir();
        let stray: Vec<_> = std::fs::read_dir(&blobs)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }
}

#[test]
fn corrupt_layout_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let (layout, _) = oci_layout(work.path());
    // Damage the largest blob (a layer) in place.
    let blobs = layout.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&biggest, bytes).unwrap();
    let t = store();
    let err = t.store.import(&layout).unwrap_err();
    assert!(matches!(err, StoreError::BlobDigest { .. }), "{err}");
    assert!(t.store.list().unwrap().is_empty());
}

#[test]
fn docker_save_archive() {
    let work = tempfile::tempdir().unwrap();
    let l1 = tar_bytes(&[Entry::dir("etc"), Entry::file("etc/one", b"1")]);
    let l2 = tar_bytes(&[Entry::file("etc/two", b"2"), Entry::whiteout("etc/one")]);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": berth_e2e::image::host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["X=1"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&l1), sha256(&l2)]},
    }))
    .unwrap();
    let config_hex = sha256(&config)[7..].to_string();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": ["example.test/app:1.0"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
    }]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("manifest.json", manifest.as_slice()),
        (&format!("{config_hex}.json") as &str, config.as_slice()),
        ("aaa/layer.tar", l1.as_slice()),
        ("bbb/layer.tar", l2.as_slice()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    let archive = work.path().join("save.tar");
    std::fs::write(&archive, b.into_inner().unwrap()).unwrap();

    let t = store();
    let got = t.store.import(&archive).unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        t.store
            .resolve(&ImageSource::OciArchive {
                path: archive.clone()
            })
            .unwrap()
            .is_some()
    );
    let by_tag = t
        .store
        .resolve(&ImageSource::parse("example.test/app:1.0").unwrap())
        .unwrap()
        .expect("found by its RepoTag, as a spec would name it");
    assert_eq!(by_tag.config.env, ["X=1"]);
    assert_eq!(by_tag.layers.len(), 2);
    assert_eq!(
        std::fs::read(by_tag.layers[1].join("etc/two")).unwrap(),
        b"2"
    );
    // Import again: nothing changes, nothing fails.
    assert_eq!(t.store.import(&archive).unwrap(), got);

    // A layer that does not match its diff id is refused.
    let bad = tar_bytes(&[Entry::file("etc/evil", b"x")]);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("manifest.json", manifest.as_slice()),
        (&format!("{config_hex}.json") as &str, config.as_slice()),
        ("aaa/layer.tar", l1.as_slice()),
        ("bbb/layer.tar", bad.as_slice()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    let archive2 = work.path().join("bad.tar");
    std::fs::write(&archive2, b.into_inner().unwrap()).unwrap();
    let t2 = store();
    let err = t2.store.import(&archive2).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BlobDigest { .. } | StoreError::DiffId { .. }
        ),
        "{err}"
    );
    assert!(t2.store.list().unwrap().is_empty());
}

#[test]
fn import_dir_scan_imports_once_and_reports() {
    let work = tempfile::tempdir().unwrap();
    let drop_dir = work.path().join("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    let layer = tar_bytes(&[Entry::file("hello", b"hi")]);
    let img = ImageBuilder::new()
        .blob(berth_e2e::image::Blob::from_tar(
            layer,
            Compression::Gzip,
            false,
        ))
        .build();
    // An OCI layout written by hand into a tar.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": img.media_type, "digest": img.digest(), "size": img.manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "registry.test/hello:1"}}],
    }))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
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
    for (name, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    std::fs::write(drop_dir.join("hello.tar"), b.into_inner().unwrap()).unwrap();
    std::fs::write(drop_dir.join("junk.tar"), b"not an archive").unwrap();

    let t = store();
    let owners = TrustedOwners::resolve(&[]).unwrap();
    let out = berth_agent::store::scan_import_dir(&t.store, &drop_dir, &owners).unwrap();
    assert_eq!(out.len(), 2);
    let hello = out.iter().find(|o| o.path.ends_with("hello.tar")).unwrap();
    assert!(
        hello
            .result
            .as_ref()
            .unwrap()
            .contains(&"registry.test/hello:1".to_string())
    );
    let junk = out.iter().find(|o| o.path.ends_with("junk.tar")).unwrap();
    assert!(junk.result.is_err());
    let rec = t
        .store
        .record(&ImageSource::parse("registry.test/hello:1").unwrap())
        .unwrap()
        .unwrap();
    assert!(rec.pins.contains(PIN_IMPORT));
    // Nothing new: nothing done.
    assert!(
        berth_agent::store::scan_import_dir(&t.store, &drop_dir, &owners)
            .unwrap()
            .is_empty()
    );
}

/// An OCI layout of a one-file image, as a tar.
fn small_oci_tar(name: &str) -> Vec<u8> {
    let img = ImageBuilder::new()
        .layer(&[Entry::file("hello", name.as_bytes())], Compression::Gzip)
        .build();
    berth_e2e::fixtures::oci_archive(&format!("registry.test/{name}:1"), &img)
}

/// The watched import dir gets the spec dir's owner policy (issue 13): archives owned by an
/// untrusted user, writable by others, reached through a symlink, or not files at all are
/// refused (judged on the fd read); a layout dir's files are judged one by one; and a dir
/// whose way from `/` others can write is not scanned at all.
#[test]
fn the_import_dir_follows_the_spec_dirs_owner_policy() {
    if !berth_e2e::require_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let work = tempfile::tempdir().unwrap();
    let drop_dir = work.path().join("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    chmod(&drop_dir, 0o755);
    let put = |name: &str, mode: u32, uid: u32| {
        let p = drop_dir.join(format!("{name}.tar"));
        std::fs::write(&p, small_oci_tar(name)).unwrap();
        chmod(&p, mode);
        std::os::unix::fs::chown(&p, Some(uid), None).unwrap();
        p
    };
    put("good", 0o644, 0);
    put("nobody", 0o644, 65534);
    put("open", 0o666, 0);
    let elsewhere = work.path().join("elsewhere.tar");
    std::fs::write(&elsewhere, small_oci_tar("linked")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, drop_dir.join("linked.tar")).unwrap();
    let fifo = std::ffi::CString::new(
        drop_dir
            .join("fifo.tar")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a C string we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // A layout dir, one of whose blobs belongs to nobody.
    let layout = drop_dir.join("layout");
    std::fs::create_dir(&layout).unwrap();
    chmod(&layout, 0o755);
    let tar_bytes_ = small_oci_tar("layout");
    tar::Archive::new(tar_bytes_.as_slice())
        .unpack(&layout)
        .unwrap();
    let blob = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::os::unix::fs::chown(&blob, Some(65534), None).unwrap();

    let t = store();
    let owners = TrustedOwners::resolve(&[]).unwrap();
    let out = berth_agent::store::scan_import_dir(&t.store, &drop_dir, &owners).unwrap();
    let result = |name: &str| {
        out.iter()
            .find(|o| o.path.file_name().unwrap() == name)
            .unwrap_or_else(|| panic!("{name} not reported: {out:?}"))
            .result
            .clone()
    };
    assert_eq!(
        result("good.tar").unwrap(),
        vec![
            format!("oci-archive:{}", drop_dir.join("good.tar").display()),
            "registry.test/good:1".to_string()
        ]
    );
    for (name, why) in [
        ("nobody.tar", "uid 65534"),
        ("open.tar", "writable by group or others"),
        ("linked.tar", "a symlink"),
        ("fifo.tar", "not a regular file"),
        ("layout", "uid 65534"),
    ] {
        let e = result(name).expect_err(name);
        assert!(e.contains(why), "{name}: {e}");
    }
    let refs: Vec<String> = t
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.reference)
        .collect();
    assert!(
        refs.iter().all(|r| r.contains("good")),
        "an untrusted archive was imported: {refs:?}"
    );

    // A dir above the import dir that others can write: nothing in it is scanned.
    chmod(work.path(), 0o777);
    let err = berth_agent::store::scan_import_dir(&t.store, &drop_dir, &owners).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    chmod(work.path(), 0o700);
}
