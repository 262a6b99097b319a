//! The command line's contract with scripts and shells, against the real binary: every read
//! command ends quietly when its reader goes away (`berth images | head -1`) and reports a full
//! disk without a panic; odd input and environments never panic or hang; `berth doctor --fix`
//! tells "fixed" from "could not fix" by its exit code.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent};
use berth_e2e::fixtures::busybox_image;
use berth_e2e::{berth_bin, require_root, unique_instance};

/// A write end whose reader is already gone: the first write fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let (r, w) = rustix::pipe::pipe().unwrap();
    drop(r);
    w
}

fn dev_full() -> Stdio {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
        .into()
}

/// Runs `berth ARGS` with `stdout`, killing it after 60 s (a hang is a failure too).
fn run_with(config: &Path, args: &[&str], stdout: Stdio) -> Output {
    let child = Command::new(berth_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Read its output while it runs: a full pipe would stop it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("berth {args:?} hung");
        }
    }
}

/// Every command that only reads and prints, with what it prints on a live agent with one
/// container that logs.
const READ_COMMANDS: &[&[&str]] = &[
    &["status"],
    &["status", "--json"],
    &["status", "app"],
    &["plan"],
    &["plan", "--json"],
    &["images"],
    &["images", "--json"],
    &["events", "--no-follow"],
    &["events", "--no-follow", "--json"],
    &["logs", "app"],
    &["logs", "app", "--timestamps"],
    &["doctor"],
    &["doctor", "--json"],
    &["version"],
    &["version", "--json"],
    &["schema"],
    &["schema", "--config"],
    &["completions", "bash"],
    &["completions", "zsh"],
    &["prune", "--dry-run"],
    &["prune", "--dry-run", "--json"],
];

#[test]
fn every_read_command_ends_quietly_on_a_closed_pipe_and_reports_a_full_disk() {
    if !require_root() {
        return;
    }
    // Enough output that every command writes more than once.
    let image = busybox_image(
        "chat",
        "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; trap 'exit 0' TERM; while :; do sleep 1; done",
        &[],
    );
    let opts = AgentOptions::default();
    let mut a = TestAgent::new("cp", &opts);
    a.start(&opts);
    a.write_spec("app", &format!("image = \"{image}\"\n"));
    a.wait_running("app");
    berth_e2e::agent::wait_until(Duration::from_secs(30), "the logs", || {
        String::from_utf8_lossy(&a.berth(&["logs", "app"]).stdout).contains("line 1999")
    });
    let specs = a.specs_dir.to_str().unwrap().to_string();
    let mut commands: Vec<Vec<&str>> = READ_COMMANDS.iter().map(|c| c.to_vec()).collect();
    commands.push(vec!["validate", "--show", &specs]);
    commands.push(vec!["validate", "--json", "--show", &specs]);
    for c in &commands {
        // Each must succeed with a reader, so the two cases below judge only the output.
        let full = run_with(&a.config_path, c, Stdio::piped());
        assert_eq!(
            full.status.code(),
            Some(0),
            "berth {c:?}: {}",
            String::from_utf8_lossy(&full.stderr)
        );
        assert!(!full.stdout.is_empty(), "berth {c:?} printed nothing");

        let out = run_with(&a.config_path, c, closed_pipe().into());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "berth {c:?} into a closed pipe: {err}"
        );
        assert!(err.is_empty(), "berth {c:?} into a closed pipe said: {err}");

        let out = run_with(&a.config_path, c, dev_full());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "berth {c:?} into /dev/full: {err}"
        );
        assert!(
            err.contains("berth: cannot write the output: No space left on device"),
            "berth {c:?} into /dev/full: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    a.stop();
}

