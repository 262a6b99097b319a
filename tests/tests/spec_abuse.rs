//! The spec dir as an attacker (or a broken config-management run) leaves it, against a running
//! agent: a 50 MB spec, invalid UTF-8, a symlink to /etc/shadow, a FIFO named x.toml, a dir
//! named y.toml, 10,000 spec files, and files appearing and vanishing 1000 times a second. The
//! agent stays up and answers, its memory stays bounded, a valid container beside the abuse
//! keeps running, and every refusal is named on `berth status` (failed, with its error).
//!
//! The 10,000 specs ask for a stopped container of an image that is in no registry, with
//! `pull = "never"`: the test is about the spec source, not about creating 10,000 containers.
//! The churn runs for `BERTH_CHURN_SECS` seconds (2 here; `tests/soak` runs it for 10).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent, wait_until};
use berth_e2e::fixtures::sleeper_image;
use serde_json::Value;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A spec no registry can satisfy and the agent never pulls: only the source is exercised.
fn inert_spec(n: usize) -> String {
    format!(
        "image = \"{}/berth-spec-abuse-absent:{n}\"\npull = \"never\"\nstate = \"stopped\"\n",
        std::env::var("BERTH_TEST_REGISTRY").unwrap()
    )
}

fn status_map(agent: &TestAgent) -> std::collections::BTreeMap<String, Value> {
    agent
        .status()
        .into_iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s))
        .collect()
}

/// Waits until `name` is failed with an error containing every fragment; returns the error.
fn refused(agent: &TestAgent, name: &str, fragments: &[&str]) -> String {
    let st = agent.wait_status(name, "refused", Duration::from_secs(30), |s| {
        s["status"] == "failed"
            && s["error"]
                .as_str()
                .is_some_and(|e| fragments.iter().all(|f| e.contains(f)))
    });
    st["error"].as_str().unwrap().to_string()
}

