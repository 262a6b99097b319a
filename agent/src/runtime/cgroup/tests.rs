//! Driver tests: v2 resource files against a fixture tree, v1 and v2 freeze/kill for real.

use std::process::{Child, Command};

use super::*;

fn fixture_v2() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    std::fs::write(d.path().join("cgroup.subtree_control"), "").unwrap();
    d
}

#[test]
fn v2_writes_resource_files() {
    let root = fixture_v2();
    let mode = CgroupMode::V2 {
        root: root.path().to_path_buf(),
    };
    let cg = Cgroup::new(&mode, "inst/web-0123456789ab");
    cg.create().unwrap();
    let leaf = root.path().join("inst/web-0123456789ab");
    assert!(leaf.is_dir());
    let enabled = std::fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap();
    assert_eq!(enabled, "+memory +cpu +pids");
    for f in ["memory.max", "cpu.max", "pids.max", "memory.swap.max"] {
        std::fs::write(leaf.join(f), "").unwrap();
    }
    let r = Resources {
        memory: Some(64 << 20),
        millicpus: Some(1500),
        pids: Some(100),
    };
    cg.apply(&r).unwrap();
    let read = |f: &str| std::fs::read_to_string(leaf.join(f)).unwrap();
    assert_eq!(read("memory.max"), (64u64 << 20).to_string());
    assert_eq!(read("memory.swap.max"), "0");
    assert_eq!(read("cpu.max"), "150000 100000");
    assert_eq!(read("pids.max"), "100");
    cg.apply(&Resources::default()).unwrap();
    assert_eq!(read("memory.max"), "max");
    assert_eq!(read("cpu.max"), "max 100000");
    assert_eq!(read("pids.max"), "max");
    std::fs::write(
        leaf.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
    )
    .unwrap();
    assert_eq!(cg.oom_kills(), 2);
}

