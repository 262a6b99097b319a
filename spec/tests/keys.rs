//! Every key of the spec format: what it accepts, what it normalises to, how it fails.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::model::*;
use berth_spec::{ContainerSpec, SourceFile, parse_spec, parse_spec_str};

const IMG: &str = "image = \"nginx:1.27\"\n";

fn ok(body: &str) -> ContainerSpec {
    let text = format!("{IMG}{body}");
    match parse_spec_str("web", Path::new("web.toml"), &text) {
        Ok(p) => ContainerSpec::clone(&p.spec),
        Err(d) => panic!("{text}\n{d:#?}"),
    }
}

/// The diagnostics of a spec, rendered; `IMG` is prepended so line numbers start at 2.
fn errs(body: &str) -> Vec<String> {
    let text = format!("{IMG}{body}");
    match parse_spec_str("web", Path::new("web.toml"), &text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

fn one_err(body: &str, expected: &str) {
    let e = errs(body);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].contains(expected), "{:?} lacks {expected:?}", e[0]);
}

#[test]
fn the_one_liner_gets_every_default() {
    let s = ok("");
    let d = ContainerSpec::with_defaults("web", s.image.clone());
    assert_eq!(s, d);
    assert_eq!(s.image.to_string(), "docker.io/library/nginx:1.27");
}

#[test]
fn image_forms_and_errors() {
    let s = parse_spec_str(
        "a",
        Path::new("a.toml"),
        "image = \"oci-archive:/srv/a.tar\"",
    )
    .unwrap();
    assert!(matches!(
        s.spec.image,
        berth_spec::ImageSource::OciArchive { .. }
    ));
    let d = parse_spec_str("a", Path::new("a.toml"), "state = \"running\"").unwrap_err();
    assert_eq!(
        d[0].to_string(),
        "a.toml:1:1: error: image: missing required key"
    );
    let d = parse_spec_str("a", Path::new("a.toml"), "image = \"Nginx\"").unwrap_err();
    assert!(
        d[0].to_string()
            .starts_with("a.toml:1:9: error: image: invalid image reference")
    );
    let d = parse_spec_str("a", Path::new("a.toml"), "image = 5").unwrap_err();
    assert!(d[0].message.contains("expected a string, found an integer"));
}

#[test]
fn bad_name_is_reported() {
    let d = parse_spec_str("Web_1", Path::new("Web_1.toml"), IMG).unwrap_err();
    assert!(d[0].message.contains("invalid container name"), "{d:?}");
}

#[test]
fn syntax_errors_point_at_the_line() {
    let d = parse_spec_str("a", Path::new("a.toml"), "image = \"x\"\nports = [\n").unwrap_err();
    assert_eq!((d[0].line, d[0].column), (2, 10), "{d:?}");
    assert!(d[0].message.contains("unclosed array"), "{d:?}");
    let d = parse_spec_str("a", Path::new("a.toml"), "image = \"x\"\nimage = \"y\"\n").unwrap_err();
    assert_eq!(d[0].line, 2, "{d:?}");
}

#[test]
fn unknown_keys_suggest_and_all_errors_are_reported() {
    let e = errs(
        "imgae = \"x\"\nstate = \"runing\"\n[resources]\nmemroy = \"1g\"\ncpus = \"2\"\n[secrity]\n",
    );
    assert_eq!(
        e,
        vec![
            "web.toml:2:1: error: imgae: unknown key (did you mean \"image\"?)",
            "web.toml:3:9: error: state: unknown value \"runing\" (did you mean \"running\"?)",
            "web.toml:5:1: error: resources.memroy: unknown key (did you mean \"memory\"?)",
            "web.toml:6:8: error: resources.cpus: expected a number such as 1.5, found a string",
            "web.toml:7:2: error: secrity: unknown key (did you mean \"security\"?)",
        ]
    );
    let e = errs("zzz = 1\n");
    assert!(
        e[0].contains("unknown key (expected one of: image, state"),
        "{e:?}"
    );
}