/// A config of its own (no agent, nothing running) under a temp dir.
fn scratch(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("berth-cli-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "instance = {:?}\nspecs_dir = {:?}\nstate_dir = {:?}\nrun_dir = {:?}\nimages_dir = {:?}\n[network]\nbridge = {:?}\nsubnet = {:?}\n",
            unique_instance(prefix),
            dir.path().join("specs"),
            dir.path().join("state"),
            dir.path().join("run"),
            dir.path().join("import"),
            unique_instance(prefix),
            berth_e2e::agent::free_subnet(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    (dir, config)
}

#[test]
fn odd_input_and_environments_never_panic_or_hang() {
    if !require_root() {
        return;
    }
    let (dir, config) = scratch("od");
    // Readable by everyone, as /etc/berth is: so that the unprivileged cases reach the lock.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fifo = dir.path().join("fifo.toml");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let fifo = fifo.to_str().unwrap();
    let berth = berth_bin().to_str().unwrap().to_string();
    let own = |args: &[&str]| -> (String, Vec<String>) {
        (berth.clone(), args.iter().map(|s| s.to_string()).collect())
    };
    let nobody = |args: &[&str]| -> (String, Vec<String>) {
        let mut v: Vec<String> = ["--reuid", "65534", "--regid", "65534", "--clear-groups"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(berth.clone());
        v.extend(args.iter().map(|s| s.to_string()));
        ("setpriv".into(), v)
    };
    let cases = vec![
        // A config that is a FIFO or a device: refused, never waited on or read forever.
        own(&["--config", fifo, "status"]),
        own(&["--config", "/dev/zero", "status"]),
        own(&["--config", "/", "images"]),
        own(&["validate", "--config", fifo]),
        own(&["--config", cfg, "validate", "/dev/zero"]),
        own(&["--config", cfg, "logs", "nope", "--since", "99999999999d"]),
        own(&[
            "--config",
            cfg,
            "logs",
            "../../etc",
            "--tail",
            "18446744073709551615",
        ]),
        own(&["--config", cfg, "exec", "../x", "--", "true"]),
        own(&["--config", cfg, "status", "--config"]),
        own(&["--config", cfg, "pull", "a@sha256:zz"]),
        // Not root: every command says why and ends; none waits for a lock it cannot open.
        nobody(&["--config", cfg, "status"]),
        nobody(&["--config", cfg, "plan"]),
        nobody(&["--config", cfg, "apply", "--once"]),
        nobody(&["--config", cfg, "prune", "--dry-run"]),
        nobody(&["--config", cfg, "agent"]),
        nobody(&["--config", cfg, "doctor", "--fix"]),
    ];
    // The state dir exists (root's), as on a host.
    let out = Command::new(berth_bin())
        .args(["--config", cfg, "status"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (program, args) in &cases {
        let start = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{program} {args:?} hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{program} {args:?}: {err}");
        assert!(
            matches!(out.status.code(), Some(1 | 2 | 8 | 125)),
            "{program} {args:?}: {:?} {err}",
            out.status
        );
        assert!(!err.trim().is_empty(), "{program} {args:?} failed silently");
    }
}

#[test]
fn doctor_fix_exit_codes_tell_fixed_from_could_not_fix() {
    if !require_root() {
        return;
    }
    let (dir, config) = scratch("dx");
    let cfg = config.to_str().unwrap();
    let doctor = |args: &[&str]| {
        let mut v = vec!["--config", cfg, "doctor"];
        v.extend_from_slice(args);
        let out = Command::new(berth_bin()).args(&v).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(doctor(&[]).0, Some(0), "nothing found");
    assert_eq!(
        doctor(&["--fix"]).0,
        Some(0),
        "nothing found, nothing fixed"
    );
    // A corrupt blob: found (1), removed (1), then nothing (0).
    let blobs = dir.path().join("state/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = blobs.join("ab".repeat(32));
    std::fs::write(&blob, b"not what its name says").unwrap();
    assert_eq!(doctor(&[]).0, Some(1));
    let (code, out) = doctor(&["--fix"]);
    assert_eq!(code, Some(1), "found and all fixed: {out}");
    assert!(out.contains("removed 1 item(s)"), "{out}");
    assert!(!blob.exists());
    assert_eq!(doctor(&[]).0, Some(0));
    // One that cannot be removed (immutable): 4, and it is named.
    std::fs::write(&blob, b"not what its name says").unwrap();
    let chattr = |flag: &str| {
        let s = Command::new("chattr")
            .arg(flag)
            .arg(&blob)
            .status()
            .unwrap();
        assert!(s.success(), "chattr {flag}");
    };
    chattr("+i");
    let (code, out) = doctor(&["--fix"]);
    chattr("-i");
    assert_eq!(code, Some(4), "could not fix: {out}");
    assert!(out.contains("could not remove 1 item(s)"), "{out}");
    assert!(out.contains(&blob.display().to_string()), "{out}");
    // Could not look at all (the state dir is locked, as by a running agent): 8.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join("state/lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    assert_eq!(doctor(&["--fix"]).0, Some(8));
    drop(lock);
    assert_eq!(doctor(&["--fix"]).0, Some(1));
    // The help says what each code means.
    let out = Command::new(berth_bin())
        .args(["doctor", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "0  nothing found",
        "with --fix: all of them removed",
        "4  with --fix",
        "8  could not look",
    ] {
        assert!(help.contains(line), "{line:?} not in:\n{help}");
    }
}

#[test]
fn status_shows_a_deleted_spec_as_removing_until_it_is_gone() {
    if !require_root() {
        return;
    }
    // A payload that ignores SIGTERM: its removal takes the whole stop timeout.
    let image = busybox_image("deaf", "trap '' TERM; while :; do sleep 1; done", &[]);
    let opts = AgentOptions::default();
    let mut a = TestAgent::new("rm", &opts);
    a.start(&opts);
    a.write_spec(
        "app",
        &format!(
            "image = \"{image}\"\nstop_timeout = \"5s\"\nports = [\"{}:80\"]\n",
            berth_e2e::fixtures::free_port()
        ),
    );
    let s = a.wait_running("app");
    let pid = s["pid"].as_i64().unwrap();
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    let deleted = Instant::now();
    a.remove_spec("app");
    let mut saw_removing = false;
    loop {
        match a.status_of("app") {
            Some(s) => {
                // Until the agent has noticed the deletion it may still say running.
                if s["status"] == "removing" {
                    saw_removing = true;
                    assert_eq!(s["desired"], "removed", "{s}");
                    assert!(!s["ports"].as_array().unwrap().is_empty(), "{s}");
                } else {
                    assert!(!saw_removing, "removing, then {s}");
                    assert_eq!(s["status"], "running", "{s}");
                }
            }
            None => {
                assert!(
                    !alive(),
                    "status dropped app while its process {pid} still runs"
                );
                break;
            }
        }
        assert!(deleted.elapsed() < Duration::from_secs(60), "never removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(saw_removing, "never shown as removing");
    assert!(
        deleted.elapsed() >= Duration::from_secs(4),
        "the stop timeout was not waited for: {:?}",
        deleted.elapsed()
    );
    a.stop();
}
