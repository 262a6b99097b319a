//! `ContainerConfig`: the fully resolved description of one container incarnation, as the
//! executor hands it to the runtime and as the shim reads it back from the bundle dir.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::model::{ContainerSpec, Logging, NetworkMode, Protocol, Resources, Security, User};
use serde::{Deserialize, Serialize};

use crate::image::ResolvedImage;
use crate::layout::Layout;
use crate::names::IncarnationId;

use super::process::{ProcessSpec, resolve_process};
use super::signal;

/// Version of `config.json`, the shim request and the shim's state files. A newer berth reads
/// every version up to its own; an older one refuses a newer file rather than misread it.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub version: u32,
    pub name: String,
    pub id: IncarnationId,
    /// Unpacked layer dirs, bottom layer first (as [`ResolvedImage::layers`]).
    pub layers: Vec<PathBuf>,
    pub process: ProcessSpec,
    pub hostname: String,
    pub mounts: Vec<MountSpec>,
    pub devices: Vec<DeviceSpec>,
    pub security: Security,
    pub resources: Resources,
    pub netns: NetNs,
    pub etc: EtcFiles,
    /// Host sockets the shim binds and holds for the container's lifetime.
    pub host_ports: Vec<HostPort>,
    pub logging: Logging,
    /// Run a tiny reaper as pid 1.
    pub init: bool,
    /// Signal number sent first by `stop`.
    pub stop_signal: i32,
    #[serde(with = "berth_spec::units::duration_serde")]
    pub stop_timeout: Duration,
}

/// The container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetNs {
    /// The host's own.
    Host,
    /// A fresh namespace with only loopback.
    None,
    /// Join the namespace bind-mounted at this path (made by the network part).
    Path(PathBuf),
}

/// Host files bind-mounted over the container's /etc files; `None` leaves the image's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcFiles {
    pub hostname: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountSource {
    /// A host path that must exist.
    Bind(PathBuf),
    /// A named volume's host dir, created when missing.
    Volume(PathBuf),
    Tmpfs {
        size: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub host: PathBuf,
    pub container: PathBuf,
    /// Any of `r`, `w`, `m`.
    pub permissions: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostPort {
    /// `None`: every address.
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub protocol: Protocol,
    /// The container's address and port the shim relays `[::1]:port` to (see
    /// [`super::proxy`]); `None`: the port does not answer on `[::1]`. An unspecified address
    /// (`[::]:port`) is the container's, given to the shim with its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loopback6_to: Option<std::net::SocketAddr>,
}

impl HostPort {
    /// Whether a port with this `host_ip` answers on `[::1]`: without one, with `::`, and
    /// with `::1` itself.
    pub fn answers_on_loopback6(host_ip: Option<IpAddr>) -> bool {
        match host_ip {
            None => true,
            Some(IpAddr::V6(a)) => a.is_unspecified() || a.is_loopback(),
            Some(IpAddr::V4(_)) => false,
        }
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}/{}", self.port, self.protocol.as_str()),
            Some(ip) => write!(f, "{ip}:{}/{}", self.port, self.protocol.as_str()),
            None => write!(f, "{}/{}", self.port, self.protocol.as_str()),
        }
    }
}

/// What the executor knows besides the spec and the image.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The netns to join for `network = "bridge"` (ignored for host and none).
    pub netns: Option<PathBuf>,
    pub etc: EtcFiles,
    /// Whether its ports answer on `[::1]` through the shim's relay (bridged containers). The
    /// address the relay connects to is known only once the network is attached, after the
    /// shim started: it comes with the start (see `Spawning::start`).
    pub loopback6: bool,
}

