//! `berth validate PATH...`: checks spec files and directories as a GitOps repo's CI would,
//! judging the files alone (never the host), and reports every problem compiler-style.
//!
//! A directory is one set: its specs are also checked against each other. A file is checked
//! with its drop-ins and env files, and against the other specs of its directory (so a
//! `depends_on` naming a sibling is fine), but only its own problems are reported.
//!
//! With an explicit `--config FILE`, the agent config is validated too (alone, when no spec
//! path is given), every problem with its position, and its `[logging]` fills the specs'
//! defaults (what `--show` prints). Without one, no config is read: the files alone are judged.
//!
//! `rollout.toml` at the root of a directory is a source repository's rollout, checked as one.
//! `--host-labels` (and `--host-id`) judge `[match]` for a host: what it would run, what not and
//! why, and the checks across specs among those it runs. Without them, specs whose `[match]`
//! can never meet on one host are not held against each other (a port used by both).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_spec::{Diagnostic, ParsedSpec, SpecDefaults, render_toml, spec_hash};
use serde_json::{Value, json};

use super::exit;
use crate::config::ConfigError;
use crate::source::load::{self, FileError, SpecError};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Spec files (`<name>.toml`) or spec directories; none with `--config FILE`: check the
    /// agent config alone
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print each valid spec as berth reads it: drop-ins merged, defaults filled
    #[arg(long)]
    pub show: bool,
    /// Machine-readable output on stdout (diagnostics, and the specs with --show)
    #[arg(long)]
    pub json: bool,
    /// Judge `[match]` for a host with these labels (`role=kiosk,site=berlin`): list what it
    /// would run
    #[arg(long, value_name = "NAME=VALUE,...", value_parser = berth_spec::matching::parse_label_pairs)]
    pub host_labels: Option<std::collections::BTreeMap<String, String>>,
    /// Judge `[match] hosts` for a host with this id (with or without --host-labels)
    #[arg(long, value_name = "ID", value_parser = parse_host_id)]
    pub host_id: Option<String>,
}

fn parse_host_id(s: &str) -> Result<String, String> {
    berth_spec::matching::validate_host_id(s).map(|()| s.to_string())
}

/// One container's outcome.
struct Checked {
    name: String,
    result: Result<ParsedSpec, SpecError>,
}

#[derive(Default)]
struct Report {
    specs: Vec<Checked>,
    /// With a host: specs its `[match]` leaves out, and why.
    not_here: BTreeMap<String, String>,
    /// Set-level diagnostics, and problems with the paths themselves.
    diagnostics: Vec<Diagnostic>,
    path_errors: Vec<String>,
}

/// The agent config's outcome, when one was named.
enum ConfigCheck {
    Valid,
    /// Its problems, each with file, line and column.
    Invalid(Vec<Diagnostic>),
    /// It could not be read at all.
    Unreadable(String),
}

impl Report {
    /// Nothing wrong: every spec valid, no set problem, every path readable.
    fn ok(&self) -> bool {
        self.path_errors.is_empty()
            && self.diagnostics.is_empty()
            && self.specs.iter().all(|c| c.result.is_ok())
    }
}

impl ConfigCheck {
    fn problems(&self) -> usize {
        match self {
            ConfigCheck::Valid => 0,
            ConfigCheck::Invalid(d) => d.len(),
            ConfigCheck::Unreadable(_) => 1,
        }
    }
}

pub fn run(args: &ValidateArgs, config: Option<&Path>) -> ExitCode {
    if args.paths.is_empty() && config.is_none() {
        eprintln!(
            "berth validate: nothing to check: give spec files or directories, or --config FILE"
        );
        return ExitCode::from(exit::USAGE);
    }
    let mut defaults = SpecDefaults::default();
    let config_check = config.map(|path| match crate::config::load(Some(path)) {
        Ok(c) => {
            defaults = c.spec_defaults();
            ConfigCheck::Valid
        }
        Err(ConfigError::Invalid { diagnostics, .. }) => ConfigCheck::Invalid(diagnostics),
        Err(e) => ConfigCheck::Unreadable(format!("{}: error: {e}", path.display())),
    });
    let host =
        (args.host_labels.is_some() || args.host_id.is_some()).then(|| berth_spec::HostFacts {
            host_id: args.host_id.clone(),
            labels: args.host_labels.clone().unwrap_or_default(),
        });
    let mut report = if args.paths.is_empty() {
        Report::default()
    } else {
        check(&args.paths, &defaults, host.as_ref())
    };
    match &config_check {
        Some(ConfigCheck::Invalid(d)) => {
            report.diagnostics.splice(0..0, d.iter().cloned());
        }
        Some(ConfigCheck::Unreadable(e)) => report.path_errors.insert(0, e.clone()),
        Some(ConfigCheck::Valid) | None => {}
    }
    if args.json {
        let mut v = to_json(&report, args);
        v["config_valid"] = json!(config_check.as_ref().map(|c| c.problems() == 0));
        outln!("{v}");
    } else {
        print_report(&report, args, config_check.as_ref(), host.as_ref());
    }
    ExitCode::from(if report.ok() {
        exit::SUCCESS
    } else {
        exit::FAILURE
    })
}

