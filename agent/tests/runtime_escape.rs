//! The escape suite: a static probe run as a default container's init tries the classic ways
//! out. Every attempt must fail; targets this kernel lacks are reported "absent here", not
//! counted as passes; and `privileged = true` must flip every line that exists (except those
//! that namespaces, not privileges, stop), so the suite itself can fail.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_agent::runtime::{CgroupMode, ContainerConfig, MountSource, MountSpec, NetNs};
use support::Env;

/// Builds the probe with `gcc -static` into its own layer dir.
fn probe_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("layer-probe");
    std::fs::create_dir_all(&layer).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/escape.c");
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(layer.join("probe"))
        .arg(&src)
        .output()
        .expect("gcc (build-essential) is needed for the escape probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    layer
}

/// A block device of this host, by path and `major:minor`: an unbound loop device when there
/// is one, so that even a privileged open touches no data.
fn host_block_device() -> (PathBuf, String) {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| (!n.starts_with("loop"), n.clone()));
    for name in names {
        let dev = Path::new("/dev").join(&name);
        if !dev.exists() {
            continue;
        }
        let e = Path::new("/sys/class/block").join(&name);
        let mm = std::fs::read_to_string(e.join("dev")).unwrap();
        return (dev, mm.trim().to_string());
    }
    panic!("no block device on this host to probe");
}

fn run_probe(
    env: &Env,
    name: &str,
    tweak: impl FnOnce(&mut ContainerConfig),
) -> BTreeMap<String, i32> {
    let mut layers = env.layers.clone();
    layers.push(probe_layer(env.dir.path()));
    let (dev, mm) = host_block_device();
    let me = std::process::id().to_string();
    let mut c = ContainerConfig::minimal(
        name,
        berth_agent::names::IncarnationId::random(),
        layers,
        &["/probe", &mm, &me],
    );
    c.netns = NetNs::None;
    c.mounts.push(MountSpec {
        source: MountSource::Bind(dev),
        target: "/hostdev".into(),
        read_only: true,
    });
    tweak(&mut c);
    env.runtime.create(&c).unwrap();
    let exit = env.wait_exit(&c);
    assert_eq!(exit.code, Some(0), "probe failed: {:?}", env.stderr(&c));
    env.stdout(&c)
        .iter()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Attempts whose target this kernel lacks, so that "blocked" would prove nothing.
fn absent_here(line: &str) -> bool {
    let missing = |p: &str| !Path::new(p).exists();
    match line {
        "kcore" => missing("/proc/kcore"),
        "sysrq" => missing("/proc/sysrq-trigger"),
        "init_module" => missing("/proc/modules"),
        "kexec_load" => missing("/sys/kernel/kexec_loaded"),
        "unlisted_syscall" => !kernel_at_least(6, 10),
        _ => false,
    }
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = nix::sys::utsname::uname().unwrap();
    let mut parts = release
        .release()
        .to_str()
        .unwrap_or("0.0")
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Whether an attempt was stopped, from the probe's result code.
fn blocked(line: &str, rc: i32) -> bool {
    match line {
        // With the privilege, these fail for other reasons (EINVAL in a pid namespace, a bogus
        // handle, no kexec image): only EPERM means the privilege check stopped them.
        "reboot" | "open_by_handle_at" | "init_module" | "kexec_load" => rc == libc::EPERM,
        // Opening the node is the escape; an empty read (1000) still means it opened.
        "mknod_blockdev" | "host_dev_bind" => rc != 0 && rc != 1000,
        _ => rc != 0,
    }
}

/// Lines that namespaces stop whatever the privileges.
const ISOLATION_ONLY: &[&str] = &["ptrace_host"];
/// Positive controls: these must work in a default container (ping without CAP_NET_RAW).
const MUST_WORK: &[&str] = &["icmp_echo"];

const ATTEMPTS: &[&str] = &[
    "mount",
    "unshare_user",
    "kcore",
    "sysrq",
    "proc_sys_write",
    "mknod_blockdev",
    "host_dev_bind",
    "init_module",
    "kexec_load",
    "reboot",
    "sethostname",
    "ptrace_host",
    "ptrace_child",
    "keyctl",
    "bpf",
    "open_by_handle_at",
    "clone_newns",
    "unlisted_syscall",
];

fn report(title: &str, results: &BTreeMap<String, i32>) -> Vec<String> {
    let mut escaped = Vec::new();
    eprintln!("== {title}");
    for a in ATTEMPTS {
        let rc = *results
            .get(*a)
            .unwrap_or_else(|| panic!("probe did not report {a}"));
        let verdict = if absent_here(a) {
            "absent here"
        } else if blocked(a, rc) {
            "blocked"
        } else {
            escaped.push(a.to_string());
            "ESCAPED"
        };
        eprintln!("{a:20} {verdict:12} (rc {rc})");
    }
    escaped
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn default_container_blocks_every_attempt_and_privileged_flips_them() {
    let Some(env) = Env::new("esc") else {
        return;
    };
    let host_name = hostname();
    let default = run_probe(&env, "default", |_| {});
    let escaped = report("default container", &default);
    assert!(
        escaped.is_empty(),
        "escapes from a default container: {escaped:?}"
    );
    for ok in MUST_WORK {
        assert_eq!(default[*ok], 0, "{ok} should work in a default container");
    }

    let privileged = run_probe(&env, "privileged", |c| c.security.privileged = true);
    let escaped = report("privileged container", &privileged);
    let not_flipped: Vec<&&str> = ATTEMPTS
        .iter()
        .filter(|a| !absent_here(a) && !ISOLATION_ONLY.contains(a))
        .filter(|a| !escaped.iter().any(|e| e == **a))
        .collect();
    assert!(
        not_flipped.is_empty(),
        "privileged should lift these, so the suite could see an escape: {not_flipped:?}"
    );
    for a in ISOLATION_ONLY {
        assert!(
            blocked(a, privileged[*a]),
            "{a} got through even privileged"
        );
    }
    assert_eq!(hostname(), host_name, "the host's hostname changed");
}

#[test]
fn v2_device_filter_blocks_nodes_even_with_mknod() {
    let root = PathBuf::from("/sys/fs/cgroup/unified");
    assert!(root.join("cgroup.procs").exists(), "no cgroup2 mount here");
    let Some(env) = Env::with_cgroups("escv2", CgroupMode::V2 { root }) else {
        return;
    };
    // With CAP_MKNOD the node can be made: only the BPF device program stops the read.
    let r = run_probe(&env, "mknod", |c| {
        c.security.cap_add = vec!["CAP_MKNOD".into()]
    });
    assert_eq!(r["mknod_blockdev"], libc::EPERM, "{r:?}");
    assert_eq!(r["host_dev_bind"], libc::EPERM, "{r:?}");
    // And privileged (no program attached) reads both.
    let p = run_probe(&env, "mknodp", |c| c.security.privileged = true);
    assert!(!blocked("mknod_blockdev", p["mknod_blockdev"]), "{p:?}");
    assert!(!blocked("host_dev_bind", p["host_dev_bind"]), "{p:?}");
}
