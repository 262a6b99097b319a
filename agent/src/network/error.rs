//! The network layer's errors: each names the object (link, netns path, address, table) and why.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use berth_spec::model::Protocol;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid network config: {0}")]
    Config(String),
    #[error("netlink {op} {object}: {source}")]
    Netlink {
        op: &'static str,
        object: String,
        source: io::Error,
    },
    #[error("nftables {op} on table inet {table}: {source}")]
    Nft {
        op: &'static str,
        table: String,
        source: io::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("address {ip} for container {name} is outside subnet {subnet}")]
    OutsideSubnet {
        name: String,
        ip: IpAddr,
        subnet: String,
    },
    #[error("address {ip} for container {name} is reserved (network, gateway or broadcast)")]
    Reserved { name: String, ip: IpAddr },
    #[error("address {ip} for container {name} is held by container {holder}")]
    AddressTaken {
        name: String,
        ip: IpAddr,
        holder: String,
    },
    #[error("no free address left in subnet {subnet} for container {name}")]
    Exhausted { name: String, subnet: String },
    #[error("host port {port}/{} for container {name} is already published by container {holder}", protocol.as_str())]
    PortTaken {
        name: String,
        port: u16,
        protocol: Protocol,
        holder: String,
    },
    #[error(
        "bridge {bridge} is full: a linux bridge takes at most 1023 ports (container {name}); \
         run a second berth instance with its own bridge for more"
    )]
    BridgeFull { bridge: String, name: String },
    #[error("container {name} has no address lease; attach it before publishing ports")]
    NoLease { name: String },
}

impl NetError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn netlink(op: &'static str, object: impl Into<String>, source: io::Error) -> Self {
        NetError::Netlink {
            op,
            object: object.into(),
            source,
        }
    }
}

/// Everything a best-effort teardown could not remove; it kept going past each failure.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct TeardownErrors(pub Vec<NetError>);

impl TeardownErrors {
    pub(crate) fn into_result(self) -> Result<(), TeardownErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}
