//! Faults the host and the network make: the disk fills up during a pull and during a
//! container's creation (the state dir on a small tmpfs), and the registry goes away in the
//! middle of a rollout. Each ends in a clear error, leaves the store consistent (`berth doctor`
//! finds nothing, no corrupt blob), disturbs nothing already running, and recovers once the
//! space or the registry is back.

use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::berth_env::BerthEnv;
use berth_e2e::fixtures::{busybox_image, sleeper_image};
use berth_e2e::image::{Compression, Entry, ImageBuilder};
use berth_e2e::proxy::FaultProxy;
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::tmpfs::Tmpfs;
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Doctor's findings of a given kind.
fn doctor_findings(out: &std::process::Output, kinds: &[&str]) -> Vec<Value> {
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    found
        .into_iter()
        .filter(|f| kinds.is_empty() || kinds.iter().any(|k| f["kind"] == *k))
        .collect()
}

fn leftover_temps(state: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(state.join("layers/sha256"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

#[test]
fn disk_full_during_a_pull() {
    if !berth_e2e::require_root() {
        return;
    }
    // 24 MiB of zeros compress to a few KiB: the space check before the download passes, the
    // unpack runs out of room.
    let reg = TestRegistry::plain();
    let repo = unique_repo("diskfull");
    let img = ImageBuilder::new()
        .layer(&[Entry::file("small", b"s")], Compression::Gzip)
        .layer(
            &[Entry::file("zeros", &vec![0u8; 24 << 20])],
            Compression::Gzip,
        )
        .build();
    reg.push_image(&repo, "v1", &img);
    let reference = format!("{}/{repo}:v1", reg.addr);
    let env = BerthEnv::new("[images]\nmin_free = 0\n");
    let disk = Tmpfs::mount(&env.state_dir, 8 << 20);

    let out = env.berth(&["pull", &reference]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error = stderr.lines().last().unwrap_or_default();
    assert!(
        error.contains(&reference) && error.contains("No space left on device"),
        "{stderr}"
    );
    eprintln!("disk full: {error}");
    // Consistent: no record, no half layer, no corrupt blob.
    assert!(
        json(&env.berth(&["images", "--json"]))
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(leftover_temps(&env.state_dir).is_empty());
    assert!(
        !env.state_dir
            .join("layers/sha256")
            .join(&img.layers[1].diff_id[7..])
            .exists(),
        "a half layer is in place"
    );
    let doctor = env.berth(&["doctor", "--json"]);
    let blobs = doctor_findings(&doctor, &["blob"]);
    assert!(blobs.is_empty(), "corrupt blobs: {blobs:?}");

    // Space returns: the same pull succeeds.
    disk.resize(64 << 20);
    let v = json(&env.berth(&["pull", "--json", &reference]));
    assert_eq!(v["image"]["manifest_digest"], img.digest());
    assert!(leftover_temps(&env.state_dir).is_empty());
    let doctor = env.berth(&["doctor", "--json"]);
    assert!(doctor_findings(&doctor, &["blob"]).is_empty());
}

#[test]
fn disk_full_during_container_creation() {
    if !berth_e2e::require_root() {
        return;
    }
    let opts = AgentOptions {
        extra_config: "[images]\nmin_free = 0\n".into(),
        ..AgentOptions::default()
    };
    // Declared before the agent so that it drops after it (locals drop in reverse order),
    // also on a panic: the agent's teardown prunes everything, then the tmpfs goes.
    let disk: Tmpfs;
    let mut agent = TestAgent::new("df", &opts);
    disk = Tmpfs::mount(&agent.state_dir, 96 << 20).removing(agent.root.path());
    agent.start(&opts);
    let image = sleeper_image();
    agent.write_spec("first", &format!("image = \"{image}\"\n"));
    let first = agent.wait_running("first");
    let filler = disk.fill();
    eprintln!("disk filled: {} bytes free", disk.free());

    // The image is in the store: the next container needs no pull, only its own files.
    agent.write_spec("second", &format!("image = \"{image}\"\n"));
    let st = agent.wait_status("second", "failed to create", Duration::from_secs(60), |s| {
        s["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device"))
    });
    eprintln!("second: {} ({})", st["status"], st["error"]);
    assert!(st["pid"].is_null(), "{st}");
    // Nothing half-made is left, and the first container never noticed.
    let doctor = agent.berth(&["doctor", "--json"]);
    let found = doctor_findings(&doctor, &[]);
    assert!(found.is_empty(), "doctor found: {found:?}");
    let now = agent.status_of("first").unwrap();
    assert_eq!(now["status"], "running");
    assert_eq!(now["pid"], first["pid"]);

    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    let st = agent.wait_running("second");
    eprintln!(
        "second running {:.1?} after space returned",
        started.elapsed()
    );
    assert!(st["error"].is_null(), "{st}");
    let doctor = agent.berth(&["doctor", "--json"]);
    assert!(doctor_findings(&doctor, &["blob"]).is_empty());
}

#[test]
fn registry_lost_mid_rollout() {
    if !berth_e2e::require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    // Six images (distinct configs over one busybox layer), all through the proxy.
    let images: Vec<String> = (0..6)
        .map(|i| {
            let direct = busybox_image(
                "rollout",
                &format!("trap 'exit 0' TERM; echo {i}; while :; do sleep 1; done"),
                &[],
            );
            direct.replacen(&reg.addr, &proxy.addr, 1)
        })
        .collect();
    let opts = AgentOptions {
        extra_config: format!(
            "[registries.\"{}\"]\ninsecure = true\n[images]\nmin_free = 0\nhttp_timeout = \"3s\"\n",
            proxy.addr
        ),
        ..AgentOptions::default()
    };
    let mut agent = TestAgent::new("ro", &opts);
    agent.start(&opts);
    for (i, img) in images.iter().enumerate().take(3) {
        agent.write_spec(&format!("c{i}"), &format!("image = \"{img}\"\n"));
    }
    let pids: Vec<Value> = (0..3)
        .map(|i| agent.wait_running(&format!("c{i}"))["pid"].clone())
        .collect();

    // The registry goes away; the rollout goes on with three more.
    proxy.set_down(true);
    for (i, img) in images.iter().enumerate().skip(3) {
        agent.write_spec(&format!("c{i}"), &format!("image = \"{img}\"\n"));
    }
    for (i, img) in images.iter().enumerate().skip(3) {
        let st = agent.wait_status(
            &format!("c{i}"),
            "failing to pull",
            Duration::from_secs(90),
            |s| s["error"].is_string(),
        );
        eprintln!(
            "c{i} while the registry is gone: {} ({})",
            st["status"], st["error"]
        );
        assert!(st["error"].as_str().unwrap().contains(img.as_str()), "{st}");
        assert!(st["pid"].is_null(), "{st}");
    }
    // Those already running stay, untouched, the whole time it is gone.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for (i, pid) in pids.iter().enumerate() {
            let st = agent.status_of(&format!("c{i}")).unwrap();
            assert_eq!(st["status"], "running", "{st}");
            assert_eq!(&st["pid"], pid, "c{i} was disturbed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    proxy.set_down(false);
    let back = Instant::now();
    for i in 3..6 {
        agent.wait_status(&format!("c{i}"), "running", Duration::from_secs(120), |s| {
            s["status"] == "running"
        });
    }
    eprintln!(
        "the rest converged {:.1?} after the registry returned",
        back.elapsed()
    );
    for (i, pid) in pids.iter().enumerate() {
        assert_eq!(&agent.status_of(&format!("c{i}")).unwrap()["pid"], pid);
    }
    wait_until(Duration::from_secs(5), "no pull errors left", || {
        agent.status().iter().all(|s| s["error"].is_null())
    });
}
