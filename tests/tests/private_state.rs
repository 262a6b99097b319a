//! State is private to root (issue 13, confirmed 1; the class of CVE-2021-41091): a local user
//! reaches no layer (with the device nodes and setuid files images ship), no container's upper
//! dir (with what container root made there), no config.json (the environment's secrets), no
//! log and no record, while containers run as before, those of a non-root user included. An
//! install from before this rule (0755 dirs, 0644 files) is tightened when the agent starts.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_e2e::agent::{AgentOptions, TestAgent};
use berth_e2e::image::{Compression, Entry, ImageBuilder, busybox_rootfs};
use berth_e2e::outsider::{Try, probe, walk};
use berth_e2e::registry::{TestRegistry, unique_repo};

/// A busybox image that also ships what a local user must never reach through berth's dirs:
/// a setuid file and a block device node.
fn image() -> String {
    let reg = TestRegistry::plain();
    let repo = unique_repo("private");
    let mut entries = busybox_rootfs();
    entries.extend([
        Entry::dir("opt"),
        Entry::file("opt/lower.txt", b"from-lower"),
        Entry::File {
            path: "opt/suid".into(),
            data: b"#!/bin/sh\nid\n".to_vec(),
            mode: 0o4755,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        },
        Entry::Block {
            path: "opt/disk".into(),
            major: 8,
            minor: 0,
        },
    ]);
    let img = ImageBuilder::new()
        .layer(&entries, Compression::Gzip)
        .build();
    reg.push_image(&repo, "1", &img);
    format!("{}/{repo}:1", reg.addr)
}

const SLEEP: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

/// What a non-root container user must still reach from inside: the image's files (overlay
/// lowerdirs, opened by the kernel with the mounter's credentials), the upper dir through
/// /tmp, the /etc files berth binds in, a volume, and exec.
const NOBODY_CHECKS: &[&str] = &[
    "test \"$(id -u):$(id -g)\" = 65534:65534",
    "test \"$(cat /opt/lower.txt)\" = from-lower",
    "ls / /opt /bin",
    "echo w > /tmp/w && test \"$(cat /tmp/w)\" = w",
    "cat /etc/hosts /etc/resolv.conf /etc/hostname",
    "ls /data",
    "/bin/busybox true",
];

fn nobody_command() -> String {
    let mut s = String::from("r=ok; ");
    for c in NOBODY_CHECKS {
        s += &format!(
            "if ! sh -c '{}' >/dev/null 2>&1; then echo 'FAIL: {}'; r=fail; fi; ",
            c.replace('\'', "'\\''"),
            c.replace('\'', "")
        );
    }
    s += "echo nobody-$r; ";
    s += SLEEP;
    s
}

/// Makes the dirs an older berth left: world-readable, as `create_dir_all` made them.
fn old_install(state: &Path, run: &Path) {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true).mode(0o755);
    for d in ["layers/sha256", "blobs/sha256", "containers", "images/refs"] {
        b.create(state.join(d)).unwrap();
    }
    for d in ["shims", "netns"] {
        b.create(run.join(d)).unwrap();
    }
    for d in [state, run] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
}

