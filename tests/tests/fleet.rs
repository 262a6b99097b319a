//! Specs from a signed git repository, end to end: real agents (as root) whose `[source]` is a
//! bare repository served by `git daemon` on 127.0.0.1, commits signed with ssh-keygen keys.
//! One agent through every kind of commit, one offline with bundles, and a fleet of twenty
//! on one remote: `[match]` and a staged rollout, each host judged by its own bucket.
//!
//! Containers are busybox sleepers without a network: what is tested is which specs each host
//! runs, not the containers. The single agent also reports to a real MQTT broker (Debian's
//! mosquitto) and is scraped by a real Prometheus with the example alert rules: its retained
//! status carries the applied commit and the rollout membership, and the rules on refused
//! commits and on a rollout host that rolled back fire.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::fixtures::{free_port, push_busybox, sleeper_image};
use berth_e2e::gitrepo::{GitDaemon, Sign, SigningKey, SpecRepo};
use berth_e2e::mqtt::{Broker, BrokerAuth};
use berth_e2e::prometheus::{Prometheus, example_rules};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::require_root;
use serde_json::Value;

struct Keys {
    dir: tempfile::TempDir,
    alice: SigningKey,
    mallory: SigningKey,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::Builder::new()
            .prefix("berth-keys-")
            .tempdir()
            .unwrap();
        let alice = SigningKey::new(dir.path(), "alice");
        let mallory = SigningKey::new(dir.path(), "mallory");
        std::fs::write(
            dir.path().join("allowed_signers"),
            alice.allowed("alice@example.com"),
        )
        .unwrap();
        Keys {
            dir,
            alice,
            mallory,
        }
    }

    fn signers(&self) -> std::path::PathBuf {
        self.dir.path().join("allowed_signers")
    }
}

/// An agent whose specs come from `url` (or bundles only).
fn source_agent(
    prefix: &str,
    url: Option<&str>,
    keys: &Keys,
    top: &str,
    interval: &str,
) -> TestAgent {
    let git = url.map(|u| format!("git = {u:?}\n")).unwrap_or_default();
    let opts = AgentOptions {
        extra_config: format!(
            "{top}\n[source]\n{git}path = \"specs\"\ninterval = {interval:?}\nallowed_signers = {:?}\n",
            keys.signers()
        ),
        ..AgentOptions::default()
    };
    let mut a = TestAgent::new(prefix, &opts);
    a.start(&opts);
    a
}

const SLEEP: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

/// Waits until Prometheus has scraped `series` (PromQL) at `value`.
fn wait_sample(prom: &Prometheus, series: &str, value: &str) {
    prom.wait_query(series, Duration::from_secs(30), |r| {
        r.iter().any(|s| s["value"][1] == value)
    });
}

/// The retained status on `topic` once `cond` holds for it.
fn retained_status(broker: &Broker, topic: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let m = broker.wait_retained(topic, Duration::from_secs(30), |m| {
        serde_json::from_str::<Value>(m).is_ok_and(|d| cond(&d))
    });
    serde_json::from_str(&m).unwrap()
}

fn sleeper(image: &str, extra: &str) -> String {
    format!("image = {image:?}\nnetwork = \"none\"\n{extra}")
}

fn applied(a: &TestAgent) -> Option<String> {
    a.source()["applied"]["commit"].as_str().map(str::to_string)
}

