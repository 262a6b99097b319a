//! `berth image pin REF` / `berth image unpin REF`: an operator's pin keeps an image from GC.

use std::path::Path;
use std::process::ExitCode;

use berth_spec::ImageSource;
use clap::Args;

use crate::operations::{ImageOp, ImageReply};
use crate::store::PIN_OPERATOR;

use super::exit;
use super::store_ctx::{self, fail};

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The image as listed by `berth images` (a reference, or an oci:/oci-archive: source)
    pub reference: String,
}

/// Which of the two commands runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinChange {
    Pin,
    Unpin,
}

pub fn run(config: Option<&Path>, args: &PinArgs, change: PinChange) -> ExitCode {
    let source = match ImageSource::parse(&args.reference) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let cfg = match store_ctx::config(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let image = source.to_string();
    let op = match change {
        PinChange::Pin => ImageOp::Pin { image },
        PinChange::Unpin => ImageOp::Unpin { image },
    };
    let result = match super::local::image_op_via_agent(&cfg, &op) {
        // A running agent holds the store: it pins.
        Some(reply) => reply.and_then(ImageReply::into_pinned),
        None => {
            let (store, _lock) = match store_ctx::writable(&cfg) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let r = match change {
                PinChange::Pin => store.pin(&source, PIN_OPERATOR),
                PinChange::Unpin => store.unpin(&source, PIN_OPERATOR),
            };
            r.map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(r) => {
            let pins: Vec<&str> = r.pins.iter().map(String::as_str).collect();
            outln!(
                "{}: pins: {}",
                r.reference,
                if pins.is_empty() {
                    "none".to_string()
                } else {
                    pins.join(",")
                }
            );
            ExitCode::from(exit::SUCCESS)
        }
        Err(e) => fail(e),
    }
}
