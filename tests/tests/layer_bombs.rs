//! Layers built to exhaust berth's memory while it unpacks (issue 13), pulled with `berth pull`
//! through the fault proxy from the real registry, each measured by the pull's peak RSS:
//! a PAX header of 256 MiB and a GNU long name of 256 MiB (which the tar parser would buffer
//! whole) are refused at 1 MiB; 40,000 directories with 4 KiB paths (whose times were all
//! remembered by path) unpack within a bounded bookkeeping budget.
//!
//! Image archives (`berth image import`) are hostile input as well: the same PAX header in the
//! archive's own tar is refused at 1 MiB, and an archive of 70,000 empty entries (each one a
//! name in the index) at 65,536 entries.
//!
//! Image configs too: one of 16 MiB is refused at 4 MiB before it is read, and one of just under
//! 4 MiB made of empty strings (each `"",` a 24-byte String once parsed) at 16,384 items.
//!
//! A child's peak RSS (`ru_maxrss`) starts from its parent's at the exec, so everything large
//! this test makes is made before the first measurement, and no pull's output is kept whole:
//! each measurement carries the same offset. The state dir is a tmpfs, so 40,000 directories
//! cost no disk time.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_e2e::berth_env::BerthEnv;
use berth_e2e::image::{
    Blob, Compression, Entry, ImageBuilder, fill, long_entry, pad, raw_header, streamed_layer,
};
use berth_e2e::proxy::FaultProxy;
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::tmpfs::Tmpfs;

/// What a pull may take beyond an honest pull's peak.
const HEADROOM_KIB: u64 = 40 << 10;

struct Run {
    code: i32,
    stderr: String,
    max_rss_kib: u64,
}

/// Runs berth and reaps it with wait4, for its peak RSS.
// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn measured(env: &BerthEnv, args: &[&str]) -> Run {
    let mut child = Command::new(berth_e2e::berth_bin())
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tail only: a refused header can make a very long error.
    let mut tail: Vec<u8> = Vec::new();
    let mut pipe = child.stderr.take().unwrap();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = pipe.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 128 << 10 {
            tail.drain(..tail.len() - (64 << 10));
        }
    }
    let stderr = String::from_utf8_lossy(&tail).into_owned();
    let mut status = 0;
    // SAFETY: rusage is plain old data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaping our own child by pid, into locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    Run {
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stderr,
        max_rss_kib: ru.ru_maxrss as u64,
    }
}

fn push(proxy: &FaultProxy, layer: Blob) -> String {
    let repo = unique_repo("bomb");
    let img = ImageBuilder::new().blob(layer).build();
    TestRegistry::plain().push_image(&repo, "v1", &img);
    format!("{}/{repo}:v1", proxy.addr)
}

fn pax_bomb() -> Blob {
    streamed_layer(|out| {
        let size = 256u64 << 20;
        raw_header(
            out,
            tar::EntryType::XHeader,
            "PaxHeaders/victim",
            size,
            0o644,
        );
        fill(out, b'a', size);
        pad(out, size);
        raw_header(out, tar::EntryType::Regular, "victim", 0, 0o644);
    })
}

fn long_name_bomb() -> Blob {
    streamed_layer(|out| {
        let size = 256u64 << 20;
        raw_header(
            out,
            tar::EntryType::GNULongName,
            "././@LongLink",
            size,
            0o644,
        );
        fill(out, b'a', size);
        pad(out, size);
        raw_header(out, tar::EntryType::Regular, "victim", 0, 0o644);
    })
}

/// 15 nested dirs of 250-character names, then 40,000 dirs of 190-character names in the
/// deepest: every path near 4 KiB.
fn many_long_dirs() -> Blob {
    streamed_layer(|out| {
        let mut prefix = String::new();
        for i in 0..15 {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix += &format!("{i:02}{}", "p".repeat(248));
            long_entry(out, tar::EntryType::Directory, &prefix, 0o755);
        }
        for i in 0..40_000 {
            let path = format!("{prefix}/{i:06}{}", "d".repeat(184));
            long_entry(out, tar::EntryType::Directory, &path, 0o755);
        }
    })
}

