//! Real traffic through berth's network (as root, each test in its own lab netns): container to
//! container by name, egress, published TCP and UDP ports from another host, from the host's own
//! address and from 127.0.0.1, host_ip binding, hairpin, and the loopback guard.

mod netlab;

use std::time::Duration;

use berth_agent::names::{IncarnationId, Names};
use berth_agent::network::files::{self, ContainerNames};
use berth_spec::model::{PortMapping, Protocol};
use netlab::{Lab, require_root, udp_ask, wait_for};

fn tcp(host_ip: Option<&str>, host: u16, container: u16) -> PortMapping {
    PortMapping {
        host_ip: host_ip.map(|s| s.parse().unwrap()),
        host,
        container,
        protocol: Protocol::Tcp,
    }
}

#[test]
fn containers_reach_each_other_by_name_and_egress_is_masqueraded() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new(11);
    lab.net.ensure_host().unwrap();
    let (web, db) = (IncarnationId::random(), IncarnationId::random());
    let a = lab.net.attach("web", &web, None).unwrap();
    let b = lab.net.attach("db", &db, None).unwrap();
    assert_ne!(a.ip, b.ip);
    assert_eq!(a.gateway.to_string(), lab.gateway());
    assert_eq!((a.prefix_len, a.mtu), (24, 1500));

    // The container side as the runtime will see it.
    let web_ns = lab.container_ns("web", &web);
    let inside = lab.host(&[
        "nsenter",
        &format!("--net={}", web_ns.display()),
        "ip",
        "-o",
        "addr",
    ]);
    assert!(
        inside.contains(&format!("eth0    inet {}/24", a.ip)),
        "{inside}"
    );
    let routes = lab.host(&[
        "nsenter",
        &format!("--net={}", web_ns.display()),
        "ip",
        "route",
    ]);
    assert!(
        routes.contains(&format!("default via {}", lab.gateway())),
        "{routes}"
    );
    let host_links = lab.host(&["ip", "-o", "link"]);
    let veth = lab.names.veth(&web);
    assert!(host_links.contains(&format!("{veth}@")), "{host_links}");
    assert!(
        host_links.contains(&format!("master {}", lab.config.bridge)),
        "{host_links}"
    );
    assert!(
        host_links.contains(&format!("alias {}", lab.names.link_alias("web", &web))),
        "{host_links}"
    );

    // db serves; web finds it by name through the generated hosts file.
    let db_ns = lab.container_ns("db", &db);
    lab.serve_http(&db_ns, "hello from db");
    let dir = lab.dir.path().join("web-files");
    let peers = lab.net.peers();
    let f = files::write_container_files(
        &dir,
        &ContainerNames {
            name: "web",
            ip: Some(a.ip),
            peers: &peers,
            host_resolv: "nameserver 127.0.0.53\n",
        },
    )
    .unwrap();
    let hosts = std::fs::read_to_string(&f.hosts).unwrap();
    assert!(hosts.contains(&format!("{}\tdb", b.ip)), "{hosts}");
    let script = format!(
        "mount --bind {} /etc/hosts && exec nsenter --net={} curl -sS -m 2 http://db/",
        f.hosts.display(),
        web_ns.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from db",
        "{out:?}"
    );

    // Egress to another host, which sees the host's address, not the container's.
    let other_ns = lab.other_ns.clone();
    let other = lab.other_addr();
    lab.serve_peer_echo(&other_ns, &other, 7000);
    let (ok, seen) = lab.try_in(
        &web_ns,
        &[
            "socat",
            "-T2",
            "-",
            &format!("TCP:{other}:7000,connect-timeout=2"),
        ],
    );
    assert!(ok, "{seen}");
    assert!(
        seen.contains(&format!("peer={}", lab.host_addr())),
        "{seen}"
    );
}

