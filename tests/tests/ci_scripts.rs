//! CI's own scripts fail when what they run fails. `fuzz/ci` is run from a copy beside stub
//! `cargo`, `rustup`, `cargo-fuzz` and `seed`, so a fuzz target's crash is simulated without
//! building anything: the script must exit non-zero and name the target.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_e2e::require_root;

fn write_exec(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs a copy of fuzz/ci whose `cargo fuzz run` exits with `run_status`; returns its exit code
/// and what it printed.
fn fuzz_ci_with_run_status(run_status: i32) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let fuzz = dir.path().join("fuzz");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&fuzz).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/ci");
    fs::copy(&script, fuzz.join("ci")).unwrap();
    write_exec(&fuzz.join("seed"), "#!/bin/sh\nexit 0\n");
    write_exec(
        &bin.join("cargo"),
        &format!(
            "#!/bin/sh\ncase \"$*\" in\n*'fuzz list'*) echo target_a ;;\n\
             *'fuzz run'*) echo 'thread main panicked at src/lib.rs'; exit {run_status} ;;\n\
             *) exit 0 ;;\nesac\n"
        ),
    );
    write_exec(&bin.join("rustup"), "#!/bin/sh\necho nightly-x86_64\n");
    write_exec(&bin.join("cargo-fuzz"), "#!/bin/sh\nexit 0\n");
    let out = Command::new(fuzz.join("ci"))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        // No ~/.cargo/env to source: it would put the real cargo first on PATH.
        .env("HOME", dir.path())
        .env("FUZZ_SECONDS", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn fuzz_ci_fails_when_a_target_crashes() {
    if !require_root() {
        return;
    }
    let (code, text) = fuzz_ci_with_run_status(77);
    assert_ne!(code, 0, "a crashing target passed fuzz/ci:\n{text}");
    assert!(
        text.contains("target_a"),
        "the failure names the target:\n{text}"
    );
    assert!(
        text.contains("exit 77"),
        "the failure gives the status:\n{text}"
    );
}

#[test]
fn fuzz_ci_passes_when_every_target_runs_clean() {
    if !require_root() {
        return;
    }
    let (code, text) = fuzz_ci_with_run_status(0);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("without a crash"), "{text}");
}