#[test]
fn header_and_directory_bombs_stay_within_bounded_memory() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let env = BerthEnv::new(&format!(
        "[registries.\"{}\"]\ninsecure = true\n[images]\nmin_free = 0\n",
        proxy.addr
    ));
    let _disk = Tmpfs::mount(&env.state_dir, 1 << 30);
    let bombs = [
        ("256 MiB PAX header", pax_bomb(), true),
        ("256 MiB GNU long name", long_name_bomb(), true),
        ("40,000 dirs with 4 KiB paths", many_long_dirs(), false),
    ];
    // The baseline: an honest layer of a few files through the same proxy.
    let honest = push(
        &proxy,
        Blob::layer(
            &[Entry::dir("etc"), Entry::file("etc/x", b"x")],
            Compression::Gzip,
            false,
        ),
    );
    let base = measured(&env, &["pull", &honest]);
    assert_eq!(base.code, 0, "{}", base.stderr);
    eprintln!("honest pull: {} KiB peak", base.max_rss_kib);

    let mut failed = Vec::new();
    for (name, layer, refused) in bombs {
        let reference = push(&proxy, layer);
        let run = measured(&env, &["pull", &reference]);
        eprintln!(
            "{name}: exit {}, {} KiB peak: {}",
            run.code,
            run.max_rss_kib,
            run.stderr.trim()
        );
        if run.max_rss_kib > base.max_rss_kib + HEADROOM_KIB {
            failed.push(format!(
                "{name}: peak RSS {} KiB, an honest pull's {} KiB",
                run.max_rss_kib, base.max_rss_kib
            ));
        }
        if refused {
            let last = run.stderr.lines().last().unwrap_or_default();
            if run.code != 1
                || !last.contains(&reference)
                || !last.contains("take more than 1048576 bytes")
            {
                failed.push(format!("{name}: not refused clearly: {}", run.stderr));
            }
        } else if run.code != 0 {
            failed.push(format!("{name}: failed: {}", run.stderr));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Writes a gzip OCI layout tar of a one-file image to `path`, `before` writing whatever
/// hostile entries come first (streamed, never held whole).
fn write_archive(path: &Path, before: impl FnOnce(&mut dyn Write)) -> PathBuf {
    let img = ImageBuilder::new()
        .layer(&[Entry::file("hello", b"hi")], Compression::Gzip)
        .build();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": img.media_type, "digest": img.digest(), "size": img.manifest.len()}],
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
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(std::fs::File::create(path).unwrap()),
        flate2::Compression::fast(),
    );
    before(&mut gz);
    for (name, data) in &files {
        raw_header(
            &mut gz,
            tar::EntryType::Regular,
            name,
            data.len() as u64,
            0o644,
        );
        gz.write_all(data).unwrap();
        pad(&mut gz, data.len() as u64);
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap().flush().unwrap();
    path.to_path_buf()
}

#[test]
fn archive_bombs_stay_within_bounded_memory() {
    let env = BerthEnv::new("[images]\nmin_free = 0\n");
    let _disk = Tmpfs::mount(&env.state_dir, 1 << 30);
    let work = tempfile::tempdir().unwrap();
    let honest = write_archive(&work.path().join("honest.tar.gz"), |_| {});
    let pax = write_archive(&work.path().join("pax.tar.gz"), |out| {
        let size = 256u64 << 20;
        raw_header(
            out,
            tar::EntryType::XHeader,
            "PaxHeaders/victim",
            size,
            0o644,
        );
        fill(out, b'a', size);
        pad(out, size);
        raw_header(out, tar::EntryType::Regular, "victim", 0, 0o644);
    });
    let many = write_archive(&work.path().join("many.tar.gz"), |out| {
        for i in 0..70_000 {
            raw_header(
                out,
                tar::EntryType::Regular,
                &format!("junk/{i:08}"),
                0,
                0o644,
            );
        }
    });
    let base = measured(&env, &["image", "import", honest.to_str().unwrap()]);
    assert_eq!(base.code, 0, "{}", base.stderr);
    eprintln!("honest import: {} KiB peak", base.max_rss_kib);

    let mut failed = Vec::new();
    for (name, path, why) in [
        ("256 MiB PAX header", &pax, "take more than 1048576 bytes"),
        ("70,000 entries", &many, "more than 65536 entries"),
    ] {
        let run = measured(&env, &["image", "import", path.to_str().unwrap()]);
        eprintln!(
            "{name}: exit {}, {} KiB peak: {}",
            run.code,
            run.max_rss_kib,
            run.stderr.trim()
        );
        if run.max_rss_kib > base.max_rss_kib + HEADROOM_KIB {
            failed.push(format!(
                "{name}: peak RSS {} KiB, an honest import's {} KiB",
                run.max_rss_kib, base.max_rss_kib
            ));
        }
        let last = run.stderr.lines().last().unwrap_or_default();
        if run.code != 1 || !last.contains(path.to_str().unwrap()) || !last.contains(why) {
            failed.push(format!("{name}: not refused clearly: {}", run.stderr));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// An image of one small layer whose config's `Env` is `n` empty strings.
fn push_config_bomb(proxy: &FaultProxy, n: usize) -> (String, usize) {
    let layer = Blob::layer(&[Entry::file("x", b"x")], Compression::Gzip, false);
    let mut config = format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{"Env":["#,
        berth_e2e::image::host_arch(),
        layer.diff_id
    );
    config.reserve(n * 3);
    for i in 0..n {
        config.push_str(if i == 0 { r#""""# } else { r#","""# });
    }
    config.push_str("]}}");
    let config = config.into_bytes();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": berth_e2e::image::sha256(&config), "size": config.len()},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.bytes.len()}],
    }))
    .unwrap();
    let size = config.len();
    let img = berth_e2e::image::Image {
        layers: vec![layer],
        config,
        manifest,
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
    };
    let repo = unique_repo("cfgbomb");
    TestRegistry::plain().push_image(&repo, "v1", &img);
    (format!("{}/{repo}:v1", proxy.addr), size)
}

#[test]
fn config_bombs_stay_within_bounded_memory() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let env = BerthEnv::new(&format!(
        "[registries.\"{}\"]\ninsecure = true\n[images]\nmin_free = 0\n",
        proxy.addr
    ));
    let _disk = Tmpfs::mount(&env.state_dir, 256 << 20);
    let (honest, _) = push_config_bomb(&proxy, 10);
    let (big, big_size) = push_config_bomb(&proxy, (16 << 20) / 3 - 100);
    let (dense, dense_size) = push_config_bomb(&proxy, (4 << 20) / 3 - 100);
    assert!(big_size > 4 << 20 && big_size < 16 << 20 && dense_size < 4 << 20);
    let base = measured(&env, &["pull", &honest]);
    assert_eq!(base.code, 0, "{}", base.stderr);
    eprintln!("honest pull: {} KiB peak", base.max_rss_kib);

    let mut failed = Vec::new();
    for (name, reference, why) in [
        ("16 MiB config", &big, "larger than the 4194304-byte limit"),
        ("4 MiB of empty strings", &dense, "more than 16384 items"),
    ] {
        let run = measured(&env, &["pull", reference]);
        eprintln!(
            "{name}: exit {}, {} KiB peak: {}",
            run.code,
            run.max_rss_kib,
            run.stderr.trim()
        );
        if run.max_rss_kib > base.max_rss_kib + HEADROOM_KIB {
            failed.push(format!(
                "{name}: peak RSS {} KiB, an honest pull's {} KiB",
                run.max_rss_kib, base.max_rss_kib
            ));
        }
        let last = run.stderr.lines().last().unwrap_or_default();
        if run.code != 1 || !last.contains(reference.as_str()) || !last.contains(why) {
            failed.push(format!("{name}: not refused clearly: {}", run.stderr));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
