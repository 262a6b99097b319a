//! `berth logs` and `berth exec` against containers the runtime library started: the CLI finds
//! them from the config's state and run dirs alone (no agent).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_agent::layout::Layout;
use berth_agent::names::{IncarnationId, Names};
use berth_agent::runtime::rootfs::LowerDirs;
use berth_agent::runtime::{CgroupMode, ContainerConfig, Runtime, RuntimeConfig};
use berth_e2e::probe::{ELF_INTERPRETER, build_c, build_fake_interp, host_binaries, interp_exe};
use berth_e2e::{berth_bin, require_root, unique_instance};

struct World {
    dir: tempfile::TempDir,
    instance: String,
    config: PathBuf,
    rt: Runtime,
    layers: Vec<PathBuf>,
}

impl World {
    fn new(prefix: &str) -> World {
        // Shims double-fork away; as subreaper we get them back and the runtime reaps them.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let dir = tempfile::Builder::new()
            .prefix("berth-cli")
            .tempdir()
            .unwrap();
        let instance = unique_instance(prefix);
        let state = dir.path().join("state");
        let run = dir.path().join("run");
        let config = dir.path().join("berth.toml");
        std::fs::write(
            &config,
            format!(
                "instance = {instance:?}\nstate_dir = {:?}\nrun_dir = {:?}\n",
                state.display().to_string(),
                run.display().to_string()
            ),
        )
        .unwrap();
        let rt = Runtime::new(RuntimeConfig {
            layout: Layout {
                state_dir: state,
                run_dir: run,
            },
            names: Names::new(&instance),
            cgroups: CgroupMode::detect(),
            shim_path: berth_bin().with_file_name("berth-shim"),
            lower_dirs: LowerDirs::detect(),
        });
        let layers = vec![busybox_layer(&dir.path().join("image"))];
        World {
            dir,
            instance,
            config,
            rt,
            layers,
        }
    }

    fn start(
        &self,
        name: &str,
        script: &str,
        tweak: impl FnOnce(&mut ContainerConfig),
    ) -> ContainerConfig {
        let mut c = ContainerConfig::minimal(
            name,
            IncarnationId::random(),
            self.layers.clone(),
            &["/bin/sh", "-c", script],
        );
        tweak(&mut c);
        self.rt.create(&c).unwrap();
        c
    }

