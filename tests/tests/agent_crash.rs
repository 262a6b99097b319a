//! kill -9 of the agent at any instant: named crash points, and seeded random kills during a
//! rollout. After a restart the agent must converge with no duplicate container, nothing
//! leaked (`berth doctor` finds nothing) and untouched containers keeping their pids.
//!
//! Replay a random run with `BERTH_CRASH_SEED=<seed printed by the failing run>`; make it
//! longer with `BERTH_CRASH_ROUNDS` (the soak script does).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::fixtures::{busybox_image, sleeper_image};
use berth_e2e::require_root;
use serde_json::Value;

/// xorshift64*: a seeded, replayable sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Shims of this agent's instance that are alive (one per running container, if no duplicate).
fn shims(a: &TestAgent) -> Vec<String> {
    let prefix = a.run_dir.join("shims");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(prefix.to_str().unwrap())
        {
            out.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
        }
    }
    out
}

/// Waits until every spec in `want` runs with the given env value `V` and nothing else exists.
fn wait_converged(a: &TestAgent, want: &BTreeMap<String, u32>) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = (0..2400).any(|_| {
        last = a.status();
        // Status and plan are two requests: a status taken just before an action finished and
        // a plan taken just after would agree on a stale picture. The same status again after
        // an empty plan closes that gap.
        let done = last.len() == want.len()
            && last.iter().all(|s| {
                s["status"] == "running" && want.contains_key(s["name"].as_str().unwrap())
            })
            && plan_is_empty(a)
            && a.status() == last;
        if !done {
            std::thread::sleep(Duration::from_millis(25));
        }
        done
    });
    assert!(ok, "not converged: {last:?}\nagent log:\n{}", a.log());
    last
}

/// Nothing left to do and nothing in progress: also no removal of a container whose spec is
/// gone (those are not listed in status).
fn plan_is_empty(a: &TestAgent) -> bool {
    let out = a.berth(&["plan", "--json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let empty = |k: &str| plan[k].as_array().is_some_and(|a| a.is_empty());
    empty("actions") && empty("in_progress")
}

fn assert_no_leaks(a: &TestAgent, running: usize) {
    let out = a.berth(&["doctor", "--json"]);
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        found.is_empty(),
        "doctor found leftovers: {found:?}\nagent log:\n{}",
        a.log()
    );
    let s = shims(a);
    assert_eq!(
        s.len(),
        running,
        "one shim per container, no duplicate: {s:?}"
    );
}

fn spec(image: &str, v: u32) -> String {
    format!("image = \"{image}\"\nenv = {{ V = \"{v}\" }}\nstop_timeout = \"2s\"\n")
}

/// A kill -9 in the middle of an atomic write leaves its temp file beside the state file
/// (`.spec.json.tmp<pid>`); a removal then cut short between its record and its dir left a dir
/// the next agent could not remove (it held the temp), so doctor found it until the next resync.
#[test]
fn a_removal_cut_short_beside_a_stale_temp_file_leaves_nothing() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    let plain = AgentOptions::default();
    let mut a = TestAgent::new("tmp", &plain);
    a.start(&plain);
    a.write_spec("victim", &spec(&image, 1));
    a.wait_running("victim");
    a.kill9();
    // What a write killed between its temp file and its rename leaves (another pid's).
    let dir = a.state_dir.join("containers/victim");
    std::fs::write(dir.join(".spec.json.tmp4194304"), b"{").unwrap();
    let armed = AgentOptions {
        env: vec![("BERTH_CRASH_AT".into(), "remove.record".into())],
        ..plain.clone()
    };
    a.start(&armed);
    a.remove_spec("victim");
    wait_until(
        Duration::from_secs(60),
        "the agent to die at remove.record",
        || !a.is_alive(),
    );
    a.start(&plain);
    wait_converged(&a, &BTreeMap::new());
    assert_no_leaks(&a, 0);
    assert!(!dir.exists(), "the container's dir is still there");
}

