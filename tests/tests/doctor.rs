//! `berth doctor` against what a crash leaves, for two instances side by side: each agent runs
//! a container with a published port, is killed (kill -9), and loses the container's record;
//! then a stray mount, a corrupt blob, an interrupted unpack and a stray shim process are
//! planted for each. Doctor for one instance lists every kind of leftover of that instance
//! and nothing of the other's; `--fix` removes exactly those (the other instance's container
//! keeps running); exit codes are 1 while something is found and 0 after.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use berth_e2e::agent::{AgentOptions, TestAgent};
use berth_e2e::fixtures::{free_port, sleeper_image};
use berth_e2e::tmpfs::Tmpfs;
use serde_json::Value;
use sha2::Digest;

/// What one crashed instance left, and how to tell it is still there.
struct Crashed {
    agent: TestAgent,
    pid: i64,
    veth: String,
    netns: PathBuf,
    port: u16,
    lease_ip: String,
    blob: PathBuf,
    temp: PathBuf,
    stray: Option<Tmpfs>,
    ghost: GhostShim,
}

/// A process that looks like a shim of a container no record knows (`berth-shim` serving a
/// shim dir of the instance). Killed when dropped.
struct GhostShim(Child);

impl GhostShim {
    fn start(shims_dir: &Path) -> GhostShim {
        let id = berth_agent::names::IncarnationId::random();
        let arg = shims_dir.join(format!("ghost-{id}"));
        // Debian's python, not a wrapper that re-execs and loses argv[0].
        let child = Command::new("/usr/bin/python3")
            .arg0("/usr/local/libexec/berth-shim")
            .args(["-c", "import time\nwhile True: time.sleep(1)", "start"])
            .arg(arg)
            .spawn()
            .unwrap();
        GhostShim(child)
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for GhostShim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use std::os::unix::process::CommandExt;

fn crash_one(prefix: &str) -> Crashed {
    let opts = AgentOptions::default();
    let mut agent = TestAgent::new(prefix, &opts);
    agent.start(&opts);
    let port = free_port();
    agent.write_spec(
        "web",
        &format!("image = \"{}\"\nports = [\"{port}:80\"]\n", sleeper_image()),
    );
    let st = agent.wait_running("web");
    let pid = st["pid"].as_i64().unwrap();
    let id = st["id"].as_str().unwrap().to_string();
    let lease_ip = st["ip"].as_str().unwrap().to_string();
    let tag = &hex::encode(sha2::Sha256::digest(agent.instance.as_bytes()))[..4];
    let veth = format!("bth{tag}{}", &id[..8]);
    let netns = agent.run_dir.join("netns").join(format!("web-{id}"));
    assert!(link_exists(&veth), "{veth} should exist while web runs");

    // The crash: the agent dies, the spec goes and the record is lost (the last valid spec
    // stays, so the container dir is explained and its bundle and /etc dir are the orphans).
    agent.kill9();
    std::fs::remove_file(agent.specs_dir.join("web.toml")).unwrap();
    let cdir = agent.state_dir.join("containers/web");
    std::fs::remove_file(cdir.join("incarnation.json")).unwrap();
    assert!(cdir.join("spec.json").exists());
    // A container dir nothing explains.
    std::fs::create_dir_all(agent.state_dir.join("containers/ghost")).unwrap();

    // What else a crash or a bug leaves.
    let blob = agent
        .state_dir
        .join(format!("blobs/sha256/{}", "ab".repeat(32)));
    std::fs::write(&blob, b"not what the name says").unwrap();
    let temp = agent
        .state_dir
        .join("layers/sha256/.tmp-0123456789ab-cdef01234567");
    std::fs::create_dir_all(temp.join("etc")).unwrap();
    let stray = Some(Tmpfs::mount(&agent.state_dir.join("stray"), 1 << 20));
    let ghost = GhostShim::start(&agent.run_dir.join("shims"));
    Crashed {
        agent,
        pid,
        veth,
        netns,
        port,
        lease_ip,
        blob,
        temp,
        stray,
        ghost,
    }
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which ends at the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state != 'Z')
}

/// Waits up to 5 s for a killed process to be gone (the kill is asynchronous).
fn gone(pid: i64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

fn is_mount(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = p.display().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn nft_table(instance: &str) -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", instance])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cgroup_dirs(instance: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = h.path().join(instance);
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() && e.file_name().to_string_lossy().starts_with("web-") {
                out.push(e.path());
            }
        }
    }
    out
}