#[test]
fn v2_missing_controller_is_an_error_naming_the_file() {
    let root = fixture_v2();
    let mode = CgroupMode::V2 {
        root: root.path().to_path_buf(),
    };
    let cg = Cgroup::new(&mode, "inst/x-0123456789ab");
    cg.create().unwrap();
    let e = cg
        .apply(&Resources {
            memory: Some(1 << 20),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory.max"), "{e}");
}

struct Sleeper(Child);
impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a test cgroup and its parent even when the test fails.
struct CgGuard(Cgroup, Cgroup);
impl Drop for CgGuard {
    fn drop(&mut self) {
        let _ = self.0.kill_all(Duration::from_secs(5));
        let _ = self.0.remove(Duration::from_secs(5));
        let _ = self.1.remove(Duration::from_secs(5));
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{:x}", std::process::id() & 0xffffff)
}

/// Puts a shell into `cg` that then forks two sleepers; checks freeze, thaw, kill of all.
fn exercise(cg: &Cgroup) {
    use std::io::Write;
    let mut child = Sleeper(
        Command::new("/bin/sh")
            .args(["-c", "read x; sleep 60 & sleep 60 & wait"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    cg.add_pid(child.0.id() as i32).unwrap();
    // Fork only once the shell is inside, so the sleepers are born there.
    child.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    wait_until(Duration::from_secs(5), "children", || cg.pids().len() == 3).unwrap();
    cg.freeze(Duration::from_secs(5)).unwrap();
    assert!(cg.is_frozen());
    cg.thaw(Duration::from_secs(5)).unwrap();
    assert!(!cg.is_frozen());
    cg.kill_all(Duration::from_secs(5)).unwrap();
    assert!(cg.pids().is_empty());
    drop(child);
    cg.remove(Duration::from_secs(5)).unwrap();
    assert!(!cg.exists());
}

#[test]
fn v1_freeze_kill_remove_for_real() {
    let mode = CgroupMode::V1 {
        root: "/sys/fs/cgroup".into(),
    };
    if !Path::new("/sys/fs/cgroup/freezer").is_dir() {
        panic!("this host has no v1 freezer");
    }
    let parent = unique("t1cg");
    let cg = Cgroup::new(&mode, &format!("{parent}/c-0123456789ab"));
    let _guard = CgGuard(cg.clone(), Cgroup::new(&mode, &parent));
    cg.create().unwrap();
    cg.apply(&Resources {
        memory: Some(32 << 20),
        millicpus: Some(500),
        pids: Some(50),
    })
    .unwrap();
    let read = |c: &str, f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{c}/{}/{f}", cg.rel()))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("pids", "pids.max"), "50");
    exercise(&cg);
}

/// A process its creator left half joined (in the memory hierarchy only, as when the agent is
/// killed between two `cgroup.procs` writes) is still found, killed, and the cgroup removed.
#[test]
fn v1_kill_all_finds_a_half_joined_process() {
    let mode = CgroupMode::V1 {
        root: "/sys/fs/cgroup".into(),
    };
    let parent = unique("t1half");
    let cg = Cgroup::new(&mode, &format!("{parent}/c-0123456789ab"));
    let _guard = CgGuard(cg.clone(), Cgroup::new(&mode, &parent));
    cg.create().unwrap();
    let child = Sleeper(Command::new("/bin/sleep").arg("60").spawn().unwrap());
    let memory = PathBuf::from("/sys/fs/cgroup/memory").join(cg.rel());
    std::fs::write(memory.join("cgroup.procs"), child.0.id().to_string()).unwrap();
    assert_eq!(cg.pids(), vec![child.0.id() as i32]);
    cg.kill_all(Duration::from_secs(5)).unwrap();
    cg.remove(Duration::from_secs(5)).unwrap();
    assert!(!cg.exists());
}

#[test]
fn v2_freeze_kill_remove_for_real_in_unified() {
    let root = PathBuf::from("/sys/fs/cgroup/unified");
    if !root.join("cgroup.procs").exists() {
        panic!("this host has no cgroup2 mount at {}", root.display());
    }
    let mode = CgroupMode::V2 { root };
    let parent = unique("t2cg");
    let cg = Cgroup::new(&mode, &format!("{parent}/c-0123456789ab"));
    let _guard = CgGuard(cg.clone(), Cgroup::new(&mode, &parent));
    cg.create().unwrap();
    exercise(&cg);
}

/// Under systemd berth writes only inside its scope: controllers are enabled in the scope's
/// subtree, never in the slice's or the root's (systemd's, by the delegation contract).
#[test]
fn systemd_mode_enables_controllers_from_the_scope_down_only() {
    let root = fixture_v2();
    let scope = root
        .path()
        .join("berth.slice/berth-i_web-0123456789ab.scope");
    std::fs::create_dir_all(&scope).unwrap();
    for d in [root.path().join("berth.slice"), scope.clone()] {
        std::fs::write(d.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        std::fs::write(d.join("cgroup.subtree_control"), "").unwrap();
    }
    let mode = CgroupMode::Systemd {
        root: root.path().to_path_buf(),
        slice: "berth.slice".into(),
    };
    let cg = Cgroup::new(
        &mode,
        "berth.slice/berth-i_web-0123456789ab.scope/container",
    );
    cg.create().unwrap();
    assert!(scope.join("container").is_dir());
    let read = |p: &Path| std::fs::read_to_string(p.join("cgroup.subtree_control")).unwrap();
    assert_eq!(read(&scope), "+memory +cpu +pids");
    assert_eq!(read(&root.path().join("berth.slice")), "");
    assert_eq!(read(root.path()), "");
    assert_eq!(cg.dirs(), vec![scope.join("container")]);
}

#[test]
fn the_own_cgroup_is_found_in_the_hierarchy_the_mode_uses() {
    let hybrid = "12:pids:/user.slice/a\n11:cpu,cpuacct:/x\n0::/unified/b\n";
    let v1 = CgroupMode::V1 {
        root: "/sys/fs/cgroup".into(),
    };
    let v2 = CgroupMode::V2 {
        root: "/sys/fs/cgroup".into(),
    };
    assert_eq!(
        own_cgroup_dir(&v1, hybrid),
        Some(PathBuf::from("/sys/fs/cgroup/pids/user.slice/a"))
    );
    assert_eq!(
        own_cgroup_dir(&v2, hybrid),
        Some(PathBuf::from("/sys/fs/cgroup/unified/b"))
    );
    assert_eq!(
        own_cgroup_dir(&v2, "0::/\n"),
        Some(PathBuf::from("/sys/fs/cgroup/"))
    );
    assert_eq!(own_cgroup_dir(&v1, "0::/\n"), None);
}

/// The poke takes the migration lock and moves nothing: the process stays where it was.
#[test]
fn beginning_the_migration_grace_moves_nothing() {
    let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let starter = GraceStarter::spawn(&CgroupMode::detect()).expect("this host's cgroup");
    for _ in 0..3 {
        starter.poke();
    }
    drop(starter);
    assert_eq!(
        std::fs::read_to_string("/proc/self/cgroup").unwrap(),
        before
    );
}
