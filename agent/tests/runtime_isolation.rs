//! What the payload sees: its own pid 1, hostname, mounts, env, user, cwd, /dev; no host
//! processes; a read-only rootfs when asked; an init reaper when asked.

mod support;

use berth_agent::runtime::{EtcFiles, MountSource, MountSpec, Status};
use berth_spec::model::{User, UserId};
use support::Env;

#[test]
fn payload_sees_its_own_world() {
    let Some(env) = Env::new("iso") else {
        return;
    };
    let hosts = env.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n10.0.0.9 peer\n").unwrap();
    let data = env.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("from-host"), "hi").unwrap();
    let mut c = env.config(
        "web",
        "echo pid=$$; echo host=$(hostname); echo uid=$(id -u) gid=$(id -g) groups=$(id -G); \
         echo cwd=$(pwd); echo foo=$FOO; echo path=$PATH; echo home=$HOME; \
         echo procs=$(ls /proc | grep -c '^[0-9]'); echo dev=$(ls /dev | tr '\\n' ' '); \
         echo sigs=$(grep -E '^Sig(Ign|Blk):' /proc/self/status | tr -d '\t' | tr '\n' ' '); \
         echo layer=$(cat /etc/layer); echo peer=$(grep peer /etc/hosts); \
         echo bind=$(cat /data/from-host); echo tmpfs=$(stat -f -c %T /scratch); \
         grep -E ' / | /proc | /sys | /dev | /dev/pts ' /proc/self/mountinfo | awk '{print \"mnt\", $5, $6}'; \
         echo done",
    );
    c.hostname = "box1".into();
    c.process.env.push("FOO=bar baz".into());
    c.process.cwd = "/work/dir".into();
    c.process.user = Some(User {
        user: UserId::Name("app".into()),
        group: None,
    });
    c.etc = EtcFiles {
        hosts: Some(hosts.clone()),
        ..Default::default()
    };
    c.mounts = vec![
        MountSpec {
            source: MountSource::Bind(data.clone()),
            target: "/data".into(),
            read_only: true,
        },
        MountSpec {
            source: MountSource::Tmpfs {
                size: Some(1 << 20),
            },
            target: "/scratch".into(),
            read_only: false,
        },
    ];
    let started = env.runtime.create(&c).unwrap();
    assert!(started.pid > 1);
    let exit = env.wait_exit(&c);
    assert_eq!(exit.code, Some(0), "stderr: {:?}", env.stderr(&c));
    let out = env.stdout(&c);
    let has = |l: &str| assert!(out.iter().any(|o| o == l), "missing {l:?} in {out:#?}");
    has("pid=1");
    has("host=box1");
    has("uid=1000 gid=1000 groups=1000 10");
    has("cwd=/work/dir");
    has("foo=bar baz");
    has("path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    has("home=/home/app");
    has("dev=fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero");
    // Nothing the shim ignores or blocks leaks into the payload.
    has("sigs=SigBlk:0000000000000000 SigIgn:0000000000000000");
    has("layer=top");
    has("peer=10.0.0.9 peer");
    has("bind=hi");
    has("tmpfs=tmpfs");
    // Only the shell and the processes of its pipeline: no host process is visible.
    let procs: usize = out
        .iter()
        .find_map(|l| l.strip_prefix("procs="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(procs <= 4, "saw {procs} processes");
    let mounts: Vec<&String> = out.iter().filter(|l| l.starts_with("mnt ")).collect();
    for want in [
        "mnt / rw,",
        "mnt /proc rw,",
        "mnt /sys ro,",
        "mnt /dev rw,",
        "mnt /dev/pts rw,",
    ] {
        assert!(
            mounts.iter().any(|m| m.starts_with(want)),
            "no {want:?} in {mounts:?}"
        );
    }
}

#[test]
fn read_only_rootfs_refuses_writes_but_tmpfs_works() {
    let Some(env) = Env::new("ro") else {
        return;
    };
    let mut c = env.config(
        "ro",
        "touch /x 2>/dev/null && echo wrote-root; touch /dev/shm/y && echo wrote-shm; echo done",
    );
    c.security.read_only_rootfs = true;
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0));
    let out = env.stdout(&c);
    assert!(!out.contains(&"wrote-root".to_string()), "{out:?}");
    assert!(out.contains(&"wrote-shm".to_string()), "{out:?}");
}

