//! Metered links end to end (issue 19, part 2), against the real registry behind the fault
//! proxy, which counts every byte: `[images] max_download_rate` holds within 10% with every
//! layer of a pull sharing it, `download_window` holds an update's download (a first start and
//! a crash restart never wait) and lets it proceed once the window opens, and a store too small
//! for an image first collects what no spec needs, then defers the pull without writing a byte
//! until there is room.

use std::io::Read;
use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::berth_env::BerthEnv;
use berth_e2e::image::{Compression, Entry, Image, ImageBuilder, Settings, busybox_rootfs};
use berth_e2e::proxy::FaultProxy;
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::require_root;
use berth_e2e::tmpfs::Tmpfs;
use serde_json::Value;

const SLEEP: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut v)
        .unwrap();
    v
}

/// A runnable busybox image (one layer) with `files` added; incompressible files make its
/// layer as large as they are.
fn busybox_with(files: &[(&str, Vec<u8>)]) -> Image {
    let mut entries = busybox_rootfs();
    entries.push(Entry::dir("data"));
    for (path, data) in files {
        entries.push(Entry::file(path, data));
    }
    ImageBuilder::new()
        .settings(Settings {
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), SLEEP.into()]),
            ..Settings::default()
        })
        .layer(&entries, Compression::Gzip)
        .build()
}

fn proxy_registry(proxy: &FaultProxy) -> String {
    format!("[registries.\"{}\"]\ninsecure = true\n", proxy.addr)
}

/// The local time now: (minute of the day, second of the minute), as the agent reads it.
fn local_now() -> (u16, u16) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as libc::time_t;
    // SAFETY: an all-zero tm is valid for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is thread-safe.
    let filled = unsafe { libc::localtime_r(&t, &mut tm) };
    assert!(!filled.is_null());
    ((tm.tm_hour * 60 + tm.tm_min) as u16, tm.tm_sec as u16)
}

fn hhmm(minute: u16) -> String {
    let m = minute % 1440;
    format!("{:02}:{:02}", m / 60, m % 60)
}

#[test]
fn the_download_rate_holds_within_ten_percent_through_the_proxy() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let repo = unique_repo("rate");
    // Two incompressible layers, fetched at once: they share the one budget.
    let img = ImageBuilder::new()
        .layer(&[Entry::file("a", &random(12 << 20))], Compression::Gzip)
        .layer(&[Entry::file("b", &random(12 << 20))], Compression::Gzip)
        .build();
    reg.push_image(&repo, "v1", &img);
    let reference = format!("{}/{repo}:v1", proxy.addr);
    let rate = 2u64 << 20;
    let env = BerthEnv::new(&format!(
        "{}[images]\nmin_free = 0\nmax_download_rate = \"2MiB/s\"\nparallel_layers = 2\n",
        proxy_registry(&proxy)
    ));
    let sent = || -> u64 {
        let st = proxy.stats();
        img.layers.iter().map(|l| st.bytes_for(&l.digest)).sum()
    };
    let out = env.berth(&["pull", "--json", &reference]);
    let end = Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = proxy.stats();
    let bytes: u64 = sent();
    let layers: u64 = img.layers.iter().map(|l| l.bytes.len() as u64).sum();
    assert!(bytes >= layers, "{bytes} < {layers}");
    // Both layers were asked for at once.
    let starts: Vec<Instant> = img
        .layers
        .iter()
        .map(|l| stats.first_request_for(&l.digest).unwrap())
        .collect();
    let spread = starts[0].max(starts[1]) - starts[0].min(starts[1]);
    assert!(
        spread < Duration::from_secs(1),
        "layers one after the other: {spread:?}"
    );
    // From the first layer request to the end of the pull: the unpack's tail and the commit
    // count against the rate, so this can only understate it (the proxy's own send times
    // cannot be used: the socket buffers between it and berth hold megabytes).
    let secs = (end - starts[0].min(starts[1])).as_secs_f64();
    let measured = bytes as f64 / secs;
    eprintln!(
        "{bytes} bytes in {secs:.2} s through the proxy: {:.0} KiB/s against a limit of {} KiB/s ({:.1}%)",
        measured / 1024.0,
        rate >> 10,
        100.0 * measured / rate as f64
    );
    let ratio = measured / rate as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "rate off by more than 10%: {ratio:.3}"
    );
}