fn names(a: &TestAgent) -> BTreeSet<String> {
    a.status()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn pid(a: &TestAgent, name: &str) -> i64 {
    a.status_of(name).unwrap()["pid"].as_i64().unwrap()
}

/// `berth apply --once` (through the agent: it fetches first), succeeding.
fn apply(a: &TestAgent) {
    let out = a.berth(&["apply", "--once", "--wait", "--timeout", "60s"]);
    assert!(
        out.status.success(),
        "apply: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.log()
    );
}

#[test]
fn an_agent_follows_signed_commits_and_refuses_the_rest() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let keys = Keys::new();
    let mut repo = SpecRepo::new("specs");
    let mut daemon = GitDaemon::start(repo.bare.parent().unwrap(), keys.dir.path());
    repo.write("web.toml", &sleeper(&image, ""));
    let c1 = repo.commit("web", Sign::With(&keys.alice));
    repo.push(false);
    let url = daemon.url("fleet.git");
    let broker = Broker::start(BrokerAuth::Password);
    let status_topic = "fleet/edge-1/status";
    let events = broker.subscribe("fleet/edge-1/events");
    let metrics_at = format!("127.0.0.1:{}", free_port());
    // A long interval: every fetch below is `berth apply`'s.
    let top = format!(
        "host_id = \"edge-1\"\nmetrics_listen = {metrics_at:?}\n{}",
        broker.report_config("fleet/{host_id}", "5m")
    );
    let a = source_agent("fs", Some(&url), &keys, &top, "1h");
    a.wait_running("web");
    // A real Prometheus scrapes it with the example alert rules (their `for:` cut to 0).
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("alerts.yml"), example_rules(900)).unwrap();
    let prom = Prometheus::start(
        std::slice::from_ref(&metrics_at),
        &[&rules.path().join("alerts.yml")],
    );
    // The retained status names the applied commit; no rollout yet.
    let doc = retained_status(&broker, status_topic, |d| d["commit"] == c1.as_str());
    assert!(doc.get("rollout").is_none(), "{doc}");
    let s = a.source();
    assert_eq!(s["applied"]["commit"], c1.as_str(), "{s}");
    assert_eq!(s["applied"]["signer"]["principal"], "alice@example.com");
    assert_eq!(s["host_id"], "edge-1");
    let web = pid(&a, "web");
    let status = a.berth(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.starts_with(&format!("source: {url} main:specs @ {}", &c1[..12])),
        "{text}"
    );
    assert!(series(&a).contains(&format!("berth_source_commit_info{{commit=\"{c1}\"}} 1")));

    // A signed commit: applied, the new container made.
    repo.write("db.toml", &sleeper(&image, ""));
    let c2 = repo.commit("db", Sign::With(&keys.alice));
    repo.push(false);
    apply(&a);
    assert_eq!(applied(&a).as_deref(), Some(c2.as_str()));
    a.wait_running("db");
    retained_status(&broker, status_topic, |d| d["commit"] == c2.as_str());
    // Prometheus tells the same: which commit this host runs.
    let r = prom.wait_query(
        "berth_source_commit_info == 1",
        Duration::from_secs(30),
        |r| r.len() == 1 && r[0]["metric"]["commit"] == c2.as_str(),
    );
    assert_eq!(r[0]["metric"]["host_id"], "edge-1");

    // Every refusal reason is counted from 0, so the first refusal is an increase.
    wait_sample(
        &prom,
        "berth_source_refused_total{reason=\"unsigned\"}",
        "0",
    );
    // An unsigned commit in the middle of the range: the tip is refused, nothing changes.
    repo.write("cache.toml", &sleeper(&image, ""));
    let c3 = repo.commit("unsigned cache", Sign::Unsigned);
    repo.write("extra.toml", &sleeper(&image, ""));
    let c4 = repo.commit("signed extra", Sign::With(&keys.alice));
    repo.push(false);
    apply(&a);
    let s = a.source();
    assert_eq!(s["applied"]["commit"], c2.as_str());
    assert_eq!(s["tip"], c4.as_str());
    assert_eq!(s["refused"][0]["reason"], "unsigned", "{s}");
    assert_eq!(s["refused"][0]["commit"], c3.as_str());
    assert_eq!(
        names(&a),
        BTreeSet::from(["web".to_string(), "db".to_string()])
    );
    assert_eq!(pid(&a, "web"), web, "a refusal touches nothing");
    assert!(series(&a).contains("berth_source_refused_total{reason=\"unsigned\"} 1"));
    prom.wait_firing(
        "BerthSourceRefusingCommits",
        "reason",
        "unsigned",
        Duration::from_secs(30),
    );

    // The remote goes back to c2 (a force-push; signed, once applied): fine, nothing new. Then
    // a commit by a key allowed_signers does not list: refused.
    repo.reset_hard(&c2);
    repo.push(true);
    apply(&a);
    repo.write(
        "web.toml",
        &sleeper(&image, "security = { privileged = true }\n"),
    );
    let c5 = repo.commit("mallory's", Sign::With(&keys.mallory));
    repo.push(false);
    apply(&a);
    let s = a.source();
    assert_eq!(s["refused"][0]["reason"], "unknown_signer", "{s}");
    assert_eq!(s["refused"][0]["commit"], c5.as_str());
    assert_eq!(pid(&a, "web"), web);
    // A force-push back to an older signed commit (c1, once applied): refused as a replay.
    repo.reset_hard(&c1);
    repo.push(true);
    apply(&a);
    let s = a.source();
    assert_eq!(s["refused"][0]["reason"], "not_fast_forward", "{s}");
    assert_eq!(s["applied"]["commit"], c2.as_str());
    assert!(
        a.status_of("db").is_some(),
        "db is not pruned by a replayed commit"
    );

    // A spec whose [match] leaves this host out is absent here: pruned.
    repo.reset_hard(&c2);
    repo.write(
        "db.toml",
        &sleeper(&image, "[match]\nhosts = [\"edge-2\"]\n"),
    );
    let c6 = repo.commit("db elsewhere", Sign::With(&keys.alice));
    repo.push(true);
    apply(&a);
    assert_eq!(applied(&a).as_deref(), Some(c6.as_str()));
    assert_eq!(names(&a), BTreeSet::from(["web".to_string()]));

    // A staged rollout this host is in, of a release that fails its health check here: the
    // health-gated rollback takes the host back to the image it ran, and the host reports it
    // (status, metrics the BerthRolloutHostFailing alert reads, an event on the broker), while
    // it stays in the rollout on the tip. The images are pinned by digest, as a fleet repo
    // pins them: a changed digest of one repository is an image update, verified.
    let reg = TestRegistry::plain();
    let app_repo = unique_repo("rol");
    let good = push_busybox(&reg, &app_repo, "good", SLEEP, &[("ok", b"1")]);
    let bad = push_busybox(&reg, &app_repo, "bad", SLEEP, &[]);
    let app = |digest: &str| {
        sleeper(
            &format!("{}/{app_repo}@{digest}", reg.addr),
            "[health]\ncommand = \"test -e /ok\"\ninterval = \"1s\"\nretries = 1\n\
             [update]\nverify = \"3s\"\n",
        )
    };
    repo.write("app.toml", &app(&good));
    let c7 = repo.commit("app", Sign::With(&keys.alice));
    repo.push(false);
    apply(&a);
    a.wait_status("app", "healthy", Duration::from_secs(60), |s| {
        s["digest"] == good.as_str() && s["health"] == "healthy"
    });
    wait_sample(
        &prom,
        "berth_container_rollbacks_total{container=\"app\"}",
        "0",
    );
    // A rollout id that draws this host in at 50%.
    let rollout_id = (0..)
        .map(|n| format!("app-v2-{n}"))
        .find(|id| berth_spec::rollout::bucket("edge-1", id) < 5000)
        .unwrap();
    repo.write("app.toml", &app(&bad));
    repo.write(
        "rollout.toml",
        &format!("id = {rollout_id:?}\nfrom = \"{c7}\"\npercent = 50\n"),
    );
    let c8 = repo.commit("app v2 to half the fleet", Sign::With(&keys.alice));
    repo.push(false);
    apply(&a);
    let s = a.source();
    assert_eq!(s["applied"]["commit"], c8.as_str(), "in: the tip: {s}");
    assert_eq!(s["rollout"]["in"], true, "{s}");
    let st = a.wait_status("app", "rolled back", Duration::from_secs(60), |s| {
        s["digest"] == good.as_str()
            && s["status"] == "running"
            && s["rejected_digests"]
                .as_array()
                .is_some_and(|r| r.iter().any(|d| d == bad.as_str()))
    });
    assert!(
        st["reason"].as_str().unwrap_or("").contains("rolled back"),
        "{st}"
    );
    let m = series(&a);
    assert!(
        m.contains("berth_container_rollbacks_total{container=\"app\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(&format!("berth_rollout_in{{id=\"{rollout_id}\"}} 1")),
        "{m}"
    );
    events.wait_for("the rollback event", Duration::from_secs(10), |e| {
        serde_json::from_str::<Value>(&e.payload)
            .is_ok_and(|e| e["kind"] == "rollback" && e["container"] == "app")
    });
    prom.wait_firing(
        "BerthRolloutHostFailing",
        "host_id",
        "edge-1",
        Duration::from_secs(30),
    );
    let doc = retained_status(&broker, status_topic, |d| {
        d["commit"] == c8.as_str()
            && d["containers"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["name"] == "app" && c["digest"] == good.as_str())
            })
    });
    assert_eq!(doc["rollout"]["id"], rollout_id.as_str(), "{doc}");
    assert_eq!(doc["rollout"]["in"], true, "{doc}");
    assert_eq!(doc["rollout"]["applies"], c8.as_str(), "{doc}");

    // The remote dies: everything keeps running, the error is shown, fetches are counted.
    daemon.stop();
    apply(&a);
    let s = a.source();
    assert!(s["last_error"].as_str().unwrap().contains("fetch"), "{s}");
    assert!(s["fetch_failures"].as_u64().unwrap() >= 1);
    assert_eq!(s["applied"]["commit"], c8.as_str());
    assert_eq!(pid(&a, "web"), web);
    let text = String::from_utf8_lossy(&a.berth(&["status"]).stdout).into_owned();
    assert!(text.contains("source error: git fetch failed"), "{text}");
    assert!(series(&a).contains("berth_source_fetch_failures_total"));
    // Events for what was applied and what was refused.
    let out = a.berth(&["events", "--no-follow", "--json"]);
    let kinds: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for k in ["source-applied", "source-refused", "source-error"] {
        assert!(kinds.contains(k), "no {k} event in {kinds:?}");
    }
}

