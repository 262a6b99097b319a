//! The binary's basic contract: version, help, usage errors.

use std::process::Command;

use berth_e2e::berth_bin;

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(berth_bin()).arg("version").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert_eq!(s.trim(), format!("berth {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = Command::new(berth_bin())
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}
