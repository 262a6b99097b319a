//! Image identity through the agent (issue 13): a spec pinned by digest runs that digest's
//! content, even when an archive imported before claimed the pinned name for other content.

use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent};
use berth_e2e::fixtures::{busybox_built, push_busybox, write_oci_archive};
use berth_e2e::registry::{TestRegistry, unique_repo};

const SLEEP: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

#[test]
fn a_digest_pinned_spec_never_runs_what_an_archive_claims_for_its_digest() {
    if !berth_e2e::require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("pinned");
    let digest = push_busybox(&reg, &repo, "a", &format!("echo content-A; {SLEEP}"), &[]);
    let pinned = format!("{}/{repo}@{digest}", reg.addr);
    let other = busybox_built(&format!("echo content-B; {SLEEP}"));
    assert_ne!(other.digest(), digest);

    let opts = AgentOptions::default();
    let mut agent = TestAgent::new("id", &opts);
    let archive_dir = agent.root.path().join("archives");
    std::fs::create_dir(&archive_dir).unwrap();
    let archive = archive_dir.join("claims-a.tar");
    write_oci_archive(&archive, &pinned, &other);
    let out = agent.berth(&["image", "import", archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    agent.start(&opts);
    agent.write_spec("app", &format!("image = {pinned:?}\n"));
    let st = agent.wait_running("app");
    let deadline = Instant::now() + Duration::from_secs(30);
    let logs = loop {
        let out = agent.berth(&["logs", "app"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("content-") {
            break text;
        }
        assert!(Instant::now() < deadline, "app logged nothing: {st}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        logs.contains("content-A") && !logs.contains("content-B"),
        "{pinned} ran other content: {logs}"
    );
    assert_eq!(st["digest"], digest, "{st}");
}
