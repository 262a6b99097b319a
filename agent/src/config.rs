//! Finding and loading the agent config: `--config PATH`, else `$BERTH_CONFIG`, else
//! `/etc/berth/berth.toml` (which may be absent: every key has a default).

use std::path::{Path, PathBuf};

use berth_spec::config::{CONFIG_ENV, DEFAULT_CONFIG_PATH};
use berth_spec::{Config, Diagnostic};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every problem in the file, one `file:line:col: error: key: message` a line.
    #[error("invalid config {path}:\n{}", render(.diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

/// Which config file applies, and whether it must exist (an explicit path must).
pub fn config_path(explicit: Option<&Path>) -> (PathBuf, bool) {
    if let Some(p) = explicit {
        return (p.to_path_buf(), true);
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return (PathBuf::from(p), true);
    }
    (PathBuf::from(DEFAULT_CONFIG_PATH), false)
}

/// Loads the config named by `explicit`, the environment or the default path.
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let (path, required) = config_path(explicit);
    let text = match read_text(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Config::default());
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let mut config = Config::parse(&path, &text).map_err(|diagnostics| ConfigError::Invalid {
        path: path.clone(),
        diagnostics,
    })?;
    config.source = Some(path);
    Ok(config)
}

/// The most of a config read: any real one is a few KiB.
const MAX_CONFIG: u64 = 1 << 20;

/// The config's text: a regular file (a FIFO would hang every command, a device never end) of
/// at most [`MAX_CONFIG`], in UTF-8.
fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Opening a FIFO must not wait for a writer; the type is checked next.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_CONFIG >> 20
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the host id comes from when the config does not set `host_id`.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// This host's id and labels: `host_id`, else `/etc/machine-id` (`None` when unreadable).
pub fn host_facts(config: &berth_spec::Config) -> berth_spec::HostFacts {
    let host_id = config.host_id.clone().or_else(|| {
        std::fs::read_to_string(MACHINE_ID)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| berth_spec::matching::validate_host_id(s).is_ok())
    });
    berth_spec::HostFacts {
        host_id,
        labels: config.labels.clone(),
    }
}
