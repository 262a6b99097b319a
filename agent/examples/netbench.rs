//! Timing helper for `bench/scenarios/netpath.py`: berth's network setup and port publishing,
//! and a lab for the throughput runs.
//!
//! Run it only inside throwaway namespaces, as the scenario does:
//!   unshare --mount --net --propagation private -- netbench setup 200
//!   unshare --mount --net --propagation private -- netbench publish 1,100,1000 10
//!   unshare --mount --net --propagation private -- netbench lab   (prints JSON, waits for EOF)
//! It refuses to run in the host's network namespace.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use berth_agent::layout::Layout;
use berth_agent::names::{IncarnationId, Names};
use berth_agent::network::{Network, netns};
use berth_spec::config::NetworkConfig;
use berth_spec::model::{PortMapping, Protocol};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let same = |a: &str, b: &str| {
        std::fs::metadata(a)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
            == std::fs::metadata(b)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .ok()
    };
    if same("/proc/self/ns/net", "/proc/1/ns/net") || same("/proc/self/ns/mnt", "/proc/1/ns/mnt") {
        eprintln!("netbench: run me under `unshare --mount --net --propagation private`");
        std::process::exit(2);
    }
    // A private tmpfs over /tmp in our private mount namespace: whatever happens, nothing we
    // make (netns bind mounts included) outlives the process.
    nix::mount::mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount a private tmpfs on /tmp");
    let dir = tempfile::Builder::new()
        .prefix("netbench-")
        .tempdir()
        .unwrap();
    let out = match args.first().map(String::as_str) {
        Some("setup") => setup(
            dir.path(),
            args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100),
        ),
        Some("publish") => publish(
            dir.path(),
            args.get(1).map(String::as_str).unwrap_or("1,100,1000"),
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10),
        ),
        Some("lab") => lab(dir.path()),
        _ => {
            eprintln!("usage: netbench setup N | publish SIZES ROUNDS | lab");
            std::process::exit(2);
        }
    };
    println!("{out}");
}

/// `subnet6`: the lab's network is dual-stack (the setup and publish timings stay IPv4-only,
/// comparable with their earlier runs).
fn network_with(dir: &Path, subnet6: Option<&str>) -> (Network, Names) {
    sh(&["ip", "link", "set", "lo", "up"]);
    let names = Names::new("bench");
    let layout = Layout {
        state_dir: dir.join("state"),
        run_dir: dir.join("run"),
    };
    let config = NetworkConfig {
        bridge: "bb0".into(),
        subnet: "10.230.0.0/20".into(),
        subnet6: subnet6.map(str::to_string),
        ..Default::default()
    };
    let net = Network::new(names.clone(), &config, &layout).unwrap();
    net.ensure_host().unwrap();
    (net, names)
}

fn network(dir: &Path) -> (Network, Names) {
    network_with(dir, None)
}

fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// A container's network setup, step by step: netns alone (attach_none), the whole attach
/// (lease, netns, veth, address, route), one published port, and teardown.
fn setup(dir: &Path, n: usize) -> String {
    let (net, _) = network(dir);
    let port = |i: usize| PortMapping {
        host_ip: None,
        host: 10000 + i as u16,
        container: 80,
        protocol: Protocol::Tcp,
    };
    let (mut netns_only, mut attach, mut publish, mut detach, mut total) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let iso = IncarnationId::random();
        let t = Instant::now();
        net.attach_none(&format!("iso{i}"), &iso).unwrap();
        netns_only.push(secs(t));
        net.detach(&format!("iso{i}"), &iso).unwrap();

        let id = IncarnationId::random();
        let name = format!("c{i}");
        let t = Instant::now();
        let a = net.attach(&name, &id, None).unwrap();
        attach.push(secs(t));
        let t2 = Instant::now();
        net.publish(&name, &id, a.ip, &[port(i)]).unwrap();
        publish.push(secs(t2));
        total.push(secs(t));
        let t = Instant::now();
        net.detach(&name, &id).unwrap();
        detach.push(secs(t));
    }
    serde_json::json!({
        "netns": netns_only, "attach": attach, "publish1": publish,
        "setup_total": total, "detach": detach,
    })
    .to_string()
}

/// Publishing N ports at once (one batch) and unpublishing them; interleaved with the same
/// elements added and deleted by the nft CLI (`nft -f`), the peer.
fn publish(dir: &Path, sizes: &str, rounds: usize) -> String {
    let (net, _) = network(dir);
    let id = IncarnationId::random();
    let a = net.attach("many", &id, None).unwrap();
    let mut result = serde_json::Map::new();
    for size in sizes.split(',').filter_map(|s| s.parse::<usize>().ok()) {
        let ports: Vec<PortMapping> = (0..size)
            .map(|i| PortMapping {
                host_ip: None,
                host: 20000 + i as u16,
                container: 80,
                protocol: Protocol::Tcp,
            })
            .collect();
        let elements: Vec<String> = (0..size)
            .map(|i| format!("tcp . {} comment \"cli\" : {} . 80", 30000 + i, a.ip))
            .collect();
        let add = dir.join(format!("add{size}.nft"));
        let del = dir.join(format!("del{size}.nft"));
        std::fs::write(
            &add,
            format!(
                "add element inet bench pub4_any {{ {} }}\n",
                elements.join(", ")
            ),
        )
        .unwrap();
        let keys: Vec<String> = (0..size).map(|i| format!("tcp . {}", 30000 + i)).collect();
        std::fs::write(
            &del,
            format!(
                "delete element inet bench pub4_any {{ {} }}\n",
                keys.join(", ")
            ),
        )
        .unwrap();
        let (mut up, mut down, mut cli_up, mut cli_down) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let t = Instant::now();
            net.publish("many", &id, a.ip, &ports).unwrap();
            up.push(secs(t));
            let t = Instant::now();
            net.unpublish("many", &id).unwrap();
            down.push(secs(t));
            let t = Instant::now();
            sh(&["nft", "-f", &add.display().to_string()]);
            cli_up.push(secs(t));
            let t = Instant::now();
            sh(&["nft", "-f", &del.display().to_string()]);
            cli_down.push(secs(t));
        }
        result.insert(format!("publish{size}"), up.into());
        result.insert(format!("unpublish{size}"), down.into());
        result.insert(format!("nft_add{size}"), cli_up.into());
        result.insert(format!("nft_delete{size}"), cli_down.into());
    }
    net.detach("many", &id).unwrap();
    serde_json::Value::Object(result).to_string()
}

