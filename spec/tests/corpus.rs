//! The corpus under `tests/corpus/`: `valid/` is one directory of specs that must all pass,
//! set checks included; each `invalid/<case>.toml` must fail with exactly the diagnostics in
//! `<case>.expected`; each `sets/<case>/` must give exactly the diagnostics in its `expected`.
//!
//! After a deliberate change of messages, `BLESS=1 cargo test -p berth-spec --test corpus`
//! rewrites the expected files; review the diff before committing it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use berth_spec::{Diagnostic, ParsedSpec, SourceFile, check_set, parse_spec};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Paths in diagnostics are relative to the corpus dir, so expected files are portable.
fn rel(p: &Path) -> PathBuf {
    p.strip_prefix(corpus()).unwrap_or(p).to_path_buf()
}

/// A small stand-in for the agent's loader: `*.toml`, their `.toml.d/` drop-ins, env files.
fn load_one(path: &Path) -> (String, Result<ParsedSpec, Vec<Diagnostic>>) {
    let name = path.file_stem().unwrap().to_str().unwrap().to_string();
    let mut files = vec![SourceFile::new(
        rel(path),
        fs::read_to_string(path).unwrap(),
    )];
    let dropin_dir = PathBuf::from(format!("{}.d", path.display()));
    if let Ok(rd) = fs::read_dir(&dropin_dir) {
        let mut dropins: Vec<PathBuf> = rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        dropins.sort();
        for d in dropins {
            files.push(SourceFile::new(rel(&d), fs::read_to_string(&d).unwrap()));
        }
    }
    let result = parse_spec(&name, &files, &mut |p: &Path| {
        fs::read_to_string(corpus().join(p)).map_err(|e| e.to_string())
    });
    (name, result)
}

fn load_dir(dir: &Path) -> BTreeMap<String, Result<ParsedSpec, Vec<Diagnostic>>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_one(p)).collect()
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

fn check_expected(expected_file: &Path, actual: &str) {
    if std::env::var_os("BLESS").is_some() {
        fs::write(expected_file, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(expected_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with BLESS=1 to create it)",
            expected_file.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "diagnostics differ from {}",
        expected_file.display()
    );
}

#[test]
fn valid_specs_pass_alone_and_as_a_set() {
    let set = load_dir(&corpus().join("valid"));
    assert!(set.len() >= 6, "the valid corpus has its files");
    for (name, r) in &set {
        if let Err(d) = r {
            panic!("{name} should be valid:\n{}", render(d));
        }
    }
    let d = check_set(&set);
    assert!(d.is_empty(), "{}", render(&d));
    // Spot checks that the files mean what they say.
    let app = &set["app"].as_ref().unwrap().spec;
    assert_eq!(app.extra.ports.len(), 1);
    assert_eq!(app.extra.ports[0].host, 8082);
    assert_eq!(app.extra.resources.memory, Some(1 << 30));
    assert_eq!(app.extra.resources.pids, Some(100));
    assert_eq!(app.env.get("REGION").unwrap(), "eu-1");
    let db = &set["db"].as_ref().unwrap().spec;
    assert_eq!(db.env.get("POSTGRES_USER").unwrap(), "app");
    assert_eq!(db.env.get("POSTGRES_DB").unwrap(), "app");
    let web = &set["web"].as_ref().unwrap();
    assert_eq!(web.spec.extra.ports.len(), 6);
    assert_eq!(web.files, vec![PathBuf::from("valid/web.toml")]);
    assert_eq!(set["app"].as_ref().unwrap().files.len(), 3);
}

#[test]
fn invalid_specs_fail_with_the_expected_diagnostics() {
    let dir = corpus().join("invalid");
    let mut cases = 0;
    for (name, r) in load_dir(&dir) {
        cases += 1;
        let diags = match r {
            Ok(_) => panic!("invalid/{name}.toml parsed"),
            Err(d) => d,
        };
        check_expected(&dir.join(format!("{name}.expected")), &render(&diags));
    }
    assert!(cases >= 10);
}

#[test]
fn sets_fail_with_the_expected_diagnostics() {
    let dir = corpus().join("sets");
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 3);
    for case in cases {
        let set = load_dir(&case);
        let mut all: Vec<Diagnostic> = set
            .values()
            .filter_map(|r| r.as_ref().err())
            .flatten()
            .cloned()
            .collect();
        all.extend(check_set(&set));
        assert!(!all.is_empty(), "{} has no problem", case.display());
        check_expected(&case.join("expected"), &render(&all));
    }
}