    fn berth(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.arg("--config").arg(&self.config).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.berth(args).output().unwrap();
        eprintln!(
            "berth {args:?} -> {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn wait_exit(&self, c: &ContainerConfig) {
        let w = self.rt.exit_watch(&c.name, &c.id).unwrap();
        w.wait(Some(Duration::from_secs(20)))
            .unwrap()
            .expect("exit");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in self.rt.observe().unwrap_or_default() {
            let _ = self
                .rt
                .stop(&c.name, &c.id, Some(libc::SIGKILL), Duration::from_secs(5));
            let _ = self
                .rt
                .remove(&c.name, &c.id, berth_agent::runtime::BundleDir::Remove);
        }
        // A shim exits a moment after its container: retry until the instance's cgroups are
        // gone (bounded), or the leak check finds them empty but left.
        let instance = self.instance.clone();
        let left = || {
            ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
                .iter()
                .any(|root| Path::new(root).join(&instance).exists())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.rt.prune_cgroups();
            if !left() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = &self.dir;
    }
}

fn busybox_layer(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let p = dir.join(applet);
        if !p.exists() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink("/bin/busybox", &p).unwrap();
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    dir.to_path_buf()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn logs_prints_tail_since_timestamps_and_follows() {
    if !require_root() {
        return;
    }
    let w = World::new("clil");
    let c = w.start(
        "talk",
        "echo one; echo two >&2; echo three; echo four",
        |_| {},
    );
    w.wait_exit(&c);
    let all = w.run(&["logs", "talk"]);
    assert!(all.status.success());
    assert_eq!(stdout(&all), "one\nthree\nfour\n");
    assert_eq!(String::from_utf8_lossy(&all.stderr), "two\n");
    // The tail counts lines of both streams, in the order the shim read them; "two" went
    // through its own pipe, so it may have been read before "three" or after "four".
    let tail = w.run(&["logs", "talk", "--tail", "2"]);
    let got = (
        stdout(&tail),
        String::from_utf8_lossy(&tail.stderr).into_owned(),
    );
    assert!(
        got == ("four\n".into(), "two\n".into()) || got == ("three\nfour\n".into(), "".into()),
        "--tail 2 gave {got:?}"
    );
    let ts = stdout(&w.run(&["logs", "talk", "--timestamps", "--tail", "2"]));
    let (stamp, rest) = ts
        .trim_end()
        .lines()
        .last()
        .unwrap()
        .split_once(' ')
        .unwrap();
    assert!(
        berth_agent::runtime::timefmt::parse(stamp).is_some(),
        "{ts}"
    );
    assert_eq!(rest, "four");
    assert_eq!(
        stdout(&w.run(&["logs", "talk", "--since", "1h"])),
        "one\nthree\nfour\n"
    );
    assert_eq!(
        stdout(&w.run(&["logs", "talk", "--since", "2999-01-01T00:00:00Z"])),
        ""
    );
    let missing = w.run(&["logs", "nobody"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nobody"));

    // --follow prints lines as they come and returns when the container exits.
    let gate = w.dir.path().join("gate");
    std::fs::create_dir(&gate).unwrap();
    let f = w.start(
        "slow",
        "echo early; while [ ! -e /gate/go ]; do sleep 0.05; done; echo late",
        |c| {
            c.mounts.push(berth_agent::runtime::MountSpec {
                source: berth_agent::runtime::MountSource::Bind(gate.clone()),
                target: "/gate".into(),
                read_only: true,
            })
        },
    );
    let mut follow = w
        .berth(&["logs", "--follow", "slow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        follow.try_wait().unwrap().is_none(),
        "follow ended while the container runs"
    );
    std::fs::write(gate.join("go"), "").unwrap();
    loop {
        if follow.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs --follow did not end with the container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = follow.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "early\nlate\n");
    w.wait_exit(&f);
}

#[test]
fn exec_runs_inside_with_docker_exit_codes() {
    if !require_root() {
        return;
    }
    let w = World::new("clie");
    w.start("box", "echo up; exec sleep 1000", |c| {
        c.hostname = "inside".into();
        c.process.user = Some(berth_spec::model::User {
            user: berth_spec::model::UserId::Name("app".into()),
            group: None,
        });
    });
    let code = |args: &[&str]| w.run(args).status.code();
    assert_eq!(code(&["exec", "box", "--", "sh", "-c", "exit 3"]), Some(3));
    assert_eq!(code(&["exec", "box", "--", "no-such-cmd"]), Some(127));
    assert_eq!(code(&["exec", "box", "--", "/etc/passwd"]), Some(126));
    assert_eq!(code(&["exec", "nobody", "--", "true"]), Some(125));
    let o = w.run(&[
        "exec", "-e", "X=42", "box", "--", "sh", "-c",
        "echo $(hostname) $(id -u) $X $(ls /proc | grep -c '^[0-9]'); grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status",
    ]);
    assert!(o.status.success());
    let text = stdout(&o);
    let mut lines = text.lines();
    let first: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert_eq!(&first[..3], ["inside", "1000", "42"]);
    let procs: u32 = first[3].parse().unwrap();
    assert!(
        procs <= 5,
        "the exec saw {procs} processes: not the container's pid namespace?"
    );
    let status: Vec<&str> = lines.collect();
    assert!(status.contains(&"Seccomp:\t2"), "{status:?}");
    assert!(status.contains(&"NoNewPrivs:\t1"), "{status:?}");
    assert!(status.contains(&"CapBnd:\t00000000800405fb"), "{status:?}");

    let mut cat = w
        .berth(&["exec", "-i", "box", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = cat.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
}

#[test]
fn exec_with_a_tty() {
    if !require_root() {
        return;
    }
    let w = World::new("clit");
    w.start("term", "exec sleep 1000", |_| {});
    let o = w.run(&[
        "exec",
        "-t",
        "term",
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo is-a-tty; tty",
    ]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("is-a-tty\r\n"), "{text:?}");
    assert!(
        text.contains("/dev/pts/0"),
        "the terminal is from the container's devpts: {text:?}"
    );

    let mut sh = w
        .berth(&[
            "exec",
            "-it",
            "term",
            "--",
            "sh",
            "-c",
            "read x; echo got-$x; exit 5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    sh.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = sh.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stdout).contains("got-abc"));
}

/// A resize of the caller's terminal reaches the container's: `berth exec -it` runs on a
/// pseudo-terminal the test owns (as its controlling terminal, so the kernel sends SIGWINCH).
#[test]
fn exec_tty_follows_a_resize() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    if !require_root() {
        return;
    }
    let w = World::new("clirs");
    w.start("term", "exec sleep 1000", |_| {});
    let size = |rows: u16, cols: u16| libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let (mut m, mut s) = (-1, -1);
    let ws = size(30, 100);
    // SAFETY: openpty writes two fds into our integers.
    let opened =
        unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
    assert_eq!(opened, 0);
    // SAFETY: both fds were just opened for us.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    let mut cmd = w.berth(&[
        "exec",
        "-it",
        "term",
        "--",
        "sh",
        "-c",
        "stty size; read x; stty size; echo end",
    ]);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and TIOCSCTTY between fork and exec touch only this child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut out = String::new();
    let mut read_until = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !out.contains(want) {
            assert!(Instant::now() < deadline, "no {want:?} in {out:?}");
            let mut pfd = libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 200) } > 0 {
                let mut buf = [0u8; 1024];
                // SAFETY: reads into a live buffer of that size.
                let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), 1024) };
                if n > 0 {
                    out.push_str(&String::from_utf8_lossy(&buf[..n as usize]));
                }
            }
        }
    };
    read_until("30 100");
    let ws = size(50, 120);
    // SAFETY: sets the size of our own pty (the kernel signals its foreground group).
    let resized = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(resized, 0);
    // SAFETY: writes a newline to our own pty.
    unsafe { libc::write(master.as_raw_fd(), b"\r".as_ptr().cast(), 1) };
    read_until("end");
    assert!(
        out.contains("50 120"),
        "the resize did not reach it: {out:?}"
    );
    assert!(child.wait().unwrap().success());
}

/// `berth exec` run by something with another OOM score (the agent's health checks run at its
/// -500): the process inside starts at 0, as the container's own processes do.
#[test]
fn exec_starts_at_oom_score_zero() {
    if !require_root() {
        return;
    }
    let w = World::new("clio");
    w.start("box", "exec sleep 1000", |_| {});
    // Raised, not lowered: this machine's root lacks CAP_SYS_RESOURCE (the VM suite checks -500).
    let o = Command::new("sh")
        .arg("-c")
        .arg("echo 500 > /proc/self/oom_score_adj && exec \"$@\"")
        .arg("sh")
        .arg(berth_bin())
        .arg("--config")
        .arg(&w.config)
        .args(["exec", "box", "--", "cat", "/proc/self/oom_score_adj"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).trim(), "0");
}

/// A layer with the exec probe at /exec_probe and, as an attacker's image would ship them, a
/// `#!/proc/self/exe` script at /evil and its own ELF interpreter at the path the host's
/// binaries name (which reports what /proc/self/exe is).
fn probe_layer(dir: &Path) -> PathBuf {
    let layer = dir.join("layer-probe");
    build_c(
        "exec_probe.c",
        &layer.join("exec_probe"),
        &["-static", "-O2"],
    );
    build_fake_interp(&layer.join(ELF_INTERPRETER));
    std::fs::write(layer.join("evil"), "#!/proc/self/exe\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(layer.join("evil"), std::fs::Permissions::from_mode(0o755)).unwrap();
    layer
}

/// A pseudo-terminal the test owns: (master, slave).
fn test_pty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty writes two fds into our integers.
    let opened = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0);
    // SAFETY: both fds were just opened for us.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(m),
            std::os::fd::OwnedFd::from_raw_fd(s),
        )
    }
}