fn wait_log(agent: &TestAgent, name: &str, what: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = agent.berth(&["logs", name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if what.iter().any(|w| text.contains(w)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never logged {what:?}; logs: {text}\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Inside trees that are the containers' own (their files keep the image's modes) or that
/// containers see (bind-mounted /etc files, volumes), modes are not berth's to choose.
fn containers_own(state: &Path, p: &Path) -> bool {
    let rel = p.strip_prefix(state).unwrap_or(p);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.first().map(String::as_str) {
        Some("layers") => parts.len() > 2,
        Some("volumes") => parts.len() > 1,
        Some("containers") => {
            parts.len() > 3 && matches!(parts[3].as_str(), "upper" | "work" | "rootfs")
                || parts.len() > 3 && parts[2].ends_with(".etc")
        }
        _ => false,
    }
}

#[test]
fn state_and_run_dirs_are_private_to_root() {
    if !berth_e2e::require_root() {
        return;
    }
    let image = image();
    let opts = AgentOptions::default();
    let mut agent = TestAgent::new("ps", &opts);
    // The test's own temp dir is 0700: open it as /var/lib is, so that only berth's modes
    // stand between a local user and the state.
    std::fs::set_permissions(
        agent.root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    old_install(&agent.state_dir, &agent.run_dir);
    agent.start(&opts);

    agent.write_spec(
        "secret",
        &format!(
            "image = {image:?}\nenv = {{ SECRET = \"s3cret-value\" }}\ncommand = [\"/bin/sh\", \"-c\", {:?}]\n",
            format!("cp /bin/busybox /suid-upper && chmod 4755 /suid-upper && echo secret-up; {SLEEP}")
        ),
    );
    agent.write_spec(
        "nobody",
        &format!(
            "image = {image:?}\nuser = \"65534:65534\"\nmounts = [\"data:/data\"]\ncommand = [\"/bin/sh\", \"-c\", {:?}]\n",
            nobody_command()
        ),
    );
    agent.wait_running("secret");
    agent.wait_running("nobody");
    wait_log(&agent, "secret", &["secret-up"]);
    let logs = wait_log(&agent, "nobody", &["nobody-ok", "nobody-fail"]);
    assert!(
        logs.contains("nobody-ok"),
        "a non-root container lost access to what it needs:\n{logs}"
    );

    let (state, run) = (&agent.state_dir, &agent.run_dir);
    let mut problems = Vec::new();
    for top in [state, run] {
        let m = std::fs::metadata(top).unwrap();
        if m.mode() & 0o077 != 0 || m.uid() != 0 {
            problems.push(format!(
                "{} is mode {:04o}, uid {}: not private to root",
                top.display(),
                m.mode() & 0o7777,
                m.uid()
            ));
        }
    }
    // What berth itself writes is root's alone: its dirs 0700, its files 0600.
    let paths: Vec<PathBuf> = walk(state).into_iter().chain(walk(run)).collect();
    for p in &paths {
        if containers_own(state, p) {
            continue;
        }
        let m = std::fs::symlink_metadata(p).unwrap();
        let t = m.file_type();
        if (t.is_dir() && !p.ends_with("upper") && !p.ends_with("rootfs") && !p.ends_with("work")
            || t.is_file())
            && m.mode() & 0o077 != 0
            && !p.starts_with(run.join("netns"))
        {
            problems.push(format!("{} is mode {:04o}", p.display(), m.mode() & 0o7777));
        }
    }
    // Each kind of thing the issue names is among the paths probed.
    let bundle = |n: &str| {
        paths
            .iter()
            .find(|p| p.ends_with("config.json") && p.starts_with(state.join("containers").join(n)))
            .unwrap_or_else(|| panic!("no config.json of {n} under {}", state.display()))
            .parent()
            .unwrap()
            .to_path_buf()
    };
    let secret = bundle("secret");
    let must: Vec<PathBuf> = vec![
        secret.join("config.json"),
        secret.join("logs/container.log"),
        secret.join("upper/suid-upper"),
        state.join("containers/secret/spec.json"),
        state.join("containers/secret/incarnation.json"),
    ];
    for m in &must {
        assert!(paths.contains(m), "{} was not found", m.display());
    }
    let layer_disk = paths
        .iter()
        .find(|p| p.starts_with(state.join("layers")) && p.ends_with("opt/disk"))
        .expect("the layer with opt/disk");
    assert!(
        std::fs::read_to_string(secret.join("config.json"))
            .unwrap()
            .contains("s3cret-value"),
        "the secret is in config.json (the file this test protects)"
    );

    let mut tries: Vec<(PathBuf, Try)> = paths.iter().map(|p| (p.clone(), Try::Stat)).collect();
    tries.extend([
        (state.clone(), Try::Open),
        (run.clone(), Try::Open),
        (layer_disk.clone(), Try::Open),
        (secret.join("config.json"), Try::Open),
        (secret.join("logs/container.log"), Try::Open),
        (run.join("berth.sock"), Try::Connect),
    ]);
    for (p, t, got) in probe(&tries) {
        if got != Err(libc::EACCES) {
            problems.push(format!(
                "uid 65534 {t:?} {}: {}",
                p.display(),
                match got {
                    Ok(()) => "succeeded".to_string(),
                    Err(e) => std::io::Error::from_raw_os_error(e).to_string(),
                }
            ));
        }
    }
    if !problems.is_empty() {
        // Modes first, then what the outsider reached: a sample of each.
        let (reached, modes): (Vec<&String>, Vec<&String>) =
            problems.iter().partition(|p| p.starts_with("uid 65534"));
        let sample = |v: &[&String]| {
            v.iter()
                .take(20)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{} modes wrong, {} of {} outsider tries not refused with EACCES:\n{}\n{}",
            modes.len(),
            reached.len(),
            tries.len(),
            sample(&modes),
            sample(&reached)
        );
    }
}

/// The API socket is bound inside a dir only root enters, so no local user can connect to it,
/// not even in the instant between `bind` (whose mode follows the umask: 0777 under umask 0)
/// and the chmod after it. The run dir exists beforehand, world-readable, as an older berth or
/// a careless admin left it; the agent runs with umask 0; a uid-65534 process tries to connect
/// all along.
#[test]
fn api_socket_is_never_reachable_by_others() {
    if !berth_e2e::require_root() {
        return;
    }
    let opts = AgentOptions {
        umask: Some(0),
        ..AgentOptions::default()
    };
    let mut agent = TestAgent::new("so", &opts);
    std::fs::set_permissions(
        agent.root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&agent.run_dir)
        .unwrap();
    std::fs::set_permissions(
        &agent.run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sock = agent.run_dir.join("berth.sock");
    let racer = berth_e2e::outsider::ConnectRacer::start(&sock);
    agent.start(&opts);
    let connected = racer.stop();
    assert!(
        !connected,
        "uid 65534 connected to the API socket while the agent started"
    );

    let dir = std::fs::metadata(&agent.run_dir).unwrap();
    assert_eq!(
        (dir.mode() & 0o7777, dir.uid()),
        (0o700, 0),
        "the socket's dir is not root's alone"
    );
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    let got = probe(&[(sock.clone(), Try::Connect)]);
    assert_eq!(
        got[0].2,
        Err(libc::EACCES),
        "uid 65534 connect: {:?}",
        got[0].2
    );
}

/// The API serves root alone, judged on the peer's credentials: a process that is not root
/// but passes every mode check (CAP_DAC_OVERRIDE, as backup and monitoring agents have) gets
/// a 403 and nothing of the agent's, while root's CLI is served as before.
#[test]
fn api_answers_root_only_even_past_the_sockets_mode() {
    if !berth_e2e::require_root() {
        return;
    }
    let opts = AgentOptions::default();
    let mut agent = TestAgent::new("sp", &opts);
    agent.start(&opts);
    let sock = agent.run_dir.join("berth.sock");
    for path in ["/v1/ping", "/v1/containers", "/metrics"] {
        let req = format!("GET {path} HTTP/1.1\r\nhost: berth\r\nconnection: close\r\n\r\n");
        let reply =
            berth_e2e::outsider::ask_past_modes(&sock, req.as_bytes()).unwrap_or_else(|errno| {
                panic!("the probe could not connect (errno {errno}): the test proves nothing")
            });
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("HTTP/1.1 403"),
            "a non-root peer asking {path} got: {text:?}"
        );
        assert!(
            !text.contains("berth_") && !text.contains("\r\n\r\nok"),
            "a non-root peer read the agent's answer to {path}: {text:?}"
        );
    }
    let out = agent.berth(&["status", "--json"]);
    assert!(out.status.success(), "root's CLI: {out:?}");
    assert!(
        agent.log().contains("its peer is not root"),
        "the refusal is not logged:\n{}",
        agent.log()
    );
    agent.teardown().unwrap();
}