fn doctor(c: &Crashed, args: &[&str]) -> (Option<i32>, Vec<Value>, Output) {
    let mut a = vec!["doctor"];
    a.extend_from_slice(args);
    let out = c.agent.berth(&a);
    let found = if args.contains(&"--json") {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor --json: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    } else {
        Vec::new()
    };
    (out.status.code(), found, out)
}

/// Strings that identify an instance's objects.
fn markers(c: &Crashed) -> Vec<String> {
    vec![
        c.agent.root.path().display().to_string(),
        c.agent.instance.clone(),
        c.veth.clone(),
        c.agent.bridge.clone(),
        format!("{} (web)", c.lease_ip),
        format!("{}/tcp", c.port),
    ]
}

#[test]
fn doctor_lists_and_fixes_only_its_own_instance() {
    if !berth_e2e::require_root() {
        return;
    }
    let mut a = crash_one("da");
    let mut b = crash_one("db");

    let (code, found, _) = doctor(&a, &["--json"]);
    assert_eq!(code, Some(1), "doctor found something: exit 1");
    let kinds: BTreeSet<&str> = found.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    eprintln!("doctor for {} found:", a.agent.instance);
    for f in &found {
        eprintln!(
            "  {:<14} {}",
            f["kind"].as_str().unwrap(),
            f["what"].as_str().unwrap()
        );
    }
    for k in [
        "shim",
        "bundle",
        "etc",
        "cgroup",
        "container-dir",
        "link",
        "netns",
        "lease",
        "nft-element",
        "process",
        "mount",
        "blob",
        "unpack-temp",
        "bridge",
        "nft-table",
    ] {
        assert!(kinds.contains(k), "doctor missed the {k}: {found:#?}");
    }
    // Never the other instance's.
    let theirs = markers(&b);
    for f in &found {
        let what = f["what"].as_str().unwrap();
        for m in &theirs {
            assert!(
                !what.contains(m.as_str()),
                "doctor for A listed B's {m}: {what}"
            );
        }
    }
    // The ghost shim and the real one are both named.
    let procs = found.iter().filter(|f| f["kind"] == "process").count();
    assert!(procs >= 2, "{found:#?}");

    let (code, _, out) = doctor(&a, &["--fix"]);
    assert_eq!(
        code,
        Some(1),
        "--fix reports what it found: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, found, _) = doctor(&a, &["--json"]);
    assert!(found.is_empty(), "left after --fix: {found:#?}");
    assert_eq!(code, Some(0));
    let (code, _, out) = doctor(&a, &[]);
    assert_eq!(code, Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing found"));

    // A's are gone ...
    assert!(gone(a.pid), "A's container still runs");
    assert!(!link_exists(&a.veth));
    assert!(!link_exists(&a.agent.bridge));
    assert!(!a.netns.exists());
    assert!(nft_table(&a.agent.instance).is_none());
    assert!(cgroup_dirs(&a.agent.instance).is_empty());
    assert!(!a.blob.exists() && !a.temp.exists());
    assert!(!is_mount(&a.stray.as_ref().unwrap().path));
    assert!(!a.ghost.alive(), "A's ghost shim still runs");
    // ... and B's all still there.
    assert!(alive(b.pid), "B's container was killed");
    assert!(link_exists(&b.veth) && link_exists(&b.agent.bridge));
    assert!(is_mount(&b.netns));
    let table = nft_table(&b.agent.instance).expect("B's table");
    assert!(table.contains(&b.port.to_string()), "{table}");
    assert!(!cgroup_dirs(&b.agent.instance).is_empty());
    assert!(b.blob.exists() && b.temp.exists());
    assert!(is_mount(&b.stray.as_ref().unwrap().path));
    assert!(b.ghost.alive());
    assert!(
        b.agent
            .state_dir
            .join("network/leases")
            .join(&b.lease_ip)
            .symlink_metadata()
            .is_ok()
    );

    let (code, found, _) = doctor(&b, &["--json"]);
    assert_eq!(code, Some(1));
    assert!(found.len() >= 15, "{found:#?}");
    let (code, _, _) = doctor(&b, &["--fix"]);
    assert_eq!(code, Some(1));
    let (code, found, _) = doctor(&b, &["--json"]);
    assert_eq!((code, found.len()), (Some(0), 0), "{found:#?}");
    assert!(gone(b.pid));
    assert!(!b.ghost.alive());
    // The tmpfs guards find their mounts gone; the agents' teardown finds nothing left.
    a.stray.take();
    b.stray.take();
}
