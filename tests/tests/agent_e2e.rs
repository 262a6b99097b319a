//! The agent end to end, as root, against the real registry: specs dropped, edited, paused,
//! broken, swapped and deleted; containers killed by hand; the agent itself stopped and
//! restarted. Each test has its own agent (instance, dirs, bridge, subnet) and its teardown
//! checks with `berth doctor` that nothing is left.

use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::fixtures::{busybox_image, free_port, http_get, sleeper_image, web_image};
use berth_e2e::require_root;
use serde_json::Value;

fn agent(prefix: &str) -> TestAgent {
    let opts = AgentOptions::default();
    let mut a = TestAgent::new(prefix, &opts);
    a.start(&opts);
    a
}

fn pid_of(s: &Value) -> i64 {
    s["pid"].as_i64().unwrap_or_else(|| panic!("no pid in {s}"))
}

fn alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn edit_recreates_with_the_new_config() {
    if !require_root() {
        return;
    }
    let image = web_image("v1\n");
    let a = agent("ed");
    let port = free_port();
    a.write_spec(
        "web",
        &format!("image = \"{image}\"\nports = [\"{port}:80\"]\nenv = {{ GREETING = \"one\" }}\n"),
    );
    let first = a.wait_running("web");
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).as_deref(),
        Some("v1\n")
    );

    a.write_spec(
        "web",
        &format!("image = \"{image}\"\nports = [\"{port}:80\"]\nenv = {{ GREETING = \"two\" }}\n"),
    );
    let second = a.wait_status("web", "recreated", Duration::from_secs(60), |s| {
        s["status"] == "running" && s["id"] != first["id"]
    });
    assert_ne!(pid_of(&first), pid_of(&second));
    let out = a.berth(&["exec", "web", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "two",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{port}/")).as_deref(),
        Some("v1\n")
    );

    // A change of restart policy alone never recreates.
    a.write_spec(
        "web",
        &format!("image = \"{image}\"\nports = [\"{port}:80\"]\nenv = {{ GREETING = \"two\" }}\nrestart = \"on-failure\"\n"),
    );
    let out = a.berth(&["plan", "--json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["actions"].as_array().unwrap().len(), 0, "{plan}");
    assert_eq!(a.status_of("web").unwrap()["id"], second["id"]);
}

#[test]
fn paused_freezes_and_running_thaws() {
    if !require_root() {
        return;
    }
    let image = busybox_image(
        "count",
        "i=0; while :; do i=$((i+1)); echo $i > /data/c; sleep 0.02; done",
        &[],
    );
    let a = agent("pz");
    let data = a.root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let counter = data.join("c");
    let read = || {
        std::fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let spec = |state: &str| {
        format!(
            "image = \"{image}\"\nmounts = [\"{}:/data\"]\nstate = \"{state}\"\n",
            data.display()
        )
    };
    a.write_spec("count", &spec("running"));
    let running = a.wait_running("count");
    wait_until(Duration::from_secs(10), "counter moving", || read() > 5);

    a.write_spec("count", &spec("paused"));
    a.wait_status("count", "paused", Duration::from_secs(30), |s| {
        s["status"] == "paused"
    });
    let frozen = read();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        read() <= frozen + 1,
        "the counter moved while paused: {frozen} -> {}",
        read()
    );

    a.write_spec("count", &spec("running"));
    let thawed = a.wait_running("count");
    assert_eq!(
        thawed["id"], running["id"],
        "pause and resume must not recreate"
    );
    let before = read();
    wait_until(Duration::from_secs(10), "counter moving again", || {
        read() > before + 3
    });
}

#[test]
fn invalid_edit_keeps_the_old_container_and_reports_why() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let a = agent("iv");
    a.write_spec("app", &format!("image = \"{image}\"\n"));
    let before = a.wait_running("app");
    a.write_spec(
        "app",
        &format!("image = \"{image}\"\nrestart = \"sometimes\"\n"),
    );
    let after = a.wait_status("app", "reporting the error", Duration::from_secs(30), |s| {
        !s["error"].is_null()
    });
    let err = after["error"].as_str().unwrap();
    assert!(
        err.contains("app.toml:2:") && err.contains("restart"),
        "{err}"
    );
    assert_eq!(after["status"], "running");
    assert_eq!(pid_of(&after), pid_of(&before));
    assert!(alive(pid_of(&before)));

    // A spec that never parsed is listed as failed with its error.
    a.write_spec("broken", "imag = \"x\"\n");
    let broken = a.wait_status("broken", "failed", Duration::from_secs(30), |s| {
        s["status"] == "failed"
    });
    assert!(
        broken["error"].as_str().unwrap().contains("did you mean"),
        "{broken}"
    );
}

#[test]
fn symlink_swap_is_one_change() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let a = agent("sw");
    // git-sync / Kubernetes volume layout: web.toml -> ..data/web.toml, ..data -> ..v1
    let d = &a.specs_dir;
    for (v, val) in [("..v1", "one"), ("..v2", "two")] {
        std::fs::create_dir(d.join(v)).unwrap();
        std::fs::write(
            d.join(v).join("web.toml"),
            format!("image = \"{image}\"\nenv = {{ V = \"{val}\" }}\n"),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/web.toml", d.join("web.toml")).unwrap();
    let first = a.wait_running("web");
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let second = a.wait_status("web", "recreated", Duration::from_secs(60), |s| {
        s["status"] == "running" && s["id"] != first["id"]
    });
    let out = a.berth(&["exec", "web", "--", "sh", "-c", "echo $V"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "two");
    assert_eq!(second["restarts"], 0);
}

#[test]
fn killed_container_restarts_with_backoff() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let a = agent("kb");
    a.write_spec("app", &format!("image = \"{image}\"\n"));
    let mut pid = pid_of(&a.wait_running("app"));
    for (round, min_delay) in [(1u64, Duration::from_secs(1)), (2, Duration::from_secs(2))] {
        let killed = Instant::now();
        // SAFETY: kill(2) on a pid we just read.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let s = a.wait_status("app", "restarted", Duration::from_secs(30), |s| {
            s["status"] == "running" && s["restarts"] == round && s["pid"].as_i64() != Some(pid)
        });
        // The backoff is a lower bound: the restart can never come earlier.
        assert!(
            killed.elapsed() >= min_delay,
            "restart {round} came after {:?}",
            killed.elapsed()
        );
        pid = pid_of(&s);
    }
}

