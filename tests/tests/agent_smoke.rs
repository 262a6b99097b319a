//! The agent end to end, the short path: a spec dropped in the dir becomes a running,
//! reachable container; deleting it removes everything.

use std::time::Duration;

use berth_e2e::agent::{AgentOptions, TestAgent};
use berth_e2e::image::{Compression, Entry, ImageBuilder, Settings, busybox_rootfs};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::require_root;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn spec_to_reachable_container_and_back() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("web");
    let mut entries = busybox_rootfs();
    entries.push(Entry::dir("www"));
    entries.push(Entry::file("www/index.html", b"hello from berth\n"));
    let img = ImageBuilder::new()
        .settings(Settings {
            cmd: Some(vec![
                "httpd".into(),
                "-f".into(),
                "-p".into(),
                "80".into(),
                "-h".into(),
                "/www".into(),
            ]),
            ..Settings::default()
        })
        .layer(&entries, Compression::Gzip)
        .build();
    reg.push_image(&repo, "1", &img);

    let opts = AgentOptions::default();
    let mut agent = TestAgent::new("sm", &opts);
    agent.start(&opts);
    let port = free_port();
    agent.write_spec(
        "web",
        &format!(
            "image = \"{}/{repo}:1\"\nports = [\"{port}:80\"]\n",
            reg.addr
        ),
    );
    let st = agent.wait_running("web");
    assert!(st["pid"].as_i64().unwrap() > 0, "{st}");
    let body = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body.stdout),
        "hello from berth\n",
        "{}",
        agent.log()
    );

    agent.remove_spec("web");
    berth_e2e::agent::wait_until(Duration::from_secs(30), "web removed", || {
        agent.status_of("web").is_none()
    });
}
