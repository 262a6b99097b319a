//! berth's spec format: types, parsing, validation, normalisation and the recreate hash.
//!
//! # Layout
//! - [`model`]: the validated, normalised container spec every other part of berth consumes.
//! - [`config`]: the agent's own configuration.
//! - [`reference`]: image references, normalised as Docker does.
//! - [`units`]: durations and sizes.
//! - [`hash`]: the recreate hash.
//!
//! This crate does no I/O beyond what its caller hands it as strings.
#![forbid(unsafe_code)]

pub mod config;
pub mod hash;
pub mod model;
pub mod reference;
pub mod units;

pub use config::Config;
pub use hash::spec_hash;
pub use model::ContainerSpec;
pub use reference::{ImageReference, ImageSource};
