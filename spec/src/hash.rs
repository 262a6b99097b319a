//! The recreate hash: sha256 over the canonical JSON of the fields that shape a container.
//!
//! `state`, `restart`, `pull`, `depends_on`, `[health]`, `[update]`, `[logging]` and
//! `[resources]` are left out on purpose: changing them never recreates (resources are applied
//! to the live cgroup).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::*;
use crate::reference::ImageSource;

#[derive(Serialize)]
struct Shape<'a> {
    image: &'a ImageSource,
    entrypoint: &'a Option<Vec<String>>,
    command: &'a Option<Vec<String>>,
    env: &'a crate::StringMap,
    user: &'a Option<User>,
    // Left out when empty, so that specs written before the key keep their hash.
    #[serde(skip_serializing_if = "<[UserId]>::is_empty")]
    group_add: &'a [UserId],
    workdir: &'a Option<String>,
    hostname: &'a Option<String>,
    mounts: &'a [Mount],
    devices: &'a [Device],
    ports: &'a [PortMapping],
    network: &'a NetworkMode,
    /// A static address on the default network alone, as specs wrote it before `networks`.
    ip: Option<std::net::IpAddr>,
    // Left out for the default network alone, so that specs written before the key keep
    // their hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    networks: Option<&'a [NetworkJoin]>,
    security: &'a Security,
    labels: &'a crate::StringMap,
    init: bool,
}

/// `sha256:<hex>` of the canonical form of the container-shaping fields.
pub fn spec_hash(spec: &ContainerSpec) -> String {
    format!("sha256:{}", hex::encode(spec_digest(spec)))
}

/// The sha256 digest [`spec_hash`] writes out: 32 bytes, for holders of many.
pub fn spec_digest(spec: &ContainerSpec) -> [u8; 32] {
    let legacy = matches!(spec.extra.networks.as_slice(),
        [only] if only.name == crate::config::DEFAULT_NETWORK && only.ip6.is_none());
    let shape = Shape {
        image: &spec.image,
        entrypoint: &spec.extra.entrypoint,
        command: &spec.command,
        env: &spec.env,
        user: &spec.extra.user,
        group_add: &spec.extra.group_add,
        workdir: &spec.extra.workdir,
        hostname: &spec.extra.hostname,
        mounts: &spec.extra.mounts,
        devices: &spec.extra.devices,
        ports: &spec.extra.ports,
        network: &spec.network,
        ip: legacy
            .then(|| spec.extra.networks[0].ip.map(std::net::IpAddr::V4))
            .flatten(),
        networks: (!legacy && !spec.extra.networks.is_empty())
            .then_some(spec.extra.networks.as_slice()),
        security: &spec.extra.security,
        labels: &spec.extra.labels,
        init: spec.init,
    };
    // serde_json writes struct fields in declaration order and BTreeMaps sorted: canonical.
    let bytes = serde_json::to_vec(&shape).expect("spec serialises");
    Sha256::digest(&bytes).into()
}
