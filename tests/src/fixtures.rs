//! Images the end-to-end tests run, built from busybox-static and pushed to the plain test
//! registry under a repository of their own.

use crate::image::{Compression, Entry, ImageBuilder, Settings, busybox_rootfs};
use crate::registry::{TestRegistry, unique_repo};

/// Pushes a busybox image whose default command is `cmd` (run by `/bin/sh -c`), with `files`
/// added, and returns its reference (`127.0.0.1:PORT/repo:tag`).
pub fn busybox_image(prefix: &str, cmd: &str, files: &[(&str, &[u8])]) -> String {
    let reg = TestRegistry::plain();
    let repo = unique_repo(prefix);
    push_busybox(&reg, &repo, "1", cmd, files);
    format!("{}/{repo}:1", reg.addr)
}

/// Pushes a busybox image to `repo:tag` (a new digest each time `cmd` or `files` differ).
pub fn push_busybox(
    reg: &TestRegistry,
    repo: &str,
    tag: &str,
    cmd: &str,
    files: &[(&str, &[u8])],
) -> String {
    let mut entries = busybox_rootfs();
    for (path, data) in files {
        if let Some((dir, _)) = path.rsplit_once('/') {
            entries.push(Entry::dir(dir));
        }
        entries.push(Entry::file(path, data));
    }
    let img = ImageBuilder::new()
        .settings(Settings {
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), cmd.into()]),
            ..Settings::default()
        })
        .layer(&entries, Compression::Gzip)
        .build();
    reg.push_image(repo, tag, &img)
}

/// A web server answering `body` on port 80.
pub fn web_image(body: &str) -> String {
    busybox_image(
        "web",
        "exec httpd -f -p 80 -h /www",
        &[("www/index.html", body.as_bytes())],
    )
}

/// A payload that sleeps until stopped (and exits on SIGTERM).
pub fn sleeper_image() -> String {
    busybox_image(
        "sleep",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
        &[],
    )
}

/// A free TCP port on 127.0.0.1 at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `curl -s URL`, the body or `None` when nothing answered in 5 s.
pub fn http_get(url: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `img` as an OCI image layout in a tar at `path`, its index entry named `ref_name`
/// (`org.opencontainers.image.ref.name`), as an air-gapped host would receive it.
pub fn write_oci_archive(path: &std::path::Path, ref_name: &str, img: &crate::image::Image) {
    let bytes = oci_archive(ref_name, img);
    // Written outside the dir and renamed in, as a careful copier does: the watcher only ever
    // sees it whole.
    let tmp = path
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(".oci-archive.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `img` as an OCI layout in a tar, its one manifest named `ref_name`.
pub fn oci_archive(ref_name: &str, img: &crate::image::Image) -> Vec<u8> {
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": img.media_type, "digest": img.digest(), "size": img.manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": ref_name}}],
    }))
    .unwrap();
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
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A busybox image (not pushed anywhere) whose default command is `cmd` (by `/bin/sh -c`).
pub fn busybox_built(cmd: &str) -> crate::image::Image {
    ImageBuilder::new()
        .settings(Settings {
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), cmd.into()]),
            ..Settings::default()
        })
        .layer(&busybox_rootfs(), Compression::Gzip)
        .build()
}