/// The throughput lab: berth's network with a container `srv` whose port 5201 is published,
/// another host `other` on an uplink (10.231.0.1 here, .2 there, with a route to the
/// container subnet for the direct path), and a hand-written DNAT of 5202 on the same path.
/// The same over IPv6: the network is dual-stack (fd00:e30::/64), the uplink fd00:e31::1 and
/// ::2, and a hand-written `ip6` DNAT of 5202 to the container's IPv6 address.
/// Prints the paths as JSON, then waits for stdin to close.
fn lab(dir: &Path) -> String {
    let (net, _) = network_with(dir, Some("fd00:e30::/64"));
    let id = IncarnationId::random();
    let a = net.attach("srv", &id, None).unwrap();
    let publish = |host| PortMapping {
        host_ip: None,
        host,
        container: 5201,
        protocol: Protocol::Tcp,
    };
    net.publish("srv", &id, a.ip, &[publish(5201)]).unwrap();
    let other: PathBuf = dir.join("other.ns");
    netns::create(&other, || Ok(())).unwrap();
    let o = other.display().to_string();
    sh(&[
        "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", &o,
    ]);
    sh(&["ip", "addr", "add", "10.231.0.1/24", "dev", "uplink"]);
    sh(&[
        "ip",
        "addr",
        "add",
        "fd00:e31::1/64",
        "dev",
        "uplink",
        "nodad",
    ]);
    sh(&["ip", "link", "set", "uplink", "up"]);
    let net_arg = format!("--net={o}");
    let in_other = |argv: &[&str]| {
        let mut v = vec!["nsenter", net_arg.as_str()];
        v.extend_from_slice(argv);
        sh(&v)
    };
    in_other(&["ip", "link", "set", "lo", "up"]);
    in_other(&["ip", "addr", "add", "10.231.0.2/24", "dev", "eth0"]);
    in_other(&[
        "ip",
        "addr",
        "add",
        "fd00:e31::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    in_other(&["ip", "link", "set", "eth0", "up"]);
    in_other(&["ip", "route", "add", "10.230.0.0/20", "via", "10.231.0.1"]);
    sh(&["nft", "add table ip handdnat"]);
    sh(&[
        "nft",
        "add chain ip handdnat pre { type nat hook prerouting priority dstnat; }",
    ]);
    let rule = format!(
        "add rule ip handdnat pre ip daddr 10.231.0.1 tcp dport 5202 dnat to {}:5201",
        a.ip
    );
    sh(&["nft", &rule]);
    let ip6 = a.ip6.expect("the lab's network is dual-stack");
    sh(&["nft", "add table ip6 handdnat6"]);
    sh(&[
        "nft",
        "add chain ip6 handdnat6 pre { type nat hook prerouting priority dstnat; }",
    ]);
    let rule6 = format!(
        "add rule ip6 handdnat6 pre ip6 daddr fd00:e31::1 tcp dport 5202 dnat to [{ip6}]:5201"
    );
    sh(&["nft", &rule6]);
    // [::1]:5204, which the kernel cannot DNAT to a container: the shim's relay, run here as
    // the shim runs it, to the container's IPv6 address.
    let relay = berth_agent::runtime::proxy::Relay::listen(
        5204,
        Protocol::Tcp,
        std::net::SocketAddr::new(ip6, 5201),
    )
    .unwrap();
    let proxy = berth_agent::runtime::proxy::Proxy::start(vec![relay], Default::default()).unwrap();
    let info = serde_json::json!({
        "pid": std::process::id(),
        "host_addr": "10.231.0.1",
        "container_ip": a.ip.to_string(),
        "host_addr6": "fd00:e31::1",
        "container_ip6": ip6.to_string(),
        "container_ns": a.netns,
        "other_ns": other,
        "berth_port": 5201, "hand_dnat_port": 5202, "relay6_port": 5204,
    });
    println!("{info}");
    std::io::stdout().flush().unwrap();
    // Serve until the scenario closes our stdin.
    for _ in std::io::stdin().lock().lines() {}
    proxy.stop();
    let _ = net.detach("srv", &id);
    let _ = netns::remove(&other);
    "{}".to_string()
}

fn sh(argv: &[&str]) {
    let s = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
    assert!(s.success(), "{argv:?} failed");
}
