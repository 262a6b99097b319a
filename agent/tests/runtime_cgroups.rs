//! Resource limits and the freezer, for real: OOM reported as such, a fork bomb stopped by the
//! pids limit, pause and resume on v1 and on the v2 unified mount, live resource updates.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use berth_agent::runtime::{CgroupMode, ContainerConfig, Status};
use berth_spec::model::Resources;
use support::{Env, wait_for};

#[test]
fn memory_limit_triggers_oom_and_it_is_reported() {
    let Some(env) = Env::new("oom") else {
        return;
    };
    // Doubling a string reaches the limit in a few dozen steps.
    let mut c = env.config("oom", "awk 'BEGIN { s = \"x\"; while (1) s = s s }'");
    c.resources.memory = Some(16 << 20);
    env.runtime.create(&c).unwrap();
    let exit = env.wait_exit(&c);
    // awk is the init (the shell execs a lone command); the OOM killer's SIGKILL ended it.
    assert!(exit.oom, "{exit:?}");
    assert_eq!(
        (exit.code, exit.signal),
        (None, Some(libc::SIGKILL)),
        "{exit:?}"
    );
    let observed = env.runtime.inspect(&c.name, &c.id).unwrap().unwrap();
    assert_eq!(observed.status, Status::Exited);
    assert!(observed.exit.unwrap().oom);
}

#[test]
fn no_oom_reported_for_a_normal_exit() {
    let Some(env) = Env::new("nooom") else {
        return;
    };
    let mut c = env.config("ok", "exit 3");
    c.resources.memory = Some(64 << 20);
    env.runtime.create(&c).unwrap();
    let exit = env.wait_exit(&c);
    assert_eq!((exit.code, exit.oom), (Some(3), false));
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let Some(env) = Env::new("pids") else {
        return;
    };
    let mut c = env.config(
        "bomb",
        // The inner shell forks until the kernel refuses, then dies of its fork error.
        "sh -c 'i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done'; echo spawned; exec sleep 1000",
    );
    c.resources.pids = Some(20);
    env.runtime.create(&c).unwrap();
    wait_for(Duration::from_secs(20), "the loop to finish", || {
        env.stdout(&c).iter().any(|l| l == "spawned")
    });
    let cg = env.runtime.cgroup(&c.name, &c.id);
    let n = cg.pids().len();
    assert!(n <= 20, "{n} processes");
    assert!(
        env.stderr(&c).iter().any(|l| l.contains("fork")),
        "{:?}",
        env.stderr(&c)
    );
}

fn counter_config(env: &Env) -> ContainerConfig {
    env.config(
        "count",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; done",
    )
}

fn read_counter(env: &Env, c: &ContainerConfig) -> u64 {
    let p = env
        .runtime
        .bundle(&c.name, &c.id)
        .upper()
        .join("tmp/counter");
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn pause_freezes_and_resume_thaws(env: &Env) {
    let c = counter_config(env);
    env.runtime.create(&c).unwrap();
    wait_for(Duration::from_secs(10), "the counter to start", || {
        read_counter(env, &c) > 10
    });
    env.runtime.pause(&c.name, &c.id).unwrap();
    assert_eq!(env.status(&c), Status::Paused);
    let a = read_counter(env, &c);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read_counter(env, &c), a, "the counter moved while paused");
    env.runtime.resume(&c.name, &c.id).unwrap();
    assert_eq!(env.status(&c), Status::Running);
    wait_for(Duration::from_secs(10), "the counter to move again", || {
        read_counter(env, &c) > a + 10
    });
    // A stop of a paused container works too.
    env.runtime.pause(&c.name, &c.id).unwrap();
    let exit = env
        .runtime
        .stop(&c.name, &c.id, None, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert!(exit.signal.is_some(), "{exit:?}");
}

#[test]
fn pause_and_resume_v1() {
    if let Some(env) = Env::new("pz1") {
        pause_freezes_and_resume_thaws(&env);
    }
}

#[test]
fn pause_and_resume_v2_unified() {
    let root = PathBuf::from("/sys/fs/cgroup/unified");
    assert!(root.join("cgroup.procs").exists(), "no cgroup2 mount here");
    if let Some(env) = Env::with_cgroups("pz2", CgroupMode::V2 { root }) {
        pause_freezes_and_resume_thaws(&env);
    }
}

#[test]
fn resources_update_on_a_live_container() {
    let Some(env) = Env::new("upd") else {
        return;
    };
    let mut c = env.config("upd", "sleep 1000");
    c.resources.memory = Some(64 << 20);
    env.runtime.create(&c).unwrap();
    let cg = env.runtime.cgroup(&c.name, &c.id);
    let read = |ctrl: &str, f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{ctrl}/{}/{f}", cg.rel()))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    env.runtime
        .update_resources(
            &c.name,
            &c.id,
            &Resources {
                memory: Some(128 << 20),
                millicpus: Some(250),
                pids: Some(7),
            },
        )
        .unwrap();
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "25000");
    assert_eq!(read("pids", "pids.max"), "7");
}
