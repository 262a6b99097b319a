//! Shared helpers for the runtime's kernel tests: a busybox image, a private state dir and
//! instance per test, and a guard that stops and removes everything even when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_agent::layout::Layout;
use berth_agent::names::{IncarnationId, Names};
use berth_agent::runtime::logs::{Stream, files_oldest_first, join_partials, parse_record};
use berth_agent::runtime::rootfs::LowerDirs;
use berth_agent::runtime::{CgroupMode, ContainerConfig, Runtime, RuntimeConfig, Status};

/// Root (see [`berth_e2e::require_root`]: without it a test fails unless told to skip), and
/// this test process made a subreaper: orphaned shims are reparented to it, so the runtime can
/// reap them by pid.
pub fn require_root() -> bool {
    if !berth_e2e::require_root() {
        return false;
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    true
}

pub use berth_e2e::unique_instance;

/// A busybox-static image as two layers: busybox with its applet links, then /etc files.
pub fn busybox_layers(dir: &Path) -> Vec<PathBuf> {
    let base = dir.join("layer-busybox");
    let etc = dir.join("layer-etc");
    std::fs::create_dir_all(base.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let p = base.join(applet);
        if p.exists() {
            continue;
        }
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", &p).unwrap();
    }
    std::fs::create_dir_all(base.join("tmp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(base.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::create_dir_all(etc.join("etc")).unwrap();
    std::fs::write(
        etc.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::fs::write(etc.join("etc/layer"), "top\n").unwrap();
    vec![base, etc]
}

/// One test's world: state and run dirs, an instance, a runtime, the image.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub runtime: Runtime,
    pub layers: Vec<PathBuf>,
    pub names: Names,
}

impl Env {
    /// `None` when the run skips privileged tests (`BERTH_SKIP_PRIVILEGED`, not root).
    pub fn new(prefix: &str) -> Option<Env> {
        Self::with_cgroups(
            prefix,
            CgroupMode::V1 {
                root: "/sys/fs/cgroup".into(),
            },
        )
    }

    pub fn with_cgroups(prefix: &str, cgroups: CgroupMode) -> Option<Env> {
        if !require_root() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-rt")
            .tempdir()
            .unwrap();
        let layout = Layout {
            state_dir: dir.path().join("state"),
            run_dir: dir.path().join("run"),
        };
        let names = Names::new(&unique_instance(prefix));
        let layers = busybox_layers(&dir.path().join("image"));
        let runtime = Runtime::new(RuntimeConfig {
            layout,
            names: names.clone(),
            cgroups,
            shim_path: PathBuf::from(env!("CARGO_BIN_EXE_berth-shim")),
            lower_dirs: LowerDirs::detect(),
        });
        Some(Env {
            dir,
            runtime,
            layers,
            names,
        })
    }

    /// A fresh runtime object over the same dirs, as after an agent restart.
    pub fn fresh_runtime(&self) -> Runtime {
        Runtime::new(self.runtime.config().clone())
    }

    pub fn config(&self, name: &str, script: &str) -> ContainerConfig {
        ContainerConfig::minimal(
            name,
            IncarnationId::random(),
            self.layers.clone(),
            &["/bin/sh", "-c", script],
        )
    }

    /// The stdout lines the container logged so far (partials joined).
    pub fn stdout(&self, c: &ContainerConfig) -> Vec<String> {
        self.lines(c, Stream::Stdout)
    }

    pub fn stderr(&self, c: &ContainerConfig) -> Vec<String> {
        self.lines(c, Stream::Stderr)
    }

    fn lines(&self, c: &ContainerConfig, stream: Stream) -> Vec<String> {
        let log = self.runtime.bundle(&c.name, &c.id).log_file();
        let recs = files_oldest_first(&log, 16).into_iter().flat_map(|f| {
            std::fs::read(f)
                .unwrap_or_default()
                .split(|b| *b == b'\n')
                .filter_map(parse_record)
                .collect::<Vec<_>>()
        });
        join_partials(recs)
            .into_iter()
            .filter(|r| r.stream == stream)
            .map(|r| String::from_utf8_lossy(&r.message).into_owned())
            .collect()
    }

    /// Waits until the container's stdout has a line equal to `line`.
    pub fn wait_line(&self, c: &ContainerConfig, line: &str) {
        wait_for(Duration::from_secs(20), &format!("line {line:?}"), || {
            self.stdout(c).iter().any(|l| l == line)
        });
    }

    /// Waits for the container to exit and returns its record.
    pub fn wait_exit(&self, c: &ContainerConfig) -> berth_agent::runtime::ExitRecord {
        let w = self.runtime.exit_watch(&c.name, &c.id).unwrap();
        w.wait(Some(Duration::from_secs(30)))
            .unwrap()
            .expect("container did not exit in time")
    }

    pub fn status(&self, c: &ContainerConfig) -> Status {
        self.runtime
            .inspect(&c.name, &c.id)
            .unwrap()
            .expect("container known")
            .status
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let rt = self.fresh_runtime();
        for c in rt.observe().unwrap_or_default() {
            let _ = rt.stop(&c.name, &c.id, Some(libc::SIGKILL), Duration::from_secs(5));
            if let Err(e) = rt.remove(&c.name, &c.id, berth_agent::runtime::BundleDir::Remove) {
                eprintln!("cleanup of {}: {e}", c.name);
            }
        }
        // A shim that reported a failed create may still be leaving `<instance>/_shims` (its
        // stdout closes before it leaves its cgroup): wait for it rather than leak the dirs.
        let instance = berth_agent::runtime::cgroup::Cgroup::new(
            &rt.config().cgroups,
            self.names.cgroup_parent(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            rt.prune_cgroups();
            let left: Vec<_> = instance.dirs().into_iter().filter(|d| d.exists()).collect();
            if left.is_empty() {
                break;
            }
            if std::time::Instant::now() > deadline {
                eprintln!("cleanup: cgroups still there: {left:?}");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