impl ContainerConfig {
    /// Builds the config of incarnation `id` of `spec` running `image`.
    pub fn build(
        spec: &ContainerSpec,
        id: IncarnationId,
        image: &ResolvedImage,
        layout: &Layout,
        placement: Placement,
    ) -> Result<Self, String> {
        let netns = match &spec.network {
            NetworkMode::Host => NetNs::Host,
            NetworkMode::None => NetNs::None,
            NetworkMode::Bridge | NetworkMode::Container(_) => {
                NetNs::Path(placement.netns.ok_or_else(|| {
                    format!(
                        "network = \"{}\" needs a network namespace path",
                        spec.network.spec_word()
                    )
                })?)
            }
        };
        let stop_signal = match spec
            .extra
            .stop_signal
            .as_deref()
            .or(image.config.stop_signal.as_deref())
        {
            Some(s) => signal::parse(s).ok_or_else(|| format!("unknown stop signal {s:?}"))?,
            None => libc::SIGTERM,
        };
        let mounts = spec
            .extra
            .mounts
            .iter()
            .map(|m| MountSpec {
                source: match &m.kind {
                    berth_spec::model::MountKind::Bind { source } => {
                        MountSource::Bind(source.clone())
                    }
                    berth_spec::model::MountKind::Volume { name } => {
                        MountSource::Volume(layout.volume_dir(name))
                    }
                    berth_spec::model::MountKind::Tmpfs { size } => {
                        MountSource::Tmpfs { size: *size }
                    }
                },
                target: m.target.clone(),
                read_only: m.read_only,
            })
            .collect();
        let devices = spec
            .extra
            .devices
            .iter()
            .map(|d| DeviceSpec {
                host: d.host.clone(),
                container: d.container.clone(),
                permissions: d.permissions.clone(),
            })
            .collect();
        let host_ports = spec
            .extra
            .ports
            .iter()
            .map(|p| HostPort {
                ip: p.host_ip,
                port: p.host,
                protocol: p.protocol,
                loopback6_to: (placement.loopback6 && HostPort::answers_on_loopback6(p.host_ip))
                    .then(|| {
                        std::net::SocketAddr::new(
                            std::net::Ipv6Addr::UNSPECIFIED.into(),
                            p.container,
                        )
                    }),
            })
            .collect();
        Ok(ContainerConfig {
            version: STATE_VERSION,
            name: spec.name.clone(),
            id,
            layers: image.layers.clone(),
            process: resolve_process(spec, &image.config),
            hostname: spec
                .extra
                .hostname
                .clone()
                .unwrap_or_else(|| spec.name.clone()),
            mounts,
            devices,
            security: spec.extra.security.clone(),
            resources: spec.extra.resources,
            netns,
            etc: placement.etc,
            host_ports,
            logging: spec.logging,
            init: spec.init,
            stop_signal,
            stop_timeout: spec.extra.stop_timeout,
        })
    }

    /// A minimal config for tests and tools: one command, no network, default security.
    pub fn minimal(name: &str, id: IncarnationId, layers: Vec<PathBuf>, args: &[&str]) -> Self {
        ContainerConfig {
            version: STATE_VERSION,
            name: name.to_string(),
            id,
            layers,
            process: ProcessSpec {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec![format!("PATH={}", super::process::DEFAULT_PATH)],
                cwd: "/".into(),
                user: None,
                group_add: Vec::new(),
            },
            hostname: name.to_string(),
            mounts: Vec::new(),
            devices: Vec::new(),
            security: Security::default(),
            resources: Resources::default(),
            netns: NetNs::None,
            etc: EtcFiles::default(),
            host_ports: Vec::new(),
            logging: Logging::default(),
            init: false,
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(10),
        }
    }

    /// Checks what the shim would otherwise trip over halfway through.
    pub fn validate(&self) -> Result<(), String> {
        if self.version > STATE_VERSION {
            return Err(format!(
                "config version {} is newer than {STATE_VERSION}",
                self.version
            ));
        }
        if self.layers.is_empty() {
            return Err("image has no layers".into());
        }
        if self.process.args.is_empty() {
            return Err(
                "no command: the image has no Entrypoint or Cmd and the spec sets none".into(),
            );
        }
        for m in &self.mounts {
            if !m.target.starts_with('/') {
                return Err(format!("mount target {:?} is not absolute", m.target));
            }
            if let MountSource::Bind(src) = &m.source
                && !src.exists()
            {
                return Err(format!("bind source {} does not exist", src.display()));
            }
        }
        for d in &self.devices {
            if !d.permissions.chars().all(|c| "rwm".contains(c)) || d.permissions.is_empty() {
                return Err(format!(
                    "device {}: bad permissions {:?}",
                    d.host.display(),
                    d.permissions
                ));
            }
        }
        Ok(())
    }

    /// Whether the user names were given, for display.
    pub fn user(&self) -> Option<&User> {
        self.process.user.as_ref()
    }
}

