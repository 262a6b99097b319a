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
use berth_e2e::{berth_bin, require_root, unique_instance};

struct World {
    dir: tempfile::TempDir,
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
            let _ = self.rt.remove(&c.name, &c.id, false);
        }
        self.rt.prune_cgroups();
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
