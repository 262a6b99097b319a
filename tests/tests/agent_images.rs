//! The image commands beside a running agent (which holds the store): pull, pin and prune go
//! through it; prune keeps what specs name, what runs and what is pinned, and with --volumes
//! removes only volumes no spec mounts.

use berth_e2e::agent::{AgentOptions, TestAgent};
use berth_e2e::fixtures::{busybox_image, sleeper_image};
use berth_e2e::require_root;
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn references(a: &TestAgent) -> Vec<String> {
    json(&a.berth(&["images", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pull_pin_and_prune_beside_the_agent() {
    if !require_root() {
        return;
    }
    let used = sleeper_image();
    let spare = busybox_image("spare", "true", &[]);
    let pinned = busybox_image("pinned", "true", &[]);
    let opts = AgentOptions::default();
    let mut a = TestAgent::new("pi", &opts);
    a.start(&opts);
    a.write_spec(
        "app",
        &format!("image = \"{used}\"\nmounts = [\"keep:/data\"]\n"),
    );
    a.wait_running("app");

    for r in [&spare, &pinned] {
        let out = a.berth(&["pull", r]);
        assert!(
            out.status.success(),
            "pull through the agent: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(a.berth(&["image", "pin", &pinned]).status.success());
    let refs = references(&a);
    assert!(
        refs.contains(&spare) && refs.contains(&pinned) && refs.contains(&used),
        "{refs:?}"
    );

    // A volume no spec mounts, beside the one the spec does.
    std::fs::create_dir_all(a.state_dir.join("volumes/orphan")).unwrap();
    let dry = json(&a.berth(&["prune", "--dry-run", "--volumes", "--json"]));
    assert_eq!(dry["images"], serde_json::json!([spare]), "{dry}");
    assert_eq!(dry["volumes"], serde_json::json!(["orphan"]), "{dry}");
    assert!(references(&a).contains(&spare), "a dry run removes nothing");

    json(&a.berth(&["prune", "--volumes", "--json"]));
    let refs = references(&a);
    assert!(
        !refs.contains(&spare) && refs.contains(&pinned) && refs.contains(&used),
        "{refs:?}"
    );
    assert!(!a.state_dir.join("volumes/orphan").exists());
    assert!(a.state_dir.join("volumes/keep").exists());
    assert_eq!(a.status_of("app").unwrap()["status"], "running");
}
