//! `berth schema [--config]`: the JSON Schema of spec files, or of the agent config, for
//! editors (see docs/spec.md).

use std::process::ExitCode;

use super::exit;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

/// `agent_config`: `berth schema --config` (the global option without a path) asks for the
/// agent config's schema (berth.toml) instead of the spec files'.
pub fn run(_args: &SchemaArgs, agent_config: bool) -> ExitCode {
    if agent_config {
        out!("{}", berth_spec::config_schema_json());
    } else {
        out!("{}", berth_spec::spec_schema_json());
    }
    ExitCode::from(exit::SUCCESS)
}
