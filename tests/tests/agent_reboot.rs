//! A host reboot, as far as it can be had without one: the agent stops, `berth agent
//! --stop-all` stops the containers (what berth-shutdown.service does), the run dir (a tmpfs)
//! is emptied and the records' boot id becomes another boot's. The VM suite (tests/vm) does
//! the real one.

use std::time::Duration;

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::image::{Compression, ImageBuilder, busybox_rootfs};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::require_root;
use serde_json::Value;

fn status_is(agent: &TestAgent, name: &str, want: &str) -> bool {
    agent
        .status_of(name)
        .is_some_and(|s| s["status"].as_str() == Some(want))
}

/// Everything a reboot takes: every process of the boot, the run dir, the boot id.
fn reboot(agent: &mut TestAgent) {
    agent.stop();
    let out = agent.berth(&["agent", "--stop-all"]);
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_dir_all(agent.run_dir.join("shims")).unwrap();
    // Network namespaces die with the boot (and their veths with them).
    for e in std::fs::read_dir(agent.run_dir.join("netns")).unwrap() {
        let p = e.unwrap().path();
        rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH).unwrap();
        std::fs::remove_file(&p).unwrap();
    }
    for e in std::fs::read_dir(agent.state_dir.join("containers")).unwrap() {
        let p = e.unwrap().path().join("incarnation.json");
        if let Ok(text) = std::fs::read_to_string(&p) {
            let mut rec: Value = serde_json::from_str(&text).unwrap();
            rec["boot_id"] = Value::String("a-boot-before-this-one".into());
            std::fs::write(&p, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
        }
    }
}

#[test]
fn after_a_reboot_finished_jobs_stay_finished_and_nothing_warns_about_the_last_boot() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("boot");
    let img = ImageBuilder::new()
        .layer(&busybox_rootfs(), Compression::Gzip)
        .build();
    reg.push_image(&repo, "1", &img);
    let image = format!("{}/{repo}:1", reg.addr);
    let opts = AgentOptions::default();
    let mut agent = TestAgent::new("rb", &opts);
    agent.start(&opts);
    let spec = |network: &str, cmd: &str| {
        format!(
            "image = \"{image}\"\nnetwork = \"{network}\"\nrestart = \"never\"\n\
             command = [\"sh\", \"-c\", \"{cmd}\"]\n"
        )
    };
    agent.write_spec("job", &spec("bridge", "echo finished"));
    agent.write_spec("svc", &spec("none", "echo up; exec sleep 1000"));
    wait_until(Duration::from_secs(60), "job finished", || {
        status_is(&agent, "job", "exited")
    });
    let before = agent.wait_running("svc")["pid"].as_i64().unwrap();

    reboot(&mut agent);
    let log_path = agent.root.path().join("agent.log");
    let before_boot = std::fs::read_to_string(&log_path).unwrap().len();
    agent.start(&opts);

    // The service was stopped by the shutdown, not finished: it runs again.
    let after = agent.wait_running("svc")["pid"].as_i64().unwrap();
    assert_ne!(before, after);
    let out = agent.berth(&["apply", "--once", "--wait", "--timeout", "60s"]);
    assert!(out.status.success(), "{out:?}\n{}", agent.log());
    // The job had run to completion: `restart = "never"` keeps it so across the reboot.
    let job = agent.status_of("job").unwrap();
    assert_eq!(job["status"], "exited", "{job}");
    assert_eq!(job["exit_code"], 0, "{job}");
    let logs = agent.berth(&["logs", "job"]);
    let runs = String::from_utf8_lossy(&logs.stdout)
        .lines()
        .filter(|l| l.contains("finished"))
        .count();
    assert_eq!(runs, 1, "the job ran again at boot\n{}", agent.log());
    // The last boot's records are history: no exit watch, no network "repair", no warning.
    let log = std::fs::read_to_string(&log_path).unwrap()[before_boot..].to_string();
    assert!(!log.contains(" WARN "), "{log}");
}