#[test]
fn a_download_window_defers_an_update_and_then_lets_it_proceed() {
    if !require_root() {
        return;
    }
    // The window is the next local minute: start early enough in this one that the first
    // start (which never waits) is done before it opens.
    wait_until(Duration::from_secs(70), "an early second", || {
        local_now().1 < 40
    });
    let (minute, second) = local_now();
    let opens = Instant::now() + Duration::from_secs(60 - u64::from(second));
    let window = format!("{}-{}", hhmm(minute + 1), hhmm(minute + 2));

    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let repo = unique_repo("window");
    let v1 = busybox_with(&[("data/v", b"1".to_vec())]);
    let d1 = reg.push_image(&repo, "stable", &v1);
    let opts = AgentOptions {
        extra_config: format!(
            "{}[images]\nmin_free = 0\ndownload_window = \"{window}\"\n",
            proxy_registry(&proxy)
        ),
        ..AgentOptions::default()
    };
    let mut a = TestAgent::new("win", &opts);
    a.start(&opts);
    a.write_spec(
        "app",
        &format!(
            "image = \"{}/{repo}:stable\"\npull = \"always\"\n[update]\nverify = \"1s\"\n",
            proxy.addr
        ),
    );
    // A first start never waits for the window.
    let s = a.wait_running("app");
    assert_eq!(s["digest"], d1.as_str());
    assert!(
        Instant::now() < opens,
        "the first start was not before the window"
    );

    let v2 = busybox_with(&[("data/v", b"2".to_vec())]);
    let d2 = reg.push_image(&repo, "stable", &v2);
    let layer2 = &v2.layers[0].digest;
    let out = a.berth(&["apply", "--once", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = a.wait_status("app", "held for the window", Duration::from_secs(30), |s| {
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("download window"))
    });
    eprintln!("held: {}", s["reason"]);
    assert_eq!(s["status"], "running", "{s}");
    assert_eq!(s["digest"], d1.as_str());

    // A crash restart while held runs what the store has, without downloading.
    let pid = s["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on the container's init, which this test's agent started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let s = a.wait_status(
        "app",
        "restarted while held",
        Duration::from_secs(30),
        |s| s["status"] == "running" && s["pid"].as_i64().is_some_and(|p| p != i64::from(pid)),
    );
    assert_eq!(s["digest"], d1.as_str());
    assert!(
        Instant::now() < opens,
        "the window opened before the checks were done"
    );
    assert_eq!(
        proxy.stats().bytes_for(layer2),
        0,
        "downloaded outside the window"
    );

    // The window opens: the update proceeds.
    let s = a.wait_status(
        "app",
        "updated in the window",
        Duration::from_secs(150),
        |s| s["digest"] == d2.as_str() && s["status"] == "running",
    );
    let stats = proxy.stats();
    let started = stats
        .first_request_for(layer2)
        .expect("the layer was fetched");
    eprintln!(
        "update downloaded {:.1?} after the window opened, running: {}",
        started.saturating_duration_since(opens),
        s["status"]
    );
    assert!(
        started + Duration::from_secs(1) >= opens,
        "fetched {:?} before the window opened",
        opens - started
    );
    assert!(stats.bytes_for(layer2) >= v2.layers[0].bytes.len() as u64);
}

fn images(a: &TestAgent) -> Vec<String> {
    let out = a.berth(&["images", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect()
}

fn partials(state: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["blobs/sha256", "layers/sha256"] {
        for e in std::fs::read_dir(state.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".partial") || n.starts_with(".tmp-") {
                found.push(format!("{dir}/{n}"));
            }
        }
    }
    found
}

#[test]
fn a_store_too_small_collects_first_then_defers_without_writing() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let opts = AgentOptions {
        extra_config: format!("{}[images]\nmin_free = 0\n", proxy_registry(&proxy)),
        ..AgentOptions::default()
    };
    let disk: Tmpfs;
    let mut a = TestAgent::new("room", &opts);
    disk = Tmpfs::mount(&a.state_dir, 56 << 20).removing(a.root.path());
    a.start(&opts);

    // An image no spec names takes more than a quarter of the disk.
    let old_repo = unique_repo("old");
    let old = busybox_with(&[("data/old", random(14 << 20))]);
    reg.push_image(&old_repo, "1", &old);
    let old_ref = format!("{}/{old_repo}:1", proxy.addr);
    let out = a.berth(&["pull", &old_ref]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let free = disk.free();

    // The next image needs more than is free (its layer, streamed, then unpacked): the old one
    // is collected for it, and it runs.
    let app_repo = unique_repo("app");
    let app = busybox_with(&[("data/app", random(13 << 20))]);
    let need = 3 * app.layers[0].bytes.len() as u64;
    assert!(need > free, "the test's sizes: {need} fits in {free}");
    reg.push_image(&app_repo, "1", &app);
    a.write_spec("app", &format!("image = \"{}/{app_repo}:1\"\n", proxy.addr));
    a.wait_running("app");
    assert!(!images(&a).contains(&old_ref), "{:?}", images(&a));
    assert!(a.log().contains("made room for a pull"), "{}", a.log());

    // One too large even then: deferred, with its own status, and nothing written.
    let big_repo = unique_repo("big");
    let big = busybox_with(&[("data/big", random(16 << 20))]);
    let big_layer = big.layers[0].digest.clone();
    reg.push_image(&big_repo, "1", &big);
    a.write_spec("big", &format!("image = \"{}/{big_repo}:1\"\n", proxy.addr));
    let s = a.wait_status("big", "deferred", Duration::from_secs(60), |s| {
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("pull deferred until the disk has room"))
    });
    eprintln!("big: {} ({})", s["status"], s["reason"]);
    assert_ne!(s["status"], "failed", "{s}");
    assert!(s["pid"].is_null(), "{s}");
    let free_deferred = disk.free();
    assert_eq!(
        proxy.stats().bytes_for(&big_layer),
        0,
        "the layer was fetched"
    );
    assert!(
        partials(&a.state_dir).is_empty(),
        "{:?}",
        partials(&a.state_dir)
    );
    assert!(
        free_deferred + (64 << 10) >= disk.free(),
        "the store grew while deferred"
    );
    // The app it could not evict keeps running.
    assert_eq!(a.status_of("app").unwrap()["status"], "running");

    // Room comes back: the deferred pull proceeds on its own.
    disk.resize(128 << 20);
    let back = Instant::now();
    a.wait_running("big");
    eprintln!("big running {:.1?} after the disk grew", back.elapsed());
    assert!(proxy.stats().bytes_for(&big_layer) >= big.layers[0].bytes.len() as u64);
}