#[test]
fn enums() {
    let s =
        ok("state = \"paused\"\nrestart = \"on-failure\"\npull = \"always\"\nnetwork = \"none\"\n");
    assert_eq!(s.state, DesiredState::Paused);
    assert_eq!(s.restart, RestartPolicy::OnFailure);
    assert_eq!(s.pull, PullPolicy::Always);
    assert_eq!(s.network, NetworkMode::None);
    one_err(
        "restart = \"sometimes\"\n",
        "expected one of: always, on-failure, never",
    );
    one_err("pull = true\n", "expected a string, found a boolean");
    one_err("network = \"hots\"\n", "did you mean \"host\"");
}

#[test]
fn entrypoint_and_command() {
    let s = ok("entrypoint = [\"/bin/app\"]\ncommand = [\"--port\", \"80\"]\n");
    assert_eq!(s.extra.entrypoint, Some(vec!["/bin/app".to_string()]));
    assert_eq!(
        s.command.as_deref(),
        Some(&["--port".to_string(), "80".to_string()][..])
    );
    assert_eq!(ok("entrypoint = []\n").extra.entrypoint, Some(vec![]));
    one_err(
        "command = \"echo hi\"\n",
        "expected an array such as [\"/bin/sh\", \"-c\", \"echo hi\"]",
    );
    one_err(
        "command = [\"a\", 1]\n",
        "command[1]: expected a string, found an integer",
    );
    one_err(
        "command = [\"a\\u0000b\"]\n",
        "command[0]: must not contain a NUL",
    );
    assert_eq!(ok("command = [\"\"]\n").command, Some(vec![String::new()]));
}

#[test]
fn env_and_labels() {
    let s = ok(
        "[env]\nA = \"1\"\nPORT = 8080\nDEBUG = true\n[labels]\n\"com.example.team\" = \"web\"\n",
    );
    assert_eq!(s.env.get("PORT").unwrap(), "8080");
    assert_eq!(s.env.get("DEBUG").unwrap(), "true");
    assert_eq!(s.extra.labels.get("com.example.team").unwrap(), "web");
    one_err("[env]\n\"A B\" = \"x\"\n", "invalid variable name");
    one_err(
        "[env]\nA = [1]\n",
        "env.A: expected a string, found an array",
    );
    one_err("env = \"A=1\"\n", "expected a table of strings");
    one_err("[labels]\n\"\" = \"x\"\n", "empty label name");
}

fn with_env_files(
    base: &str,
    dropins: &[&str],
    files: &[(&str, &str)],
) -> Result<ContainerSpec, Vec<String>> {
    let mut srcs = vec![SourceFile::new("/specs/web.toml", base)];
    for (i, d) in dropins.iter().enumerate() {
        srcs.push(SourceFile::new(format!("/specs/web.toml.d/{i}.toml"), *d));
    }
    let map: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    parse_spec("web", &srcs, &mut |p: &Path| {
        map.get(p)
            .cloned()
            .ok_or_else(|| "no such file".to_string())
    })
    .map(|p| ContainerSpec::clone(&p.spec))
    .map_err(|d| d.iter().map(ToString::to_string).collect())
}

#[test]
fn env_files_merge_in_order_and_env_wins() {
    let s = with_env_files(
        "image = \"x\"\nenv_files = [\"a.env\", \"/etc/b.env\"]\n[env]\nC = \"env\"\n",
        &[],
        &[("/specs/a.env", "A=a\nB=a\nC=a\n"), ("/etc/b.env", "B=b\n")],
    )
    .unwrap();
    assert_eq!(s.env.get("A").unwrap(), "a");
    assert_eq!(s.env.get("B").unwrap(), "b");
    assert_eq!(s.env.get("C").unwrap(), "env");
    assert_eq!(
        s.extra.env_files,
        vec![PathBuf::from("/specs/a.env"), PathBuf::from("/etc/b.env")]
    );
}

