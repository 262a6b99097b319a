//! `berth image import FILE`: imports an OCI layout (dir or tar) or a `docker save` archive,
//! verified as a pull is, and pins what it imported.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::exit;
use super::store_ctx::{self, fail};
use crate::operations::{ImageOp, ImageReply};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An OCI image layout directory, a tar of one, or a `docker save` tar
    pub path: PathBuf,
    /// Print the imported records as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: &ImportArgs) -> ExitCode {
    store_ctx::init_logging();
    let cfg = match store_ctx::config(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let op = ImageOp::Import {
        path: std::path::absolute(&args.path).unwrap_or(args.path.clone()),
    };
    let records = match super::local::image_op_via_agent(&cfg, &op) {
        // A running agent holds the store: it imports.
        Some(reply) => match reply.and_then(ImageReply::into_imported) {
            Ok(r) => r,
            Err(e) => return fail(e),
        },
        None => {
            let (store, _lock) = match store_ctx::writable(&cfg) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match store.import_records(&args.path, None) {
                Ok(r) => r,
                Err(e) => return fail(e),
            }
        }
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&records).expect("json"));
    } else {
        for r in &records {
            outln!("{}: imported {}", r.reference, r.reference_digest);
        }
    }
    ExitCode::from(exit::SUCCESS)
}
