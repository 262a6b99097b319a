//! `berth validate`, `schema`, `completions` and `version --json`, run as the real binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_e2e::berth_bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn berth(args: &[&str]) -> Output {
    Command::new(berth_bin()).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_valid_dir_exits_zero() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "web.toml",
        "image = \"nginx:1.27\"\nports = [\"8080:80\"]\n",
    );
    write(t.path(), "db.toml", "image = \"postgres:16\"\n");
    let o = berth(&["validate", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ok: 2 of 2 specs valid"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn every_error_is_reported_with_file_line_column_and_key() {
    let t = tempfile::tempdir().unwrap();
    let f = write(
        t.path(),
        "web.toml",
        "image = \"nginx\"\nimgae = \"x\"\n\n[resources]\nmemory = \"512MB\"\n",
    );
    let o = berth(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let f = f.display();
    assert!(
        err.contains(&format!(
            "{f}:2:1: error: imgae: unknown key (did you mean \"image\"?)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:5:10: error: resources.memory: invalid size \"512MB\""
        )),
        "{err}"
    );
    assert!(err.contains("failed: 0 of 1 specs valid"), "{err}");
}

#[test]
fn set_problems_fail_the_dir() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "a.toml",
        "image = \"nginx\"\nports = [\"8080:80\"]\n",
    );
    write(
        t.path(),
        "b.toml",
        "image = \"nginx\"\nports = [\"127.0.0.1:8080:80\"]\n",
    );
    write(
        t.path(),
        "c.toml",
        "image = \"nginx\"\ndepends_on = [\"ghost\"]\n",
    );
    let o = berth(&["validate", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("b.toml:2:10: error: ports: host port 8080/tcp"),
        "{err}"
    );
    assert!(
        err.contains("c.toml:2:15: error: depends_on: no spec file for container \"ghost\""),
        "{err}"
    );
}

#[test]
fn a_file_is_checked_against_its_siblings_but_reports_only_its_own_problems() {
    let t = tempfile::tempdir().unwrap();
    let web = write(
        t.path(),
        "web.toml",
        "image = \"nginx\"\ndepends_on = [\"db\"]\n",
    );
    write(t.path(), "db.toml", "image = \"postgres\"\n");
    write(t.path(), "broken.toml", "image = \n");
    let o = berth(&["validate", web.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn show_prints_the_merged_result() {
    let t = tempfile::tempdir().unwrap();
    let base = write(
        t.path(),
        "app.toml",
        "image = \"nginx\"\n[resources]\nmemory = \"256m\"\npids = 9\n",
    );
    write(
        t.path(),
        "app.toml.d/10.toml",
        "[resources]\nmemory = \"1g\"\n",
    );
    let o = berth(&["validate", "--show", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("image = \"docker.io/library/nginx:latest\""),
        "{out}"
    );
    assert!(out.contains("memory = \"1GiB\""), "{out}");
    assert!(out.contains("pids = 9"), "{out}");
    assert!(out.contains("# hash sha256:"), "{out}");
    // The printed form is itself a valid spec that means the same.
    let body: String = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let again = write(t.path(), "again/app.toml", &body);
    let o2 = berth(&["validate", "--show", again.to_str().unwrap()]);
    assert_eq!(o2.status.code(), Some(0), "{}", stderr(&o2));
    let hash = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("# hash"))
            .unwrap()
            .to_string()
    };
    assert_eq!(hash(&stdout(&o2)), hash(&out));
}

#[test]
fn json_output_is_machine_readable() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "ok.toml", "image = \"nginx\"\n");
    write(t.path(), "bad.toml", "image = \"nginx\"\nstate = \"up\"\n");
    let o = berth(&["validate", "--json", "--show", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(2), Some(9))
    );
    assert_eq!(d["key"], "state");
    assert!(d["file"].as_str().unwrap().ends_with("bad.toml"));
    let ok = v["specs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ok")
        .unwrap();
    assert_eq!(
        ok["spec"]["image"]["registry"]["repository"],
        "library/nginx"
    );
    assert!(ok["hash"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn refused_files_are_named() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "ok.toml", "image = \"nginx\"\n");
    std::os::unix::fs::symlink("/etc/shadow", t.path().join("shadow.toml")).unwrap();
    fs::create_dir(t.path().join("dir.toml")).unwrap();
    let o = berth(&["validate", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("shadow.toml: error: symlink resolves outside the spec dir, to /etc/shadow"),
        "{err}"
    );
    assert!(
        err.contains("dir.toml: error: not a regular file (a directory)"),
        "{err}"
    );
}

#[test]
fn usage_errors_and_missing_paths() {
    assert_eq!(berth(&["validate"]).status.code(), Some(2));
    assert_eq!(berth(&["validate", "--frob", "x"]).status.code(), Some(2));
    let o = berth(&["validate", "/nonexistent/berth-test/web.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/berth-test/web.toml: error:"),
        "{}",
        stderr(&o)
    );
    let t = tempfile::tempdir().unwrap();
    let o = berth(&["validate", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "an empty dir is suspicious in CI");
    assert!(stderr(&o).contains("no spec files"), "{}", stderr(&o));
}

#[test]
fn the_examples_are_valid() {
    let o = berth(&["validate", repo().join("examples/specs").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = fs::read_to_string(repo().join("examples/berth.toml")).unwrap();
    if let Err(d) = berth_spec::Config::parse(Path::new("examples/berth.toml"), &text) {
        panic!("{d:#?}");
    }
    let o = berth(&[
        "validate",
        repo().join("spec/tests/corpus/valid").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn schema_matches_the_shipped_file() {
    let o = berth(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let shipped = fs::read_to_string(repo().join("spec/berth-spec.schema.json")).unwrap();
    assert_eq!(
        stdout(&o),
        shipped,
        "run `berth schema > spec/berth-spec.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["properties"]["image"].is_object());
}

#[test]
fn completions_and_version() {
    let o = berth(&["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("validate"));
    assert_eq!(berth(&["completions", "nushell-9"]).status.code(), Some(2));
    let o = berth(&["version", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    // --config is global: accepted after any subcommand.
    assert_eq!(
        berth(&["version", "--config", "/nonexistent"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn an_explicit_config_is_validated_and_fills_defaults() {
    let t = tempfile::tempdir().unwrap();
    let spec = write(t.path(), "specs/web.toml", "image = \"nginx\"\n");
    let good = write(t.path(), "good.toml", "[logging]\nmax_files = 9\n");
    let o = berth(&[
        "--config",
        good.to_str().unwrap(),
        "validate",
        "--show",
        spec.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("max_files = 9"), "{}", stdout(&o));
    let bad = write(t.path(), "bad.toml", "instance = \"Not_Valid\"\n");
    let o = berth(&[
        "validate",
        spec.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.toml:1:12: error: instance: invalid instance"),
        "{}",
        stderr(&o)
    );
}

/// `[match]` is checked; specs no host runs together may share a port; `--host-labels` shows
/// what one host would run, and judges the set as that host would.
#[test]
fn match_and_host_labels() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(
        d,
        "kiosk.toml",
        "image = \"busybox\"\nports = [\"8080:80\"]\n[match]\nlabels = { role = \"kiosk\", site = [\"berlin\", \"paris\"] }\n",
    );
    write(
        d,
        "till.toml",
        "image = \"busybox\"\nports = [\"8080:80\"]\n[match]\nlabels = { role = \"till\" }\n",
    );
    write(
        d,
        "pinned.toml",
        "image = \"busybox\"\n[match]\nhosts = [\"edge-0042\"]\n",
    );
    write(d, "base.toml", "image = \"busybox\"\n");
    let dir = d.to_str().unwrap();
    let o = berth(&["validate", dir]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let o = berth(&["validate", "--host-labels", "role=kiosk,site=berlin", dir]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("runs here: base, kiosk\n"), "{out}");
    assert!(
        out.contains("not here: pinned: this host has no host id"),
        "{out}"
    );
    assert!(
        out.contains("not here: till: label role=kiosk is not \"till\""),
        "{out}"
    );
    let o = berth(&[
        "validate",
        "--host-labels",
        "role=till",
        "--host-id",
        "edge-0042",
        "--json",
        dir,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs: Vec<&str> = v["specs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(runs, vec!["base", "pinned", "till"]);
    assert!(
        v["not_here"]["kiosk"]
            .as_str()
            .unwrap()
            .contains("label role=till")
    );

    // Two specs that can meet on one host may not share a port.
    write(
        d,
        "kiosk2.toml",
        "image = \"busybox\"\nports = [\"8080:80\"]\n[match]\nlabels = { site = \"berlin\" }\n",
    );
    let o = berth(&["validate", dir]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("host port 8080/tcp"), "{}", stderr(&o));
    // For a host in rome, kiosk2 is not there: no conflict.
    let o = berth(&["validate", "--host-labels", "role=kiosk,site=rome", dir]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // A bad [match], and bad --host-labels.
    let bad = tempfile::tempdir().unwrap();
    let f = write(
        bad.path(),
        "x.toml",
        "image = \"busybox\"\n[match]\nlabels = { \"a b\" = \"x\", role = [] }\nhosts = []\nwho = 1\n",
    );
    let o = berth(&["validate", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    for want in [
        "match.labels.a b: invalid label name",
        "match.labels.role: an empty list matches no host",
        "match.hosts: an empty list matches no host",
        "match.who: unknown key",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    let o = berth(&["validate", "--host-labels", "role", dir]);
    assert_eq!(o.status.code(), Some(2));
}

/// A repository's `rollout.toml` is read as the rollout, not as a container.
#[test]
fn rollout_files_are_checked_as_rollouts() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "web.toml", "image = \"busybox\"\n");
    let r = write(
        t.path(),
        "rollout.toml",
        "id = \"web-2\"\nfrom = \"9c1e0e4a5b6c7d8e9f00112233445566778899aa\"\npercent = 10\n",
    );
    let o = berth(&["validate", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ok: 1 of 1 specs valid"),
        "{}",
        stderr(&o)
    );
    fs::write(&r, "id = \"web-2\"\nfrom = \"HEAD~1\"\npercent = 110\n").unwrap();
    let o = berth(&["validate", t.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("rollout.toml:2:8: error: from: \"HEAD~1\" is not a full commit id"),
        "{e}"
    );
    assert!(
        e.contains("percent: expected a number from 0 to 100"),
        "{e}"
    );
}

#[test]
fn the_agent_config_alone_is_checked_with_every_error_positioned() {
    let t = tempfile::tempdir().unwrap();
    let bad = write(
        t.path(),
        "berth.toml",
        "instanse = \"x\"\nresync_interval = \"0s\"\n[network]\nsubnet = \"10.0.0.1/8\"\n[images]\nmax_layers = 0\n",
    );
    let f = bad.display();
    let o = berth(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    for line in [
        format!("{f}:1:1: error: instanse: unknown key (did you mean \"instance\"?)"),
        format!("{f}:2:19: error: resync_interval: must be at least 1s"),
        format!("{f}:4:10: error: network.subnet: invalid subnet \"10.0.0.1/8\""),
        format!("{f}:6:14: error: images.max_layers: 0 is out of range"),
    ] {
        assert!(err.contains(&line), "{line:?} missing from:\n{err}");
    }
    assert!(err.contains("failed: config: 4 problems"), "{err}");
    // As JSON, for tools.
    let o = berth(&["validate", "--json", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["config_valid"], false);
    assert_eq!(v["diagnostics"].as_array().unwrap().len(), 4);
    assert_eq!(v["diagnostics"][1]["line"], 2);
    assert_eq!(v["diagnostics"][1]["column"], 19);
    // A valid one; the shipped example too.
    let good = write(t.path(), "good.toml", "instance = \"edge\"\n");
    let o = berth(&["validate", "--config", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("ok: config valid"), "{}", stderr(&o));
    let example = repo().join("examples/berth.toml");
    let o = berth(&["validate", "--config", example.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // What can't be read is named; a FIFO is refused rather than waited on.
    let fifo = t.path().join("fifo.toml");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let o = berth(&["validate", "--config", fifo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("fifo.toml: error: cannot read config")
            && stderr(&o).contains("not a regular file"),
        "{}",
        stderr(&o)
    );
    // `--config` needs its path everywhere but `schema`.
    let o = berth(&["validate", "--config"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn schema_config_prints_the_agent_config_schema() {
    let o = berth(&["schema", "--config"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shipped = fs::read_to_string(repo().join("spec/berth-config.schema.json")).unwrap();
    assert_eq!(
        stdout(&o),
        shipped,
        "run `berth schema --config > spec/berth-config.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["title"], "berth agent config");
    assert!(v["properties"]["images"].is_object());
    // With a path, --config is the usual global option: the spec schema.
    let o = berth(&["schema", "--config", "/nonexistent/berth.toml"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["title"], "berth container spec");
}
