//! podman with runc, the peer whose behaviour berth matches: an image imported from a rootfs
//! built in code, run with the same limits the probe uses, removed when dropped.

use std::process::Command;

use crate::image::{Entry, tar_bytes};
use crate::registry::unique_repo;

pub struct PodmanImage(pub String);

impl PodmanImage {
    /// Imports `entries` as a rootfs (`podman import`).
    pub fn import(dir: &std::path::Path, entries: &[Entry]) -> PodmanImage {
        let tar = dir.join("rootfs.tar");
        std::fs::write(&tar, tar_bytes(entries)).unwrap();
        let name = format!("localhost/{}:1", unique_repo("berth-peer"));
        let out = Command::new("podman")
            .args(["import", "--quiet"])
            .arg(&tar)
            .arg(&name)
            .output()
            .expect("podman is installed (tests/setup/install-deps)");
        assert!(
            out.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PodmanImage(name)
    }

    /// `podman run --rm` with `opts` before the image and `cmd` after it; its stdout.
    pub fn run(&self, opts: &[&str], cmd: &[&str]) -> String {
        let out = Command::new("podman")
            .args(["run", "--rm", "--runtime", "/usr/sbin/runc"])
            // This session's rlimits may be below podman's defaults.
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            // Its own empty netns: podman's default bridge would change the shared host.
            .args(["--network", "none"])
            .args(opts)
            .arg(&self.0)
            .args(cmd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman run {opts:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for PodmanImage {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "--force", &self.0])
            .output();
    }
}