/// Runs `cmd` with the pty's slave as its stdio and controlling terminal (in a session of its
/// own, as a login shell would be); returns everything that reached the master by its exit.
fn run_on_pty(mut cmd: Command) -> (std::process::ExitStatus, String) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (master, slave) = test_pty();
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and TIOCSCTTY between fork and exec touch only this child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
            let mut buf = [0u8; 4096];
            // SAFETY: reads into a live buffer of that size.
            let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), 4096) };
            if n > 0 {
                out.extend_from_slice(&buf[..n as usize]);
                continue;
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            // What the kernel still holds for the master.
            let mut pfd = libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: as above.
            while unsafe { libc::poll(&mut pfd, 1, 200) } > 0 {
                let mut buf = [0u8; 4096];
                // SAFETY: as above.
                let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), 4096) };
                if n <= 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n as usize]);
            }
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd_out}",
            cmd_out = String::from_utf8_lossy(&out)
        );
    };
    (status, String::from_utf8_lossy(&out).replace('\r', ""))
}

/// `berth exec` (no -t) run from an admin's terminal: the process gets pipes (or /dev/null),
/// a session of its own, no controlling terminal, cannot push input into the admin's terminal
/// with TIOCSTI, and nothing reaches that terminal but what `berth exec` relays.
#[test]
fn exec_never_hands_the_callers_terminal_to_the_container() {
    if !require_root() {
        return;
    }
    let w = World::new("clis");
    let probe = probe_layer(w.dir.path());
    w.start("box", "exec sleep 1000", |c| c.layers.push(probe));
    let (status, out) = run_on_pty(w.berth(&["exec", "box", "--", "/exec_probe", "stdio"]));
    eprintln!("{out}");
    assert!(status.success(), "{out}");
    let facts: std::collections::BTreeMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once(' ')).collect();
    for fd in ["fd0", "fd1", "fd2"] {
        assert!(
            matches!(facts.get(fd), Some(&"pipe") | Some(&"null")),
            "{fd} is {:?}: the caller's terminal reached the container\n{out}",
            facts.get(fd)
        );
    }
    assert_eq!(facts.get("session"), Some(&"own"), "{out}");
    assert_eq!(facts.get("tty_nr"), Some(&"0"), "{out}");
    for k in [
        "tiocsti_fd0",
        "tiocsti_fd1",
        "tiocsti_fd2",
        "tiocsti_devtty",
    ] {
        assert_ne!(facts.get(k), Some(&"0"), "{k} injected input\n{out}");
        assert!(facts.contains_key(k), "{k} missing\n{out}");
    }
    assert!(
        !out.contains("Zq9"),
        "injected input reached the caller's terminal: {out:?}"
    );
}

