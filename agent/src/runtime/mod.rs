//! berth's own container runtime: no runc, no crun. One shim per container builds and
//! supervises it; the agent talks to shims only through files under the run dir, so containers
//! outlive the agent and a fresh [`Runtime`] re-adopts them.
//!
//! # Layout
//! - [`lifecycle`]: [`Runtime`] — create, observe, pause, resume, stop, remove, exit watches.
//! - [`config`]: [`ContainerConfig`], the resolved description the shim reads, and its builder.
//! - [`process`]: Entrypoint/Cmd/Env/WorkingDir/User resolution (pure); [`passwd`]: users.
//! - [`shim`]: the supervisor process; [`container`]: its cloned child, up to exec;
//!   [`init`]: the optional pid-1 reaper.
//! - [`rootfs`]: overlayfs and in-root path resolution; [`mounts`]: /proc, /dev, /sys, binds.
//! - [`launch`]: credentials, capabilities ([`caps`]), no_new_privs, seccomp ([`seccomp`]), exec.
//! - [`cgroup`]: v1 and v2 drivers; [`devices`]: device rules and the v2 BPF device program.
//! - [`logs`]: CRI log writer with rotation, and the reader; [`exec`]: processes in a running
//!   container; [`state`]: the shim's versioned files.
//!
//! # Files
//! ```text
//! <state_dir>/containers/<name>/<id>/   the bundle: config.json, upper/, work/, rootfs/, logs/
//! <run_dir>/shims/<name>-<id>/          request.json, state.json, exit.json, shim.log
//! ```

pub mod caps;
pub mod cgroup;
pub mod config;
pub mod container;
pub mod devices;
pub mod error;
pub mod exec;
pub mod exec_relay;
pub mod exeseal;
pub mod init;
pub mod launch;
pub mod lifecycle;
pub mod logread;
pub mod logs;
pub mod mount_plan;
pub mod mounts;
pub mod oom;
pub mod passwd;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod signal;
pub mod state;
pub mod sys;
pub mod timefmt;

pub use cgroup::CgroupMode;
pub use config::{
    Bundle, ContainerConfig, DeviceSpec, EtcFiles, HostPort, MountSource, MountSpec, NetNs,
    Placement,
};
pub use error::RuntimeError;
pub use lifecycle::{
    BundleDir, ExitWatch, ObservedContainer, Runtime, RuntimeConfig, Spawning, Started, Status,
};
pub use process::{ProcessSpec, resolve_process};
pub use state::ExitRecord;
