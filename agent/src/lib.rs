//! berth's agent: everything but the spec format.
//!
//! # Layout
//! - [`cli`]: the `berth` command line.
//! - [`layout`]: where things live on disk; [`names`]: what kernel objects are called.
//! - [`fsutil`]: crash-safe writes.
//! - [`image`]: what the runtime needs to know about a pulled image.
//! - [`registry`]: the distribution API client; [`store`]: blobs, layers, images, GC.

pub mod cli;
pub mod config;
pub mod fsutil;
pub mod image;
pub mod layout;
pub mod names;
pub mod registry;
pub mod store;
