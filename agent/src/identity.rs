//! Who this host is in a fleet: its id (the config's `host_id`, else `/etc/machine-id`) and its
//! labels, as metrics and reports name it.

use std::collections::BTreeMap;
use std::path::Path;

use berth_spec::Config;

pub const MACHINE_ID: &str = "/etc/machine-id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// `None` when the config names none and the machine id cannot be read: reports then say
    /// so rather than invent one.
    pub host_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub instance: String,
}

impl HostIdentity {
    pub fn of(config: &Config) -> Self {
        Self::with_machine_id(config, Path::new(MACHINE_ID))
    }

    pub fn with_machine_id(config: &Config, machine_id: &Path) -> Self {
        let host_id = config
            .host_id
            .clone()
            .or_else(|| read_machine_id(machine_id));
        HostIdentity {
            host_id,
            labels: config.labels.clone(),
            instance: config.instance.clone(),
        }
    }
}

/// The machine id's first line, if it is a valid host id (a file of 33 bytes; anything larger or
/// stranger is not a machine id).
fn read_machine_id(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(256)
        .read_to_string(&mut text)
        .ok()?;
    let id = text.lines().next()?.trim();
    berth_spec::matching::validate_host_id(id).ok()?;
    Some(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_wins_then_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        let mid = dir.path().join("machine-id");
        std::fs::write(&mid, "0123456789abcdef0123456789abcdef\n").unwrap();
        let mut c = Config::default();
        assert_eq!(
            HostIdentity::with_machine_id(&c, &mid).host_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        c.host_id = Some("edge-1".into());
        assert_eq!(
            HostIdentity::with_machine_id(&c, &mid).host_id.as_deref(),
            Some("edge-1")
        );
        c.host_id = None;
        std::fs::write(&mid, "\n").unwrap();
        assert_eq!(HostIdentity::with_machine_id(&c, &mid).host_id, None);
        assert_eq!(
            HostIdentity::with_machine_id(&c, &dir.path().join("none")).host_id,
            None
        );
    }
}