/// Paths inside a container's bundle dir `<container_dir>/<id>/`.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    pub fn new(layout: &Layout, name: &str, id: &IncarnationId) -> Self {
        Bundle {
            dir: layout.container_dir(name).join(id.as_str()),
        }
    }
    pub fn at(dir: &Path) -> Self {
        Bundle {
            dir: dir.to_path_buf(),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn log_file(&self) -> PathBuf {
        self.logs().join("container.log")
    }
    /// The last run's exit record, kept with the bundle (the shim's own copy under the run dir
    /// goes with a reboot): what says, at the next boot, that the run had ended on its own.
    pub fn last_exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    /// Present when berth asked the last run to stop (a stop, `--stop-all` at shutdown): that
    /// run did not end on its own.
    pub fn stop_requested(&self) -> PathBuf {
        self.dir.join("stop-requested")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::ImageSource;
    use berth_spec::model::{Mount, MountKind, PortMapping};

    fn image() -> ResolvedImage {
        ResolvedImage {
            reference_digest: berth_spec::Digest::of(b"1"),
            manifest_digest: berth_spec::Digest::of(b"2"),
            config: crate::image::ImageConfig {
                cmd: Some(vec!["serve".into()]),
                stop_signal: Some("SIGQUIT".into()),
                ..Default::default()
            },
            layers: vec!["/l/base".into(), "/l/top".into()],
        }
    }

    fn layout() -> Layout {
        Layout {
            state_dir: "/s".into(),
            run_dir: "/r".into(),
        }
    }

    #[test]
    fn builds_from_spec_image_and_placement() {
        let mut spec = ContainerSpec::with_defaults("web", ImageSource::parse("nginx").unwrap());
        spec.extra.mounts = vec![Mount {
            kind: MountKind::Volume {
                name: "data".into(),
            },
            target: "/data".into(),
            read_only: false,
        }];
        let port = |host_ip: Option<&str>, host| PortMapping {
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
            host,
            container: 80,
            protocol: Protocol::Tcp,
        };
        spec.extra.ports = vec![
            port(None, 8080),
            port(Some("::"), 8081),
            port(Some("::1"), 8082),
            port(Some("0.0.0.0"), 8083),
            port(Some("127.0.0.1"), 8084),
            port(Some("fd00::5"), 8085),
        ];
        let id = IncarnationId::random();
        let placement = Placement {
            loopback6: true,
            netns: Some("/r/netns/web-x".into()),
            etc: EtcFiles {
                hosts: Some("/s/containers/web/hosts".into()),
                ..Default::default()
            },
        };
        let c = ContainerConfig::build(&spec, id.clone(), &image(), &layout(), placement).unwrap();
        assert_eq!(c.id, id);
        assert_eq!(c.hostname, "web");
        assert_eq!(c.process.args, ["serve"]);
        assert_eq!(c.stop_signal, libc::SIGQUIT);
        assert_eq!(c.netns, NetNs::Path("/r/netns/web-x".into()));
        assert_eq!(
            c.mounts[0].source,
            MountSource::Volume("/s/volumes/data".into())
        );
        assert_eq!(c.host_ports[0].to_string(), "8080/tcp");
        // `[::1]` is relayed for the ports that answer there: no host_ip, `::` and `::1`.
        let relayed: Vec<_> = c.host_ports.iter().map(|p| p.loopback6_to).collect();
        // The container's address comes with the start: `::` until then.
        let to = Some("[::]:80".parse().unwrap());
        assert_eq!(relayed, [to, to, to, None, None, None]);
        assert_eq!(c.layers, image().layers);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_inputs_are_refused_with_the_reason() {
        let mut spec = ContainerSpec::with_defaults("web", ImageSource::parse("nginx").unwrap());
        let id = IncarnationId::random();
        let e =
            ContainerConfig::build(&spec, id.clone(), &image(), &layout(), Placement::default())
                .unwrap_err();
        assert!(e.contains("network namespace"), "{e}");
        spec.network = berth_spec::model::NetworkMode::None;
        spec.extra.stop_signal = Some("SIGNOPE".into());
        let e =
            ContainerConfig::build(&spec, id.clone(), &image(), &layout(), Placement::default())
                .unwrap_err();
        assert!(e.contains("SIGNOPE"), "{e}");
        spec.extra.stop_signal = None;
        let mut img = image();
        img.config.cmd = None;
        let c = ContainerConfig::build(&spec, id, &img, &layout(), Placement::default()).unwrap();
        assert!(c.validate().unwrap_err().contains("no command"));
    }
}
