//! Lifecycle policies end to end against the real registry: a moved tag is followed and a bad
//! release rolled back (and not retried), an update lock holds an update, health checks drive
//! `healthy` dependants and restarts, and `depends_on` holds across an agent kill -9.

use std::time::Duration;

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::fixtures::{push_busybox, sleeper_image};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::require_root;
use serde_json::Value;

const SLEEP: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

fn agent(prefix: &str) -> TestAgent {
    let opts = AgentOptions::default();
    let mut a = TestAgent::new(prefix, &opts);
    a.start(&opts);
    a
}

/// `berth apply --once`: through the agent, it also re-checks every `pull = "always"` tag.
fn apply(a: &TestAgent) -> Value {
    let out = a.berth(&["apply", "--once", "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_moved_tag_is_followed_and_a_bad_release_rolled_back() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("upd");
    let d1 = push_busybox(&reg, &repo, "stable", SLEEP, &[("v", b"1")]);
    let a = agent("up");
    a.write_spec(
        "app",
        &format!(
            "image = \"{}/{repo}:stable\"\npull = \"always\"\n[update]\nverify = \"4s\"\n",
            reg.addr
        ),
    );
    let s = a.wait_running("app");
    assert_eq!(s["digest"], d1.as_str());

    // A new release: followed.
    let d2 = push_busybox(&reg, &repo, "stable", SLEEP, &[("v", b"2")]);
    apply(&a);
    let s = a.wait_status("app", "updated", Duration::from_secs(60), |s| {
        s["digest"] == d2.as_str() && s["status"] == "running"
    });
    assert_eq!(s["previous_digest"], d1.as_str());
    // It passes verification (stays up 4 s).
    a.wait_status("app", "verified", Duration::from_secs(30), |s| {
        s["reason"].is_null() && s["digest"] == d2.as_str()
    });

    // A broken release: its container dies at once; rolled back to d2, d3 rejected.
    let d3 = push_busybox(&reg, &repo, "stable", "exit 3", &[("v", b"3")]);
    apply(&a);
    let s = a.wait_status("app", "rolled back", Duration::from_secs(60), |s| {
        s["digest"] == d2.as_str()
            && s["status"] == "running"
            && !s["rejected_digests"].as_array().unwrap().is_empty()
    });
    assert_eq!(s["rejected_digests"][0], d3.as_str());
    let events = String::from_utf8_lossy(&a.berth(&["events", "--no-follow"]).stdout).into_owned();
    assert!(events.contains("rollback"), "{events}");
    // Not retried while the tag still points at d3: the container stays as it is.
    let id = s["id"].clone();
    apply(&a);
    let s = a.status_of("app").unwrap();
    assert_eq!(s["id"], id, "no flapping back to the rejected digest");
    assert!(
        s["reason"].as_str().unwrap_or("").contains("rolled back"),
        "{s}"
    );
}

/// The sequence: a followed tag rolled back from a crashing release, then the spec
/// edited. The edit is made on the last good digest, never on the rejected one (which would
/// crash-loop), and status says why; the next release is taken as usual.
#[test]
fn an_edit_after_a_rollback_runs_the_last_good_digest() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("rbe");
    let good = push_busybox(&reg, &repo, "stable", SLEEP, &[("v", b"1")]);
    let mut a = agent("re");
    let spec = |extra: &str| {
        format!(
            "image = \"{}/{repo}:stable\"\npull = \"always\"\n{extra}[update]\nverify = \"4s\"\n",
            reg.addr
        )
    };
    a.write_spec("app", &spec(""));
    let s = a.wait_running("app");
    assert_eq!(s["digest"], good.as_str());

    let bad = push_busybox(&reg, &repo, "stable", "exit 3", &[("v", b"2")]);
    apply(&a);
    let s = a.wait_status("app", "rolled back", Duration::from_secs(60), |s| {
        s["digest"] == good.as_str()
            && s["status"] == "running"
            && s["rejected_digests"]
                .as_array()
                .is_some_and(|r| r.iter().any(|d| d == bad.as_str()))
    });
    let rolled_back_id = s["id"].clone();

    // The edit: a new incarnation, from the good digest, that stays up.
    a.write_spec("app", &spec("env = { ADDED = \"1\" }\n"));
    let s = a.wait_status(
        "app",
        "recreated by the edit",
        Duration::from_secs(60),
        |s| s["id"] != rolled_back_id && s["status"] == "running",
    );
    assert_eq!(
        s["digest"],
        good.as_str(),
        "made from the last good digest: {s}"
    );
    let why = s["reason"].as_str().unwrap_or("");
    assert!(
        why.contains(bad.as_str()) && why.contains("rolled back"),
        "status says why: {s}"
    );
    let out = a.berth(&["exec", "app", "--", "sh", "-c", "echo $ADDED; cat /v"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1\n1",
        "the edit applied, on the good image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It stays up past the verification time: no crash loop, no flapping.
    let id = s["id"].clone();
    std::thread::sleep(Duration::from_secs(5));
    apply(&a);
    let s = a.status_of("app").unwrap();
    assert_eq!(s["id"], id, "{s}");
    assert_eq!(s["restarts"], 0, "{s}");
    assert_eq!(s["digest"], good.as_str(), "{s}");

    // An agent restart (kill -9), then another edit: still the good one.
    a.kill9();
    a.start(&AgentOptions::default());
    a.write_spec("app", &spec("env = { ADDED = \"2\" }\n"));
    let s = a.wait_status("app", "edited again", Duration::from_secs(60), |s| {
        s["id"] != id && s["status"] == "running"
    });
    assert_eq!(s["digest"], good.as_str(), "{s}");

    // The next release is taken (and verified) as usual.
    let fixed = push_busybox(&reg, &repo, "stable", SLEEP, &[("v", b"3")]);
    apply(&a);
    a.wait_status("app", "updated to the fix", Duration::from_secs(60), |s| {
        s["digest"] == fixed.as_str() && s["status"] == "running"
    });
}

#[test]
fn a_lock_file_holds_an_update_until_removed() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("lock");
    let d1 = push_busybox(&reg, &repo, "stable", SLEEP, &[("v", b"1")]);
    let a = agent("lk");
    let lock = a.root.path().join("updating");
    a.write_spec(
        "app",
        &format!("image = \"{}/{repo}:stable\"\npull = \"always\"\n[update]\nlock = \"{}\"\nverify = \"1s\"\n", reg.addr, lock.display()),
    );
    let s = a.wait_running("app");
    assert_eq!(s["digest"], d1.as_str());
    std::fs::write(&lock, "busy").unwrap();
    let d2 = push_busybox(&reg, &repo, "stable", SLEEP, &[("v", b"2")]);
    apply(&a);
    let s = a.wait_status("app", "held by its lock", Duration::from_secs(30), |s| {
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("held by lock"))
    });
    assert_eq!(s["digest"], d1.as_str());
    std::fs::remove_file(&lock).unwrap();
    a.wait_status(
        "app",
        "updated once the lock went",
        Duration::from_secs(30),
        |s| s["digest"] == d2.as_str() && s["status"] == "running",
    );
}

#[test]
fn health_checks_gate_dependants_and_restart_the_unhealthy() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let a = agent("hc");
    // Healthy once /tmp/ready exists (made a moment after start).
    a.write_spec(
        "db",
        &format!(
            "image = \"{image}\"\ncommand = [\"sh\", \"-c\", \"sleep 1; touch /tmp/ready; while :; do sleep 1; done\"]\n\
             [health]\ncommand = \"test -f /tmp/ready\"\ninterval = \"1s\"\nretries = 2\non_unhealthy = \"restart\"\n"
        ),
    );
    a.write_spec(
        "web",
        &format!(
            "image = \"{image}\"\ndepends_on = [{{ name = \"db\", condition = \"healthy\" }}]\n"
        ),
    );
    let web = a.wait_status("web", "waiting for db", Duration::from_secs(30), |s| {
        s["status"] == "waiting" || s["status"] == "running"
    });
    if web["status"] == "waiting" {
        assert!(web["reason"].as_str().unwrap().contains("db"), "{web}");
    }
    let db = a.wait_status("db", "healthy", Duration::from_secs(30), |s| {
        s["health"] == "healthy"
    });
    a.wait_running("web");
    // Take the readiness away: unhealthy after two failures, then restarted (which makes it
    // ready again).
    let out = a.berth(&["exec", "db", "--", "rm", "/tmp/ready"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db2 = a.wait_status(
        "db",
        "restarted for being unhealthy",
        Duration::from_secs(60),
        |s| s["restarts"].as_u64().unwrap_or(0) >= 1 && s["status"] == "running",
    );
    assert_ne!(db2["pid"], db["pid"]);
    a.wait_status("db", "healthy again", Duration::from_secs(30), |s| {
        s["health"] == "healthy"
    });
}

#[test]
fn depends_on_holds_after_an_agent_kill_with_the_dependency_down() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let opts = AgentOptions::default();
    let mut a = TestAgent::new("dp", &opts);
    a.start(&opts);
    a.write_spec("db", &format!("image = \"{image}\"\nrestart = \"never\"\n"));
    a.write_spec(
        "web",
        &format!("image = \"{image}\"\ndepends_on = [\"db\"]\n"),
    );
    let db = a.wait_running("db");
    let web = a.wait_running("web");
    // The dependency goes down for good, then its dependant dies too.
    // SAFETY: kill(2) on pids we just read.
    unsafe { libc::kill(db["pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    a.wait_status("db", "exited", Duration::from_secs(30), |s| {
        s["status"] == "exited"
    });
    // SAFETY: as above.
    unsafe { libc::kill(web["pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    a.wait_status("web", "waiting for db", Duration::from_secs(30), |s| {
        s["status"] == "waiting"
            && s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("dependency db"))
    });
    a.kill9();
    a.start(&opts);
    // Still waiting after the restart, never started early: the agent has passed over it
    // (its status says why it waits) and had two seconds in which a wrong start would show.
    a.wait_status(
        "web",
        "judged after restart",
        Duration::from_secs(30),
        |s| s["status"] == "waiting",
    );
    std::thread::sleep(Duration::from_secs(2));
    let w = a.status_of("web").unwrap();
    assert_eq!(w["status"], "waiting", "{w}");
    assert!(w["pid"].is_null());
    // The dependency comes back (a new incarnation): the dependant follows.
    a.write_spec(
        "db",
        &format!("image = \"{image}\"\nrestart = \"never\"\nenv = {{ AGAIN = \"1\" }}\n"),
    );
    a.wait_running("db");
    wait_until(Duration::from_secs(30), "web started after db", || {
        a.status_of("web").is_some_and(|s| s["status"] == "running")
    });
}

#[test]
fn start_then_kill_starts_the_new_one_before_the_old_one_goes() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let repo = unique_repo("stk");
    push_busybox(&reg, &repo, "stable", SLEEP, &[("v", b"1")]);
    let a = agent("sk");
    a.write_spec(
        "app",
        &format!("image = \"{}/{repo}:stable\"\npull = \"always\"\n[update]\nstrategy = \"start-then-kill\"\nverify = \"1s\"\n", reg.addr),
    );
    let old = a.wait_running("app");
    let old_pid = old["pid"].as_i64().unwrap();
    let d2 = push_busybox(&reg, &repo, "stable", SLEEP, &[("v", b"2")]);
    apply(&a);
    let new = a.wait_status("app", "replaced", Duration::from_secs(60), |s| {
        s["digest"] == d2.as_str() && s["status"] == "running"
    });
    assert_ne!(new["id"], old["id"]);
    // One action made the new incarnation and then removed the old one.
    let events = String::from_utf8_lossy(&a.berth(&["events", "--no-follow"]).stdout).into_owned();
    let line = events
        .lines()
        .find(|l| l.contains(d2.as_str()) && l.contains("then remove"))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(line.contains(old["id"].as_str().unwrap()), "{line}");
    wait_until(Duration::from_secs(10), "the old container gone", || {
        !std::path::Path::new(&format!("/proc/{old_pid}")).exists()
    });
}

/// A check that never ends (its process keeps the output pipes open): at its timeout every
/// process of it is killed, the container turns unhealthy, and later checks still run.
#[test]
fn a_hanging_health_check_is_killed_and_later_checks_run() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let a = agent("hh");
    a.write_spec(
        "hang",
        &format!(
            "image = \"{image}\"\n[health]\ncommand = \"echo run >> /tmp/checks; sleep 1000 & exec sleep 1000\"\n\
             interval = \"1s\"\ntimeout = \"1s\"\nretries = 1\n"
        ),
    );
    a.wait_running("hang");
    a.wait_status("hang", "unhealthy", Duration::from_secs(30), |s| {
        s["health"] == "unhealthy"
    });
    let exec = |cmd: &str| {
        let o = a.berth(&["exec", "hang", "--", "sh", "-c", cmd]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Later checks run: the count keeps growing.
    let runs = || exec("cat /tmp/checks").lines().count();
    let first = runs();
    wait_until(Duration::from_secs(30), "more checks", || {
        runs() >= first + 2
    });
    // And the killed ones leave nothing behind: at most the running check's two sleeps.
    let sleeps = exec("ps -o args | grep -c '^sleep 1000' || true");
    let n: usize = sleeps.trim().parse().unwrap();
    assert!(n <= 2, "{n} check processes left running");
}

/// CVE-2019-5736 through a health check: the image's check is a `#!/proc/self/exe` script and
/// the image ships its own ELF interpreter, which reports what the check's process runs from.
/// It must be a sealed copy, never the host's berth binary.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_health_check_never_runs_the_host_binary_in_the_container() {
    use berth_e2e::probe::{ELF_INTERPRETER, build_fake_interp, host_binaries, interp_exe};
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let interp = dir.path().join("interp");
    build_fake_interp(&interp);
    let image = berth_e2e::fixtures::busybox_image(
        "hx",
        SLEEP,
        &[
            (ELF_INTERPRETER, &std::fs::read(&interp).unwrap()),
            ("evil", b"#!/proc/self/exe\n"),
        ],
    );
    let a = agent("hx");
    a.write_spec(
        "box",
        &format!("image = \"{image}\"\n[health]\ncommand = [\"/evil\"]\ninterval = \"1s\"\n"),
    );
    a.wait_running("box");
    let out = a.berth(&[
        "exec",
        "box",
        "--",
        "chmod",
        "755",
        "/evil",
        "/lib64/ld-linux-x86-64.so.2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = None;
    wait_until(Duration::from_secs(30), "a check through /evil", || {
        let o = a.berth(&["exec", "box", "--", "cat", "/tmp/interp.out"]);
        seen = interp_exe(&String::from_utf8_lossy(&o.stdout));
        seen.is_some()
    });
    let got = seen.unwrap();
    assert!(
        !host_binaries().contains(&got),
        "the health check ran the host's binary {got:?} in the container"
    );
}

/// `berth plan` without an agent plans from the loop's own view (update locks, maintenance
/// windows read on the wall clock, this host's jitter seed): with a lock and a closed window
/// holding two edited specs, the in-process plan says what the agent's `/v1/plan` said.
#[test]
fn the_in_process_plan_is_the_agents_plan() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let mut a = agent("pv");
    let lock = a.root.path().join("updating");
    // A window that is closed now and for the next hour, in this host's local time.
    let hour = std::process::Command::new("date")
        .arg("+%H")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        })
        .expect("date +%H");
    let window = format!("{:02}:00-{:02}:00", (hour + 2) % 24, (hour + 3) % 24);
    let specs = |v: u32| {
        a.write_spec(
            "locked",
            &format!(
                "image = \"{image}\"\nenv = {{ V = \"{v}\" }}\n[update]\nlock = \"{}\"\n",
                lock.display()
            ),
        );
        a.write_spec(
            "windowed",
            &format!(
                "image = \"{image}\"\nenv = {{ V = \"{v}\" }}\n[update]\nwindow = \"{window}\"\n"
            ),
        );
    };
    specs(1);
    a.wait_running("locked");
    a.wait_running("windowed");
    std::fs::write(&lock, "busy").unwrap();
    specs(2);
    let plan = |a: &TestAgent| -> Value {
        let out = a.berth(&["plan", "--json"]);
        assert!(out.status.success(), "berth plan: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let held = |p: &Value, name: &str| {
        p["waiting"]
            .as_array()
            .is_some_and(|w| w.iter().any(|x| x["container"] == name))
    };
    let mut agents = Value::Null;
    wait_until(
        Duration::from_secs(30),
        "the agent holds both edits",
        || {
            agents = plan(&a);
            held(&agents, "locked") && held(&agents, "windowed")
        },
    );
    a.stop();
    let local = plan(&a);
    assert_eq!(
        local["actions"], agents["actions"],
        "actions: in-process {local:#} against the agent's {agents:#}"
    );
    assert_eq!(
        local["waiting"], agents["waiting"],
        "waiting: in-process {local:#} against the agent's {agents:#}"
    );
    assert!(
        local["actions"].as_array().is_some_and(|x| x.is_empty()),
        "nothing may be recreated while held: {local:#}"
    );
}

/// A SIGTERM to `berth exec` (what the agent sends a health check past its deadline) at any
/// moment of its life — while it starts, as it spawns, while it relays — ends with nothing of
/// the exec left in the container: the signal waits, blocked, for the relay, which kills the
/// exec's cgroup. (Through an agent's container, from a test process that is no subreaper, so
/// what the kill leaves is reaped by init as on a real host.)
#[test]
fn a_sigterm_to_berth_exec_at_any_moment_leaves_nothing_running() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let a = agent("xs");
    a.write_spec("box", &format!("image = \"{image}\"\n"));
    a.wait_running("box");
    let left = || {
        std::process::Command::new("pgrep")
            .args(["-f", "^sleep 300[78]$"])
            .output()
            .unwrap()
            .stdout
    };
    for delay_ms in [0u64, 1, 3, 10, 30, 100, 300] {
        let mut child = std::process::Command::new(berth_e2e::berth_bin())
            .arg("--config")
            .arg(&a.config_path)
            .args([
                "exec",
                "box",
                "--",
                "sh",
                "-c",
                "sleep 3007 & exec sleep 3008",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        // Bounded: a berth exec that lost the signal would wait for its process forever.
        let mut status = None;
        wait_until(
            Duration::from_secs(30),
            "berth exec to end after SIGTERM",
            || {
                status = child.try_wait().unwrap();
                status.is_some()
            },
        );
        wait_until(
            Duration::from_secs(10),
            &format!("nothing of an exec SIGTERMed after {delay_ms} ms ({status:?})"),
            || left().is_empty(),
        );
    }
}
