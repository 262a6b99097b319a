//! Lifecycle for real: stop escalation, restart keeping the upper dir, logs in CRI format with
//! rotation, published ports held by the shim, and re-adoption by a fresh runtime.

mod support;

use berth_agent::runtime::BundleDir;
use std::time::{Duration, Instant};

use berth_agent::names::IncarnationId;
use berth_agent::runtime::{HostPort, Status};
use berth_spec::model::{Logging, Protocol};
use support::{Env, wait_for};

#[test]
fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    let Some(env) = Env::new("stop") else {
        return;
    };
    let c = env.config(
        "stubborn",
        "trap '' TERM; echo ready; while true; do sleep 1; done",
    );
    env.runtime.create(&c).unwrap();
    env.wait_line(&c, "ready");
    let t = Instant::now();
    let exit = env
        .runtime
        .stop(&c.name, &c.id, None, Duration::from_millis(700))
        .unwrap()
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(700));
    assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit:?}");
    assert!(!exit.oom);
    assert!(env.runtime.cgroup(&c.name, &c.id).pids().is_empty());
}

#[test]
fn stop_uses_the_configured_signal() {
    let Some(env) = Env::new("sig") else {
        return;
    };
    let mut c = env.config(
        "polite",
        "trap 'echo got-usr1; exit 7' USR1; echo ready; while true; do sleep 1; done",
    );
    c.stop_signal = libc::SIGUSR1;
    env.runtime.create(&c).unwrap();
    env.wait_line(&c, "ready");
    let exit = env
        .runtime
        .stop(&c.name, &c.id, None, Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(exit.code, Some(7), "{exit:?}");
    assert!(env.stdout(&c).contains(&"got-usr1".to_string()));
}

#[test]
fn restart_keeps_the_upper_dir_and_a_new_incarnation_starts_fresh() {
    let Some(env) = Env::new("rst") else {
        return;
    };
    let script = "cat /state 2>/dev/null || echo none; echo kept > /state";
    let c = env.config("svc", script);
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0));
    env.runtime.remove(&c.name, &c.id, BundleDir::Keep).unwrap();
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0));
    assert_eq!(env.stdout(&c), ["none", "kept"]);
    env.runtime
        .remove(&c.name, &c.id, BundleDir::Remove)
        .unwrap();
    assert!(!env.runtime.bundle(&c.name, &c.id).dir.exists());

    let mut fresh = c.clone();
    fresh.id = IncarnationId::random();
    env.runtime.create(&fresh).unwrap();
    assert_eq!(env.wait_exit(&fresh).code, Some(0));
    assert_eq!(env.stdout(&fresh), ["none"]);
}

#[test]
fn logs_are_cri_lines_rotated_at_the_cap() {
    let Some(env) = Env::new("logs") else {
        return;
    };
    let mut c = env.config(
        "chatty",
        "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); done; echo to-stderr >&2; printf no-newline",
    );
    c.logging = Logging {
        max_size: 4096,
        max_files: 2,
    };
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0));
    let log = env.runtime.bundle(&c.name, &c.id).log_file();
    let rotated = |n: u32| berth_agent::runtime::logs::rotated(&log, n);
    assert!(rotated(1).exists() && rotated(2).exists() && !rotated(3).exists());
    for f in [log.clone(), rotated(1), rotated(2)] {
        assert!(std::fs::metadata(&f).unwrap().len() <= 4096);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    // The last stdout line: stderr is its own pipe, so its line may come before or after.
    let last = text.lines().rfind(|l| l.contains(" stdout ")).unwrap();
    let (ts, rest) = last.split_once(' ').unwrap();
    assert!(berth_agent::runtime::timefmt::parse(ts).is_some(), "{ts}");
    assert_eq!(rest, "stdout F no-newline");
    assert!(text.lines().any(|l| l.ends_with(" stderr F to-stderr")));
    let out = env.stdout(&c);
    assert_eq!(out.last().unwrap(), "no-newline");
    assert!(out.contains(&"line-399".to_string()));
    assert!(
        !out.contains(&"line-0".to_string()),
        "the oldest lines should be rotated away"
    );
}