/// The human form: problems on stderr, `--show`'s specs and, with `host`, which run there on
/// stdout, and a summary line.
fn print_report(
    report: &Report,
    args: &ValidateArgs,
    config_check: Option<&ConfigCheck>,
    host: Option<&berth_spec::HostFacts>,
) {
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    for line in &report.path_errors {
        let _ = writeln!(err, "{line}");
    }
    for c in &report.specs {
        if let Err(e) = &c.result {
            for line in e.lines() {
                let _ = writeln!(err, "{line}");
            }
        }
    }
    for d in &report.diagnostics {
        let _ = writeln!(err, "{d}");
    }
    if args.show {
        for c in &report.specs {
            if let Ok(p) = &c.result {
                let files: Vec<String> = p.files.iter().map(|f| f.display().to_string()).collect();
                outln!(
                    "# {} (from {})\n# hash {}\n{}",
                    c.name,
                    files.join(", "),
                    spec_hash(&p.spec),
                    render_toml(&p.spec)
                );
            }
        }
    }
    if host.is_some() {
        let runs: Vec<&str> = report
            .specs
            .iter()
            .filter(|c| c.result.is_ok())
            .map(|c| c.name.as_str())
            .collect();
        outln!(
            "runs here: {}",
            if runs.is_empty() {
                "nothing".to_string()
            } else {
                runs.join(", ")
            }
        );
        for (name, why) in &report.not_here {
            outln!("not here: {name}: {why}");
        }
    }
    let valid = report.specs.iter().filter(|c| c.result.is_ok()).count() + report.not_here.len();
    let config_part = match config_check {
        None => String::new(),
        Some(ConfigCheck::Valid) => "config valid".to_string(),
        Some(c) => format!("config: {} problems", c.problems()),
    };
    let summary = if args.paths.is_empty() {
        config_part
    } else {
        let config_diags = match config_check {
            Some(ConfigCheck::Invalid(d)) => d.len(),
            _ => 0,
        };
        let mut s = format!(
            "{valid} of {} specs valid, {} set problems",
            report.specs.len() + report.not_here.len(),
            report.diagnostics.len() - config_diags
        );
        if !config_part.is_empty() {
            s = format!("{s}, {config_part}");
        }
        s
    };
    if report.ok() {
        let _ = writeln!(err, "ok: {summary}");
    } else {
        let _ = writeln!(err, "failed: {summary}");
    }
}

fn check(
    paths: &[PathBuf],
    defaults: &SpecDefaults,
    host: Option<&berth_spec::HostFacts>,
) -> Report {
    let mut report = Report::default();
    // Files are grouped by directory so each directory is read once, however many are named.
    let mut files_by_dir: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => check_dir(path, defaults, host, &mut report),
            Ok(_) => match spec_of_file(path) {
                Some((dir, name)) => {
                    files_by_dir.entry(dir).or_default().insert(name);
                }
                None => report.path_errors.push(format!(
                    "{}: error: not a spec file (expected <name>.toml or <name>.toml.d/*.toml)",
                    path.display()
                )),
            },
            Err(e) => report
                .path_errors
                .push(format!("{}: error: {e}", path.display())),
        }
    }
    for (dir, names) in files_by_dir {
        check_files(&dir, &names, defaults, host, &mut report);
    }
    report
}

/// Loads a dir as the agent would (for a host, when one is given), with `rollout.toml` at its
/// root read as a rollout.
fn load_for(
    dir: &Path,
    defaults: &SpecDefaults,
    host: Option<&berth_spec::HostFacts>,
    report: &mut Report,
) -> Result<load::LoadedSet, load::DirError> {
    let mut set = match host {
        Some(h) => load::load_dir_for(dir, defaults, h)?,
        None => load::load_dir_with(dir, defaults)?,
    };
    let rollout = dir.join(berth_spec::rollout::ROLLOUT_FILE);
    if rollout.is_file() {
        set.specs.remove("rollout");
        set.not_here.remove("rollout");
        let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        match load::read_text(&root, &rollout) {
            Ok(text) => {
                if let Err(d) = berth_spec::rollout::parse_rollout(&rollout, &text) {
                    report.diagnostics.extend(d);
                }
            }
            Err(e) => report.path_errors.push(load::file_error_line(&e)),
        }
    }
    Ok(set)
}

