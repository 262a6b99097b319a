//! Layers built to exhaust berth's memory while it unpacks (issue 13), pulled with `berth pull`
//! through the fault proxy from the real registry, each measured by the pull's peak RSS:
//! a PAX header of 256 MiB and a GNU long name of 256 MiB (which the tar parser would buffer
//! whole) are refused at 1 MiB; 40,000 directories with 4 KiB paths (whose times were all
//! remembered by path) unpack within a bounded bookkeeping budget.
//!
//! A child's peak RSS (`ru_maxrss`) starts from its parent's at the exec, so everything large
//! this test makes is made before the first measurement, and no pull's output is kept whole:
//! each measurement carries the same offset. The state dir is a tmpfs, so 40,000 directories
//! cost no disk time.

use std::io::Read;
use std::process::{Command, Stdio};

use berth_e2e::berth_env::BerthEnv;
use berth_e2e::image::{
    Blob, Compression, Entry, ImageBuilder, fill, long_entry, pad, raw_header, streamed_layer,
};
use berth_e2e::proxy::FaultProxy;
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::tmpfs::Tmpfs;

/// What a pull may take beyond an honest pull's peak.
const HEADROOM_KIB: u64 = 40 << 10;

struct Run {
    code: i32,
    stderr: String,
    max_rss_kib: u64,
}

/// Runs berth and reaps it with wait4, for its peak RSS.
// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn measured(env: &BerthEnv, args: &[&str]) -> Run {
    let mut child = Command::new(berth_e2e::berth_bin())
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tail only: a refused header can make a very long error.
    let mut tail: Vec<u8> = Vec::new();
    let mut pipe = child.stderr.take().unwrap();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = pipe.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 128 << 10 {
            tail.drain(..tail.len() - (64 << 10));
        }
    }
    let stderr = String::from_utf8_lossy(&tail).into_owned();
    let mut status = 0;
    // SAFETY: rusage is plain old data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaping our own child by pid, into locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    Run {
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stderr,
        max_rss_kib: ru.ru_maxrss as u64,
    }
}

fn push(proxy: &FaultProxy, layer: Blob) -> String {
    let repo = unique_repo("bomb");
    let img = ImageBuilder::new().blob(layer).build();
    TestRegistry::plain().push_image(&repo, "v1", &img);
    format!("{}/{repo}:v1", proxy.addr)
}

fn pax_bomb() -> Blob {
    streamed_layer(|out| {
        let size = 256u64 << 20;
        raw_header(
            out,
            tar::EntryType::XHeader,
            "PaxHeaders/victim",
            size,
            0o644,
        );
        fill(out, b'a', size);
        pad(out, size);
        raw_header(out, tar::EntryType::Regular, "victim", 0, 0o644);
    })
}

fn long_name_bomb() -> Blob {
    streamed_layer(|out| {
        let size = 256u64 << 20;
        raw_header(
            out,
            tar::EntryType::GNULongName,
            "././@LongLink",
            size,
            0o644,
        );
        fill(out, b'a', size);
        pad(out, size);
        raw_header(out, tar::EntryType::Regular, "victim", 0, 0o644);
    })
}

/// 15 nested dirs of 250-character names, then 40,000 dirs of 190-character names in the
/// deepest: every path near 4 KiB.
fn many_long_dirs() -> Blob {
    streamed_layer(|out| {
        let mut prefix = String::new();
        for i in 0..15 {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix += &format!("{i:02}{}", "p".repeat(248));
            long_entry(out, tar::EntryType::Directory, &prefix, 0o755);
        }
        for i in 0..40_000 {
            let path = format!("{prefix}/{i:06}{}", "d".repeat(184));
            long_entry(out, tar::EntryType::Directory, &path, 0o755);
        }
    })
}

#[test]
fn header_and_directory_bombs_stay_within_bounded_memory() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let env = BerthEnv::new(&format!(
        "[registries.\"{}\"]\ninsecure = true\n[images]\nmin_free = 0\n",
        proxy.addr
    ));
    let _disk = Tmpfs::mount(&env.state_dir, 1 << 30);
    let bombs = [
        ("256 MiB PAX header", pax_bomb(), true),
        ("256 MiB GNU long name", long_name_bomb(), true),
        ("40,000 dirs with 4 KiB paths", many_long_dirs(), false),
    ];
    // The baseline: an honest layer of a few files through the same proxy.
    let honest = push(
        &proxy,
        Blob::layer(
            &[Entry::dir("etc"), Entry::file("etc/x", b"x")],
            Compression::Gzip,
            false,
        ),
    );
    let base = measured(&env, &["pull", &honest]);
    assert_eq!(base.code, 0, "{}", base.stderr);
    eprintln!("honest pull: {} KiB peak", base.max_rss_kib);

    let mut failed = Vec::new();
    for (name, layer, refused) in bombs {
        let reference = push(&proxy, layer);
        let run = measured(&env, &["pull", &reference]);
        eprintln!(
            "{name}: exit {}, {} KiB peak: {}",
            run.code,
            run.max_rss_kib,
            run.stderr.trim()
        );
        if run.max_rss_kib > base.max_rss_kib + HEADROOM_KIB {
            failed.push(format!(
                "{name}: peak RSS {} KiB, an honest pull's {} KiB",
                run.max_rss_kib, base.max_rss_kib
            ));
        }
        if refused {
            let last = run.stderr.lines().last().unwrap_or_default();
            if run.code != 1
                || !last.contains(&reference)
                || !last.contains("take more than 1048576 bytes")
            {
                failed.push(format!("{name}: not refused clearly: {}", run.stderr));
            }
        } else if run.code != 0 {
            failed.push(format!("{name}: failed: {}", run.stderr));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