#[test]
fn published_ports_from_everywhere_with_host_ip_and_hairpin() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new(12);
    lab.net.ensure_host().unwrap();
    let (web, cli) = (IncarnationId::random(), IncarnationId::random());
    let a = lab.net.attach("web", &web, None).unwrap();
    lab.net.attach("cli", &cli, None).unwrap();
    let web_ns = lab.container_ns("web", &web);
    let cli_ns = lab.container_ns("cli", &cli);
    lab.serve_http(&web_ns, "hello from web");
    lab.serve_udp(&web_ns, 53, "pong-udp");
    let host = lab.host_addr();
    let ports = vec![
        tcp(None, 8080, 80),
        PortMapping {
            host_ip: None,
            host: 5353,
            container: 53,
            protocol: Protocol::Udp,
        },
        tcp(Some("127.0.0.1"), 8081, 80),
        tcp(Some(&host), 8082, 80),
    ];
    lab.net.publish("web", &web, a.ip, &ports).unwrap();

    let (host_ns, other_ns) = (lab.host_ns.clone(), lab.other_ns.clone());
    let gw = lab.gateway();
    let ok = |ns: &std::path::Path, url: &str| lab.reaches(ns, url, "hello from web");
    let closed = |ns: &std::path::Path, url: &str| lab.curl(ns, url).is_none();
    // Any host address: from another host, the host itself, its loopback, containers (hairpin,
    // including the publishing container itself).
    assert!(
        ok(&other_ns, &format!("http://{host}:8080/")),
        "from another host"
    );
    assert!(
        ok(&host_ns, &format!("http://{host}:8080/")),
        "from the host to its own address"
    );
    assert!(
        ok(&host_ns, &format!("http://{gw}:8080/")),
        "to the bridge's address"
    );
    assert!(
        ok(&host_ns, "http://127.0.0.1:8080/"),
        "from the host to 127.0.0.1"
    );
    assert!(
        ok(&cli_ns, &format!("http://{host}:8080/")),
        "hairpin from another container"
    );
    assert!(
        ok(&web_ns, &format!("http://{gw}:8080/")),
        "hairpin to itself"
    );
    // UDP.
    assert!(
        udp_ask(&lab, &other_ns, &host, 5353).contains("pong-udp"),
        "udp from another host"
    );
    assert!(
        udp_ask(&lab, &host_ns, "127.0.0.1", 5353).contains("pong-udp"),
        "udp to 127.0.0.1"
    );
    // host_ip binds a port to one address only.
    assert!(ok(&host_ns, "http://127.0.0.1:8081/"));
    assert!(
        closed(&host_ns, &format!("http://{host}:8081/")),
        "127.0.0.1-only port on another address"
    );
    assert!(closed(&other_ns, &format!("http://{host}:8081/")));
    assert!(ok(&other_ns, &format!("http://{host}:8082/")));
    assert!(
        closed(&host_ns, &format!("http://{gw}:8082/")),
        "uplink-only port on the bridge address"
    );
    // Loopback ports are the host's own: a neighbour that routes 127.0.0.1 to the host (DNAT
    // runs before the routing decision that would drop it) gets nothing.
    for cmd in [
        "ip route del local 127.0.0.0/8 dev lo table local",
        "ip route del local 127.0.0.1 dev lo table local",
        "sysctl -qw net.ipv4.conf.eth0.route_localnet=1",
        "sysctl -qw net.ipv4.conf.all.route_localnet=1",
    ] {
        lab.other(&["sh", "-c", cmd]);
    }
    lab.other(&["ip", "route", "add", "127.0.0.1/32", "via", &host]);
    assert!(
        closed(&other_ns, "http://127.0.0.1:8081/"),
        "a neighbour reached a 127.0.0.1 port"
    );
    assert!(closed(&other_ns, "http://127.0.0.1:8080/"));

    // Each element names its container; unpublish removes exactly them.
    let ruleset = lab.nft_ruleset();
    let owner = Names::container_key("web", &web);
    assert_eq!(
        ruleset.matches(&format!("comment \"{owner}\"")).count(),
        4,
        "{ruleset}"
    );
    lab.net.unpublish("web", &web).unwrap();
    assert!(!lab.nft_ruleset().contains(&owner));
    assert!(closed(&other_ns, &format!("http://{host}:8080/")));
    assert!(
        lab.net
            .ipam()
            .lease_of("web", &web)
            .unwrap()
            .ports
            .is_empty()
    );
    // Unpublishing again is fine.
    lab.net.unpublish("web", &web).unwrap();
}