#[test]
fn published_ports_are_held_and_a_taken_port_fails_create() {
    let Some(env) = Env::new("port") else {
        return;
    };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // The second port is relayed on [::1] by the shim, here to a server of the test's own.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relayed = std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = env.config("p", "sleep 1000");
    c.host_ports = vec![
        HostPort {
            ip: Some("127.0.0.1".parse().unwrap()),
            port,
            protocol: Protocol::Tcp,
            loopback6_to: None,
        },
        HostPort {
            ip: Some("::1".parse().unwrap()),
            port: relayed,
            protocol: Protocol::Tcp,
            loopback6_to: Some(server.local_addr().unwrap()),
        },
    ];
    let e = env.runtime.create(&c).unwrap_err().to_string();
    assert!(
        e.contains(&format!("host port 127.0.0.1:{port}/tcp is in use")),
        "{e}"
    );
    drop(taken);
    let started = env.runtime.create(&c).unwrap();
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_err(),
        "the shim holds it"
    );
    // A real exchange through the shim's relay.
    let serving = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = server.accept().unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).unwrap();
        s.write_all(&[b"re:".as_slice(), &req].concat()).unwrap();
    });
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("::1", relayed)).unwrap();
        s.write_all(b"ping").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"re:ping");
    }
    serving.join().unwrap();
    let threads = std::fs::read_dir(format!("/proc/{}/task", started.shim_pid))
        .unwrap()
        .count();
    assert_eq!(threads, 2, "the shim and its relay");
    env.runtime
        .stop(&c.name, &c.id, Some(libc::SIGKILL), Duration::from_secs(5))
        .unwrap();
    wait_for(Duration::from_secs(5), "the ports to be released", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("::1", relayed)).is_ok()
    });
}

#[test]
fn a_fresh_runtime_adopts_running_containers() {
    let Some(env) = Env::new("adopt") else {
        return;
    };
    let a = env.config("a", "echo a-up; sleep 1000");
    let b = env.config("b", "echo b-up; sleep 1000");
    let sa = env.runtime.create(&a).unwrap();
    let sb = env.runtime.create(&b).unwrap();
    env.wait_line(&a, "a-up");

    // The agent "restarts": a new runtime object with nothing but the dirs.
    let fresh = env.fresh_runtime();
    let seen = fresh.observe().unwrap();
    assert_eq!(seen.len(), 2);
    for (o, s) in seen.iter().zip([&sa, &sb]) {
        assert_eq!(o.status, Status::Running);
        assert_eq!(o.pid, Some(s.pid));
        assert_eq!(o.pid_start, Some(s.pid_start));
        assert_eq!(o.started_at, Some(s.started_at));
    }
    // Logs keep flowing to the same files.
    let watch = fresh.exit_watch(&a.name, &a.id).unwrap();
    // Kill a's init behind everyone's back: the shim notices and records it.
    // SAFETY: kill with plain integers, on a process this test started.
    unsafe { libc::kill(sa.pid, libc::SIGKILL) };
    let exit = watch.wait(Some(Duration::from_secs(10))).unwrap().unwrap();
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    let after = fresh.observe().unwrap();
    assert_eq!(after[0].status, Status::Exited);
    assert_eq!(after[1].status, Status::Running);
    assert_eq!(after[1].pid, Some(sb.pid));
}

#[test]
fn exit_watch_wakes_an_async_reactor() {
    let Some(env) = Env::new("async") else {
        return;
    };
    let c = env.config("w", "sleep 0.3; exit 4");
    env.runtime.create(&c).unwrap();
    let watch = env.runtime.exit_watch(&c.name, &c.id).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exit = rt.block_on(async {
        // SAFETY: an ExitWatch owns its pidfd and returns that same open fd for its lifetime.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(watch, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.to_string())
        .unwrap();
        let guard = tokio::time::timeout(Duration::from_secs(20), fd.readable())
            .await
            .expect("the exit was not noticed")
            .unwrap();
        guard.get_inner().exit_record().unwrap()
    });
    assert_eq!(exit.unwrap().code, Some(4));
}