#[test]
fn hostile_files_are_refused_by_name_and_churn_leaves_the_agent_well() {
    if !berth_e2e::require_root() {
        return;
    }
    let opts = AgentOptions::default();
    let mut agent = TestAgent::new("sa", &opts);
    agent.start(&opts);
    let pid = agent.pid().unwrap();
    agent.write_spec("steady", &format!("image = \"{}\"\n", sleeper_image()));
    let steady_pid = agent.wait_running("steady")["pid"].clone();
    let rss_start = rss_kib(pid);
    let fds_start = open_fds(pid);
    let dir = agent.specs_dir.clone();

    // 50 MB: refused without being read whole.
    let big = dir.join("big.toml");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&big).unwrap();
        let line = format!("# {}\n", "x".repeat(1021));
        for _ in 0..(50 << 10) {
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    std::fs::write(dir.join("latin1.toml"), b"image = \"caf\xe9\"\n").unwrap();
    symlink("/etc/shadow", dir.join("shadow.toml")).unwrap();
    let fifo =
        std::ffi::CString::new(dir.join("x.toml").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid C string naming a path in our own temp dir.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::create_dir(dir.join("y.toml")).unwrap();

    let e = refused(&agent, "big", &["big.toml", "larger than"]);
    eprintln!("big: {e}");
    let e = refused(&agent, "latin1", &["latin1.toml", "not UTF-8"]);
    eprintln!("latin1: {e}");
    let e = refused(&agent, "shadow", &["shadow.toml", "outside the spec dir"]);
    eprintln!("shadow: {e}");
    let e = refused(&agent, "x", &["x.toml", "FIFO"]);
    eprintln!("x: {e}");
    let e = refused(&agent, "y", &["y.toml", "directory"]);
    eprintln!("y: {e}");
    // The agent answered all along: nothing blocked on the FIFO.
    assert!(agent.is_alive(), "the agent died:\n{}", agent.log());

    // Churn: files appear and vanish about 1000 times a second while the agent keeps answering.
    let secs: u64 = std::env::var("BERTH_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let stop = AtomicBool::new(false);
    let churned = AtomicU64::new(0);
    let slowest_status = std::thread::scope(|s| {
        s.spawn(|| {
            // A fixed amount of churn (a create and a delete per millisecond, paced), not a
            // fixed time: on a loaded machine it takes longer but is the same churn. The
            // deadline only bounds a machine too slow for the test to mean anything.
            let start = Instant::now();
            let mut n = 0u64;
            while n < secs * 1000 && start.elapsed() < Duration::from_secs(secs * 30) {
                // 1000 a second: a create and a delete per millisecond.
                let p = dir.join(format!("churn-{}.toml", n % 50));
                std::fs::write(&p, inert_spec(n as usize)).unwrap();
                let _ = std::fs::remove_file(dir.join(format!("churn-{}.toml", (n + 25) % 50)));
                n += 1;
                let due = start + Duration::from_micros(n * 1000);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            for i in 0..50 {
                let _ = std::fs::remove_file(dir.join(format!("churn-{i}.toml")));
            }
            churned.store(n, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
        });
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let out = agent.berth(&["status", "--json"]);
            assert!(
                out.status.success(),
                "status failed during churn: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            slowest = slowest.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        slowest
    });
    let n = churned.load(Ordering::Relaxed);
    eprintln!(
        "churn: {n} creates and deletes (paced for {secs}s); slowest status answer {slowest_status:?}"
    );
    assert!(
        n >= secs * 1000,
        "the churn ran too slowly to mean anything: {n} creates in {}s",
        secs * 30
    );
    assert!(
        agent.is_alive(),
        "the agent died during churn:\n{}",
        agent.log()
    );
    // Converges: no churn file is left, so no churn spec is either; the refusals still stand.
    wait_until(Duration::from_secs(30), "churn specs gone", || {
        !status_map(&agent).keys().any(|k| k.starts_with("churn-"))
    });
    let st = status_map(&agent);
    for name in ["big", "latin1", "shadow", "x", "y"] {
        assert_eq!(st[name]["status"], "failed", "{}", st[name]);
    }
    assert_eq!(st["steady"]["status"], "running");
    assert_eq!(
        st["steady"]["pid"], steady_pid,
        "the valid container was disturbed"
    );

    let rss_end = rss_kib(pid);
    let fds_end = open_fds(pid);
    eprintln!("agent RSS {rss_start} KiB -> {rss_end} KiB; fds {fds_start} -> {fds_end}");
    assert!(
        rss_end < rss_start + 64 * 1024,
        "agent RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
    assert!(
        fds_end <= fds_start + 8,
        "agent fds grew from {fds_start} to {fds_end}"
    );
    // The teardown empties the dir, including the FIFO and the dir named y.toml.
    let _ = std::fs::remove_file(&big);
    assert!(!Path::new(&big).exists());
}

#[test]
fn ten_thousand_specs() {
    if !berth_e2e::require_root() {
        return;
    }
    const N: usize = 10_000;
    let opts = AgentOptions::default();
    let mut agent = TestAgent::new("tk", &opts);
    agent.start(&opts);
    let pid = agent.pid().unwrap();
    let rss_start = rss_kib(pid);
    // Two rounds: memory the first round took may stay with the allocator, but the second
    // must not take more (a leak grows with every round).
    let mut peaks = Vec::new();
    for round in 0..2 {
        let started = Instant::now();
        // Written beside and renamed in one by one, as config management does.
        for i in 0..N {
            agent.write_spec(&format!("s{i:05}"), &inert_spec(i + round));
        }
        let written = started.elapsed();
        wait_until(Duration::from_secs(300), "10,000 statuses", || {
            let st = agent.status();
            st.len() == N
                && st.iter().all(|s| {
                    s["image"].as_str().is_some_and(|i| {
                        i.ends_with(&format!(
                            ":{}",
                            s["name"].as_str().unwrap()[1..].parse::<usize>().unwrap() + round
                        ))
                    })
                })
        });
        let all = started.elapsed();
        for s in agent.status() {
            assert!(
                s["pid"].is_null() && s["id"].is_null(),
                "a container was made: {s}"
            );
        }
        let rss_full = rss_kib(pid);
        let t = Instant::now();
        let out = agent.berth(&["status", "--json"]);
        assert!(out.status.success());
        let status_time = t.elapsed();
        // The agent streams the list; both CLI forms read it whole.
        let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.len(), N);
        let table = agent.berth(&["status"]);
        assert!(table.status.success());
        let table = String::from_utf8(table.stdout).unwrap();
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), N + 1, "a header and one row per spec");
        assert!(rows[0].starts_with("NAME"), "{}", rows[0]);
        assert!(
            rows[N].starts_with(&format!("s{:05}", N - 1)),
            "{}",
            rows[N]
        );
        for i in 0..N {
            agent.remove_spec(&format!("s{i:05}"));
        }
        wait_until(Duration::from_secs(300), "every status gone", || {
            agent.status().is_empty()
        });
        let rss_end = rss_kib(pid);
        eprintln!(
            "round {round}: {N} specs written in {written:.1?}, all on status after {all:.1?}; \
             `status --json` {status_time:.0?} ({} KiB); agent RSS {rss_start} (start) -> \
             {rss_full} (all) -> {rss_end} KiB (none)",
            out.stdout.len() / 1024
        );
        peaks.push(rss_full);
        // Nothing of them stays on disk either (their last valid specs are forgotten by a
        // spec job, off the loop, just after the statuses go).
        let left = || -> Vec<_> {
            std::fs::read_dir(agent.state_dir.join("containers"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name())
                .collect()
        };
        wait_until(Duration::from_secs(60), "the container dirs gone", || {
            left().len() < 5
        });
    }
    assert!(agent.is_alive(), "the agent died:\n{}", agent.log());
    assert!(
        peaks[0] < rss_start + 256 * 1024,
        "RSS {} KiB with {N} specs (from {rss_start})",
        peaks[0]
    );
    // A leak of what the specs took would add about the first round's growth again.
    let growth = peaks[0].saturating_sub(rss_start);
    assert!(
        peaks[1] < peaks[0] + growth / 2,
        "RSS grew round over round: {peaks:?} KiB (from {rss_start})"
    );
}