/// The CVE-2019-5736 shape: the target is `#!/proc/self/exe`, so the exec'd program is
/// whatever the exec helper runs from, and the image's own ELF interpreter takes that process
/// over. It must find a sealed copy, never the host's berth binary.
#[cfg(target_arch = "x86_64")]
#[test]
fn exec_of_a_proc_self_exe_target_never_reaches_the_host_binary() {
    if !require_root() {
        return;
    }
    let w = World::new("clix");
    let probe = probe_layer(w.dir.path());
    w.start("box", "exec sleep 1000", |c| c.layers.push(probe));
    let o = w.run(&["exec", "box", "--", "/evil"]);
    let text = stdout(&o);
    let got = interp_exe(&text)
        .unwrap_or_else(|| panic!("the image's interpreter did not run: {text:?}"));
    assert!(
        !host_binaries().contains(&got),
        "the container's process ran from the host's binary {got:?}: {text}"
    );
}

/// A container process scanning every /proc/<pid>/exe while execs come and go (and with the
/// init reaper as pid 1, a fork of the shim for the container's life) never finds a host
/// binary.
#[test]
fn a_racing_opener_never_finds_the_host_binaries() {
    if !require_root() {
        return;
    }
    let w = World::new("clir");
    let probe = probe_layer(w.dir.path());
    let mut args = vec!["/exec_probe".to_string(), "race".into()];
    for (d, i) in host_binaries() {
        args.push(d.to_string());
        args.push(i.to_string());
    }
    let c = w.start("box", "unused", |c| {
        c.layers.push(probe);
        c.process.args = args;
        c.init = true;
    });
    let log = || {
        let o = w.run(&["logs", "box"]);
        stdout(&o)
    };
    let seen = |l: &str| {
        l.lines()
            .filter_map(|x| x.strip_prefix("seen "))
            .filter_map(|n| n.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log().contains("seen ") {
        assert!(Instant::now() < deadline, "the scan never ran: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..60 {
        let o = w
            .berth(&["exec", "box", "--", "sleep", "0.02"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let text = log();
    let hits: Vec<&str> = text.lines().filter(|l| l.starts_with("HIT")).collect();
    assert!(
        hits.is_empty(),
        "a container process reached a host binary: {hits:?}"
    );
    // The scan could see the exec'd processes, so it would have seen a helper.
    assert!(seen(&text) > 0, "{text}");
    let _ = c;
}

/// `berth exec -t` opens its terminal inside the container's mount namespace: pid 1 chrooted
/// into a dir whose dev/pts/ptmx is a symlink to a host file must not make berth open that
/// file, and the exec still gets a terminal from the container's devpts.
#[test]
fn exec_tty_opens_the_terminal_inside_the_container() {
    if !require_root() {
        return;
    }
    let w = World::new("clip");
    let sentinel = w.dir.path().join("sentinel");
    std::fs::write(&sentinel, "host\n").unwrap();
    let script = format!(
        "mkdir -p /jail/dev/pts /jail/bin && cp /bin/busybox /jail/bin/ && \
         ln -s {} /jail/dev/pts/ptmx && echo ready && exec chroot /jail /bin/busybox sleep 1000",
        sentinel.display()
    );
    let c = w.start("box", &script, |_| {});
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout(&w.berth(&["logs", "box"]).output().unwrap()).contains("ready") {
        assert!(Instant::now() < deadline, "the container did not get ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: inotify_init1 takes flags only.
    let ino = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    assert!(ino >= 0);
    let path = std::ffi::CString::new(sentinel.to_str().unwrap()).unwrap();
    // SAFETY: a valid C path.
    let wd = unsafe { libc::inotify_add_watch(ino, path.as_ptr(), libc::IN_OPEN) };
    assert!(wd >= 0);
    let o = w.run(&[
        "exec",
        "-t",
        "box",
        "--",
        "sh",
        "-c",
        "test -t 0 && echo is-a-tty; tty",
    ]);
    let mut buf = [0u8; 256];
    // SAFETY: reads into a live buffer of that size (non-blocking).
    let n = unsafe { libc::read(ino, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closing our own fd.
    unsafe { libc::close(ino) };
    assert!(
        n <= 0,
        "berth opened the host file the container's symlink named"
    );
    let text = stdout(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("is-a-tty"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    let _ = c;
}

/// CVE-2024-21626's shape: the container turns its working directory into a symlink to
/// /proc/self/fd/7, and `berth exec` is run by a caller that leaks a host directory as fd 7.
/// The exec must refuse to start rather than run in the host's directory (the launch's own
/// getcwd check is tested on its own in `runtime::launch`).
#[test]
fn exec_refuses_a_working_directory_outside_the_container() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    if !require_root() {
        return;
    }
    let w = World::new("clicwd");
    let secret_dir = w.dir.path().join("hostdir");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("secret"), "host-only\n").unwrap();
    w.start(
        "box",
        "cd / && rmdir /w && ln -s /proc/self/fd/7 /w && echo ready && exec sleep 1000",
        |c| c.process.cwd = "/w".into(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout(&w.berth(&["logs", "box"]).output().unwrap()).contains("ready") {
        assert!(Instant::now() < deadline, "the container did not get ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = std::fs::File::open(&secret_dir).unwrap();
    let raw = dir.as_raw_fd();
    let mut cmd = w.berth(&["exec", "box", "--", "sh", "-c", "pwd; cat secret"]);
    // SAFETY: dup2 and fcntl between fork and exec, in the child only.
    unsafe {
        cmd.pre_exec(move || {
            // (When `raw` is 7 already, dup2 does nothing: clear close-on-exec by hand.)
            if libc::dup2(raw, 7) < 0 || libc::fcntl(7, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let out = stdout(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("stdout: {out}\nstderr: {err}");
    assert!(
        !out.contains("host-only"),
        "the exec read a host file: {out}"
    );
    // Refused before the payload ran: the leaked fd is gone before the helper enters the
    // container (and a directory outside the root would fail the getcwd check).
    assert_eq!(o.status.code(), Some(125), "{err}");
}
