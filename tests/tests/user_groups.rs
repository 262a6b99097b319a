//! Users and groups as Docker and podman give them. The same image, with its own /etc/passwd
//! and /etc/group, runs under berth (a container through the agent, and `berth exec` into it)
//! and under podman with runc, for every form of `user` and `group_add`: `id` and the kernel's
//! `Groups:` line must be the same. And an image whose /etc/passwd is a FIFO, a link to
//! /dev/zero or a huge file fails its start at once, saying why, instead of hanging or eating
//! memory.

use std::time::Duration;

use berth_e2e::agent::{AgentOptions, TestAgent};
use berth_e2e::image::{Compression, Entry, ImageBuilder, Settings, busybox_rootfs};
use berth_e2e::podman::PodmanImage;
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_e2e::require_root;

const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
    app:x:1000:1000:App:/home/app:/bin/sh\n\
    nobody:x:65534:65534:nobody:/:/bin/false\n";
const GROUP: &[u8] = b"root:x:0:root\n\
    wheel:x:10:app,root\n\
    audio:x:29:app\n\
    staff:x:50:\n\
    app:x:1000:app\n\
    nogroup:x:65534:\n";

/// The ids as the kernel has them. (Names are compared where the image's files have them all:
/// podman writes entries for unknown ids into the container's /etc/passwd and /etc/group, so
/// its `id` names `gid=1234(1234)` where Docker and berth print `gid=1234`.)
const REPORT: &str = "id -u; id -g; id -G; grep ^Groups: /proc/self/status";
const REPORT_NAMES: &str = "id";

/// The busybox rootfs with `etc/passwd` and `etc/group` replaced by `files`.
fn rootfs(files: Vec<Entry>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = busybox_rootfs()
        .into_iter()
        .filter(|e| !matches!(e, Entry::File { path, .. } if path == "etc/passwd" || path == "etc/group"))
        .collect();
    entries.extend(files);
    entries
}

fn push(reg: &TestRegistry, prefix: &str, entries: &[Entry]) -> String {
    let repo = unique_repo(prefix);
    let img = ImageBuilder::new()
        .settings(Settings {
            cmd: Some(vec!["/bin/sh".into()]),
            ..Settings::default()
        })
        .layer(entries, Compression::Gzip)
        .build();
    reg.push_image(&repo, "1", &img);
    format!("{}/{repo}:1", reg.addr)
}

fn agent(prefix: &str) -> TestAgent {
    let opts = AgentOptions::default();
    let mut a = TestAgent::new(prefix, &opts);
    a.start(&opts);
    a
}

struct Case {
    /// `user` in the spec, `--user` for podman; empty: the default (root).
    user: &'static str,
    group_add: &'static [&'static str],
    /// Every id has a name in the image's files.
    named: bool,
}

const CASES: &[Case] = &[
    Case {
        user: "",
        group_add: &[],
        named: true,
    },
    Case {
        user: "app",
        group_add: &[],
        named: true,
    },
    Case {
        user: "1000",
        group_add: &[],
        named: true,
    },
    Case {
        user: "app:audio",
        group_add: &[],
        named: true,
    },
    Case {
        user: "app:1234",
        group_add: &[],
        named: false,
    },
    Case {
        user: "4242",
        group_add: &[],
        named: false,
    },
    Case {
        user: "4242:7",
        group_add: &[],
        named: false,
    },
    Case {
        user: "app",
        group_add: &["staff", "77"],
        named: false,
    },
    Case {
        user: "",
        group_add: &["audio"],
        named: true,
    },
];

#[test]
fn users_and_groups_match_podman_in_the_container_and_in_exec() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let entries = rootfs(vec![
        Entry::file("etc/passwd", PASSWD),
        Entry::file("etc/group", GROUP),
    ]);
    let image = push(&reg, "ids", &entries);
    let dir = tempfile::tempdir().unwrap();
    let peer = PodmanImage::import(dir.path(), &entries);
    let a = agent("id");
    for (i, c) in CASES.iter().enumerate() {
        let report = if c.named {
            format!("{REPORT_NAMES}; {REPORT}")
        } else {
            REPORT.to_string()
        };
        let mut spec = format!(
            "image = \"{image}\"\ncommand = [\"sh\", \"-c\", \"{report}; trap 'exit 0' TERM; while :; do sleep 1; done\"]\n"
        );
        if !c.user.is_empty() {
            spec += &format!("user = {:?}\n", c.user);
        }
        if !c.group_add.is_empty() {
            let list: Vec<String> = c
                .group_add
                .iter()
                .map(|g| match g.parse::<u32>() {
                    Ok(n) => n.to_string(),
                    Err(_) => format!("{g:?}"),
                })
                .collect();
            spec += &format!("group_add = [{}]\n", list.join(", "));
        }
        a.write_spec(&format!("c{i}"), &spec);
    }
    for (i, c) in CASES.iter().enumerate() {
        let name = format!("c{i}");
        let mut opts: Vec<&str> = Vec::new();
        if !c.user.is_empty() {
            opts.extend(["--user", c.user]);
        }
        for g in c.group_add {
            opts.extend(["--group-add", g]);
        }
        let mut script = REPORT.to_string();
        if c.named {
            script = format!("{REPORT_NAMES}; {REPORT}");
        }
        let want = peer.run(&opts, &["sh", "-c", &script]);
        assert!(want.contains("Groups:"), "{want}");

        a.wait_running(&name);
        let mut logs = String::new();
        berth_e2e::agent::wait_until(Duration::from_secs(30), "the container's report", || {
            logs = String::from_utf8_lossy(&a.berth(&["logs", &name]).stdout).into_owned();
            logs.contains("Groups:")
        });
        assert_eq!(
            logs, want,
            "the container, user {:?} group_add {:?}",
            c.user, c.group_add
        );

        let out = a.berth(&["exec", &name, "--", "sh", "-c", &script]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "berth exec, user {:?} group_add {:?}",
            c.user,
            c.group_add
        );
    }
}

#[test]
fn a_hostile_etc_passwd_fails_the_start_at_once_with_the_reason() {
    if !require_root() {
        return;
    }
    let reg = TestRegistry::plain();
    let group = Entry::file("etc/group", GROUP);
    let cases = [
        (
            "fifo",
            Entry::Fifo {
                path: "etc/passwd".into(),
            },
            "not a regular file",
        ),
        (
            "zero",
            Entry::symlink("etc/passwd", "/dev/zero"),
            "not a regular file",
        ),
        (
            "huge",
            Entry::file("etc/passwd", &vec![b'#'; 5 << 20]),
            "larger than",
        ),
    ];
    let a = agent("pw");
    for (name, passwd, _) in &cases {
        let image = push(&reg, name, &rootfs(vec![passwd.clone(), group.clone()]));
        // The memory limit keeps a reader of /dev/zero from taking the shared machine with it.
        a.write_spec(
            name,
            &format!(
                "image = \"{image}\"\nrestart = \"never\"\ncommand = [\"true\"]\n[resources]\nmemory = \"64MiB\"\n"
            ),
        );
    }
    for (name, _, why) in &cases {
        let s = a.wait_status(name, "refused", Duration::from_secs(30), |s| {
            s["error"]
                .as_str()
                .is_some_and(|e| e.contains("/etc/passwd"))
        });
        let e = s["error"].as_str().unwrap();
        assert!(e.contains(why), "{name}: {s}");
        assert_ne!(s["status"], "running", "{s}");
    }
}