#[test]
fn agent_restarts_and_stops_leave_containers_running() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let opts = AgentOptions::default();
    let mut a = TestAgent::new("ad", &opts);
    a.start(&opts);
    a.write_spec("one", &format!("image = \"{image}\"\n"));
    a.write_spec("two", &format!("image = \"{image}\"\nnetwork = \"none\"\n"));
    let p1 = pid_of(&a.wait_running("one"));
    let p2 = pid_of(&a.wait_running("two"));

    a.kill9();
    assert!(alive(p1) && alive(p2));
    a.start(&opts);
    assert_eq!(
        pid_of(&a.wait_running("one")),
        p1,
        "re-adopted, not restarted"
    );
    assert_eq!(pid_of(&a.wait_running("two")), p2);

    a.stop();
    assert!(
        alive(p1) && alive(p2),
        "SIGTERM to the agent must leave containers running"
    );
    a.start(&opts);
    assert_eq!(pid_of(&a.wait_running("one")), p1);
    // Exits are still noticed after adoption.
    // SAFETY: kill(2) on a pid we just read.
    unsafe { libc::kill(p2 as i32, libc::SIGKILL) };
    a.wait_status("two", "restarted", Duration::from_secs(30), |s| {
        s["restarts"] == 1 && s["status"] == "running"
    });
}

#[test]
fn apply_once_without_an_agent_converges_and_reports() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let opts = AgentOptions::default();
    let a = TestAgent::new("ao", &opts);
    a.write_spec("x", &format!("image = \"{image}\"\n"));
    a.write_spec("y", &format!("image = \"{image}\"\ndepends_on = [\"x\"]\n"));
    let out = a.berth(&["apply", "--once", "--wait", "--timeout", "60s", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["converged"], true);
    // Without an agent, status observes the host itself.
    let y = a.status_of("y").unwrap();
    assert_eq!(y["status"], "running");
    assert!(alive(pid_of(&y)));

    // A missing image fails the apply with the reason, exit code 1.
    a.write_spec(
        "z",
        "image = \"127.0.0.1:1/does/not:exist\"\npull = \"never\"\n",
    );
    let out = a.berth(&["apply", "--once", "--wait", "--timeout", "30s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("z: failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plan_shows_what_is_in_progress() {
    if !require_root() {
        return;
    }
    let image = busybox_image("stubborn", "trap '' TERM; while :; do sleep 1; done", &[]);
    let a = agent("ip");
    a.write_spec(
        "slow",
        &format!("image = \"{image}\"\nstop_timeout = \"6s\"\nnetwork = \"none\"\n"),
    );
    a.wait_running("slow");
    a.remove_spec("slow");
    // The payload ignores SIGTERM: its removal takes the whole stop_timeout, and meanwhile
    // the plan says what runs.
    let plan =
        || -> Value { serde_json::from_slice(&a.berth(&["plan", "--json"]).stdout).unwrap() };
    wait_until(Duration::from_secs(4), "the removal in progress", || {
        plan()["in_progress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["action"] == "remove" && p["container"] == "slow")
    });
    let text = String::from_utf8_lossy(&a.berth(&["plan"]).stdout).into_owned();
    assert!(text.contains("* remove slow (in progress)"), "{text}");
    wait_until(Duration::from_secs(20), "the removal to end", || {
        let p = plan();
        p["in_progress"].as_array().unwrap().is_empty()
            && p["actions"].as_array().unwrap().is_empty()
    });
}
