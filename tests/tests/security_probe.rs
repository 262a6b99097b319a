//! What a container can do, berth against podman: a static probe (tests/probe/probe.c) runs as
//! the init of a default berth container (through the agent), of a podman container (runc,
//! default profile) and of a privileged berth container, and records capability sets, seccomp
//! mode, no_new_privs, device nodes, masked and read-only paths and the classic escape
//! attempts. berth's default must be at least as tight as podman's on every line; lines whose
//! target this kernel lacks are reported as absent, not as passes; and the privileged container
//! must show the opposite on the lines that exist, so the probe can fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_e2e::agent::{AgentOptions, TestAgent};
use berth_e2e::image::{Compression, Entry, ImageBuilder};
use berth_e2e::podman::PodmanImage;
use berth_e2e::registry::{TestRegistry, unique_repo};

/// What one run of the probe said.
#[derive(Debug, Default)]
struct Probe {
    values: BTreeMap<String, String>,
    devices: BTreeSet<String>,
    tries: BTreeMap<String, i32>,
}

fn parse(out: &str) -> Probe {
    let mut p = Probe::default();
    for line in out.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("value"), Some(k), Some(v)) => {
                p.values.insert(k.into(), v.into());
            }
            (Some("dev"), Some(d), None) => {
                p.devices.insert(d.into());
            }
            (Some("try"), Some(k), Some(rc)) => {
                p.tries.insert(k.into(), rc.parse().unwrap());
            }
            _ => {}
        }
    }
    p
}

fn build_probe(dir: &Path) -> Vec<u8> {
    let bin = dir.join("probe");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("probe/probe.c");
    let out = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc is needed for the security probe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(bin).unwrap()
}

/// The probe's root filesystem: the binary and the dirs it expects.
fn rootfs(probe: &[u8]) -> Vec<Entry> {
    let mut v = vec![
        Entry::dir("dev"),
        Entry::dir("proc"),
        Entry::dir("sys"),
        Entry::dir("etc"),
        Entry::Dir {
            path: "tmp".into(),
            mode: 0o1777,
            uid: 0,
            gid: 0,
        },
        Entry::File {
            path: "probe".into(),
            data: probe.to_vec(),
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        },
    ];
    v.push(Entry::file("etc/passwd", b"root:x:0:0:root:/:/probe\n"));
    v.push(Entry::file("etc/group", b"root:x:0:\n"));
    v
}

/// `major:minor` of a host block device, an unbound loop device when there is one, so that
/// even a privileged open reads no data.
fn host_block_device() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| (!n.starts_with("loop"), n.clone()));
    let name = names.first().expect("a block device");
    std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
        .unwrap()
        .trim()
        .to_string()
}