#[test]
fn a_container_cannot_reach_the_hosts_loopback() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new(13);
    lab.net.ensure_host().unwrap();
    let id = IncarnationId::random();
    lab.net.attach("evil", &id, None).unwrap();
    let ns = lab.container_ns("evil", &id);
    // A UDP service bound to the host's loopback, writing what it receives to a file.
    let received = lab.dir.path().join("received");
    std::fs::write(&received, "").unwrap();
    let host_ns = lab.host_ns.clone();
    let sink = format!("OPEN:{},creat,append", received.display());
    lab.spawn_in(
        &host_ns,
        &["socat", "-u", "UDP-RECV:9999,bind=127.0.0.1", &sink],
    );
    let got = || std::fs::read_to_string(&received).unwrap();
    wait_for("the loopback service", Duration::from_secs(5), || {
        lab.try_in(
            &host_ns,
            &["sh", "-c", "echo ready | socat -u - UDP:127.0.0.1:9999"],
        );
        got().contains("ready")
    });

    // The container (with NET_ADMIN in its netns) routes 127.0.0.1 to the gateway, as in
    // CVE-2020-8558: the host accepts such packets on the bridge because of route_localnet.
    let nsarg = format!("--net={}", ns.display());
    for cmd in [
        "ip route del local 127.0.0.0/8 dev lo table local",
        "ip route del local 127.0.0.1 dev lo table local",
        "sysctl -qw net.ipv4.conf.eth0.route_localnet=1",
        "sysctl -qw net.ipv4.conf.all.route_localnet=1",
    ] {
        lab.host(&["nsenter", &nsarg, "sh", "-c", cmd]);
    }
    lab.host(&[
        "nsenter",
        &nsarg,
        "ip",
        "route",
        "add",
        "127.0.0.1/32",
        "via",
        &lab.gateway(),
    ]);
    let table = lab.names.nft_table().to_string();
    let guard_count = || {
        let chain = lab.host(&["nft", "list", "chain", "inet", &table, "input"]);
        chain
            .split("counter packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .expect("guard counter")
    };
    let attack = |word: &str| {
        lab.try_in(
            &ns,
            &[
                "sh",
                "-c",
                &format!("echo {word} | socat -u - UDP:127.0.0.1:9999"),
            ],
        );
    };
    attack("attack1");
    wait_for(
        "the guard to drop the packet",
        Duration::from_secs(5),
        || guard_count() > 0,
    );
    lab.try_in(
        &host_ns,
        &["sh", "-c", "echo control | socat -u - UDP:127.0.0.1:9999"],
    );
    wait_for("the control datagram", Duration::from_secs(5), || {
        got().contains("control")
    });
    assert!(
        !got().contains("attack1"),
        "the container reached the host's loopback"
    );

    // Without the guard the same packet does get through: the assertion above means something.
    let listing = lab.host(&["nft", "-a", "list", "chain", "inet", &table, "input"]);
    let handle = listing
        .lines()
        .find(|l| l.contains("loopback-guard"))
        .and_then(|l| l.rsplit("handle ").next())
        .map(|h| h.trim().to_string())
        .expect("guard rule");
    lab.host(&[
        "nft", "delete", "rule", "inet", &table, "input", "handle", &handle,
    ]);
    attack("attack2");
    wait_for("the unguarded packet", Duration::from_secs(5), || {
        got().contains("attack2")
    });

    // The repair puts the guard back.
    assert!(lab.net.repair_rules().unwrap());
    let before = guard_count();
    attack("attack3");
    wait_for("the guard again", Duration::from_secs(5), || {
        guard_count() > before
    });
    lab.try_in(
        &host_ns,
        &["sh", "-c", "echo control2 | socat -u - UDP:127.0.0.1:9999"],
    );
    wait_for(
        "the second control datagram",
        Duration::from_secs(5),
        || got().contains("control2"),
    );
    assert!(!got().contains("attack3"));
}
