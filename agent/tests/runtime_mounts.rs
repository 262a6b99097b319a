//! Mounts and kernel settings the payload depends on: many image layers, /etc files rewritten
//! in place, named volumes kept across incarnations, passed-through devices, masked and
//! read-only /proc paths, the container's own ping_group_range (ping itself is in the escape
//! suite's probe: busybox's ping needs a raw socket), NOFILE, the cgroup namespace,
//! and where shims and containers sit in the cgroup tree.

mod support;

use berth_agent::runtime::BundleDir;
use std::path::PathBuf;
use std::time::Duration;

use berth_agent::names::IncarnationId;
use berth_agent::runtime::{DeviceSpec, EtcFiles, MountSource, MountSpec, NetNs};
use support::{Env, wait_for};

#[test]
fn a_hundred_and_twenty_layers_with_long_paths_mount() {
    let Some(env) = Env::new("layers") else {
        return;
    };
    let mut layers = env.layers.clone();
    let deep = env
        .dir
        .path()
        .join("image/a-rather-long-directory-name-for-layers-of-this-image/sha256");
    for i in 0..120 {
        let l = deep.join(format!("{i:064x}"));
        std::fs::create_dir_all(l.join("layers")).unwrap();
        std::fs::write(l.join(format!("layers/{i}")), "").unwrap();
        std::fs::write(l.join("layers/top"), format!("{i}\n")).unwrap();
        layers.push(l);
    }
    let total: usize = layers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(
        total > 4096 * 3,
        "the options would not fit a page: {total} bytes"
    );
    let mut c = env.config("many", "ls /layers | wc -l; cat /layers/top");
    c.layers = layers;
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0), "{:?}", env.stderr(&c));
    // 120 numbered files plus `top`, and the top layer's `top` wins.
    assert_eq!(env.stdout(&c), ["121", "119"]);
}

#[test]
fn etc_files_are_bind_mounted_and_in_place_rewrites_show() {
    let Some(env) = Env::new("etc") else {
        return;
    };
    let gate = env.dir.path().join("gate");
    std::fs::create_dir(&gate).unwrap();
    let files: Vec<PathBuf> = ["hostname", "hosts", "resolv.conf"]
        .iter()
        .map(|f| env.dir.path().join(f))
        .collect();
    std::fs::write(&files[0], "box\n").unwrap();
    std::fs::write(&files[1], "127.0.0.1 localhost\n").unwrap();
    std::fs::write(&files[2], "nameserver 10.0.0.1\n").unwrap();
    let mut c = env.config(
        "etc",
        "cat /etc/hostname /etc/resolv.conf; echo waiting; while [ ! -e /gate/go ]; do sleep 0.05; done; cat /etc/hosts",
    );
    c.etc = EtcFiles {
        hostname: Some(files[0].clone()),
        hosts: Some(files[1].clone()),
        resolv_conf: Some(files[2].clone()),
    };
    c.mounts.push(MountSpec {
        source: MountSource::Bind(gate.clone()),
        target: "/gate".into(),
        read_only: true,
    });
    env.runtime.create(&c).unwrap();
    env.wait_line(&c, "waiting");
    berth_agent::fsutil::rewrite_in_place(&files[1], b"10.1.2.3 peer\n").unwrap();
    std::fs::write(gate.join("go"), "").unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0));
    assert_eq!(
        env.stdout(&c),
        ["box", "nameserver 10.0.0.1", "waiting", "10.1.2.3 peer"]
    );
}

#[test]
fn named_volumes_are_created_and_outlive_incarnations() {
    let Some(env) = Env::new("vol") else {
        return;
    };
    let vol = env.runtime.config().layout.volume_dir("data");
    assert!(!vol.exists());
    let mount = MountSpec {
        source: MountSource::Volume(vol.clone()),
        target: "/var/data".into(),
        read_only: false,
    };
    let mut a = env.config(
        "v",
        "cat /var/data/f 2>/dev/null || echo empty; echo kept > /var/data/f",
    );
    a.mounts.push(mount.clone());
    env.runtime.create(&a).unwrap();
    assert_eq!(env.wait_exit(&a).code, Some(0));
    assert_eq!(env.stdout(&a), ["empty"]);
    env.runtime
        .remove(&a.name, &a.id, BundleDir::Remove)
        .unwrap();
    let mut b = a.clone();
    b.id = IncarnationId::random();
    env.runtime.create(&b).unwrap();
    assert_eq!(env.wait_exit(&b).code, Some(0));
    assert_eq!(env.stdout(&b), ["kept"]);
    assert!(vol.join("f").exists());
}

