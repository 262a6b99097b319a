//! Drift made behind berth's back is put back: a flushed nftables table at once, a deleted
//! veth at the next resync. Archives dropped in the import dir are imported and run.

use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::fixtures::{busybox_built, free_port, http_get, web_image, write_oci_archive};
use berth_e2e::require_root;

fn nft_table(instance: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", instance])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An agent with no periodic resync during a test: the repairs are the ones SIGHUP asks for.
fn agent_resyncing_on_sighup_only(prefix: &str) -> TestAgent {
    let opts = AgentOptions {
        resync_interval: Some("1h".into()),
        ..AgentOptions::default()
    };
    let mut a = TestAgent::new(prefix, &opts);
    a.start(&opts);
    a
}

#[test]
fn flushed_table_and_deleted_veth_come_back() {
    if !require_root() {
        return;
    }
    let image = web_image("up\n");
    let a = agent_resyncing_on_sighup_only("dr");
    let port = free_port();
    a.write_spec(
        "web",
        &format!("image = \"{image}\"\nports = [\"{port}:80\"]\n"),
    );
    let st = a.wait_running("web");
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(http_get(&url).as_deref(), Some("up\n"));

    // A firewall reload flushes our table: restored within a second, by notification.
    let flushed = Instant::now();
    let status = std::process::Command::new("nft")
        .args(["flush", "table", "inet", &a.instance])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(Duration::from_secs(5), "table restored", || {
        nft_table(&a.instance).contains(&port.to_string())
    });
    assert!(
        flushed.elapsed() < Duration::from_secs(1),
        "restored after {:?}",
        flushed.elapsed()
    );
    assert_eq!(http_get(&url).as_deref(), Some("up\n"));
    let events = a.berth(&["events", "--no-follow"]);
    assert!(
        String::from_utf8_lossy(&events.stdout).contains("restored"),
        "{}",
        String::from_utf8_lossy(&events.stdout)
    );

    // Someone deletes the container's veth: the next resync (here asked for with SIGHUP)
    // puts it back.
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    let veth = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .find(|n| {
            n.starts_with("bth") && {
                let alias = std::fs::read_to_string(format!("/sys/class/net/{n}/ifalias"))
                    .unwrap_or_default();
                alias.contains(&a.instance)
            }
        })
        .expect("the container's veth");
    assert!(
        std::process::Command::new("ip")
            .args(["link", "del", &veth])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(http_get(&url), None, "unreachable without its veth");
    // SAFETY: kill(2) on our agent's pid.
    unsafe { libc::kill(a.pid().unwrap() as i32, libc::SIGHUP) };
    wait_until(Duration::from_secs(20), "veth repaired", || {
        http_get(&url).as_deref() == Some("up\n")
    });
    let _ = st;
}

#[test]
fn archives_dropped_in_the_import_dir_run_without_a_registry() {
    if !require_root() {
        return;
    }
    let opts = AgentOptions::default();
    let mut a = TestAgent::new("im", &opts);
    a.start(&opts);
    // Nothing can be pulled for this name: it only exists in the archive.
    a.write_spec(
        "offline",
        "image = \"registry.invalid/offline/app:1\"\npull = \"never\"\n",
    );
    a.wait_status(
        "offline",
        "waiting for its image",
        Duration::from_secs(30),
        |s| s["status"] == "failed",
    );
    let img = busybox_built("trap 'exit 0' TERM; while :; do sleep 1; done");
    let import_dir = a.root.path().join("import");
    wait_until(Duration::from_secs(10), "the import dir", || {
        import_dir.is_dir()
    });
    write_oci_archive(
        &import_dir.join("offline.tar"),
        "registry.invalid/offline/app:1",
        &img,
    );
    a.wait_running("offline");
    let images = a.berth(&["images", "--json"]);
    let text = String::from_utf8_lossy(&images.stdout);
    assert!(
        text.contains("registry.invalid/offline/app:1") && text.contains("import"),
        "{text}"
    );
}

/// Resyncs running while containers are made (a SIGHUP storm asks for one after another) must
/// not take a new container's network for an orphan: every published port keeps answering.
#[test]
fn containers_made_during_resyncs_keep_their_network() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !require_root() {
        return;
    }
    let image = web_image("up\n");
    let a = agent_resyncing_on_sighup_only("rs");
    let pid = a.pid().unwrap() as i32;
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: kill(2) on the agent we started.
                unsafe { libc::kill(pid, libc::SIGHUP) };
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let ports: Vec<u16> = (0..12).map(|_| free_port()).collect();
    for (i, port) in ports.iter().enumerate() {
        a.write_spec(
            &format!("w{i}"),
            &format!("image = \"{image}\"\nports = [\"{port}:80\"]\n"),
        );
    }
    for i in 0..ports.len() {
        a.wait_running(&format!("w{i}"));
    }
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    for port in &ports {
        let url = format!("http://127.0.0.1:{port}/");
        wait_until(Duration::from_secs(10), &format!("{url} answering"), || {
            http_get(&url).as_deref() == Some("up\n")
        });
    }
    let log = a.log();
    assert!(
        !log.contains("was gone and is made again"),
        "a resync took a new container's network:\n{log}"
    );
}
