//! What a stock host showed (issue 12), on this machine for real: the OOM score a container
//! starts with, its own cgroup at /sys/fs/cgroup (v1 and cgroup2), overlayfs without
//! `lowerdir+` (kernels before 6.8) with more layers than an option string holds, and the last
//! run's exit kept with the bundle across a reboot.

mod support;

use berth_agent::runtime::BundleDir;
use std::path::PathBuf;
use std::time::Duration;

use berth_agent::runtime::rootfs::LowerDirs;
use berth_agent::runtime::{CgroupMode, Runtime, RuntimeConfig};
use support::{Env, wait_for};

fn set_own_oom_score(v: i32) {
    std::fs::write("/proc/self/oom_score_adj", v.to_string()).unwrap();
}

/// The agent runs at -500 (systemd/berth.service); what it starts must not inherit its score.
/// Here the parent's score is raised instead (lowering needs CAP_SYS_RESOURCE, which this
/// machine's root lacks; the VM suite checks the -500 case): the container still starts at 0.
#[test]
fn a_container_starts_at_oom_score_zero_whatever_its_parents_score() {
    let Some(env) = Env::new("oomsc") else {
        return;
    };
    set_own_oom_score(500);
    let c = env.config("sc", "cat /proc/self/oom_score_adj; exec sleep 1000");
    env.runtime.create(&c).unwrap();
    env.wait_line(&c, "0");
    let pid = env.runtime.inspect(&c.name, &c.id).unwrap().unwrap().pid;
    let score = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", pid.unwrap())).unwrap();
    assert_eq!(score.trim(), "0");
}

fn lines_of(env: &Env, c: &berth_agent::runtime::ContainerConfig) -> Vec<String> {
    env.wait_line(c, "end");
    env.stdout(c)
}

#[test]
fn v1_the_containers_own_cgroups_are_mounted_read_only() {
    let Some(env) = Env::new("cgfs1") else {
        return;
    };
    let mut c = env.config(
        "cg",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
         cat /sys/fs/cgroup/pids/pids.max; \
         cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; \
         grep -c . /sys/fs/cgroup/freezer/cgroup.procs; \
         echo subdirs $(find /sys/fs/cgroup/memory/ -mindepth 1 -type d | wc -l); \
         grep -E ':(memory|pids):' /proc/self/cgroup; \
         mkdir /sys/fs/cgroup/memory/x 2>/dev/null && echo writable; \
         touch /sys/fs/cgroup/x 2>/dev/null && echo tmpfs-writable; \
         echo end",
    );
    c.resources.memory = Some(48 << 20);
    c.resources.pids = Some(30);
    c.resources.millicpus = Some(250);
    env.runtime.create(&c).unwrap();
    let out = lines_of(&env, &c);
    assert_eq!(out[0], (48u64 << 20).to_string(), "{out:?}");
    assert_eq!(out[1], "30", "{out:?}");
    assert_eq!(out[2], "25000", "{out:?}");
    // Only the container's own processes: the shell and grep.
    assert_eq!(out[3], "2", "{out:?}");
    assert_eq!(out[4], "subdirs 0", "{out:?}");
    // Inside its cgroup namespace, the container's cgroup is the root.
    assert!(out.iter().any(|l| l.ends_with(":memory:/")), "{out:?}");
    assert!(!out.iter().any(|l| l.contains("writable")), "{out:?}");
}