#[test]
fn passed_through_devices_open_and_others_do_not() {
    let Some(env) = Env::new("dev") else {
        return;
    };
    let mut c = env.config(
        "dev",
        "exec 3</dev/xloop && echo passed-opened; mknod /tmp/other c 1 1 2>/dev/null && echo made; \
         ls -l /dev/xloop | cut -c1",
    );
    c.devices = vec![DeviceSpec {
        host: "/dev/loop0".into(),
        container: "/dev/xloop".into(),
        permissions: "rw".into(),
    }];
    env.runtime.create(&c).unwrap();
    env.wait_exit(&c);
    assert_eq!(
        env.stdout(&c),
        ["passed-opened", "b"],
        "{:?}",
        env.stderr(&c)
    );
}

#[test]
fn proc_is_masked_and_net_settings_are_the_containers_own() {
    let Some(env) = Env::new("proc") else {
        return;
    };
    let host_range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
    let c = env.config(
        "proc",
        "echo keys=$(cat /proc/keys | wc -c) timers=$(cat /proc/timer_list | wc -c); \
         echo sys=$(sh -c 'echo 1 > /proc/sys/kernel/domainname' 2>&1 | grep -c 'Read-only'); \
         echo range=$(cat /proc/sys/net/ipv4/ping_group_range | tr '\\t' ' '); \
         echo nofile=$(ulimit -n); echo cgroup=$(cut -d: -f3 /proc/self/cgroup | sort -u)",
    );
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0), "{:?}", env.stderr(&c));
    let want_nofile = hard.rlim_max.min(1 << 20);
    assert_eq!(
        env.stdout(&c),
        [
            "keys=0 timers=0".to_string(),
            "sys=1".to_string(),
            "range=0 2147483647".to_string(),
            format!("nofile={want_nofile}"),
            "cgroup=/".to_string(),
        ],
        "{:?}",
        env.stderr(&c)
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap(),
        host_range,
        "the host's ping_group_range changed"
    );
}

#[test]
fn host_network_leaves_the_hosts_settings_alone() {
    let Some(env) = Env::new("hnet") else {
        return;
    };
    let host_range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let mut c = env.config("hnet", "cat /proc/sys/net/ipv4/ping_group_range");
    c.netns = NetNs::Host;
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0), "{:?}", env.stderr(&c));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap(),
        host_range
    );
}

#[test]
fn shims_and_containers_live_under_the_instance_not_the_caller() {
    let Some(env) = Env::new("place") else {
        return;
    };
    let c = env.config("placed", "sleep 1000");
    let s = env.runtime.create(&c).unwrap();
    let memory_cgroup = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .unwrap()
    };
    let inst = env.names.instance().to_string();
    wait_for(Duration::from_secs(5), "the shim to move", || {
        memory_cgroup(s.shim_pid) == format!("/{inst}/_shims")
    });
    assert_eq!(
        memory_cgroup(s.pid),
        format!("/{}", env.names.cgroup(&c.name, &c.id))
    );
    assert_ne!(
        memory_cgroup(s.shim_pid),
        memory_cgroup(std::process::id() as i32)
    );
}

/// An image entry where a passed-through device goes, a symlink to a host file (absolute, or
/// relative and climbing out of the root), must never let the mode change reach that file:
/// the node is made in the link's place (the link replaced, as a mount covers what is there),
/// and the mode is set on the node just made, seen through an fd that does not follow links.
#[test]
fn a_device_path_that_is_an_image_symlink_never_reaches_the_host() {
    use std::os::unix::fs::PermissionsExt;
    let Some(env) = Env::new("devlink") else {
        return;
    };
    let sentinel = env.dir.path().join("sentinel");
    std::fs::write(&sentinel, "host secret\n").unwrap();
    std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o600)).unwrap();
    let layer = env.dir.path().join("layer-links");
    std::fs::create_dir_all(layer.join("opt/app")).unwrap();
    std::os::unix::fs::symlink(&sentinel, layer.join("opt/app/abs")).unwrap();
    let climb = "../".repeat(40);
    let rel = format!(
        "{climb}{}",
        sentinel.display().to_string().trim_start_matches('/')
    );
    std::os::unix::fs::symlink(&rel, layer.join("opt/app/rel")).unwrap();
    for link in ["abs", "rel"] {
        let mut c = env.config(link, &format!("ls -l /opt/app/{link} | cut -c1"));
        c.layers.push(layer.clone());
        c.devices = vec![DeviceSpec {
            host: "/dev/zero".into(),
            container: format!("/opt/app/{link}").into(),
            permissions: "rw".into(),
        }];
        let started = env.runtime.create(&c);
        let mode = std::fs::metadata(&sentinel).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode, 0o600,
            "{link}: the host file's mode changed through the image's symlink ({started:?})"
        );
        started.unwrap();
        env.wait_exit(&c);
        assert_eq!(env.stdout(&c), ["c"], "{link}: {:?}", env.stderr(&c));
    }
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "host secret\n");
}

