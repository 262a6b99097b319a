//! Writes seed corpora for the fuzz targets in `fuzz/` from the images, layers and logs the
//! test fixtures build: `cargo run -p berth-e2e --example fuzz_seeds -- fuzz/corpus` (what
//! `fuzz/seed` runs). Each target's first byte(s) select a mode; seeds carry them.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use berth_agent::runtime::logs::{LineSplitter, LogWriter, MAX_LINE, Stream};
use berth_e2e::image::{Compression, Entry, ImageBuilder, Settings, index, tar_bytes};
use berth_spec::model::Logging;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: fuzz_seeds CORPUS_DIR");
    let out = Path::new(&out);

    // Manifests, indexes and configs: OCI and Docker, with settings and a healthcheck-free
    // config, single and multi-platform.
    let small = [Entry::dir("etc"), Entry::file("etc/hostname", b"seed\n")];
    let oci = ImageBuilder::new()
        .settings(Settings {
            env: vec!["PATH=/bin".into()],
            cmd: Some(vec!["/bin/sh".into()]),
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            exposed_ports: vec!["80/tcp".into()],
            stop_signal: Some("SIGQUIT".into()),
            ..Settings::default()
        })
        .layer(&small, Compression::Gzip)
        .layer(&[Entry::file("z", b"zstd")], Compression::Zstd)
        .layer(&[Entry::file("p", b"plain")], Compression::None)
        .build();
    let docker = ImageBuilder::new()
        .docker()
        .platform("arm", Some("v7"))
        .layer(&small, Compression::Gzip)
        .build();
    let arm64 = ImageBuilder::new()
        .platform("arm64", None)
        .layer(&small, Compression::Gzip)
        .build();
    let (oci_index, _) = index(
        &[(&oci, "amd64", None), (&arm64, "arm64", Some("v8"))],
        false,
    );
    let (docker_list, _) = index(&[(&docker, "arm", Some("v7")), (&oci, "amd64", None)], true);
    // The selector byte picks the Content-Type the target passes (see manifest_parse.rs).
    for (i, (name, body)) in [
        ("oci", &oci.manifest),
        ("docker", &docker.manifest),
        ("oci-index", &oci_index),
        ("docker-list", &docker_list),
    ]
    .into_iter()
    .enumerate()
    {
        for sel in [0u8, 1, 2 + i as u8] {
            let mut b = vec![sel];
            b.extend_from_slice(body);
            write(out, "manifest_parse", &format!("{name}-{sel}"), &b);
        }
    }
    for (name, cfg) in [
        ("oci", &oci.config),
        ("docker", &docker.config),
        ("arm64", &arm64.config),
    ] {
        write(out, "image_config", name, cfg);
    }

    // Layers: the unpack tests' shapes, hostile ones included (raw tar mode: first byte 0).
    let layers: Vec<(&str, Vec<Entry>)> = vec![
        ("small", small.to_vec()),
        (
            "links",
            vec![
                Entry::dir("etc"),
                Entry::symlink("link", "/etc"),
                Entry::symlink("up", "../../../etc"),
                Entry::file("link/a", b"a"),
                Entry::file("up/b", b"b"),
                Entry::hardlink("h", "etc/hostname"),
            ],
        ),
        (
            "escapes",
            vec![
                Entry::file("../../escape", b"x"),
                Entry::file("/abs/escape", b"x"),
                Entry::symlink("abs", "/mnt/a/b/canary"),
                Entry::file("abs/pwned", b"x"),
                Entry::hardlink("h2", "../../../../../etc/passwd"),
            ],
        ),
        (
            "replace",
            vec![
                Entry::file("x", b"first"),
                Entry::file("x", b"second"),
                Entry::dir("d"),
                Entry::file("d/inner", b"i"),
                Entry::file("d", b"now a file"),
                Entry::symlink("s", "target"),
                Entry::file("s", b"file"),
            ],
        ),
        (
            "whiteouts",
            vec![
                Entry::dir("a"),
                Entry::file("a/gone", b"g"),
                Entry::whiteout("a/gone"),
                Entry::opaque("b"),
                Entry::Fifo {
                    path: "fifo".into(),
                },
                Entry::Char {
                    path: "null".into(),
                    major: 1,
                    minor: 3,
                },
            ],
        ),
        (
            "xattrs",
            vec![Entry::File {
                path: "cap".into(),
                data: b"x".to_vec(),
                mode: 0o4755,
                uid: 1000,
                gid: 1000,
                xattrs: vec![
                    ("trusted.overlay.opaque".into(), b"y".to_vec()),
                    ("user.note".into(), b"n".to_vec()),
                ],
            }],
        ),
        (
            "long-names",
            vec![
                Entry::dir(&"d".repeat(120)),
                Entry::file(&format!("{}/{}", "d".repeat(120), "f".repeat(150)), b"x"),
                Entry::symlink("long-link", &"t/".repeat(80)),
            ],
        ),
    ];
    for (name, entries) in &layers {
        let mut b = vec![0u8];
        b.extend_from_slice(&tar_bytes(entries));
        write(out, "layer_unpack", name, &b);
    }
    // Structured mode (odd first byte): a few byte strings the decoder turns into entries.
    for (i, s) in [
        &b"\x01\x05\x00\x03\x02\x01\x07"[..],
        b"\x01\x0b\x03\x04\x05\x06\x07\x08\x09",
    ]
    .iter()
    .enumerate()
    {
        write(out, "layer_unpack", &format!("structured-{i}"), s);
    }

    // CRI logs as the shim writes them: whole lines, partial (over-long) lines, both streams,
    // rotation. Three header bytes: tail, since, chunk size.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("container.log");
    let mut w = LogWriter::open(
        &p,
        Logging {
            max_size: 4096,
            max_files: 2,
        },
    )
    .unwrap();
    let t = |n: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n * 1800);
    let mut o = LineSplitter::new(Stream::Stdout);
    let mut e = LineSplitter::new(Stream::Stderr);
    for i in 0..40 {
        o.feed(format!("line {i}\n").as_bytes(), &mut w, t(i))
            .unwrap();
        if i % 7 == 0 {
            e.feed(b"oops\npart", &mut w, t(i)).unwrap();
        }
    }
    e.feed(&vec![b'x'; MAX_LINE + 3], &mut w, t(41)).unwrap();
    e.feed(b"\n", &mut w, t(42)).unwrap();
    o.finish(&mut w, t(43)).unwrap();
    let current = std::fs::read(&p).unwrap();
    let older = std::fs::read(berth_agent::runtime::logs::rotated(&p, 1)).unwrap_or_default();
    for (name, head) in [
        ("plain", [0u8, 0, 64]),
        ("tail", [0x83, 0, 7]),
        ("since", [0, 0x85, 1]),
    ] {
        let mut b = head.to_vec();
        b.extend_from_slice(&older);
        b.push(0);
        b.extend_from_slice(&current);
        write(out, "cri_log", name, &b);
        let mut short = head.to_vec();
        short.extend_from_slice(&current[..current.len().min(600)]);
        write(out, "cri_log", &format!("{name}-short"), &short);
    }
    println!("seeds written under {}", out.display());
}
