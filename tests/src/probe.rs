//! The C probes under `tests/probe/`, built with gcc for the tests that run them in containers.

use std::path::Path;
use std::process::Command;

/// Builds `tests/probe/<src>` with gcc and `flags` into `out` (its parent dirs made).
pub fn build_c(src: &str, out: &Path, flags: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("probe")
        .join(src);
    std::fs::create_dir_all(out.parent().expect("a parent dir")).unwrap();
    let o = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(&src)
        .output()
        .expect("gcc (build-essential) is needed for the probes");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Where the host's dynamically linked binaries look for their ELF interpreter: an image that
/// ships its own file there takes over any such binary exec'd in the container.
pub const ELF_INTERPRETER: &str = "lib64/ld-linux-x86-64.so.2";

/// Builds `fake_interp.c` (freestanding, x86_64) into `out`.
pub fn build_fake_interp(out: &Path) {
    build_c(
        "fake_interp.c",
        out,
        &[
            "-nostdlib",
            "-static",
            "-no-pie",
            "-O2",
            "-fno-stack-protector",
            "-fno-builtin",
        ],
    );
}

/// `(st_dev, st_ino)` of the host binaries no container may reach: `berth` and `berth-shim`.
pub fn host_binaries() -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let berth = crate::berth_bin();
    [berth.clone(), berth.with_file_name("berth-shim")]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        })
        .collect()
}

/// The `(st_dev, st_ino)` a fake interpreter reported (`interp_exe D I`), if any.
pub fn interp_exe(output: &str) -> Option<(u64, u64)> {
    let line = output.lines().find_map(|l| l.strip_prefix("interp_exe "))?;
    let (d, i) = line.split_once(' ')?;
    Some((d.parse().ok()?, i.trim().parse().ok()?))
}
