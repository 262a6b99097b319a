//! `berth pull REF`: pulls an image into the store (progress bars on a terminal, plain lines
//! otherwise, `--json` for the result).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use berth_spec::ImageReference;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::operations::{ImageOp, ImageReply, Pulled};
use crate::registry::{Platform, RegistryClient, RegistrySettings};
use crate::store::{Keep, PullEvent, PullOptions};

use super::exit;
use super::store_ctx::{self, fail, short};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image, e.g. `nginx:1.27` or `ghcr.io/o/app@sha256:…`
    pub reference: String,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// Resolve a multi-platform image for this platform (os/arch[/variant]) instead of the
    /// host's
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Layers fetched at once (default: `[images] parallel_layers`)
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Only fetch and verify the blobs; do not unpack (pre-staging, benchmarks)
    #[arg(long, hide = true)]
    pub download_only: bool,
}

pub fn run(config: Option<&Path>, args: &PullArgs) -> ExitCode {
    store_ctx::init_logging();
    let cfg = match store_ctx::config(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let reference = match ImageReference::parse(&args.reference) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let platform = match args
        .platform
        .as_deref()
        .map(|p| Platform::parse(p).ok_or(p))
    {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(p)) => {
            eprintln!("berth: invalid platform {p:?}: expected os/arch[/variant]");
            return ExitCode::from(exit::USAGE);
        }
    };
    // A running agent holds the store: it pulls (without a progress display).
    let op = ImageOp::Pull {
        reference: reference.to_string(),
    };
    if let Some(reply) = super::local::image_op_via_agent(&cfg, &op) {
        return match reply.and_then(ImageReply::into_pulled) {
            Ok(pulled) => print(&pulled, args),
            Err(e) => fail(e),
        };
    }
    let settings = match RegistrySettings::from_config(&cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (store, _lock) = match store_ctx::writable(&cfg) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let client = RegistryClient::new(settings);
    let opts = PullOptions {
        concurrency: args
            .concurrency
            .unwrap_or(cfg.images.parallel_layers as usize)
            .max(1),
        keep: match args.download_only {
            true => Keep::BlobsOnly,
            false => Keep::Unpacked,
        },
        platform,
    };
    let display = Display::new(!args.json && std::io::stderr().is_terminal());
    let progress = |e: &PullEvent<'_>| display.event(e);
    let result = store.pull(&client, &reference, &opts, &progress);
    display.finish();
    match result {
        Ok(image) => {
            let record = store
                .record(&berth_spec::ImageSource::Registry(reference.clone()))
                .ok()
                .flatten();
            let pulled = Pulled {
                reference: reference.to_string(),
                image,
                record,
            };
            print(&pulled, args)
        }
        Err(e) => fail(e),
    }
}

/// The result, the same whoever pulled (the agent or this process).
fn print(pulled: &Pulled, args: &PullArgs) -> ExitCode {
    if args.json {
        outln!("{}", pulled.to_json());
    } else {
        outln!(
            "{}: pulled {}",
            pulled.reference,
            pulled.image.reference_digest
        );
    }
    ExitCode::from(exit::SUCCESS)
}

/// Progress output: bars on a terminal, otherwise one line per milestone on stderr.
struct Display {
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
}

impl Display {
    fn new(terminal: bool) -> Self {
        Display {
            bars: terminal.then(|| (MultiProgress::new(), Mutex::new(HashMap::new()))),
        }
    }

    fn event(&self, e: &PullEvent<'_>) {
        match (&self.bars, e) {
            (
                Some((mp, bars)),
                PullEvent::LayerStarted {
                    digest,
                    size,
                    resumed_from,
                },
            ) => {
                let pb = mp.add(ProgressBar::new(*size));
                pb.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
                        .expect("template")
                        .progress_chars("=> "),
                );
                pb.set_prefix(short(digest.as_str()).to_string());
                pb.set_position(*resumed_from);
                bars.lock().expect("bars").insert(digest.to_string(), pb);
            }
            (Some((_, bars)), PullEvent::Bytes { digest, n }) => {
                if let Some(pb) = bars.lock().expect("bars").get(digest.as_str()) {
                    pb.inc(*n);
                }
            }
            (Some((_, bars)), PullEvent::LayerDone { digest }) => {
                if let Some(pb) = bars.lock().expect("bars").get(digest.as_str()) {
                    pb.finish_with_message("done");
                }
            }
            (
                Some((mp, _)),
                PullEvent::Retry {
                    what,
                    attempt,
                    error,
                    ..
                },
            ) => {
                let _ = mp.println(format!(
                    "retrying {} (attempt {attempt}): {error}",
                    short(what)
                ));
            }
            (Some(_), PullEvent::Resolved { .. }) => {}
            (
                None,
                PullEvent::Resolved {
                    image,
                    manifest_digest,
                    platform,
                    layers,
                    ..
                },
            ) => {
                let missing = layers.iter().filter(|l| !l.2).count();
                eprintln!(
                    "{image}: {platform} manifest {}, {} layers ({missing} to fetch)",
                    short(manifest_digest.as_str()),
                    layers.len()
                );
            }
            (
                None,
                PullEvent::LayerStarted {
                    digest,
                    size,
                    resumed_from,
                },
            ) => {
                if *resumed_from > 0 {
                    eprintln!(
                        "layer {}: resuming at {resumed_from} of {size} bytes",
                        short(digest.as_str())
                    );
                }
            }
            (None, PullEvent::LayerDone { digest }) => {
                eprintln!("layer {}: done", short(digest.as_str()))
            }
            (
                None,
                PullEvent::Retry {
                    what,
                    attempt,
                    error,
                    ..
                },
            ) => {
                eprintln!("retrying {} (attempt {attempt}): {error}", short(what));
            }
            (None, PullEvent::Bytes { .. }) => {}
        }
    }

    fn finish(&self) {
        if let Some((mp, _)) = &self.bars {
            let _ = mp.clear();
        }
    }
}
