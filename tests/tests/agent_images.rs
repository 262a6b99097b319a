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
    // The agent's typed reply prints as a pull in process does: the reference, the image it
    // resolved to, the store's record (keys in order, as they always were).
    let out = a.berth(&["pull", "--json", &spare]);
    let v = json(&out);
    assert_eq!(v["reference"], spare.as_str(), "{v}");
    assert!(
        v["image"]["manifest_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{v}"
    );
    assert_eq!(
        v["record"]["manifest_digest"],
        v["image"]["manifest_digest"]
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  \"") && !l.starts_with("   "))
        .collect();
    assert!(
        keys[0].starts_with("  \"image\"")
            && keys[1].starts_with("  \"record\"")
            && keys[2].starts_with("  \"reference\""),
        "{text}"
    );
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
