//! Partial pulls of zstd:chunked images end to end (issue 19, part 1). The images are built here
//! by podman (`FROM scratch`, one ~100 MB layer of 100 incompressible files and busybox) and
//! pushed as zstd:chunked to the test registry; berth pulls through the fault proxy, which
//! counts every byte. v2 changes one file: its pull after v1 fetches the TOC, the header frames
//! and that file only, and makes the same tree a full pull makes. A partial pull that fails
//! (a corrupted answer) falls back to a full one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use berth_e2e::berth_env::BerthEnv;
use berth_e2e::proxy::{Fault, FaultProxy};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::require_root;
use berth_e2e::tree;
use serde_json::Value;

const FILES: usize = 100;
const FILE_SIZE: usize = 1 << 20;

fn random(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut v)
        .unwrap();
    v
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("podman is installed (tests/setup/install-deps)");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two versions of an image, built by podman and pushed as zstd:chunked: v2 differs from v1
/// in one file of its one layer.
struct Images {
    repo: String,
    ctx: tempfile::TempDir,
    local: Vec<String>,
}

impl Images {
    fn build(reg: &TestRegistry) -> Images {
        let repo = unique_repo("chunked");
        let ctx = tempfile::tempdir().unwrap();
        let root = ctx.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for i in 0..FILES {
            std::fs::write(root.join(format!("data/f{i:03}")), random(FILE_SIZE)).unwrap();
        }
        std::fs::write(
            ctx.path().join("Containerfile"),
            "FROM scratch\nCOPY root/ /\nCMD [\"/bin/busybox\", \"sleep\", \"1000\"]\n",
        )
        .unwrap();
        let mut images = Images {
            repo,
            ctx,
            local: Vec::new(),
        };
        images.push(reg, "v1");
        std::fs::write(root.join("data/f042"), random(FILE_SIZE)).unwrap();
        images.push(reg, "v2");
        images
    }

    fn push(&mut self, reg: &TestRegistry, tag: &str) {
        let local = format!("localhost/{}:{tag}", self.repo);
        let ctx = self.ctx.path().to_str().unwrap();
        podman(&["build", "-q", "--layers=false", "-t", &local, ctx]);
        self.local.push(local.clone());
        podman(&[
            "push",
            "-q",
            "--tls-verify=false",
            "--compression-format",
            "zstd:chunked",
            &local,
            &format!("{}/{}:{tag}", reg.addr, self.repo),
        ]);
    }

    /// The layer's blob digest and size and its diff id, as the registry serves them.
    fn layer(&self, reg: &TestRegistry, tag: &str) -> (String, u64, String) {
        let m: Value = http_json(reg, &format!("{}/manifests/{tag}", self.repo));
        let l = &m["layers"][0];
        assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{m}");
        assert!(
            l["annotations"]
                .as_object()
                .is_some_and(|a| a.keys().any(|k| k.contains("zstd-chunked"))),
            "not zstd:chunked: {l}"
        );
        let cfg: Value = http_json(
            reg,
            &format!(
                "{}/blobs/{}",
                self.repo,
                m["config"]["digest"].as_str().unwrap()
            ),
        );
        (
            l["digest"].as_str().unwrap().to_string(),
            l["size"].as_u64().unwrap(),
            cfg["rootfs"]["diff_ids"][0].as_str().unwrap().to_string(),
        )
    }
}

fn http_json(reg: &TestRegistry, path: &str) -> Value {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{}/v2/{path}", reg.addr))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {path}");
    serde_json::from_slice(&out.stdout).unwrap()
}

impl Drop for Images {
    fn drop(&mut self) {
        for l in &self.local {
            let _ = Command::new("podman").args(["rmi", "-f", l]).output();
        }
    }
}

fn env(proxy: &FaultProxy) -> BerthEnv {
    BerthEnv::new(&format!(
        "[registries.\"{}\"]\ninsecure = true\n[images]\nmin_free = 0\n",
        proxy.addr
    ))
}