fn etc_files(env: &Env) -> EtcFiles {
    let f = |name: &str, text: &str| {
        let p = env.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        Some(p)
    };
    EtcFiles {
        hostname: f("hostname", "box\n"),
        hosts: f("hosts", "127.0.0.1 localhost\n"),
        resolv_conf: f("resolv.conf", "nameserver 10.0.0.1\n"),
    }
}

/// The /etc files are the host's files bound in: a container that could write them could fill
/// the host's disk or rewrite what the agent keeps. They are bound read-only.
#[test]
fn etc_files_are_read_only_in_the_container() {
    let Some(env) = Env::new("etcro") else {
        return;
    };
    let mut c = env.config(
        "etcro",
        "for f in hosts hostname resolv.conf; do \
           (echo x >> /etc/$f) 2>/dev/null && echo $f-written || echo $f-refused; done",
    );
    c.etc = etc_files(&env);
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0));
    assert_eq!(
        env.stdout(&c),
        ["hosts-refused", "hostname-refused", "resolv.conf-refused"]
    );
    let hosts = std::fs::read_to_string(c.etc.hosts.as_ref().unwrap()).unwrap();
    assert_eq!(hosts, "127.0.0.1 localhost\n");
}

/// An image whose /etc/resolv.conf is a dangling symlink (systemd-resolved's stub, say) still
/// starts: the link is followed inside the root and its target made there, as runc does; an
/// absolute target never lands on the host.
#[test]
fn a_dangling_resolv_conf_symlink_is_resolved_inside_the_root() {
    let Some(env) = Env::new("resolv") else {
        return;
    };
    let host_dir = format!("/berth-resolv-test-{}", std::process::id());
    let layer = env.dir.path().join("layer-resolv");
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    std::os::unix::fs::symlink(
        format!("{host_dir}/stub-resolv.conf"),
        layer.join("etc/resolv.conf"),
    )
    .unwrap();
    let mut c = env.config(
        "resolv",
        &format!("cat /etc/resolv.conf; cat {host_dir}/stub-resolv.conf"),
    );
    c.layers.push(layer);
    c.etc = etc_files(&env);
    let started = env.runtime.create(&c);
    assert!(
        !std::path::Path::new(&host_dir).exists(),
        "the link's target was made on the host"
    );
    started.unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0), "{:?}", env.stderr(&c));
    assert_eq!(
        env.stdout(&c),
        ["nameserver 10.0.0.1", "nameserver 10.0.0.1"]
    );
}

/// Masks bind the host's own /dev/null (checked to be c 1:3), never whatever the container's
/// tree has at /dev/null (CVE-2025-31133): here a spec mount put a file there.
#[test]
fn masks_use_the_hosts_dev_null() {
    let Some(env) = Env::new("masknull") else {
        return;
    };
    let fake = env.dir.path().join("not-null");
    std::fs::write(&fake, "not-null-contents\n").unwrap();
    let mut c = env.config("masknull", "cat /proc/keys /proc/timer_list; echo end");
    c.mounts.push(MountSpec {
        source: MountSource::Bind(fake),
        target: "/dev/null".into(),
        read_only: true,
    });
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0), "{:?}", env.stderr(&c));
    assert_eq!(env.stdout(&c), ["end"]);
}

/// Unmounts a test's host mount on drop, whatever the test did.
struct HostMount(PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A read-only bind is read-only all the way down: a mount below the source (here a tmpfs) is
/// not left writable, and the bind is made and set read-only through one fd (open_tree +
/// mount_setattr), never looked up again by path.
#[test]
fn read_only_binds_are_read_only_below_too() {
    let Some(env) = Env::new("rorec") else {
        return;
    };
    let src = env.dir.path().join("data");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &src.join("sub"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _guard = HostMount(src.join("sub"));
    let mut c = env.config(
        "rorec",
        "touch /data/top 2>/dev/null && echo top-written || echo top-refused; \
         touch /data/sub/x 2>/dev/null && echo sub-written || echo sub-refused",
    );
    c.mounts.push(MountSpec {
        source: MountSource::Bind(src.clone()),
        target: "/data".into(),
        read_only: true,
    });
    env.runtime.create(&c).unwrap();
    assert_eq!(env.wait_exit(&c).code, Some(0), "{:?}", env.stderr(&c));
    assert_eq!(env.stdout(&c), ["top-refused", "sub-refused"]);
    assert!(!src.join("sub/x").exists());
}
