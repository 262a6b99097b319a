//! `berth schema`: the JSON Schema of spec files, for editors (see docs/spec.md).

use std::process::ExitCode;

use super::exit;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub fn run(_args: &SchemaArgs) -> ExitCode {
    print!("{}", berth_spec::spec_schema_json());
    ExitCode::from(exit::SUCCESS)
}