#[test]
fn named_crash_points_recover() {
    if !require_root() {
        return;
    }
    let image = sleeper_image();
    // Each point, and what makes the agent reach it.
    let cases: &[(&str, &str)] = &[
        ("create.record", "create"),
        ("create.network", "create"),
        ("create.runtime", "create"),
        ("create.started", "create"),
        ("remove.runtime", "remove"),
        ("remove.network", "remove"),
        ("remove.record", "remove"),
        // The same spec back after a removal was cut short: a new incarnation, never a start
        // of the half-removed one.
        ("remove.runtime", "readd"),
        ("remove.network", "readd"),
        ("pull.blob", "pull"),
        ("pull.commit", "pull"),
    ];
    for (point, how) in cases {
        let plain = AgentOptions::default();
        let mut a = TestAgent::new("cp", &plain);
        let image = match *how {
            // A fresh image, so that the pull really happens.
            "pull" => busybox_image("cp", "trap 'exit 0' TERM; while :; do sleep 1; done", &[]),
            _ => image.clone(),
        };
        if matches!(*how, "remove" | "readd") {
            a.start(&plain);
            a.write_spec("victim", &spec(&image, 1));
            a.wait_running("victim");
            a.kill9();
        }
        let armed = AgentOptions {
            env: vec![("BERTH_CRASH_AT".into(), point.to_string())],
            ..plain.clone()
        };
        a.start(&armed);
        match *how {
            "remove" | "readd" => a.remove_spec("victim"),
            _ => a.write_spec("victim", &spec(&image, 1)),
        }
        wait_until(
            Duration::from_secs(60),
            &format!("the agent to die at {point}"),
            || !a.is_alive(),
        );
        if *how == "readd" {
            a.write_spec("victim", &spec(&image, 1));
        }
        a.start(&plain);
        let want: BTreeMap<String, u32> = if *how == "remove" {
            BTreeMap::new()
        } else {
            [("victim".to_string(), 1)].into()
        };
        wait_converged(&a, &want);
        assert_no_leaks(&a, want.len());
    }
}

#[test]
fn random_kills_during_a_rollout_converge() {
    if !require_root() {
        return;
    }
    let seed: u64 = std::env::var("BERTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let rounds: u32 = std::env::var("BERTH_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("random kills: BERTH_CRASH_SEED={seed} BERTH_CRASH_ROUNDS={rounds}");
    let mut rng = Rng(seed);
    let image = sleeper_image();
    let opts = AgentOptions::default();
    let mut a = TestAgent::new("rk", &opts);
    // name -> the V its spec carries; 20 containers to roll out.
    let mut want: BTreeMap<String, u32> = (0..20).map(|i| (format!("c{i:02}"), 0)).collect();
    for (name, v) in &want {
        a.write_spec(name, &spec(&image, *v));
    }
    for round in 0..rounds {
        a.start(&opts);
        // Change a few specs while the agent works: edits recreate, deletions prune, new
        // names create.
        for _ in 0..rng.below(4) {
            let name = format!("c{:02}", rng.below(24));
            match rng.below(3) {
                0 if want.contains_key(&name) => {
                    a.remove_spec(&name);
                    want.remove(&name);
                }
                _ => {
                    let v = want.get(&name).map_or(0, |v| v + 1);
                    a.write_spec(&name, &spec(&image, v));
                    want.insert(name, v);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        a.kill9();
        eprintln!("round {round}: killed");
    }
    a.start(&opts);
    let statuses = wait_converged(&a, &want);
    assert_no_leaks(&a, want.len());
    // The env each container runs with is its spec's latest.
    for (name, v) in want.iter().take(3) {
        let out = a.berth(&["exec", name, "--", "sh", "-c", "echo $V"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            v.to_string(),
            "{name} (seed {seed})"
        );
    }
    // A last kill and restart touches nothing: same pids.
    let before: BTreeMap<String, Value> = statuses
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    a.kill9();
    a.start(&opts);
    let again = wait_converged(&a, &want);
    for s in again {
        let b = &before[s["name"].as_str().unwrap()];
        assert_eq!(
            b["pid"],
            s["pid"],
            "pid changed after a restart (seed {seed}):\nbefore {b}\nafter {s}\nagent log:\n{}",
            a.log()
        );
    }
}