#[test]
fn cgroup2_the_containers_own_cgroup_is_mounted_read_only() {
    let root = PathBuf::from("/sys/fs/cgroup/unified");
    assert!(root.join("cgroup.procs").exists(), "no cgroup2 mount here");
    let Some(env) = Env::with_cgroups("cgfs2", CgroupMode::V2 { root }) else {
        return;
    };
    let c = env.config(
        "cg",
        "grep -c cgroup2 /proc/self/mounts; \
         grep '^0::' /proc/self/cgroup; \
         grep -c . /sys/fs/cgroup/cgroup.procs; \
         echo subdirs $(find /sys/fs/cgroup/ -mindepth 1 -type d | wc -l); \
         mkdir /sys/fs/cgroup/x 2>/dev/null && echo writable; \
         echo end",
    );
    env.runtime.create(&c).unwrap();
    let out = lines_of(&env, &c);
    assert_eq!(out[0], "1", "{out:?}");
    assert_eq!(out[1], "0::/", "{out:?}");
    assert_eq!(out[2], "2", "{out:?}");
    assert_eq!(out[3], "subdirs 0", "{out:?}");
    assert!(!out.iter().any(|l| l == "writable"), "{out:?}");
}

/// A runtime that passes the layers as kernels before 6.8 must (one option string).
fn option_string_runtime(env: &Env) -> Runtime {
    Runtime::new(RuntimeConfig {
        lower_dirs: LowerDirs::OptionString,
        ..env.runtime.config().clone()
    })
}

#[test]
fn option_string_overlay_with_few_layers() {
    let Some(env) = Env::new("ovl1") else {
        return;
    };
    let rt = option_string_runtime(&env);
    let c = env.config("few", "cat /etc/layer; echo end");
    rt.create(&c).unwrap();
    assert_eq!(lines_of(&env, &c)[0], "top");
}

/// 150 layers with long paths: the absolute option string is far past a page, so each layer
/// is named by a short fd path; the upper layers still win.
#[test]
fn option_string_overlay_with_more_layers_than_a_page_holds() {
    let Some(env) = Env::new("ovl150") else {
        return;
    };
    let rt = option_string_runtime(&env);
    let mut c = env.config("many", "cat /which; ls / | grep -c '^f[0-9]'; echo end");
    let base = env.dir.path().join(format!("layers-{}", "x".repeat(60)));
    for i in 0..150 {
        let l = base.join(format!("layer-with-a-long-name-{i:03}-{}", "y".repeat(20)));
        std::fs::create_dir_all(&l).unwrap();
        std::fs::write(l.join(format!("f{i}")), "").unwrap();
        std::fs::write(l.join("which"), format!("{i}\n")).unwrap();
        c.layers.push(l);
    }
    let joined: usize = c.layers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(joined > 4096, "the test must exceed a page ({joined})");
    rt.create(&c).unwrap();
    let out = lines_of(&env, &c);
    assert_eq!(out[0], "149", "{out:?}");
    assert_eq!(out[1], "150", "{out:?}");
}

/// A run that ends on its own leaves its exit with the bundle (which a reboot keeps); one that
/// berth stops does not count as completed, and a new start clears both.
#[test]
fn the_last_run_is_kept_with_the_bundle_unless_berth_stopped_it() {
    let Some(env) = Env::new("done") else {
        return;
    };
    let c = env.config("job", "exit 7");
    env.runtime.create(&c).unwrap();
    env.wait_exit(&c);
    let done = env.runtime.completed_run(&c.name, &c.id).expect("kept");
    assert_eq!(done.code, Some(7));

    let s = env.config("svc", "exec sleep 1000");
    env.runtime.create(&s).unwrap();
    env.runtime
        .stop(&s.name, &s.id, None, Duration::from_secs(5))
        .unwrap();
    assert_eq!(env.runtime.completed_run(&s.name, &s.id), None);
    // Started again (a restart keeps the upper dir): nothing of the last run is left.
    env.runtime.remove(&s.name, &s.id, BundleDir::Keep).unwrap();
    env.runtime.create(&s).unwrap();
    wait_for(Duration::from_secs(10), "running", || {
        env.runtime.inspect(&s.name, &s.id).unwrap().is_some()
    });
    assert_eq!(env.runtime.completed_run(&s.name, &s.id), None);
    let bundle = env.runtime.bundle(&s.name, &s.id);
    assert!(!bundle.stop_requested().exists());
    assert!(!bundle.last_exit().exists());
}
