//! Fleet reporting through what an operator already runs: a real MQTT broker (Debian's
//! mosquitto) and a real Prometheus (Debian's prometheus), both on 127.0.0.1. A fleet of twenty
//! reporting its commits and rollout through one broker is in fleet.rs
//! (`a_fleet_of_twenty_converges_matches_and_rolls_out`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::fixtures::{busybox_image, free_port, http_get, sleeper_image};
use berth_e2e::mqtt::{Broker, BrokerAuth};
use berth_e2e::prometheus::Prometheus;
use berth_e2e::require_root;
use serde_json::Value;

/// Top-level keys go before every table of the generated config.
fn prepend_config(a: &TestAgent, top: &str) {
    let rest = std::fs::read_to_string(&a.config_path).unwrap();
    std::fs::write(&a.config_path, format!("{top}{rest}")).unwrap();
}

fn spec(image: &str) -> String {
    format!("image = {image:?}\n")
}

/// The agent's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// One sample's value from the text format (`name{labels}` as printed but without the
/// `host_id` label every series carries, or a bare name).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        let name = match name.split_once("{host_id=\"") {
            Some((base, rest)) => {
                let rest = &rest[rest.find('"')? + 1..];
                match rest.strip_prefix(',') {
                    Some(more) => format!("{base}{{{more}"),
                    None => format!("{base}{}", rest.trim_start_matches('}')),
                }
            }
            None => name.to_string(),
        };
        (name == series).then(|| value.parse().ok())?
    })
}

