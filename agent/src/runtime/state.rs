//! The shim's files under `<run_dir>/shims/<name>-<id>/`, each versioned:
//!
//! ```text
//! request.json   what the runtime asked for (bundle dir, cgroup mode and paths)
//! state.json     written once the payload runs: shim and container pids with start times
//! exit.json      written atomically when the container's init has been reaped
//! shim.log       the shim's own stderr
//! ```

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::cgroup::CgroupMode;
use super::config::STATE_VERSION;
use super::error::{IoContext, Result, RuntimeError};
use crate::fsutil;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimRequest {
    pub version: u32,
    pub bundle: PathBuf,
    pub cgroup_mode: CgroupMode,
    /// The container's cgroup below each hierarchy's root.
    pub cgroup: String,
    /// Where the shim itself lives, outside the agent's cgroup.
    pub shim_cgroup: String,
    /// How this kernel's overlayfs takes the layers (decided once by the agent).
    #[serde(default)]
    pub lower_dirs: super::rootfs::LowerDirs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimState {
    pub version: u32,
    pub shim_pid: i32,
    pub shim_start: u64,
    /// The container's init, as the host sees it.
    pub pid: i32,
    pub pid_start: u64,
    pub started_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub version: u32,
    /// Exit code, when the init exited.
    pub code: Option<i32>,
    /// Signal number, when the init was killed.
    pub signal: Option<i32>,
    /// The cgroup's OOM killer fired during this run.
    pub oom: bool,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
}

impl ExitRecord {
    /// A shell-style status: the code, or 128 + the signal.
    pub fn status(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

/// The shim's first and only message to the runtime, one JSON line on its stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Report {
    Started { version: u32, state: ShimState },
    Failed { version: u32, error: String },
}

#[derive(Debug, Clone)]
pub struct ShimDir {
    pub dir: PathBuf,
}

impl ShimDir {
    pub fn new(dir: &Path) -> Self {
        ShimDir {
            dir: dir.to_path_buf(),
        }
    }
    pub fn request(&self) -> PathBuf {
        self.dir.join("request.json")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }

    pub fn read_request(&self) -> Result<Option<ShimRequest>> {
        let r: Option<ShimRequest> = read_versioned(&self.request())?;
        Ok(r)
    }
    pub fn read_state(&self) -> Result<Option<ShimState>> {
        read_versioned(&self.state())
    }
    pub fn read_exit(&self) -> Result<Option<ExitRecord>> {
        read_versioned(&self.exit())
    }
}

trait Versioned {
    fn version(&self) -> u32;
}
impl Versioned for ShimRequest {
    fn version(&self) -> u32 {
        self.version
    }
}
impl Versioned for ShimState {
    fn version(&self) -> u32 {
        self.version
    }
}
impl Versioned for ExitRecord {
    fn version(&self) -> u32 {
        self.version
    }
}

fn read_versioned<T: serde::de::DeserializeOwned + Versioned>(path: &Path) -> Result<Option<T>> {
    let v: Option<T> = fsutil::read_json(path).at(path)?;
    if let Some(v) = &v
        && v.version() > STATE_VERSION
    {
        return Err(RuntimeError::Version {
            path: path.to_path_buf(),
            found: v.version(),
            supported: STATE_VERSION,
        });
    }
    Ok(v)
}

/// Atomic and durable (temp, fsync, rename, fsync dir): for the exit record.
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    fsutil::atomic_write_json(path, v).at(path)
}

/// Atomic but not fsynced (temp, rename): for files that only matter while the machine stays
/// up — the shim's request and state under the run dir (a tmpfs) and the bundle's config.json,
/// which every start rewrites. A reader never sees a torn file; a power cut may lose the last
/// write, which the next start redoes. Two fsyncs on the start path cost more than the whole
/// container setup on a slow disk.
pub fn write_json_volatile<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut data = serde_json::to_vec_pretty(v)
        .map_err(|e| RuntimeError::io(path, std::io::Error::other(e)))?;
    data.push(b'\n');
    fsutil::atomic_replace(path, &data).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_are_refused_older_read() {
        let d = tempfile::tempdir().unwrap();
        let shim = ShimDir::new(d.path());
        let rec = ExitRecord {
            version: STATE_VERSION,
            code: Some(3),
            signal: None,
            oom: false,
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
        };
        write_json(&shim.exit(), &rec).unwrap();
        assert_eq!(shim.read_exit().unwrap(), Some(rec.clone()));
        write_json_volatile(
            &shim.exit(),
            &ExitRecord {
                version: STATE_VERSION + 1,
                ..rec
            },
        )
        .unwrap();
        let e = shim.read_exit().unwrap_err().to_string();
        assert!(e.contains("unsupported state version"), "{e}");
        assert_eq!(shim.read_state().unwrap(), None);
    }
}
