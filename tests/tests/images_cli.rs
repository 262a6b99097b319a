//! `berth pull`, `images`, `image import|pin|unpin` and `prune` as a user runs them, including
//! a pull killed midway (the store stays as it was) and its resume after the restart.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::berth_env::BerthEnv;
use berth_e2e::image::{Compression, Entry, ImageBuilder, busybox_rootfs};
use berth_e2e::proxy::{Fault, FaultProxy};
use berth_e2e::registry::{TestRegistry, unique_repo};

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pull_list_pin_prune() {
    if !berth_e2e::require_root() {
        return;
    }
    let env = BerthEnv::new("[images]\nmin_free = 0\n");
    for (i, reg) in [
        TestRegistry::plain(),
        TestRegistry::tls(),
        TestRegistry::token(),
    ]
    .iter()
    .enumerate()
    {
        let repo = unique_repo("cli");
        let img = ImageBuilder::new()
            .layer(&busybox_rootfs(), Compression::Gzip)
            .layer(
                &[Entry::file("which", format!("{i}").as_bytes())],
                Compression::Zstd,
            )
            .build();
        reg.push_image(&repo, "v1", &img);
        let reference = format!("{}/{repo}:v1", reg.addr);
        let out = env.berth(&["pull", "--json", &reference]);
        let v = json(&out);
        assert_eq!(v["image"]["manifest_digest"], img.digest());
        assert_eq!(v["image"]["layers"].as_array().unwrap().len(), 2);
        let plain = env.berth(&["pull", &reference]);
        assert!(plain.status.success());
        assert!(String::from_utf8_lossy(&plain.stdout).contains(&img.digest()));
    }
    let list = json(&env.berth(&["images", "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for r in list {
        assert!(r["platform"]["architecture"].is_string());
        assert!(
            r["manifest_digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        assert!(r["unpacked_size"].as_u64().unwrap() > 1 << 20);
    }
    let keep = list[0]["reference"].as_str().unwrap().to_string();
    let out = env.berth(&["image", "pin", &keep]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = env.berth(&["images"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("REFERENCE"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(&keep) && l.contains("operator")),
        "{text}"
    );

    let dry = json(&env.berth(&["prune", "--dry-run", "--json"]));
    assert_eq!(dry["images"].as_array().unwrap().len(), 2);
    assert_eq!(
        json(&env.berth(&["images", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let out = env.berth(&["prune"]);
    assert!(out.status.success());
    let left = json(&env.berth(&["images", "--json"]));
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["reference"], keep.as_str());
    let out = env.berth(&["image", "unpin", &keep]);
    assert!(out.status.success());
    assert!(env.berth(&["prune"]).status.success());
    assert!(
        json(&env.berth(&["images", "--json"]))
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Everything went: no layer dirs are left.
    assert_eq!(
        std::fs::read_dir(env.state_dir.join("layers/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn killed_pull_leaves_the_store_as_it_was_and_resumes() {
    if !berth_e2e::require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("killed");
    let mut noise = vec![0u8; 4 << 20];
    let mut x: u32 = 12345;
    for b in noise.iter_mut() {
        x = x.wrapping_mul(1664525).wrapping_add(1013904223);
        *b = (x >> 24) as u8;
    }
    let img = ImageBuilder::new()
        .layer(&[Entry::file("small", b"s")], Compression::Gzip)
        .layer(&[Entry::file("noise", &noise)], Compression::Gzip)
        .build();
    reg.push_image(&repo, "v1", &img);
    let proxy = FaultProxy::start(&reg.addr);
    let big = img.layers[1].clone();
    let half = big.bytes.len() as u64 / 2;
    proxy.add(
        &big.digest,
        Fault::StallAfter(half, Duration::from_secs(120)),
        1,
    );
    let env = BerthEnv::new(&format!(
        "[images]\nmin_free = 0\n\n[registries.\"{}\"]\ninsecure = true\n",
        proxy.addr
    ));
    let reference = format!("{}/{repo}:v1", proxy.addr);
    let mut child = Command::new(berth_e2e::berth_bin())
        .arg("--config")
        .arg(&env.config)
        .args(["pull", &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = env
        .state_dir
        .join(format!("blobs/sha256/{}.partial", &big.digest[7..]));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if len >= half {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pull never reached the stall ({len} bytes)"
        );
        assert!(child.try_wait().unwrap().is_none(), "the pull ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let list = json(&env.berth(&["images", "--json"]));
    assert!(
        list.as_array().unwrap().is_empty(),
        "a killed pull recorded an image: {list}"
    );
    let layers = env.state_dir.join("layers/sha256");
    assert!(
        !layers.join(&big.diff_id[7..]).exists(),
        "a half layer is in place"
    );

    // The next pull (a new process, as after a restart) resumes from the partial blob.
    let v = json(&env.berth(&["pull", "--json", &reference]));
    assert_eq!(v["image"]["manifest_digest"], img.digest());
    let ranges = proxy.stats().ranges_for(&big.digest);
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    let from: u64 = ranges[0]
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(
        from >= half,
        "resumed from {from}, expected at least {half}"
    );
    for e in std::fs::read_dir(&layers).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.starts_with(".tmp-"), "leftover {n}");
    }
    assert!(!partial.exists());
}

/// A pull killed after a blob's last byte and before its commit leaves a complete `.partial`:
/// the next pull takes it as it is (a Range from its end would be refused with a 416).
#[test]
fn a_complete_partial_blob_is_committed_without_a_download() {
    if !berth_e2e::require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("complete");
    let img = ImageBuilder::new()
        .layer(&[Entry::file("a", b"complete partial")], Compression::Gzip)
        .build();
    reg.push_image(&repo, "v1", &img);
    let proxy = FaultProxy::start(&reg.addr);
    let env = BerthEnv::new(&format!(
        "[images]\nmin_free = 0\n\n[registries.\"{}\"]\ninsecure = true\n",
        proxy.addr
    ));
    let layer = img.layers[0].clone();
    let blobs = env.state_dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let partial = blobs.join(format!("{}.partial", &layer.digest[7..]));
    std::fs::write(&partial, &layer.bytes).unwrap();
    let reference = format!("{}/{repo}:v1", proxy.addr);
    let v = json(&env.berth(&["pull", "--json", &reference]));
    assert_eq!(v["image"]["manifest_digest"], img.digest());
    assert_eq!(
        proxy.stats().count_for(&layer.digest),
        0,
        "the complete blob was fetched again"
    );
    assert!(!partial.exists());
}

#[test]
fn import_an_archive_from_the_cli() {
    let env = BerthEnv::new("[images]\nmin_free = 0\n");
    let reg = TestRegistry::plain();
    let repo = unique_repo("cli-import");
    let img = ImageBuilder::new()
        .layer(&[Entry::file("hello", b"hi")], Compression::Gzip)
        .build();
    reg.push_image(&repo, "v1", &img);
    let layout = env.path().join("layout");
    let st = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{repo}:v1", reg.addr))
        .arg(format!("oci:{}:v1", layout.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let tarball = env.path().join("img.tar");
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
    let out = env.berth(&["image", "import", tarball.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = json(&env.berth(&["images", "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0]["reference"],
        format!("oci-archive:{}", tarball.display())
    );
    assert_eq!(list[0]["pins"][0], "import");
    // Pruning keeps imported images.
    assert!(env.berth(&["prune"]).status.success());
    assert_eq!(
        json(&env.berth(&["images", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let bad = env.berth(&["image", "import", "/nonexistent/x.tar"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/x.tar"));
}

#[test]
fn errors_are_clear() {
    let env = BerthEnv::new("");
    let out = env.berth(&["pull", "Not A Reference"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid image reference"));

    // Another process holds the state dir lock: refused at once, saying why.
    std::fs::create_dir_all(&env.state_dir).unwrap();
    let f = std::fs::File::create(env.state_dir.join("lock")).unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let out = env.berth(&["pull", &format!("{}/x:1", TestRegistry::plain().addr)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(f);

    let out = env.berth(&[
        "pull",
        &format!(
            "{}/{}:v1",
            TestRegistry::plain().addr,
            unique_repo("absent")
        ),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
