//! The `berth` command line: one clap tree, one function per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` for commands: see [`out`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

/// `print!` for commands: see [`out`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::text(&format!($($arg)*))
    };
}

pub mod agent;
pub mod apply;
pub mod completions;
pub mod doctor;
pub mod events;
pub mod exec;
pub mod image_import;
pub mod image_pin;
pub mod images;
pub mod local;
pub mod logs;
pub mod out;
pub mod plan;
pub mod prune;
pub mod pull;
pub mod render;
pub mod schema;
pub mod source;
pub mod status;
pub mod store_ctx;
pub mod validate;
pub mod version;

/// Exit codes shared by every subcommand.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const WAIT_TIMEOUT: u8 = 3;
}

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Keeps this host's containers matching a directory of TOML specs"
)]
pub struct Cli {
    /// The agent config [default: $BERTH_CONFIG, else /etc/berth/berth.toml]. Without a
    /// path, only for `schema`: print the agent config's schema
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        num_args = 0..=1,
        default_missing_value = "",
        // (clap's path parser refuses the empty value that marks "no path")
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::OsStringValueParser::new(),
            PathBuf::from
        )
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch the spec dir and keep containers matching it
    Agent(agent::AgentArgs),
    /// Converge once now and report (through the agent when one runs)
    Apply(apply::ApplyArgs),
    /// Show what the next pass would do, without doing it
    Plan(plan::PlanArgs),
    /// Show containers: desired and actual state, image, address, ports, restarts, errors
    Status(status::StatusArgs),
    /// Follow the agent's events
    Events(events::EventsArgs),
    /// Find (and with --fix remove) what a crash left behind, and check the store
    Doctor(doctor::DoctorArgs),
    /// Check spec files or directories without touching the host (for CI)
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of spec files, or with --config of the agent config (for editors)
    Schema(schema::SchemaArgs),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
    /// Print berth's version
    Version(version::VersionArgs),
    /// Pull an image into the store
    Pull(pull::PullArgs),
    /// List the images in the store
    Images(images::ImagesArgs),
    /// Import, pin and unpin images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Remove images nothing protects, and unused layers and blobs
    Prune(prune::PruneArgs),
    /// Print a container's logs (read from the state dir; no agent needed)
    Logs(logs::LogsArgs),
    /// Run a command in a running container
    Exec(exec::ExecArgs),
    /// Show the spec repository ([source]): the applied commit, rollout, errors; import bundles
    Source(source::SourceArgs),
}

/// A runtime over the dirs of the agent config at `config` (or the default one).
pub fn runtime_for(config: Option<&std::path::Path>) -> Result<crate::runtime::Runtime, String> {
    let cfg = crate::config::load(config).map_err(|e| e.to_string())?;
    let layout = crate::layout::Layout::new(&cfg);
    let names = crate::names::Names::new(&cfg.instance);
    Ok(crate::runtime::Runtime::new(
        crate::runtime::RuntimeConfig::new(layout, names),
    ))
}

/// Prints an error the way every subcommand does and returns the failure code.
pub fn fail(msg: &str) -> ExitCode {
    eprintln!("berth: {msg}");
    ExitCode::from(exit::FAILURE)
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an OCI layout (dir or tar) or a `docker save` archive
    Import(image_import::ImportArgs),
    /// Keep an image from garbage collection
    Pin(image_pin::PinArgs),
    /// Undo `berth image pin`
    Unpin(image_pin::PinArgs),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // `--config` without a path names no file: it asks for the agent config's schema.
    let schema = match &cli.config {
        Some(p) if p.as_os_str().is_empty() => schema::Schema::AgentConfig,
        _ => schema::Schema::Specs,
    };
    if schema == schema::Schema::AgentConfig && !matches!(cli.command, Command::Schema(_)) {
        eprintln!("berth: --config needs a path (only `berth schema --config` takes none)");
        return ExitCode::from(exit::USAGE);
    }
    match &cli.command {
        Command::Agent(a) => agent::run(cli.config.as_deref(), a),
        Command::Apply(a) => apply::run(cli.config.as_deref(), a),
        Command::Plan(a) => plan::run(cli.config.as_deref(), a),
        Command::Status(a) => status::run(cli.config.as_deref(), a),
        Command::Events(a) => events::run(cli.config.as_deref(), a),
        Command::Doctor(a) => doctor::run(cli.config.as_deref(), a),
        Command::Validate(args) => validate::run(args, cli.config.as_deref()),
        Command::Schema(args) => schema::run(args, schema),
        Command::Completions(args) => completions::run(args),
        Command::Version(args) => version::run(args),
        Command::Logs(args) => logs::run(cli.config.as_deref(), args),
        Command::Exec(args) => exec::run(cli.config.as_deref(), args),
        Command::Pull(a) => pull::run(cli.config.as_deref(), a),
        Command::Images(a) => images::run(cli.config.as_deref(), a),
        Command::Image(ImageCommand::Import(a)) => image_import::run(cli.config.as_deref(), a),
        Command::Image(ImageCommand::Pin(a)) => {
            image_pin::run(cli.config.as_deref(), a, image_pin::PinChange::Pin)
        }
        Command::Image(ImageCommand::Unpin(a)) => {
            image_pin::run(cli.config.as_deref(), a, image_pin::PinChange::Unpin)
        }
        Command::Prune(a) => prune::run(cli.config.as_deref(), a),
        Command::Source(a) => source::run(cli.config.as_deref(), a),
    }
}