/// A retained status message's containers equal `berth status --json` (one moment where both
/// say the same; the agent publishes on every change, so they meet once it has settled).
fn wait_status_matches(broker: &Broker, topic: &str, a: &TestAgent, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let local = Value::Array(a.status());
        let remote = broker
            .retained(topic)
            .and_then(|m| serde_json::from_str::<Value>(&m).ok());
        if let Some(doc) = &remote
            && doc["containers"] == local
        {
            return doc.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the retained status never matched berth status --json\nlocal: {local:#}\nretained: {remote:?}\nagent log:\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Password login: retained `online` and `status` (as `berth status --json`, with who the host
/// is), a container crash as an event, and the last will when the agent is killed with -9.
#[test]
fn mqtt_status_events_and_last_will_with_a_password() {
    if !require_root() {
        return;
    }
    let broker = Broker::start(BrokerAuth::Password);
    let opts = AgentOptions {
        extra_config: format!(
            "{}[labels]\nsite = \"berlin\"\n",
            broker.report_config("fleet/{host_id}/{instance}", "5m")
        ),
        ..Default::default()
    };
    let mut a = TestAgent::new("rpw", &opts);
    prepend_config(&a, "host_id = \"edge-0001\"\n");
    let prefix = format!("fleet/edge-0001/{}", a.instance);
    let events = broker.subscribe(&format!("{prefix}/events"));
    a.start(&opts);
    a.write_spec("web", &spec(&sleeper_image()));
    let web = a.wait_running("web");

    broker.wait_retained(&format!("{prefix}/online"), Duration::from_secs(30), |m| {
        m == "true"
    });
    let doc = wait_status_matches(
        &broker,
        &format!("{prefix}/status"),
        &a,
        Duration::from_secs(30),
    );
    assert_eq!(doc["host_id"], "edge-0001");
    assert_eq!(doc["instance"], a.instance.as_str());
    assert_eq!(doc["labels"]["site"], "berlin");
    assert!(doc["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(doc.get("commit").is_none(), "no [source], no commit: {doc}");

    // A crash: the container's process killed behind berth's back.
    let pid = web["pid"].as_i64().expect("running container has a pid") as i32;
    let killed = Instant::now();
    // SAFETY: kill(2) on the container's init, which this test means to crash.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let ev = events.wait_for("the exited event", Duration::from_secs(10), |m| {
        serde_json::from_str::<Value>(&m.payload)
            .is_ok_and(|e| e["kind"] == "exited" && e["container"] == "web")
    });
    let latency = ev.at.saturating_duration_since(killed);
    eprintln!("crash to MQTT event: {latency:?}");
    assert!(
        latency < Duration::from_secs(1),
        "the crash took {latency:?} to arrive as an event"
    );
    // Each event is one `berth events --json` object.
    let e: Value = serde_json::from_str(&ev.payload).unwrap();
    for k in ["time", "container", "kind", "message"] {
        assert!(e.get(k).is_some(), "event without {k}: {e}");
    }

    // kill -9: the agent cannot say goodbye; the broker's last will says it is offline.
    a.kill9();
    broker.wait_retained(&format!("{prefix}/online"), Duration::from_secs(90), |m| {
        m == "false"
    });
}

/// TLS with a client certificate; then the broker is stopped for a minute while containers
/// change: no pass is slowed, memory stays flat, and the latest state arrives once it is back.
#[test]
fn mqtts_client_cert_and_a_broker_outage() {
    if !require_root() {
        return;
    }
    let mut broker = Broker::start(BrokerAuth::ClientCert);
    let opts = AgentOptions {
        extra_config: broker.report_config("berth/{host_id}", "5m"),
        ..Default::default()
    };
    let mut a = TestAgent::new("rtl", &opts);
    let metrics_port = free_port();
    let host = format!("tls-{}", a.instance);
    prepend_config(
        &a,
        &format!("host_id = {host:?}\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let prefix = format!("berth/{host}");
    a.start(&opts);
    let image = sleeper_image();
    a.write_spec("one", &spec(&image));
    a.wait_running("one");
    broker.wait_retained(&format!("{prefix}/online"), Duration::from_secs(30), |m| {
        m == "true"
    });
    wait_status_matches(
        &broker,
        &format!("{prefix}/status"),
        &a,
        Duration::from_secs(30),
    );

    let metrics = || http_get(&format!("http://127.0.0.1:{metrics_port}/metrics")).unwrap();
    let slow_passes = |m: &str| {
        let all = sample(m, "berth_reconcile_pass_duration_seconds_count").unwrap();
        let fast = sample(
            m,
            "berth_reconcile_pass_duration_seconds_bucket{le=\"1.024\"}",
        )
        .unwrap();
        (all, all - fast)
    };
    let pid = a.pid().unwrap();
    let rss_before = rss_kib(pid);
    let (passes_before, slow_before) = slow_passes(&metrics());

    broker.stop();
    wait_until(
        Duration::from_secs(60),
        "the reporter to see the broker gone",
        || sample(&metrics(), "berth_report_connected") == Some(0.0),
    );
    // Changes while the broker is away: one container goes, two come, one crash-loops.
    a.remove_spec("one");
    a.write_spec("two", &spec(&image));
    a.write_spec(
        "crashy",
        &spec(&busybox_image("crashy", "sleep 0.2; exit 3", &[])),
    );
    a.wait_running("two");
    let outage = Instant::now();
    let mut rss_max = rss_before;
    while outage.elapsed() < Duration::from_secs(60) {
        rss_max = rss_max.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    let (passes_after, slow_after) = slow_passes(&metrics());
    eprintln!(
        "outage: rss {rss_before} KiB -> max {rss_max} KiB; passes {passes_before} -> {passes_after}, slower than 1.024 s: {slow_before} -> {slow_after}"
    );
    assert!(
        passes_after > passes_before,
        "no pass ran during the outage"
    );
    assert_eq!(
        slow_after, slow_before,
        "a pass took over a second while the broker was down"
    );
    assert!(
        rss_max < rss_before + 8 * 1024,
        "memory grew from {rss_before} KiB to {rss_max} KiB while the broker was down"
    );
    assert!(
        a.status_of("one").is_none(),
        "one should be gone: {:?}",
        a.status()
    );

    broker.resume();
    // The broker kept nothing (no persistence): all of this was published on reconnect.
    broker.wait_retained(&format!("{prefix}/online"), Duration::from_secs(60), |m| {
        m == "true"
    });
    let doc = wait_status_matches(
        &broker,
        &format!("{prefix}/status"),
        &a,
        Duration::from_secs(60),
    );
    let names: Vec<&str> = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["crashy", "two"], "{doc:#}");
    let m = metrics();
    assert_eq!(sample(&m, "berth_report_connected"), Some(1.0));
    assert!(
        sample(&m, "berth_report_events_dropped_total").is_some_and(|n| n > 0.0),
        "events during the outage are dropped, not queued:\n{m}"
    );
    a.stop();
    broker.wait_retained(&format!("{prefix}/online"), Duration::from_secs(30), |m| {
        m == "false"
    });
}

/// `examples/fleet/alerts.yml` as `promtool check rules` judges it, and as its unit tests
/// (`alerts_test.yml`: made-up series, the real thresholds and `for:` durations) find it.
#[test]
fn example_alert_rules_pass_promtool() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet");
    for check in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(check)
            .current_dir(&examples)
            .output()
            .expect("promtool (Debian's prometheus)");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            check.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for config in ["prometheus.yml", "prometheus-agent.yml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/fleet")
            .join(config);
        let out = Command::new("promtool")
            .args(["check", "config", "--syntax-only"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{config}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
}

/// `examples/fleet/prometheus-agent.yml` pointed at this test's agent and receiver: the
/// target, the remote_write URL and the password file replaced, the scrape interval cut to a
/// second; the rest as users get it.
fn agent_mode_config(target: &str, write_url: &str, password_file: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet/prometheus-agent.yml"),
    )
    .unwrap();
    let mut out = text.clone();
    for (from, to) in [
        ("scrape_interval: 30s", "scrape_interval: 1s".to_string()),
        ("\"127.0.0.1:9469\"", format!("{target:?}")),
        (
            "https://prometheus.example.com/api/v1/write",
            write_url.into(),
        ),
        (
            "/etc/prometheus/remote-write.password",
            password_file.display().to_string(),
        ),
    ] {
        assert_eq!(
            out.matches(from).count(),
            1,
            "prometheus-agent.yml changed ({from} is not in it once); update this test:\n{text}"
        );
        out = out.replace(from, &to);
    }
    out
}

/// Two agents, one scraped by a real Prometheus, the other (a host behind NAT) scraped by a
/// Prometheus in agent mode that pushes through remote_write (`examples/fleet/
/// prometheus-agent.yml`) to the first: one query shows both hosts' containers, promtool
/// accepts `/metrics`, and the example alert rules fire on a crash-looping container and on a
/// host that went away (down, then silent).
#[test]
fn prometheus_scrapes_two_agents_and_the_alerts_fire() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    // Every second a pass, so a live host's last pass is never old.
    let opts = AgentOptions {
        resync_interval: Some("1s".into()),
        ..AgentOptions::default()
    };
    let mut agents = Vec::new();
    let mut targets = Vec::new();
    for (i, site) in ["berlin", "paris"].iter().enumerate() {
        let a = TestAgent::new("rpm", &opts);
        let port = free_port();
        prepend_config(
            &a,
            &format!(
                "host_id = \"{}-{i}\"\nmetrics_listen = \"127.0.0.1:{port}\"\n",
                a.instance
            ),
        );
        let cfg = std::fs::read_to_string(&a.config_path).unwrap();
        std::fs::write(&a.config_path, format!("{cfg}[labels]\nsite = {site:?}\n")).unwrap();
        targets.push(format!("127.0.0.1:{port}"));
        agents.push(a);
    }
    for a in &mut agents {
        a.start(&opts);
    }
    let hosts: Vec<String> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}-{i}", a.instance))
        .collect();
    agents[0].write_spec("web", &spec(&sleeper_image()));
    agents[1].write_spec(
        "crashy",
        &spec(&busybox_image("crashy", "sleep 0.2; exit 3", &[])),
    );
    agents[0].wait_running("web");

    // promtool accepts the endpoint as it is.
    let text = http_get(&format!("http://{}/metrics", targets[0])).unwrap();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Silent after 15 s rather than 15 min: remote_write delivers in batches (every 5 s at
    // most), so a live host pushing through it may look a few seconds old, never fifteen.
    let rules_dir = tempfile::tempdir().unwrap();
    let rules_path = rules_dir.path().join("alerts.yml");
    std::fs::write(&rules_path, berth_e2e::prometheus::example_rules(15)).unwrap();
    // The central Prometheus scrapes host 0 only; host 1 reaches it through the agent.
    let prom = Prometheus::start_receiving(&targets[..1], &[&rules_path]);
    let password = rules_dir.path().join("remote-write.password");
    std::fs::write(&password, "edge-secret\n").unwrap();
    let edge = Prometheus::agent(&agent_mode_config(
        &targets[1],
        &prom.write_url(),
        &password,
    ));

    // One query: every host's containers and their states, host 1's by remote_write.
    let r = prom.wait_query("berth_container_state == 1", Duration::from_secs(60), |r| {
        hosts
            .iter()
            .all(|h| r.iter().any(|s| s["metric"]["host_id"] == h.as_str()))
    });
    assert!(
        r.iter().any(|s| s["metric"]["host_id"] == hosts[0].as_str()
            && s["metric"]["container"] == "web"
            && s["metric"]["state"] == "running"),
        "{r:#?}"
    );
    assert!(
        r.iter()
            .any(|s| s["metric"]["host_id"] == hosts[1].as_str()
                && s["metric"]["container"] == "crashy"),
        "host 1's containers arrived by remote_write: {r:#?}\nagent mode log:\n{}",
        edge.log()
    );
    let labels = prom.query("berth_host_labels");
    assert!(
        labels
            .iter()
            .any(|s| s["metric"]["host_id"] == hosts[1].as_str()
                && s["metric"]["label_site"] == "paris"),
        "{labels:#?}"
    );
    assert_eq!(prom.query("berth_build_info").len(), 2);
    // Every dashboard panel's query is PromQL this Prometheus runs.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            prom.query(t["expr"].as_str().unwrap());
        }
    }
    eprintln!("both hosts queryable after {:?}", started.elapsed());

    let alert = |name: &str, label: &str, value: &str| prom.firing(name, label, value);
    // Host 0 goes away now, so that its silence grows while host 1 crash-loops.
    agents[0].kill9();
    let killed = Instant::now();
    wait_until(
        Duration::from_secs(120),
        "BerthContainerCrashLooping to fire",
        || alert("BerthContainerCrashLooping", "host_id", &hosts[1]),
    );
    assert!(!alert("BerthContainerCrashLooping", "host_id", &hosts[0]));
    eprintln!("crash loop alert after {:?}", started.elapsed());

    wait_until(Duration::from_secs(60), "BerthHostDown to fire", || {
        alert("BerthHostDown", "instance", &targets[0])
    });
    assert!(!alert("BerthHostDown", "instance", &targets[1]));
    wait_until(Duration::from_secs(60), "BerthHostSilent to fire", || {
        alert("BerthHostSilent", "host_id", &hosts[0])
    });
    let silent_after = killed.elapsed();
    assert!(
        !alert("BerthHostSilent", "host_id", &hosts[1]),
        "host 1 is alive (through remote_write): {:#?}",
        prom.alerts()
    );
    eprintln!(
        "host silent alert {silent_after:?} after the kill; test took {:?}",
        started.elapsed()
    );
}