#[test]
fn env_file_errors_name_the_env_file_or_the_entry() {
    let e = with_env_files(
        "image = \"x\"\nenv_files = [\"missing.env\", \"bad.env\"]\n",
        &[],
        &[("/specs/bad.env", "OK=1\nNOPE\n")],
    )
    .unwrap_err();
    assert_eq!(
        e,
        vec![
            "/specs/bad.env:2:1: error: NOPE: expected KEY=VALUE (berth does not pass its own environment through)",
            "/specs/web.toml:2:14: error: env_files[0]: cannot read env file /specs/missing.env: no such file",
        ]
    );
}

#[test]
fn env_files_in_a_dropin_resolve_against_the_dropin_dir() {
    let s = with_env_files(
        "image = \"x\"\n",
        &["env_files = [\"host.env\"]\n"],
        &[("/specs/web.toml.d/host.env", "H=1\n")],
    )
    .unwrap();
    assert_eq!(s.env.get("H").unwrap(), "1");
}

#[test]
fn dropins_merge_and_errors_point_at_the_right_file() {
    let s = with_env_files(
        "image = \"x\"\nports = [\"80:80\"]\n[resources]\nmemory = \"1g\"\npids = 10\n",
        &[
            "ports = [\"8080:80\"]\n[resources]\nmemory = \"2g\"\n",
            "state = \"stopped\"\n",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(s.extra.ports.len(), 1);
    assert_eq!(s.extra.ports[0].host, 8080);
    assert_eq!(s.extra.resources.memory, Some(2 << 30));
    assert_eq!(s.extra.resources.pids, Some(10));
    assert_eq!(s.state, DesiredState::Stopped);
    let e = with_env_files(
        "image = \"x\"\n",
        &["\n[resources]\nmemory = \"2GB\"\n", "x = 1\n"],
        &[],
    )
    .unwrap_err();
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with(
            "/specs/web.toml.d/0.toml:3:10: error: resources.memory: invalid size \"2GB\""
        ),
        "{}",
        e[0]
    );
    assert!(
        e[1].starts_with("/specs/web.toml.d/1.toml:1:1: error: x: unknown key"),
        "{}",
        e[1]
    );
    // A syntax error in a drop-in names the drop-in.
    let e = with_env_files("image = \"x\"\n", &["a = \n"], &[]).unwrap_err();
    assert!(e[0].starts_with("/specs/web.toml.d/0.toml:1:"), "{e:?}");
}

#[test]
fn workdir_user_hostname() {
    let s = ok("workdir = \"/srv//app/\"\nuser = \"1000:1000\"\nhostname = \"web-1\"\n");
    assert_eq!(s.extra.workdir.as_deref(), Some("/srv/app"));
    assert_eq!(
        s.extra.user,
        Some(User {
            user: UserId::Id(1000),
            group: Some(UserId::Id(1000))
        })
    );
    assert_eq!(s.extra.hostname.as_deref(), Some("web-1"));
    assert_eq!(
        ok("user = 33\n").extra.user,
        Some(User {
            user: UserId::Id(33),
            group: None
        })
    );
    assert_eq!(
        ok("user = \"nginx\"\n").extra.user,
        Some(User {
            user: UserId::Name("nginx".into()),
            group: None
        })
    );
    one_err("workdir = \"srv\"\n", "not an absolute path");
    one_err("user = \"a b\"\n", "invalid user");
    one_err("user = -1\n", "expected a string, found an integer");
    one_err("hostname = \"a_b\"\n", "invalid hostname");
}

#[test]
fn group_add_names_and_gids() {
    let s = ok("group_add = [\"audio\", 44, \"1000\"]\n");
    assert_eq!(
        s.extra.group_add,
        [
            UserId::Name("audio".into()),
            UserId::Id(44),
            UserId::Id(1000)
        ]
    );
    assert!(ok("").extra.group_add.is_empty());
    one_err("group_add = [\"a b\"]\n", "invalid group");
    one_err("group_add = [\"app:audio\"]\n", "invalid group");
    one_err("group_add = [-1]\n", "out of range");
    one_err("group_add = [4294967296]\n", "out of range");
    one_err("group_add = [true]\n", "a group name or a gid");
    one_err("group_add = \"audio\"\n", "an array");
    // Positions point at the entry.
    let e = errs("group_add = [\"ok\", \"b@d\"]\n");
    assert!(
        e[0].starts_with("web.toml:2:20: error: group_add[1]"),
        "{e:?}"
    );
    // Specs without it keep their recreate hash.
    assert_eq!(
        berth_spec::spec_hash(&ok("")),
        berth_spec::spec_hash(&ContainerSpec::with_defaults("web", ok("").image))
    );
    assert_ne!(
        berth_spec::spec_hash(&ok("group_add = [44]\n")),
        berth_spec::spec_hash(&ok(""))
    );
}

#[test]
fn stop_signal_and_timeout() {
    let s = ok("stop_signal = \"quit\"\nstop_timeout = \"1m30s\"\n");
    assert_eq!(s.extra.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(s.extra.stop_timeout, Duration::from_secs(90));
    one_err("stop_signal = \"SIGTREM\"\n", "did you mean \"SIGTERM\"");
    one_err("stop_timeout = \"10\"\n", "missing unit");
    one_err("stop_timeout = 10\n", "expected a string, found an integer");
}

#[test]
fn depends_on_forms() {
    let s = ok("depends_on = [\"db\", { name = \"cache\", condition = \"healthy\" }]\n");
    assert_eq!(
        s.extra.depends_on,
        vec![
            Dependency {
                name: "cache".into(),
                condition: DependencyCondition::Healthy
            },
            Dependency {
                name: "db".into(),
                condition: DependencyCondition::Started
            },
        ]
    );
    one_err("depends_on = [\"web\"]\n", "cannot depend on itself");
    one_err("depends_on = [\"db\", \"db\"]\n", "listed twice");
    one_err("depends_on = [\"DB\"]\n", "invalid container name");
    one_err(
        "depends_on = [{ name = \"db\", condition = \"ready\" }]\n",
        "unknown value \"ready\"",
    );
    one_err(
        "depends_on = [{ condition = \"healthy\" }]\n",
        "missing key \"name\"",
    );
    one_err("depends_on = [1]\n", "expected a container name or a table");
    one_err("depends_on = \"db\"\n", "expected an array");
}

#[test]
fn init_and_booleans() {
    assert!(ok("init = true\n").init);
    one_err("init = \"yes\"\n", "expected true or false, found a string");
}

#[test]
fn ports_short_and_tables() {
    let s = ok(
        "ports = [\"8080:80\", \"127.0.0.1:5353:53/udp\", { host = 9000, container = 90, protocol = \"udp\", host_ip = \"2001:db8::1\" }, { host = \"7000-7001\", container = \"8000-8001\" }]\n",
    );
    let ip = |x: &str| Some(x.parse::<IpAddr>().unwrap());
    assert_eq!(s.extra.ports.len(), 5);
    assert!(s.extra.ports.contains(&PortMapping {
        host_ip: None,
        host: 8080,
        container: 80,
        protocol: Protocol::Tcp
    }));
    assert!(s.extra.ports.contains(&PortMapping {
        host_ip: ip("127.0.0.1"),
        host: 5353,
        container: 53,
        protocol: Protocol::Udp
    }));
    assert!(s.extra.ports.contains(&PortMapping {
        host_ip: ip("2001:db8::1"),
        host: 9000,
        container: 90,
        protocol: Protocol::Udp
    }));
    assert!(s.extra.ports.contains(&PortMapping {
        host_ip: None,
        host: 7001,
        container: 8001,
        protocol: Protocol::Tcp
    }));
    // Sorted, so order in the file does not matter.
    assert_eq!(
        ok("ports = [\"1:1\", \"2:2\"]\n"),
        ok("ports = [\"2:2\", \"1:1\"]\n")
    );
    // The same port on tcp and udp is two mappings, not a clash.
    assert_eq!(
        ok("ports = [\"53:53\", \"53:53/udp\"]\n").extra.ports.len(),
        2
    );
}

#[test]
fn port_errors() {
    one_err("ports = [\"80\"]\n", "berth never picks a random host port");
    one_err(
        "ports = [\"8080:80\", \"127.0.0.1:8080:81\"]\n",
        "host port 8080/tcp is published twice",
    );
    one_err("ports = [\"8000-8001:80\"]\n", "differ in length");
    one_err("ports = [{ host = 80 }]\n", "missing key \"container\"");
    one_err(
        "ports = [{ host = 0, container = 80 }]\n",
        "ports[0].host: 0 is out of range",
    );
    one_err(
        "ports = [{ host = 80, container = 80, proto = \"udp\" }]\n",
        "did you mean \"protocol\"",
    );
    one_err(
        "ports = [{ host = 80, container = 80, host_ip = \"x\" }]\n",
        "\"x\" is not an IP address",
    );
    one_err(
        "ports = [80]\n",
        "expected a string such as \"8080:80\" or a table",
    );
    one_err(
        "network = \"host\"\nports = [\"80:80\"]\n",
        "ports cannot be published with network = \"host\"",
    );
    one_err(
        "network = \"none\"\nports = [\"80:80\"]\n",
        "network = \"none\"",
    );
}

#[test]
fn mounts_short_and_tables() {
    let s = ok(r#"mounts = [
  "/srv/data:/data:ro",
  "cache:/var/cache",
  { type = "tmpfs", target = "/tmp", size = "64m" },
  { source = "/etc/app", target = "/etc/app", read_only = true },
  { type = "volume", source = "logs", target = "/logs" },
]
"#);
    assert_eq!(s.extra.mounts.len(), 5);
    let targets: Vec<&str> = s.extra.mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/data", "/etc/app", "/logs", "/tmp", "/var/cache"]
    );
    assert_eq!(
        s.extra.mounts[3].kind,
        MountKind::Tmpfs {
            size: Some(64 << 20)
        }
    );
    assert_eq!(
        s.extra.mounts[1].kind,
        MountKind::Bind {
            source: "/etc/app".into()
        }
    );
    assert!(s.extra.mounts[1].read_only);
    assert_eq!(
        s.extra.mounts[2].kind,
        MountKind::Volume {
            name: "logs".into()
        }
    );
}

#[test]
fn mount_errors() {
    one_err(
        "mounts = [\"/a:/x\", \"b:/x\"]\n",
        "mount target /x appears twice",
    );
    one_err("mounts = [\"/data\"]\n", "for a tmpfs use a table");
    one_err(
        "mounts = [{ target = \"/x\" }]\n",
        "missing key \"source\" (or type = \"tmpfs\"",
    );
    one_err(
        "mounts = [{ type = \"tmpfs\", source = \"/a\", target = \"/x\" }]\n",
        "a tmpfs has no source",
    );
    one_err(
        "mounts = [{ source = \"/a\", target = \"/x\", size = \"1m\" }]\n",
        "only a tmpfs has a size",
    );
    one_err(
        "mounts = [{ type = \"bind\", source = \"rel\", target = \"/x\" }]\n",
        "a bind source must be an absolute host path",
    );
    one_err(
        "mounts = [{ type = \"volume\", source = \"a/b\", target = \"/x\" }]\n",
        "invalid volume name",
    );
    one_err(
        "mounts = [{ source = \"/a\", target = \"x\" }]\n",
        "mounts[0].target: target \"x\" is not an absolute path",
    );
    one_err(
        "mounts = [{ source = \"/a\", target = \"/x\", ro = true }]\n",
        "unknown key",
    );
    one_err(
        "mounts = [{ type = \"nfs\", source = \"/a\", target = \"/x\" }]\n",
        "unknown value \"nfs\"",
    );
    one_err(
        "mounts = [{ type = \"volume\", target = \"/x\" }]\n",
        "missing key \"source\" for a volume mount",
    );
}

#[test]
fn devices() {
    let s = ok(
        "devices = [\"/dev/fuse\", { host = \"/dev/sda\", container = \"/dev/xvda\", permissions = \"r\" }]\n",
    );
    assert_eq!(s.extra.devices.len(), 2);
    assert_eq!(s.extra.devices[0].host, PathBuf::from("/dev/fuse"));
    assert_eq!(s.extra.devices[1].permissions, "r");
    one_err("devices = [\"fuse\"]\n", "not an absolute path");
    one_err(
        "devices = [{ container = \"/dev/x\" }]\n",
        "missing key \"host\"",
    );
    one_err(
        "devices = [{ host = \"/dev/x\", permissions = \"rx\" }]\n",
        "invalid permissions",
    );
    one_err(
        "devices = [\"/dev/a:/dev/x\", \"/dev/b:/dev/x\"]\n",
        "device path /dev/x appears twice",
    );
}

#[test]
fn update_section() {
    let s = ok(
        "[update]\nstrategy = \"kill-then-download\"\nmin_age = \"2h\"\nwindow = \"02:00-04:00\"\nlock = \"/run/maint.lock\"\nverify = \"30s\"\nrollback = false\n",
    );
    let u = s.extra.update.clone();
    assert_eq!(u.strategy, UpdateStrategy::KillThenDownload);
    assert_eq!(u.min_age, Some(Duration::from_secs(7200)));
    assert_eq!(
        u.window,
        Some(Window {
            start_minute: 120,
            end_minute: 240
        })
    );
    assert_eq!(u.lock, Some(PathBuf::from("/run/maint.lock")));
    assert_eq!(u.verify, Duration::from_secs(30));
    assert!(!u.rollback);
    assert_eq!(
        ok("[update]\nstrategy = \"start-then-kill\"\n")
            .extra
            .update
            .strategy,
        UpdateStrategy::StartThenKill
    );
    // min_age = "0s" means the same as no min_age.
    assert_eq!(ok("[update]\nmin_age = \"0s\"\n"), ok(""));
    one_err("[update]\nwindow = \"2-4\"\n", "expected \"HH:MM-HH:MM\"");
    one_err(
        "[update]\nlock = \"maint.lock\"\n",
        "the lock must be an absolute host path",
    );
    one_err(
        "[update]\nstrategy = \"rolling\"\n",
        "unknown value \"rolling\"",
    );
    one_err("update = 1\n", "expected a table, found an integer");
}

#[test]
fn resources_section() {
    let s = ok("[resources]\nmemory = \"256m\"\ncpus = 1.5\npids = 100\n");
    assert_eq!(
        s.extra.resources,
        Resources {
            memory: Some(256 << 20),
            millicpus: Some(1500),
            pids: Some(100)
        }
    );
    assert_eq!(
        ok("[resources]\ncpus = 2\n").extra.resources.millicpus,
        Some(2000)
    );
    assert_eq!(
        ok("[resources]\nmemory = \"256MiB\"\n"),
        ok("[resources]\nmemory = \"256M\"\n")
    );
    one_err("[resources]\nmemory = \"256MB\"\n", "write 256MiB");
    one_err(
        "[resources]\nmemory = \"1k\"\n",
        "below the minimum of 4MiB",
    );
    one_err("[resources]\ncpus = 0\n", "out of range");
    one_err("[resources]\ncpus = 0.0004\n", "out of range");
    one_err("[resources]\ncpus = 1.2345\n", "more than three decimals");
    one_err("[resources]\npids = 0\n", "0 is out of range");
}

#[test]
fn health_section() {
    let s = ok(
        "[health]\ncommand = \"curl -f localhost\"\ninterval = \"10s\"\nretries = 5\non_unhealthy = \"restart\"\n",
    );
    let c = s.extra.health.check.clone().unwrap();
    assert_eq!(c.command, ["/bin/sh", "-c", "curl -f localhost"]);
    assert_eq!(c.interval, Duration::from_secs(10));
    assert_eq!(c.timeout, HealthCheck::DEFAULT_TIMEOUT);
    assert_eq!(c.retries, 5);
    assert_eq!(s.extra.health.on_unhealthy, OnUnhealthy::Restart);
    let argv = ok("[health]\ncommand = [\"/bin/check\", \"-q\"]\n")
        .extra
        .health
        .check
        .clone()
        .unwrap()
        .command;
    assert_eq!(argv, ["/bin/check", "-q"]);
    // Docker's forms mean the same as ours.
    assert_eq!(
        ok("[health]\ncommand = [\"CMD\", \"/bin/check\", \"-q\"]\n"),
        ok("[health]\ncommand = [\"/bin/check\", \"-q\"]\n")
    );
    assert_eq!(
        ok("[health]\ncommand = [\"CMD-SHELL\", \"true\"]\n"),
        ok("[health]\ncommand = \"true\"\n")
    );
    assert!(ok("[health]\ndisable = true\n").extra.health.disable);
    one_err(
        "[health]\ndisable = true\ncommand = \"true\"\n",
        "contradict",
    );
    one_err("[health]\ninterval = \"5s\"\n", "needs health.command");
    one_err(
        "[health]\ncommand = \"true\"\ninterval = \"0s\"\n",
        "longer than zero",
    );
    one_err("[health]\ncommand = []\n", "must not be empty");
    one_err("[health]\ncommand = [\"NONE\"]\n", "disable = true");
    one_err(
        "[health]\ncommand = \"true\"\nretries = 0\n",
        "out of range",
    );
}

#[test]
fn security_section() {
    let s = ok(
        "[security]\nprivileged = false\ncap_add = [\"net_admin\", \"CAP_SYS_TIME\", \"NET_ADMIN\"]\ncap_drop = [\"ALL\"]\nread_only_rootfs = true\nno_new_privileges = false\nseccomp = \"unconfined\"\n",
    );
    let x = s.extra.security.clone();
    assert_eq!(x.cap_add, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
    assert_eq!(x.cap_drop, ["ALL"]);
    assert!(x.read_only_rootfs && !x.no_new_privileges);
    assert_eq!(x.seccomp, SeccompMode::Unconfined);
    assert!(ok("").extra.security.no_new_privileges);
    one_err(
        "[security]\ncap_add = [\"NET_ADMN\"]\n",
        "did you mean \"CAP_NET_ADMIN\"",
    );
    one_err(
        "[security]\ncap_add = [\"chown\"]\ncap_drop = [\"CAP_CHOWN\"]\n",
        "CAP_CHOWN is both added and dropped",
    );
    one_err("[security]\nseccomp = \"strict\"\n", "unknown value");
}

#[test]
fn logging_section() {
    let s = ok("[logging]\nmax_size = \"1m\"\nmax_files = 5\n");
    assert_eq!(
        s.logging,
        Logging {
            max_size: 1 << 20,
            max_files: 5
        }
    );
    one_err("[logging]\nmax_size = \"1k\"\n", "at least 4KiB");
    one_err("[logging]\nmax_files = -1\n", "out of range");
}

#[test]
fn ip() {
    let s = ok("ip = \"10.213.0.10\"\n");
    assert_eq!(
        s.extra.networks,
        vec![NetworkJoin {
            name: "default".into(),
            ip: Some("10.213.0.10".parse().unwrap()),
            ip6: None,
        }]
    );
    let s = ok("ip = [\"10.213.0.10\", \"fd00::10\"]\n");
    assert_eq!(s.extra.networks[0].ip6, Some("fd00::10".parse().unwrap()));
    one_err("ip = \"10.213.0\"\n", "not an IP address");
    one_err("ip = \"127.0.0.1\"\n", "not a unicast address");
    one_err("ip = \"fe80::1\"\n", "not a unicast address");
    one_err(
        "ip = [\"10.0.0.2\", \"10.0.0.3\"]\n",
        "one IPv4 and one IPv6",
    );
    one_err(
        "network = \"host\"\nip = \"10.0.0.2\"\n",
        "ip needs network = \"bridge\"",
    );
}

#[test]
fn networks_and_addresses_per_network() {
    let s = ok(
        "networks = [\"backend\", \"default\"]\nip = { default = \"10.213.0.7\", backend = [\"10.214.1.5\", \"fd00:b::5\"] }\n",
    );
    assert_eq!(
        s.extra.networks,
        vec![
            NetworkJoin {
                name: "backend".into(),
                ip: Some("10.214.1.5".parse().unwrap()),
                ip6: Some("fd00:b::5".parse().unwrap()),
            },
            NetworkJoin {
                name: "default".into(),
                ip: Some("10.213.0.7".parse().unwrap()),
                ip6: None,
            },
        ]
    );
    one_err("networks = []\n", "at least one network");
    one_err("networks = [\"a\", \"a\"]\n", "listed twice");
    one_err(
        "networks = [\"backend\"]\nip = { front = \"10.0.0.2\" }\n",
        "not one of this container's networks",
    );
    one_err(
        "network = \"none\"\nnetworks = [\"backend\"]\n",
        "networks needs network = \"bridge\"",
    );
}

#[test]
fn container_network_mode() {
    let s = ok("network = \"container:db\"\n");
    assert_eq!(s.network, NetworkMode::Container("db".into()));
    assert!(s.extra.networks.is_empty());
    assert!(s.dependencies().iter().any(|d| d.name == "db"));
    one_err("network = \"container:web\"\n", "its own network namespace");
    one_err("network = \"container:Bad Name\"\n", "");
    one_err(
        "network = \"container:db\"\nports = [\"80:80\"]\n",
        "ports cannot be published with network = \"container:db\"",
    );
}

#[test]
fn networks_checked_against_the_config() {
    let mut known = std::collections::BTreeMap::new();
    let net = |ipv4, ipv6, internal| berth_spec::KnownNetwork {
        ipv4,
        ipv6,
        internal,
    };
    known.insert("default".to_string(), net(true, false, false));
    known.insert("backend".to_string(), net(true, true, false));
    known.insert("vault".to_string(), net(true, false, true));
    let host = berth_spec::SpecDefaults {
        networks: Some(known),
        ..Default::default()
    };
    let parse = |text: &str| {
        let files = [SourceFile::new("web.toml", text)];
        berth_spec::parse_spec_with("web", &files, &mut |_: &Path| Err("none".into()), &host)
            .map(|p| p.spec)
            .map_err(|d| {
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    };
    assert!(parse(&format!("{IMG}networks = [\"backend\"]\n")).is_ok());
    let e = parse(&format!("{IMG}networks = [\"bakcend\"]\n")).unwrap_err();
    assert!(e.contains("did you mean \"backend\""), "{e}");
    let e = parse(&format!("{IMG}ip = \"fd00::5\"\n")).unwrap_err();
    assert!(e.contains("has no IPv6 subnet"), "{e}");
    let e = parse(&format!(
        "{IMG}networks = [\"vault\"]\nports = [\"80:80\"]\n"
    ))
    .unwrap_err();
    assert!(e.contains("internal"), "{e}");
    // [::1] is the shim's relay's, to the container's IPv4 address when it has no IPv6 one:
    // published on the IPv4-only default network too. Another IPv6 address needs IPv6.
    assert!(parse(&format!("{IMG}ports = [\"[::1]:80:80\", \"[::]:81:80\"]\n")).is_ok());
    let e = parse(&format!("{IMG}ports = [\"[fd00::5]:80:80\"]\n")).unwrap_err();
    assert!(e.contains("has IPv6"), "{e}");
}

#[test]
fn tables_of_the_wrong_type() {
    for key in ["resources", "health", "security", "logging", "update"] {
        let e = errs(&format!("{key} = \"x\"\n"));
        assert!(e[0].contains("expected a table, found a string"), "{e:?}");
    }
}

#[test]
fn host_defaults_fill_logging() {
    let host = berth_spec::SpecDefaults {
        logging: Logging {
            max_size: 1 << 20,
            max_files: 7,
        },
        ..Default::default()
    };
    let parse = |text: &str| {
        let files = [SourceFile::new("web.toml", text)];
        berth_spec::parse_spec_with("web", &files, &mut |_: &Path| Err("none".into()), &host)
            .unwrap()
            .spec
    };
    assert_eq!(parse(IMG).logging, host.logging);
    let s = parse(&format!("{IMG}[logging]\nmax_files = 1\n"));
    assert_eq!(
        s.logging,
        Logging {
            max_size: 1 << 20,
            max_files: 1
        }
    );
}