/// The agent spawns the shim before the container's network exists (so that the RCU grace
/// period of its cgroup migrations runs beside the attach): nothing of the container runs until
/// `start`, and a start given up (the attach failed) leaves no cgroup, shim or shim dir.
#[test]
fn a_spawned_shim_waits_for_start_and_an_abort_leaves_nothing() {
    use berth_agent::runtime::cgroup::Cgroup;
    let Some(env) = Env::new("spawn") else {
        return;
    };
    let config = env.runtime.config().clone();
    let shims = Cgroup::new(
        &config.cgroups,
        &format!("{}/_shims", env.names.cgroup_parent()),
    );
    // The supervisor blocked in read(0, ...): waiting for the go byte on its stdin.
    let waiting_supervisor = || {
        shims.pids().into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                .is_ok_and(|s| s.starts_with("0 0x0 "))
        })
    };

    let c = env.config("early", "echo ran; sleep 1000");
    let cg = env.runtime.cgroup(&c.name, &c.id);
    let shim_dir = config.layout.shim_dir(&c.name, &c.id);
    let spawning = env.runtime.spawn(&c).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the shim to wait for start",
        || waiting_supervisor().is_some(),
    );
    assert!(cg.exists(), "the container's cgroup is made before start");
    assert!(
        cg.pids().is_empty(),
        "nothing runs in the container before start"
    );
    spawning.abort();
    assert!(
        !cg.exists(),
        "an aborted start removes the container's cgroup"
    );
    assert!(!shim_dir.exists(), "an aborted start removes the shim dir");
    // Its stdout closes as it exits, a moment before it leaves its cgroup.
    wait_for(
        Duration::from_secs(5),
        "the aborted shim to be gone",
        || shims.pids().is_empty(),
    );

    let c = env.config("late", "echo ran; sleep 1000");
    let spawning = env.runtime.spawn(&c).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the shim to wait for start",
        || waiting_supervisor().is_some(),
    );
    spawning.start(None).unwrap();
    env.wait_line(&c, "ran");
    assert_eq!(env.status(&c), Status::Running);
    env.runtime
        .stop(&c.name, &c.id, None, Duration::from_secs(5))
        .unwrap();
}

/// The shim's short-lived parent makes the container's cgroup while the supervisor goes on to
/// the go line and the init's clone: when the cgroup cannot be made (here a "device" that is a
/// plain file, refused as its rule is made), the start fails with that reason, the init never
/// runs its payload, and no cgroup, shim or shim dir is left.
#[test]
fn a_cgroup_the_parent_cannot_make_fails_the_start_and_leaves_nothing() {
    use berth_agent::runtime::DeviceSpec;
    use berth_agent::runtime::cgroup::Cgroup;
    let Some(env) = Env::new("cgword") else {
        return;
    };
    let config = env.runtime.config().clone();
    let shims = Cgroup::new(
        &config.cgroups,
        &format!("{}/_shims", env.names.cgroup_parent()),
    );
    let mut c = env.config("nodev", "touch /ran; sleep 1000");
    c.devices.push(DeviceSpec {
        host: "/etc/hostname".into(),
        container: "/dev/fake".into(),
        permissions: "rw".into(),
    });
    let cg = env.runtime.cgroup(&c.name, &c.id);
    let shim_dir = config.layout.shim_dir(&c.name, &c.id);
    let err = env.runtime.create(&c).unwrap_err().to_string();
    assert!(
        err.contains("/etc/hostname is not a device node"),
        "the parent's reason reaches the caller: {err}"
    );
    assert!(!cg.exists(), "a start that failed leaves no cgroup");
    assert!(!shim_dir.exists(), "a start that failed leaves no shim dir");
    assert!(
        !env.runtime
            .bundle(&c.name, &c.id)
            .upper()
            .join("ran")
            .exists(),
        "the payload never ran"
    );
    wait_for(Duration::from_secs(5), "the failed shim to be gone", || {
        shims.pids().is_empty()
    });
}