/// The (directory, container name) a file belongs to: `d/web.toml` and
/// `d/web.toml.d/10-x.toml` both belong to `web` in `d`.
fn spec_of_file(path: &Path) -> Option<(PathBuf, String)> {
    let file_name = path.file_name()?.to_str()?;
    let parent = path.parent().unwrap_or(Path::new(""));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if let Some(base) = parent
        .file_name()
        .and_then(|p| p.to_str())
        .and_then(|p| p.strip_suffix(".toml.d"))
        && file_name.ends_with(".toml")
    {
        return Some((parent.parent()?.to_path_buf(), base.to_string()));
    }
    let name = file_name.strip_suffix(".toml")?;
    Some((parent.to_path_buf(), name.to_string()))
}

fn check_dir(
    dir: &Path,
    defaults: &SpecDefaults,
    host: Option<&berth_spec::HostFacts>,
    report: &mut Report,
) {
    match load_for(dir, defaults, host, report) {
        Ok(set) => {
            if set.specs.is_empty() && set.not_here.is_empty() {
                report.path_errors.push(format!(
                    "{}: error: no spec files (*.toml) in this directory",
                    dir.display()
                ));
            }
            report.diagnostics.extend(set.set_diagnostics);
            report.not_here.extend(set.not_here);
            report.specs.extend(
                set.specs
                    .into_iter()
                    .map(|(name, result)| Checked { name, result }),
            );
        }
        Err(e) => report
            .path_errors
            .push(format!("{}: error: {e}", dir.display())),
    }
}

fn check_files(
    dir: &Path,
    names: &BTreeSet<String>,
    defaults: &SpecDefaults,
    host: Option<&berth_spec::HostFacts>,
    report: &mut Report,
) {
    let mut set = match load_for(dir, defaults, host, report) {
        Ok(set) => set,
        Err(e) => {
            report
                .path_errors
                .push(format!("{}: error: {e}", dir.display()));
            return;
        }
    };
    for name in names {
        if let Some(why) = set.not_here.remove(name) {
            report.not_here.insert(name.clone(), why);
            continue;
        }
        if name == "rollout" && dir.join(berth_spec::rollout::ROLLOUT_FILE).is_file() {
            continue; // Checked as the rollout by load_for.
        }
        // A named file the directory scan skips (a hidden one) is still checked alone.
        let result = match set.specs.remove(name) {
            Some(r) => r,
            None => match load::load_one(dir, name, defaults) {
                Ok(r) => r,
                Err(e) => Err(SpecError::Files(vec![FileError::Read {
                    path: dir.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                }])),
            },
        };
        if let Ok(p) = &result {
            report.diagnostics.extend(
                set.set_diagnostics
                    .iter()
                    .filter(|d| p.files.contains(&d.file))
                    .cloned(),
            );
        }
        report.specs.push(Checked {
            name: name.clone(),
            result,
        });
    }
}

fn diagnostic_json(d: &Diagnostic) -> Value {
    json!({
        "file": d.file,
        "line": d.line,
        "column": d.column,
        "key": d.key,
        "message": d.message,
    })
}

/// The `--json` form, with each valid spec in full under `--show`.
fn to_json(report: &Report, args: &ValidateArgs) -> Value {
    let mut diagnostics: Vec<Value> = Vec::new();
    let mut specs = Vec::new();
    for c in &report.specs {
        let mut entry = json!({ "name": c.name, "valid": c.result.is_ok() });
        match &c.result {
            Ok(p) => {
                entry["files"] = json!(p.files);
                entry["hash"] = json!(spec_hash(&p.spec));
                if args.show {
                    entry["spec"] = serde_json::to_value(&*p.spec).expect("spec serialises");
                }
            }
            Err(SpecError::Invalid(diags)) => diagnostics.extend(diags.iter().map(diagnostic_json)),
            Err(SpecError::Files(errs)) => diagnostics.extend(errs.iter().map(|e| {
                json!({
                    "file": e.path(),
                    "line": null,
                    "column": null,
                    "key": "",
                    "message": load::file_error_line(e),
                })
            })),
        }
        specs.push(entry);
    }
    diagnostics.extend(report.diagnostics.iter().map(diagnostic_json));
    diagnostics.extend(
        report.path_errors.iter().map(
            |e| json!({ "file": null, "line": null, "column": null, "key": "", "message": e }),
        ),
    );
    json!({ "valid": report.ok(), "specs": specs, "diagnostics": diagnostics, "not_here": report.not_here })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_map_to_their_container() {
        assert_eq!(
            spec_of_file(Path::new("d/web.toml")),
            Some((PathBuf::from("d"), "web".into()))
        );
        assert_eq!(
            spec_of_file(Path::new("d/web.toml.d/10-x.toml")),
            Some((PathBuf::from("d"), "web".into()))
        );
        assert_eq!(
            spec_of_file(Path::new("web.toml")),
            Some((PathBuf::from("."), "web".into()))
        );
        assert_eq!(spec_of_file(Path::new("d/README.md")), None);
    }
}
