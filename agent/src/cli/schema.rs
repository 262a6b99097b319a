//! `berth schema [--config]`: the JSON Schema of spec files, or of the agent config, for
//! editors (see docs/spec.md).

use std::process::ExitCode;

use super::exit;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

/// Which file's schema: `berth schema --config` (the global option without a path) asks for
/// the agent config's (berth.toml) instead of the spec files'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    Specs,
    AgentConfig,
}

pub fn run(_args: &SchemaArgs, schema: Schema) -> ExitCode {
    match schema {
        Schema::AgentConfig => out!("{}", berth_spec::config_schema_json()),
        Schema::Specs => out!("{}", berth_spec::spec_schema_json()),
    }
    ExitCode::from(exit::SUCCESS)
}