#[test]
fn init_reaps_and_forwards_signals() {
    let Some(env) = Env::new("init") else {
        return;
    };
    let mut c = env.config("init", "echo pid=$$; sleep 1000 & wait");
    c.init = true;
    env.runtime.create(&c).unwrap();
    env.wait_line(&c, "pid=2");
    assert_eq!(env.status(&c), Status::Running);
    let exit = env
        .runtime
        .stop(
            &c.name,
            &c.id,
            Some(libc::SIGTERM),
            std::time::Duration::from_secs(10),
        )
        .unwrap()
        .unwrap();
    // The reaper forwarded SIGTERM to the shell, and exits as 128 + 15.
    assert_eq!(exit.code, Some(143), "{exit:?}");
}

#[test]
fn missing_command_fails_create_with_the_reason() {
    let Some(env) = Env::new("nf") else {
        return;
    };
    let c = berth_agent::runtime::ContainerConfig::minimal(
        "nf",
        berth_agent::names::IncarnationId::random(),
        env.layers.clone(),
        &["no-such-program"],
    );
    let e = env.runtime.create(&c).unwrap_err().to_string();
    assert!(
        e.contains("no-such-program") && e.contains("not found"),
        "{e}"
    );
    assert!(env.runtime.observe().unwrap().is_empty());
}

/// `privileged = true` gets the host's device nodes, with their numbers and owners, as Docker's
/// `--privileged` does; a default container has only its own few.
#[test]
fn privileged_sees_the_hosts_devices() {
    use std::os::unix::fs::MetadataExt;
    let Some(env) = Env::new("pdev") else {
        return;
    };
    let host = std::fs::metadata("/dev/loop-control").expect("a loop-control node on this host");
    let script = "ls -ln /dev/loop-control 2>&1; echo end";
    let mut p = env.config("priv", script);
    p.security.privileged = true;
    env.runtime.create(&p).unwrap();
    assert_eq!(env.wait_exit(&p).code, Some(0));
    let out = env.stdout(&p);
    let want = format!("{}, {}", libc::major(host.rdev()), libc::minor(host.rdev()));
    assert!(
        out[0].starts_with('c') && out[0].contains(&want),
        "privileged: {out:?} (host {want})"
    );
    let d = env.config("plain", script);
    env.runtime.create(&d).unwrap();
    assert_eq!(env.wait_exit(&d).code, Some(0));
    let out = env.stdout(&d);
    assert!(out[0].contains("No such file"), "default: {out:?}");
}

/// The init reaper never execs, so close-on-exec does nothing for it: it must hold no fd but
/// stdio (not the shim's host-port sockets, log file or pipes), and the container's processes
/// cannot open its /proc entries.
#[test]
fn the_init_reaper_holds_nothing_of_the_hosts() {
    use berth_agent::runtime::HostPort;
    let Some(env) = Env::new("reapfd") else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = env.config(
        "reap",
        "readlink /proc/1/fd/1 >/dev/null 2>&1 && echo fds-open || echo fds-closed; \
         readlink /proc/1/exe >/dev/null 2>&1 && echo exe-open || echo exe-closed; sleep 1000",
    );
    c.init = true;
    // The second is relayed on [::1] too: the relay's listener is the shim's, not the reaper's.
    c.host_ports = vec![
        HostPort {
            ip: Some("127.0.0.1".parse().unwrap()),
            port,
            protocol: berth_spec::model::Protocol::Tcp,
            loopback6_to: None,
        },
        HostPort {
            ip: Some("::1".parse().unwrap()),
            port,
            protocol: berth_spec::model::Protocol::Tcp,
            loopback6_to: Some("127.0.0.1:9".parse().unwrap()),
        },
    ];
    let started = env.runtime.create(&c).unwrap();
    env.wait_line(&c, "exe-closed");
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", started.pid))
        .unwrap()
        .flatten()
        .map(|e| {
            let link = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{} -> {}", e.file_name().to_string_lossy(), link.display())
        })
        .collect();
    let extra: Vec<&String> = fds
        .iter()
        .filter(|f| !["0 ", "1 ", "2 "].iter().any(|p| f.starts_with(p)))
        .collect();
    assert!(extra.is_empty(), "the reaper holds {extra:?}");
    assert_eq!(env.stdout(&c), ["fds-closed", "exe-closed"]);
}
