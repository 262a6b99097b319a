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

use std::path::PathBuf;

use berth_spec::Config;

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
}
