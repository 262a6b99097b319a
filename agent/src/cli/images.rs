//! `berth images [--json]`: what the store holds.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use crate::store::index::now_secs;

use super::exit;
use super::store_ctx::{self, ago, fail, human_size, short};

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print the full records as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &ImagesArgs) -> ExitCode {
    let cfg = match store_ctx::config(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let records = match store_ctx::readable(&cfg).list() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&records).expect("json"));
        return ExitCode::from(exit::SUCCESS);
    }
    let now = now_secs();
    let mut rows = vec![[
        "REFERENCE".to_string(),
        "DIGEST".into(),
        "MANIFEST".into(),
        "PLATFORM".into(),
        "SIZE".into(),
        "PINS".into(),
        "LAST USED".into(),
    ]];
    for r in &records {
        rows.push([
            r.reference.clone(),
            short(r.reference_digest.as_str()).to_string(),
            short(r.manifest_digest.as_str()).to_string(),
            r.platform.to_string(),
            human_size(r.unpacked_size),
            if r.pins.is_empty() {
                "-".into()
            } else {
                r.pins.iter().cloned().collect::<Vec<_>>().join(",")
            },
            ago(r.last_used, now),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        outln!("{}", line.join("  ").trim_end());
    }
    ExitCode::from(exit::SUCCESS)
}