/// Unattended provisioning: `berth apply --once --wait` on first boot, before any agent runs,
/// fetches and verifies the repository and converges on it; the agent then adopts it all.
#[test]
fn first_boot_apply_once_fetches_the_repository() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let keys = Keys::new();
    let mut repo = SpecRepo::new("specs");
    let daemon = GitDaemon::start(repo.bare.parent().unwrap(), keys.dir.path());
    repo.write("web.toml", &sleeper(&image, ""));
    let c1 = repo.commit("web", Sign::With(&keys.alice));
    repo.push(false);
    let opts = AgentOptions {
        extra_config: format!(
            "[source]\ngit = {:?}\npath = \"specs\"\nallowed_signers = {:?}\n",
            daemon.url("fleet.git"),
            keys.signers()
        ),
        ..AgentOptions::default()
    };
    let mut a = TestAgent::new("fo", &opts);
    let out = a.berth(&["apply", "--once", "--wait", "--timeout", "60s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.status_of("web").unwrap()["status"], "running");
    assert_eq!(applied(&a).as_deref(), Some(c1.as_str()));
    let id = a.status_of("web").unwrap()["id"].clone();
    a.start(&opts);
    let adopted = a.wait_running("web");
    assert_eq!(adopted["id"], id, "the agent adopts what apply made");
}

#[test]
fn an_offline_agent_takes_signed_bundles() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let keys = Keys::new();
    let mut repo = SpecRepo::new("specs");
    repo.write("web.toml", &sleeper(&image, "env = { V = \"1\" }\n"));
    let c1 = repo.commit("v1", Sign::With(&keys.alice));
    let a = source_agent("fb", None, &keys, "", "1h");
    let bundle = keys.dir.path().join("v1.bundle");
    repo.bundle(&bundle, None);
    let out = a.berth(&["source", "import", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("applied {c1}")));
    let first = a.wait_running("web");

    // An unsigned bundle is refused (exit 1), and nothing changes.
    repo.write("web.toml", &sleeper(&image, "env = { V = \"evil\" }\n"));
    let bad = repo.commit("unsigned", Sign::Unsigned);
    let bad_bundle = keys.dir.path().join("bad.bundle");
    repo.bundle(&bad_bundle, Some(&c1));
    let out = a.berth(&["source", "import", bad_bundle.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "refused", "{r}");
    assert_eq!(a.source()["applied"]["commit"], c1.as_str());

    // A signed one dropped into the import dir is taken (and not mistaken for an image).
    repo.reset_hard(&c1);
    repo.write("web.toml", &sleeper(&image, "env = { V = \"2\" }\n"));
    let c2 = repo.commit("v2", Sign::With(&keys.alice));
    let import = a.root.path().join("import");
    std::fs::create_dir_all(&import).unwrap();
    repo.bundle(&import.join(".v2.bundle.tmp"), Some(&c1));
    std::fs::rename(import.join(".v2.bundle.tmp"), import.join("v2.bundle")).unwrap();
    a.wait_status(
        "web",
        "recreated from the bundle",
        Duration::from_secs(60),
        |s| s["status"] == "running" && s["id"] != first["id"],
    );
    assert_eq!(a.source()["applied"]["commit"], c2.as_str());
    let out = a.berth(&["exec", "web", "--", "sh", "-c", "echo $V"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let out = a.berth(&["events", "--no-follow"]);
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(
        !events.contains("import") || !events.contains("v2.bundle:"),
        "the image importer took the bundle:\n{events}"
    );
    assert!(!events.contains("cannot import"), "{events}");
    let _ = bad;
}

/// Twenty agents on one remote: each with its own instance, state, bridge, subnet, host id and
/// labels. A push converges all of them; `[match]` puts each spec on exactly the hosts it
/// names; a 25% rollout puts exactly the hosts the bucket names on the tip; halting puts them
/// back. All report through one MQTT broker: one subscription tells which host runs which
/// commit, whether it is in the rollout, and which containers it runs.
#[test]
fn a_fleet_of_twenty_converges_matches_and_rolls_out() {
    if !require_root() {
        return;
    }
    const N: usize = 20;
    let image = sleeper_image();
    let keys = Keys::new();
    let mut repo = SpecRepo::new("specs");
    let daemon = GitDaemon::start(repo.bare.parent().unwrap(), keys.dir.path());
    repo.write("base.toml", &sleeper(&image, "env = { VERSION = \"1\" }\n"));
    let c1 = repo.commit("base v1", Sign::With(&keys.alice));
    repo.push(false);
    let url = daemon.url("fleet.git");
    // Every host reports through one broker.
    let broker = Broker::start(BrokerAuth::Password);
    let report = broker.report_config("fleet/{host_id}", "5m");
    let site = |i: usize| ["berlin", "paris", "rome"][i % 3];
    let role = |i: usize| if i.is_multiple_of(2) { "kiosk" } else { "till" };
    let host = |i: usize| format!("fleet-{i:02}");
    let agents: Vec<TestAgent> = (0..N)
        .map(|i| {
            let top = format!(
                "host_id = {:?}\n{report}[labels]\nsite = {:?}\nrole = {:?}",
                host(i),
                site(i),
                role(i)
            );
            source_agent("fl", Some(&url), &keys, &top, "2s")
        })
        .collect();
    let wait_all = |what: &str, deadline: Duration, cond: &dyn Fn(usize, &TestAgent) -> bool| {
        let start = Instant::now();
        wait_until(deadline, what, || {
            agents.iter().enumerate().all(|(i, a)| cond(i, a))
        });
        start.elapsed()
    };
    wait_all("the fleet on v1", Duration::from_secs(180), &|_, a| {
        applied(a).as_deref() == Some(c1.as_str())
            && a.status_of("base")
                .is_some_and(|s| s["status"] == "running")
    });

    // One push with specs for some hosts only.
    repo.write(
        "kiosk.toml",
        &sleeper(&image, "[match]\nlabels = { role = \"kiosk\" }\n"),
    );
    repo.write(
        "south.toml",
        &sleeper(
            &image,
            "[match]\nlabels = { site = [\"paris\", \"rome\"], role = \"till\" }\n",
        ),
    );
    repo.write(
        "pinned.toml",
        &sleeper(&image, "[match]\nhosts = [\"fleet-03\", \"fleet-17\"]\n"),
    );
    let c2 = repo.commit("specs by label and host", Sign::With(&keys.alice));
    let pushed = Instant::now();
    repo.push(false);
    let expect = |i: usize| -> BTreeSet<String> {
        let mut s = BTreeSet::from(["base".to_string()]);
        if role(i) == "kiosk" {
            s.insert("kiosk".into());
        }
        if role(i) == "till" && site(i) != "berlin" {
            s.insert("south".into());
        }
        if [3, 17].contains(&i) {
            s.insert("pinned".into());
        }
        s
    };
    wait_all(
        "the fleet on the matched specs",
        Duration::from_secs(240),
        &|i, a| {
            applied(a).as_deref() == Some(c2.as_str())
                && a.status().iter().all(|s| s["status"] == "running")
                && names(a) == expect(i)
        },
    );
    let converged = pushed.elapsed();
    eprintln!("fleet of {N}: push to converged (applied + containers running) in {converged:?}");
    for (i, a) in agents.iter().enumerate() {
        assert_eq!(names(a), expect(i), "{}", host(i));
    }
    // One subscription tells which host runs which commit, and what.
    let hosts: Vec<String> = (0..N).map(host).collect();
    let fleet = wait_fleet_reports(&broker, &hosts, |_, d| d["commit"] == c2.as_str());
    for (i, h) in hosts.iter().enumerate() {
        let d = &fleet[h];
        assert!(d.get("rollout").is_none(), "{d}");
        assert_eq!(d["labels"]["site"], site(i));
        let running: BTreeSet<String> = d["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(running, expect(i), "{h}: {d}");
    }
    let versions: BTreeSet<&str> = fleet
        .values()
        .filter_map(|d| d["version"].as_str())
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let online = broker.retained_all("fleet/+/online");
    for h in &hosts {
        assert!(
            online
                .iter()
                .any(|(t, p)| t == &format!("fleet/{h}/online") && p == "true"),
            "{h} not online: {online:?}"
        );
    }

    // A 25% rollout of base v2: exactly the hosts whose bucket is below 2500 run it.
    repo.write("base.toml", &sleeper(&image, "env = { VERSION = \"2\" }\n"));
    repo.write(
        "rollout.toml",
        &format!("id = \"base-v2\"\nfrom = \"{c2}\"\npercent = 25\n"),
    );
    let c3 = repo.commit("base v2 to a quarter", Sign::With(&keys.alice));
    repo.push(false);
    let in_rollout: BTreeSet<usize> = (0..N)
        .filter(|&i| berth_spec::rollout::bucket(&host(i), "base-v2") < 2500)
        .collect();
    assert!(
        !in_rollout.is_empty() && in_rollout.len() < N,
        "the host ids must split: {in_rollout:?}"
    );
    let version = |a: &TestAgent| {
        let out = a.berth(&["exec", "base", "--", "sh", "-c", "echo $VERSION"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let placed = |a: &TestAgent, verified: &str, commit: &str, v: &str| {
        let s = a.source();
        s["verified"] == verified
            && s["applied"]["commit"] == commit
            && a.status_of("base")
                .is_some_and(|s| s["status"] == "running")
            && version(a) == v
    };
    wait_all("the rollout placed", Duration::from_secs(240), &|i, a| {
        if in_rollout.contains(&i) {
            placed(a, &c3, &c3, "2")
        } else {
            placed(a, &c3, &c2, "1")
        }
    });
    for (i, a) in agents.iter().enumerate() {
        let r = a.source()["rollout"].clone();
        assert_eq!(r["in"], in_rollout.contains(&i), "{}: {r}", host(i));
        assert_eq!(
            r["bucket"].as_u64().unwrap(),
            u64::from(berth_spec::rollout::bucket(&host(i), "base-v2"))
        );
        let m = series(a);
        let want = format!(
            "berth_rollout_in{{id=\"base-v2\"}} {}",
            u8::from(in_rollout.contains(&i))
        );
        assert!(m.contains(&want), "{}: {m}", host(i));
    }
    // The broker's view of the rollout: each host's commit and membership.
    wait_fleet_reports(&broker, &hosts, |i, d| {
        let inside = in_rollout.contains(&i);
        let applies = if inside { &c3 } else { &c2 };
        d["commit"] == applies.as_str()
            && d["rollout"]["id"] == "base-v2"
            && d["rollout"]["in"] == inside
            && d["rollout"]["applies"] == applies.as_str()
    });

    // Halt: percent 0 puts every host back on `from`.
    repo.write(
        "rollout.toml",
        &format!("id = \"base-v2\"\nfrom = \"{c2}\"\npercent = 0\n"),
    );
    let c4 = repo.commit("halt base v2", Sign::With(&keys.alice));
    repo.push(false);
    wait_all("the rollout halted", Duration::from_secs(240), &|_, a| {
        placed(a, &c4, &c2, "1")
    });
    wait_fleet_reports(&broker, &hosts, |_, d| {
        d["commit"] == c2.as_str() && d["rollout"]["in"] == false
    });
    let work = daemon.work();
    eprintln!(
        "git daemon served {} connections: {} ref advertisements, {} fetches with a pack",
        daemon.connections(),
        work.ls_refs,
        work.fetches
    );
    let rss: Vec<u64> = agents
        .iter()
        .filter_map(|a| a.pid())
        .filter_map(rss_kib)
        .collect();
    if !rss.is_empty() {
        eprintln!(
            "agent RSS with a source: median {} KiB (debug build), max {} KiB",
            median(&rss),
            rss.iter().max().unwrap()
        );
    }
}

/// Every host's retained status under `fleet/+/status` (what a dashboard subscribing to the
/// fleet sees first), once `cond` holds for each (by its index in `hosts`).
fn wait_fleet_reports(
    broker: &Broker,
    hosts: &[String],
    cond: impl Fn(usize, &Value) -> bool,
) -> std::collections::BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let docs: std::collections::BTreeMap<String, Value> = broker
            .retained_all("fleet/+/status")
            .into_iter()
            .filter_map(|(_, p)| serde_json::from_str::<Value>(&p).ok())
            .filter_map(|d| Some((d["host_id"].as_str()?.to_string(), d)))
            .collect();
        let behind: Vec<&String> = hosts
            .iter()
            .enumerate()
            .filter(|(i, h)| !docs.get(*h).is_some_and(|d| cond(*i, d)))
            .map(|(_, h)| h)
            .collect();
        if behind.is_empty() {
            return docs;
        }
        assert!(
            Instant::now() < deadline,
            "the broker's retained status of {behind:?} is not there yet: {:?}",
            behind.first().and_then(|h| docs.get(*h))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// The agent's metrics without the `host_id` label every series carries (the `[report]`
/// side's), so a series reads as its own labels only.
fn series(a: &TestAgent) -> String {
    let mut out = String::new();
    for line in a.metrics().lines() {
        let mut l = line.to_string();
        if let Some(at) = l.find("host_id=\"") {
            let end = l[at + 9..].find('"').map(|e| at + 9 + e + 1);
            if let Some(end) = end {
                let cut_to = if l[end..].starts_with(',') {
                    end + 1
                } else {
                    end
                };
                l.replace_range(at..cut_to, "");
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}
