//! Where berth keeps things on disk, all derived from the config.
//!
//! ```text
//! <state_dir>/                     survives reboots
//!   lock                           flock: one reconciler per state dir
//!   blobs/sha256/<hex>             verified blobs (manifests, configs, layers until unpacked)
//!   layers/sha256/<diffid-hex>/    unpacked layers: overlay lowerdirs, shared between images
//!   images/                        reference -> manifest index, image configs, pins
//!   containers/<name>/             one dir per container (see runtime), last valid spec
//!   volumes/<volume>/              named volumes, kept across recreations
//!   network/                       IPAM leases
//! <run_dir>/                       cleared at boot
//!   berth.sock                     the API (root only)
//!   netns/<name>-<id>              network namespace bind mounts
//!   shims/<name>-<id>/             live shim state: pid, start time, exit file
//! ```
//!
//! Both top dirs are root's alone (0700, owned by root): no local user reaches a layer, a
//! bundle, a record or a log, whatever the modes below (see [`Layout::secure`]).

use std::io;
use std::path::{Path, PathBuf};

use berth_spec::Config;

use crate::fsutil;
use crate::names::{IncarnationId, Names};

#[derive(Debug, Clone)]
pub struct Layout {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl Layout {
    pub fn new(config: &Config) -> Self {
        Layout {
            state_dir: config.state_dir.clone(),
            run_dir: config.run_dir.clone(),
        }
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("lock")
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.state_dir.join("blobs/sha256")
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.state_dir.join("layers/sha256")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }
    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.containers_dir().join(name)
    }
    pub fn volumes_dir(&self) -> PathBuf {
        self.state_dir.join("volumes")
    }
    pub fn volume_dir(&self, volume: &str) -> PathBuf {
        self.volumes_dir().join(volume)
    }
    pub fn network_dir(&self) -> PathBuf {
        self.state_dir.join("network")
    }
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("berth.sock")
    }
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }
    pub fn netns(&self, name: &str, id: &IncarnationId) -> PathBuf {
        self.netns_dir().join(Names::container_key(name, id))
    }
    pub fn shims_dir(&self) -> PathBuf {
        self.run_dir.join("shims")
    }
    pub fn shim_dir(&self, name: &str, id: &IncarnationId) -> PathBuf {
        self.shims_dir().join(Names::container_key(name, id))
    }

    /// Makes the state and run dirs private to root (created 0700, or an existing one checked
    /// to be root's and stripped of group and other bits), before anything is written under
    /// them. Run at every open under the state dir lock (agent start, in-process commands).
    /// An install from an older berth, which made its dirs 0755 and its files 0644, is found
    /// by its open top dir and tightened below too: berth's dirs and state files lose their
    /// group and other bits. Layer contents, upper dirs and volumes keep their own modes (they
    /// are the containers' files).
    pub fn secure(&self) -> io::Result<()> {
        fn at(p: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
            move |e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))
        }
        let mut was_open = false;
        for top in [&self.state_dir, &self.run_dir] {
            was_open |= fsutil::ensure_private_dir(top).map_err(at(top))?;
        }
        if !was_open {
            return Ok(());
        }
        tracing::info!(
            state_dir = %self.state_dir.display(),
            run_dir = %self.run_dir.display(),
            "made an older install's state private to root"
        );
        for p in self.older_install_paths() {
            fsutil::make_private(&p).map_err(at(&p))?;
        }
        Ok(())
    }

    /// berth's own dirs and state files below the top dirs, as an older berth left them:
    /// records, bundles' config and logs, shims' files, blobs, image records.
    fn older_install_paths(&self) -> Vec<PathBuf> {
        let state = &self.state_dir;
        let mut out: Vec<PathBuf> = [
            "blobs",
            "blobs/sha256",
            "layers",
            "layers/sha256",
            "images",
            "images/refs",
            "images/layers",
            "images/imported",
            "containers",
            "volumes",
            "network",
            "network/leases",
            "network/ports",
            "network/hints",
        ]
        .iter()
        .map(|d| state.join(d))
        .collect();
        out.extend([self.netns_dir(), self.shims_dir(), self.lock_file()]);
        let children = |d: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect()
        };
        for name in children(&self.containers_dir()) {
            for p in children(&name) {
                let is_bundle = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| IncarnationId::parse(n).is_some());
                if is_bundle {
                    out.push(p.join("config.json"));
                    out.extend(children(&p.join("logs")));
                    out.push(p.join("logs"));
                }
                out.push(p);
            }
            out.push(name);
        }
        for d in [
            "blobs/sha256",
            "images/refs",
            "images/layers",
            "images/imported",
        ] {
            out.extend(children(&state.join(d)));
        }
        for shim in children(&self.shims_dir()) {
            out.extend(children(&shim));
            out.push(shim);
        }
        out
    }
}