/// Runs the probe in a berth container with `extra` spec lines; returns its output.
fn run_berth(agent: &TestAgent, name: &str, image: &str, extra: &str) -> String {
    agent.write_spec(
        name,
        &format!("image = \"{image}\"\nrestart = \"never\"\n{extra}"),
    );
    let st = agent.wait_status(name, "exited", Duration::from_secs(60), |s| {
        s["exit_code"].is_number()
    });
    let out = agent.berth(&["logs", name]);
    assert_eq!(
        st["exit_code"],
        0,
        "the probe failed: {st}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Attempts whose target this kernel (or this session) lacks, so that "blocked" would prove
/// nothing. `privileged_rc` is what the privileged run got: ENOSYS there, with no seccomp
/// filter, means the kernel has no such call.
fn absent_here(line: &str, privileged_rc: i32) -> bool {
    let missing = |p: &str| !Path::new(p).exists();
    let empty_dir = |p: &str| std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none());
    if privileged_rc == libc::ENOSYS {
        return true;
    }
    match line {
        "list_proc_acpi" => empty_dir("/proc/acpi"),
        "mknod_mem" => missing("/dev/mem"),
        // This session's own bounding set may lack it: then no container can have it.
        "rlimit_raise" | "oom_score_adj_lower" => !own_bounding_has(24), // CAP_SYS_RESOURCE
        "read_kcore" => missing("/proc/kcore"),
        "read_timer_list" => missing("/proc/timer_list"),
        "read_sched_debug" => missing("/proc/sched_debug"),
        "read_latency_stats" => missing("/proc/latency_stats"),
        "list_proc_scsi" => missing("/proc/scsi"),
        "list_sys_firmware" => missing("/sys/firmware"),
        "write_sysrq" => missing("/proc/sysrq-trigger"),
        "write_proc_irq" => missing("/proc/irq/default_smp_affinity"),
        "write_uevent_helper" => missing("/sys/kernel/uevent_helper"),
        "open_dev_kmsg" => missing("/dev/kmsg"),
        "init_module" | "finit_module" | "delete_module" => missing("/proc/modules"),
        "kexec_load" => missing("/sys/kernel/kexec_loaded"),
        "io_uring_setup" => {
            // 2: io_uring is off for everyone here.
            std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .is_ok_and(|v| v.trim() == "2")
        }
        _ => false,
    }
}

fn own_bounding_has(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    bnd & (1 << cap) != 0
}

/// Whether an attempt was stopped, from the probe's result code.
fn blocked(line: &str, rc: i32) -> bool {
    match line {
        // With the privilege these fail for other reasons (EINVAL in a pid namespace, a bogus
        // handle or module, a file that does not exist): only EPERM means a check stopped them.
        "reboot_cad_off" | "init_module" | "finit_module" | "delete_module" | "kexec_load"
        | "swapon" | "acct" | "open_by_handle_at" => rc == libc::EPERM,
        // Opening is what counts; reading nothing (1000) still means it opened.
        "mknod_mem" | "mknod_blockdev" | "open_dev_kmsg" => rc != 0 && rc != 1000,
        _ => rc != 0,
    }
}

/// Lines the privileged run is not expected to flip, and why.
const NOT_FLIPPED_BY_PRIVILEGED: &[(&str, &str)] = &[
    (
        "write_etc_hosts",
        "the /etc files are the agent's host files, bound read-only for every container",
    ),
    (
        "write_etc_resolv_conf",
        "the /etc files are the agent's host files, bound read-only for every container",
    ),
    (
        "open_dev_kmsg",
        "berth's privileged containers may use every device (device cgroup) but get no host \
     device nodes in /dev, unlike podman's",
    ),
];

fn caps(p: &Probe, k: &str) -> u64 {
    u64::from_str_radix(&p.values[k], 16).unwrap()
}

#[test]
fn berth_default_is_at_least_as_tight_as_podman() {
    if !berth_e2e::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let probe = build_probe(dir.path());
    let entries = rootfs(&probe);
    let mm = host_block_device();

    let reg = TestRegistry::plain();
    let repo = unique_repo("probe");
    let img = ImageBuilder::new()
        .settings(berth_e2e::image::Settings {
            cmd: Some(vec!["/probe".into(), mm.clone()]),
            ..Default::default()
        })
        .layer(&entries, Compression::Gzip)
        .build();
    reg.push_image(&repo, "1", &img);
    let image = format!("{}/{repo}:1", reg.addr);

    let opts = AgentOptions::default();
    let mut agent = TestAgent::new("sp", &opts);
    agent.start(&opts);
    let berth = parse(&run_berth(&agent, "probe", &image, ""));
    let privileged = parse(&run_berth(
        &agent,
        "probepriv",
        &image,
        "[security]\nprivileged = true\n",
    ));
    let podman_image = PodmanImage::import(dir.path(), &entries);
    let podman = parse(&podman_image.run(&[], &["/probe", &mm]));
    drop(podman_image);

    let mut failures = Vec::new();
    let mut report = vec![format!(
        "{:<26} {:>18} {:>18} {:>18}  verdict",
        "line", "berth", "podman", "privileged"
    )];

    // Capability sets: berth's a subset of podman's; privileged holds more.
    for k in ["cap_inh", "cap_prm", "cap_eff", "cap_bnd", "cap_amb"] {
        let (b, p, x) = (caps(&berth, k), caps(&podman, k), caps(&privileged, k));
        let mut verdict = if b & !p == 0 {
            "ok".to_string()
        } else {
            failures.push(format!("{k}: berth {b:x} has bits podman's {p:x} lacks"));
            format!("LOOSER: {:x}", b & !p)
        };
        if matches!(k, "cap_prm" | "cap_eff" | "cap_bnd") && (x & !b == 0 || x == 0) {
            failures.push(format!(
                "{k}: privileged {x:x} is not more than berth's {b:x}"
            ));
            verdict += "; privileged does not differ";
        }
        report.push(format!("{k:<26} {b:>18x} {p:>18x} {x:>18x}  {verdict}"));
    }
    // seccomp (2 = filter) and no_new_privs: at least podman's.
    for k in ["seccomp", "no_new_privs"] {
        let num = |p: &Probe| p.values[k].parse::<u32>().unwrap();
        let (b, p, x) = (num(&berth), num(&podman), num(&privileged));
        let mut verdict = if b >= p {
            "ok".to_string()
        } else {
            failures.push(format!("{k}: berth {b} < podman {p}"));
            "LOOSER".to_string()
        };
        // no_new_privs is its own spec key (`no_new_privileges`), not part of `privileged`.
        if k == "seccomp" && x != 0 {
            failures.push(format!("seccomp: privileged still filtered ({x})"));
            verdict += "; privileged does not differ";
        }
        report.push(format!("{k:<26} {b:>18} {p:>18} {x:>18}  {verdict}"));
    }
    // Facts of the start that `privileged` does not change, so nothing to flip:
    // - oom_score_adj: the agent's own -500 must not reach containers (a container must not
    //   be spared by the host's OOM killer before host services): at least podman's.
    // - inherited_fds: no fd of the agent's or the shim's (host-port sockets, log, netns)
    //   reaches the payload: at most podman's.
    // - dev_null: the node masked paths are bound from is the real null device (c 1:3).
    let value = |p: &Probe, k: &str| p.values.get(k).cloned().unwrap_or_default();
    // A line missing from either run fails: its number is None.
    let num = |p: &Probe, k: &str| value(p, k).parse::<i64>().ok();
    let pair = |k: &str| num(&berth, k).zip(num(&podman, k));
    for (k, ok) in [
        (
            "oom_score_adj",
            pair("oom_score_adj").is_some_and(|(b, p)| b >= p),
        ),
        (
            "inherited_fds",
            pair("inherited_fds").is_some_and(|(b, p)| b <= p),
        ),
        ("dev_null", value(&berth, "dev_null") == "1:3"),
    ] {
        if !ok {
            failures.push(format!(
                "{k}: berth {} against podman {}",
                value(&berth, k),
                value(&podman, k)
            ));
        }
        report.push(format!(
            "{k:<26} {:>18} {:>18} {:>18}  {}",
            value(&berth, k),
            value(&podman, k),
            value(&privileged, k),
            if ok { "ok" } else { "LOOSER" }
        ));
    }
    // Device nodes: berth's a subset of podman's; privileged sees more.
    let extra: Vec<_> = berth.devices.difference(&podman.devices).collect();
    report.push(format!(
        "{:<26} {:>18} {:>18} {:>18}  {}",
        "device nodes",
        berth.devices.len(),
        podman.devices.len(),
        privileged.devices.len(),
        if extra.is_empty() { "ok" } else { "LOOSER" }
    ));
    report.push(format!("  berth: {:?}", berth.devices));
    report.push(format!("  podman: {:?}", podman.devices));
    if !extra.is_empty() {
        failures.push(format!("devices berth has and podman does not: {extra:?}"));
    }
    // Not compared for privileged: see NOT_FLIPPED_BY_PRIVILEGED (device access itself is, by
    // the mknod lines).

    // Attempts.
    let mut absent = Vec::new();
    for (line, &b) in &berth.tries {
        let p = *podman
            .tries
            .get(line)
            .unwrap_or_else(|| panic!("podman's probe did not report {line}"));
        let x = *privileged
            .tries
            .get(line)
            .unwrap_or_else(|| panic!("the privileged probe did not report {line}"));
        let show = |rc: i32| {
            if rc == 0 {
                "allowed".to_string()
            } else if rc == 1000 {
                "empty".to_string()
            } else {
                format!("blocked({rc})")
            }
        };
        let verdict = if absent_here(line, x) {
            absent.push(line.clone());
            "absent here".to_string()
        } else {
            let mut v = if blocked(line, b) || !blocked(line, p) {
                "ok".to_string()
            } else {
                failures.push(format!(
                    "{line}: podman blocks it ({p}), berth does not ({b})"
                ));
                "LOOSER".to_string()
            };
            let exempt = NOT_FLIPPED_BY_PRIVILEGED.iter().find(|(l, _)| l == line);
            if let Some((_, why)) = exempt {
                v += &format!("; privileged not compared: {why}");
            } else if blocked(line, x) && blocked(line, b) {
                failures.push(format!(
                    "{line}: blocked even when privileged ({x}): the probe cannot tell"
                ));
                v += "; privileged does not differ";
            }
            v
        };
        report.push(format!(
            "{line:<26} {:>18} {:>18} {:>18}  {verdict}",
            show(b),
            show(p),
            show(x)
        ));
    }
    eprintln!("{}", report.join("\n"));
    eprintln!("absent here (this kernel or session lacks the target): {absent:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
