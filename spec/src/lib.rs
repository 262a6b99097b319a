//! berth's spec format: types, parsing, validation, normalisation and the recreate hash.
//!
//! # Layout
//! - [`model`]: the validated, normalised container spec every other part of berth consumes.
//! - [`parse`]: one container's files (base plus drop-ins) to a [`ContainerSpec`], every error
//!   reported as a [`Diagnostic`]; [`set`]: checks across a directory of specs.
//! - [`render`]: a spec back to TOML; [`schema`]: the JSON Schema editors use.
//! - [`config`]: the agent's own configuration, parsed as strictly.
//! - [`reference`]: image references, normalised as Docker does; [`digest`]: the validated
//!   content digest every image part is named by.
//! - [`units`], [`values`], [`names`]: durations and sizes, small value grammars, name rules.
//! - [`string_map`]: the compact map `env` and `labels` are held in.
//! - [`hash`]: the recreate hash.
//! - Internals: `tree` (a spanned TOML tree and drop-in merging), `decode` (typed reading that
//!   collects errors), `ports`, `mounts`, `sections`, `envfile`, `config_parse`.
//!
//! This crate does no I/O: callers hand it file texts, and a callback for `env_files`.
#![forbid(unsafe_code)]

pub mod config;
mod config_parse;
mod decode;
pub mod diag;
pub mod digest;
pub mod envfile;
pub mod hash;
pub mod matching;
pub mod model;
mod mounts;
pub mod names;
pub mod parse;
mod ports;
pub mod reference;
pub mod render;
pub mod rollout;
pub mod schema;
mod sections;
pub mod set;
pub mod string_map;
mod tree;
pub mod units;
pub mod values;

pub use config::Config;
pub use config_parse::{check_subnet, check_subnet6};
pub use diag::{Diagnostic, SourceFile};
pub use digest::{DiffId, Digest};
pub use hash::spec_hash;
pub use matching::{HostFacts, HostMatch};
pub use model::ContainerSpec;
pub use parse::{
    KnownNetwork, Location, ParsedSpec, ReadEnvFile, SpecDefaults, parse_spec, parse_spec_str,
    parse_spec_with,
};
pub use reference::{ImageReference, ImageSource};
pub use render::render_toml;
pub use schema::{config_schema_json, spec_schema_json};
pub use set::check_set;
pub use string_map::StringMap;
