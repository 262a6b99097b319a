//! berth's agent: everything but the spec format.
//!
//! # Layout
//! - [`cli`]: the `berth` command line.
//! - [`layout`]: where things live on disk; [`names`]: what kernel objects are called.
//! - [`fsutil`]: crash-safe writes.
//! - [`image`]: what the runtime needs to know about a pulled image.
//! - [`source`]: reading the spec directory.
//! - [`network`]: bridge, veth, IPAM, name files, published ports and NAT, through netlink.
//! - [`runtime`]: berth's own container runtime (shim, isolation, cgroups, logs, exec).
//! - [`registry`]: the distribution API client; [`store`]: blobs, layers, images, GC.

pub mod api;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crashpoint;
pub mod daemon;
pub mod desired;
pub mod events;
pub mod fsutil;
pub mod host;
pub mod identity;
pub mod image;
pub mod layout;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod network;
pub mod operations;
pub mod reconcile;
pub mod registry;
pub mod report;
pub mod runtime;
pub mod source;
pub mod status;
pub mod store;
