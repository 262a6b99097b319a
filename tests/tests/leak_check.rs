//! The suite's final leak check (`tests/setup/leak-check`) judges berth's objects only: what a
//! peer leaves on a machine the first time it runs (podman: cgroups `libpod_parent`, a
//! `/run/netns` mount, nftables tables `ip filter` and `ip nat`) must never fail it, while an
//! object named like the suite's (`bt...`) that outlives the tests must.
//!
//! Other tests run beside this one and make `bt` objects of their own, so the assertions are
//! about the objects this test made, never about the whole report.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::{require_root, unique_instance};

fn leak_check(args: &[&str]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("setup/leak-check");
    let out = Command::new(script)
        .args(args)
        .output()
        .expect("run leak-check");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn run(cmd: &[&str]) {
    let st = Command::new(cmd[0]).args(&cmd[1..]).status().unwrap();
    assert!(st.success(), "{cmd:?}: {st}");
}

/// Objects made for the test, removed on drop even when an assertion fails.
#[derive(Default)]
struct Made {
    cgroups: Vec<PathBuf>,
    tables: Vec<(String, String)>,
    mounts: Vec<PathBuf>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
            let _ = std::fs::remove_dir(m);
        }
        for (family, name) in &self.tables {
            let _ = Command::new("nft")
                .args(["delete", "table", family, name])
                .status();
        }
        for c in self.cgroups.iter().rev() {
            let _ = std::fs::remove_dir(c);
        }
    }
}

#[test]
fn peers_objects_never_fail_it_and_berths_do() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before");
    let before = before.to_str().unwrap();
    let (code, text) = leak_check(&["snapshot", before]);
    assert_eq!(code, 0, "{text}");

    let pid = std::process::id();
    let peer = format!("libpod_parent_{pid}");
    let ours = unique_instance("lk");
    let mut made = Made::default();
    // A peer's cgroups, as podman makes them in every hierarchy, and one of ours.
    for h in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
    ] {
        let h = Path::new(h);
        if !h.join("cgroup.procs").exists() {
            continue;
        }
        for name in [peer.clone(), format!("{peer}/conmon"), ours.clone()] {
            let p = h.join(&name);
            std::fs::create_dir(&p).unwrap();
            made.cgroups.push(p);
        }
        break;
    }
    assert!(!made.cgroups.is_empty(), "no cgroup hierarchy to write to");
    // A peer's tables (netavark's iptables-nft ones) and one of ours.
    let peer_table = format!("peer{pid}");
    for (family, name) in [("ip", peer_table.as_str()), ("inet", ours.as_str())] {
        run(&["nft", "add", "table", family, name]);
        made.tables.push((family.into(), name.into()));
    }
    // A peer's mount, as podman's /run/netns.
    let peer_mount = PathBuf::from(format!("/run/peer-netns-{pid}"));
    std::fs::create_dir_all(&peer_mount).unwrap();
    run(&["mount", "-t", "tmpfs", "peer", peer_mount.to_str().unwrap()]);
    made.mounts.push(peer_mount.clone());

    let (code, text) = leak_check(&["compare", before]);
    assert_eq!(code, 1, "our cgroup and table must be reported:\n{text}");
    assert!(text.contains(&format!("nft table inet {ours}")), "{text}");
    assert!(text.contains(&format!("/{ours}\n")), "{text}");
    for peer_object in [
        peer.as_str(),
        peer_table.as_str(),
        peer_mount.to_str().unwrap(),
    ] {
        assert!(
            !text.contains(peer_object),
            "a peer's object {peer_object} was judged:\n{text}"
        );
    }

    // Once ours are gone, nothing of this test is reported, the peer's objects still there.
    run(&["nft", "delete", "table", "inet", &ours]);
    made.tables.retain(|(_, n)| *n != ours);
    for c in made.cgroups.clone() {
        if c.ends_with(&ours) {
            std::fs::remove_dir(&c).unwrap();
            made.cgroups.retain(|x| *x != c);
        }
    }
    let (_, text) = leak_check(&["compare", before]);
    assert!(!text.contains(&ours), "{text}");
    assert!(!text.contains(&peer), "{text}");
}