fn pull(env: &BerthEnv, reference: &str) -> f64 {
    let start = Instant::now();
    let out = env.berth(&["pull", "--json", reference]);
    assert!(
        out.status.success(),
        "berth pull {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed().as_secs_f64()
}

fn layer_dir(env: &BerthEnv, diff_id: &str) -> PathBuf {
    env.state_dir.join("layers/sha256").join(&diff_id[7..])
}

fn same_tree(a: &Path, b: &Path) {
    let d = tree::diff(&tree::snapshot(a), &tree::snapshot(b));
    assert!(d.is_empty(), "trees differ:\n{}", d.join("\n"));
}

#[test]
fn an_update_of_one_file_downloads_only_that_file() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let images = Images::build(&reg);
    let (digest1, size1, _) = images.layer(&reg, "v1");
    let (digest2, size2, diff2) = images.layer(&reg, "v2");
    assert_ne!(digest1, digest2);
    let proxy = FaultProxy::start(&reg.addr);
    let at = |tag: &str| format!("{}/{}:{tag}", proxy.addr, images.repo);

    // v1 whole (nothing to reuse yet), then v2 partially.
    let e = env(&proxy);
    let t1 = pull(&e, &at("v1"));
    let bytes1 = proxy.stats().bytes_for(&digest1);
    let t2 = pull(&e, &at("v2"));
    let stats = proxy.stats();
    let bytes2 = stats.bytes_for(&digest2);
    let ranges = stats.ranges_for(&digest2);
    let requests2 = stats.count_for(&digest2);

    // A full pull of v2 into a fresh store, for the tree and the figures.
    let full = env(&proxy);
    let t_full = pull(&full, &at("v2"));
    let bytes_full = proxy.stats().bytes_for(&digest2) - bytes2;
    eprintln!(
        "v1 (full):          {bytes1:>10} bytes of {size1} in {t1:.2} s\n\
         v2 after v1:        {bytes2:>10} bytes of {size2} ({:.2}%) in {t2:.2} s, {requests2} requests\n\
         v2 full (no store): {bytes_full:>10} bytes in {t_full:.2} s",
        100.0 * bytes2 as f64 / size2 as f64
    );
    assert!(bytes1 >= size1, "v1 was not pulled whole: {bytes1}");
    assert!(
        bytes2 * 20 < size2,
        "v2 downloaded {bytes2} bytes of a {size2}-byte layer (5% is {})",
        size2 / 20
    );
    // One changed file of 1 MiB is there at least, and the answers were multi-range.
    assert!(bytes2 >= FILE_SIZE as u64 / 2, "{bytes2}");
    assert!(ranges.iter().any(|r| r.contains(',')), "{ranges:?}");
    assert!(bytes_full >= size2);
    same_tree(&layer_dir(&full, &diff2), &layer_dir(&e, &diff2));
}

#[test]
fn a_failed_partial_pull_falls_back_to_a_full_one() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let images = Images::build(&reg);
    let (_, _, _) = images.layer(&reg, "v1");
    let (digest2, size2, diff2) = images.layer(&reg, "v2");
    let proxy = FaultProxy::start(&reg.addr);
    let at = |tag: &str| format!("{}/{}:{tag}", proxy.addr, images.repo);
    let e = env(&proxy);
    pull(&e, &at("v1"));

    // The TOC arrives intact; the ranges' answer has a flipped byte inside the changed file.
    proxy.add(&digest2, Fault::Pass, 1);
    proxy.add(&digest2, Fault::Corrupt(200_000), 1);
    pull(&e, &at("v2"));
    let stats = proxy.stats();
    eprintln!(
        "v2 with a corrupted range answer: {} requests, {} bytes",
        stats.count_for(&digest2),
        stats.bytes_for(&digest2)
    );
    assert_eq!(stats.count_for(&digest2), 3, "{:?}", stats.requests);
    let whole = stats
        .requests
        .iter()
        .filter(|r| r.0.contains(&digest2) && r.1.is_none())
        .count();
    assert_eq!(whole, 1, "no full pull after the failed partial one");
    assert!(stats.bytes_for(&digest2) >= size2);

    let full = env(&proxy);
    pull(&full, &at("v2"));
    same_tree(&layer_dir(&full, &diff2), &layer_dir(&e, &diff2));
}
