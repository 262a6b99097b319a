//! IPv6 with real traffic (as root, in a lab netns standing in for the host, and a second one
//! for the outside host on the uplink): a dual-stack default network and an IPv6-only named
//! network; containers get their IPv6 addresses usable at once and a v6 default route; egress
//! is masqueraded (NAT66) to the host's uplink address; published ports answer over IPv6 on the
//! host's address from the outside host and from the host itself; the table is repaired with
//! its v6 elements; names carry v6 addresses; the sweep releases an orphan's IPv6 lease;
//! nothing is left after detaching.

mod netlab;

use std::net::IpAddr;

use berth_agent::names::IncarnationId;
use berth_agent::network::{NetDef, Network, netns};
use berth_spec::Config;
use berth_spec::config::NamedNetworkConfig;
use berth_spec::model::{PortMapping, Protocol};
use netlab::{Lab, require_root};

const K: u8 = 43;

fn config(lab: &Lab) -> Config {
    let mut c = Config {
        instance: lab.names.instance().to_string(),
        ..Config::default()
    };
    c.network.bridge = lab.config.bridge.clone();
    c.network.subnet = lab.config.subnet.clone();
    c.network.subnet6 = Some(format!("fd00:e1:{K}::/64"));
    c.networks.insert(
        "six".into(),
        NamedNetworkConfig {
            subnet6: Some(format!("fd00:e2:{K}::/64")),
            ..Default::default()
        },
    );
    c
}

fn port(host: u16, host_ip: Option<&str>) -> PortMapping {
    PortMapping {
        host_ip: host_ip.map(|s| s.parse().unwrap()),
        host,
        container: 80,
        protocol: Protocol::Tcp,
    }
}

#[test]
fn ipv6_dual_stack_and_v6_only_networks_with_real_traffic() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new(K);
    // The uplink gets IPv6 too: the host fd00:ee:K::1, the outside host ::2 (no route from
    // the outside back to the containers' subnets: replies come back only through NAT66).
    let (host6, other6) = (format!("fd00:ee:{K}::1"), format!("fd00:ee:{K}::2"));
    lab.host(&[
        "ip",
        "addr",
        "add",
        &format!("{host6}/64"),
        "dev",
        "uplink",
        "nodad",
    ]);
    lab.other(&[
        "ip",
        "addr",
        "add",
        &format!("{other6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);

    let defs = NetDef::from_config(&config(&lab)).unwrap();
    let nets: Vec<Network> = defs.iter().map(|d| lab.open_network(d)).collect();
    let (default, six) = (&nets[0], &nets[1]);
    for n in &nets {
        n.ensure_host().unwrap();
    }
    assert_eq!(
        lab.host(&["sysctl", "-n", "net.ipv6.conf.all.forwarding"])
            .trim(),
        "1"
    );
    // An IPv6-only bridge gets no route_localnet (it has no IPv4 loopback guard).
    let six_bridge = six.bridge().to_string();
    assert_eq!(
        lab.host(&[
            "sysctl",
            "-n",
            &format!("net.ipv4.conf.{six_bridge}.route_localnet")
        ])
        .trim(),
        "0"
    );

    let ids: Vec<IncarnationId> = (0..3).map(|_| IncarnationId::random()).collect();
    let (web_id, api_id, db_id) = (&ids[0], &ids[1], &ids[2]);
    let web = default.attach("web", web_id, None).unwrap();
    default.attach("api", api_id, None).unwrap();
    let db = six.attach("db", db_id, None).unwrap();
    let web6 = web.ip6.expect("web has an IPv6 address");
    assert!(web.ip.is_ipv4(), "{web:?}");
    assert!(
        web6.to_string().starts_with(&format!("fd00:e1:{K}::")),
        "{web:?}"
    );
    assert!(db.ip.is_ipv6() && db.ip6.is_none(), "{db:?}");
    assert!(
        db.ip.to_string().starts_with(&format!("fd00:e2:{K}::")),
        "{db:?}"
    );

    let ns = |name: &str, id: &IncarnationId| lab.container_ns(name, id);
    let (web_ns, api_ns, db_ns) = (ns("web", web_id), ns("api", api_id), ns("db", db_id));
    let in_ns = |ns: &std::path::Path, argv: &[&str]| {
        let mut all = vec!["nsenter".to_string(), format!("--net={}", ns.display())];
        all.extend(argv.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        lab.host(&all)
    };
    // Usable at once: no tentative address (DAD is off), a v6 default route via the gateway.
    let addrs = in_ns(&web_ns, &["ip", "-6", "-o", "addr"]);
    assert!(addrs.contains(&format!("{web6}/64")), "{addrs}");
    assert!(!addrs.contains("tentative"), "{addrs}");
    let routes = in_ns(&web_ns, &["ip", "-6", "route"]);
    assert!(
        routes.contains(&format!("default via fd00:e1:{K}::1 dev eth0")),
        "{routes}"
    );
    let routes = in_ns(&db_ns, &["ip", "-6", "route"]);
    assert!(
        routes.contains(&format!("default via fd00:e2:{K}::1 dev eth0")),
        "{routes}"
    );

    lab.serve_http(&web_ns, "web");
    lab.serve_http(&db_ns, "db");
    let url = |ip: IpAddr, port: u16| format!("http://[{ip}]:{port}/");

    // Same network over IPv6; across networks nothing opens (the isolation rules match by
    // interface, whatever the family).
    assert!(lab.reaches(&api_ns, &url(web6, 80), "web"));
    assert_eq!(lab.curl(&db_ns, &url(web6, 80)), None);
    assert_eq!(lab.curl(&web_ns, &url(db.ip, 80)), None);

    // Egress to the outside host, masqueraded to the host's uplink address (NAT66), from the
    // dual-stack network and from the IPv6-only one.
    let other_ns = lab.other_ns.clone();
    lab.serve_peer_echo(&other_ns, &format!("[{other6}]"), 7000);
    let out = |ns: &std::path::Path| {
        lab.try_in(
            ns,
            &[
                "socat",
                "-T2",
                "-",
                &format!("TCP:[{other6}]:7000,connect-timeout=2"),
            ],
        )
    };
    // socat prints the peer's address in full ("fd00:00ee:...").
    let peer = |seen: &str| -> Option<IpAddr> {
        let rest = seen.split("peer=[").nth(1)?;
        rest.split(']').next()?.parse().ok()
    };
    let host6_ip: IpAddr = host6.parse().unwrap();
    for from in [&web_ns, &db_ns] {
        let (ok, seen) = out(from);
        assert!(ok && peer(&seen) == Some(host6_ip), "{seen}");
    }

    // Published ports: web's 8080 (no host_ip) answers on the host's IPv4 and IPv6 addresses;
    // db's 8081 on `::` (every IPv6 address) goes to its IPv6-only address.
    default
        .publish("web", web_id, web.ip, &[port(8080, None)])
        .unwrap();
    six.publish("db", db_id, db.ip, &[port(8081, Some("::"))])
        .unwrap();
    let host6 = host6_ip;
    assert!(lab.reaches(&other_ns, &url(host6, 8080), "web"));
    assert!(lab.reaches(
        &other_ns,
        &format!("http://{}:8080/", lab.host_addr()),
        "web"
    ));
    assert!(lab.reaches(&other_ns, &url(host6, 8081), "db"));
    // From the host itself to its own address (the output chain), and from a container to
    // the host's address (hairpin).
    assert!(lab.reaches(&lab.host_ns, &url(host6, 8080), "web"));
    assert!(lab.reaches(&api_ns, &url(host6, 8080), "web"));
    let table = lab.host(&["nft", "list", "table", "inet", default.table()]);
    assert!(
        table.contains(&format!(
            "tcp . 8080 comment \"web-{web_id}\" : {web6} . 80"
        )),
        "{table}"
    );
    for rule in [
        "berth:egress6",
        "berth:loopback-guard6",
        "berth:publish-any6",
    ] {
        assert!(table.contains(rule), "{rule} missing: {table}");
    }

    // Someone flushes the table: repair puts back the rules and the v6 elements from the
    // leases.
    lab.host(&["nft", "delete", "table", "inet", default.table()]);
    assert_eq!(lab.curl(&other_ns, &url(host6, 8080)), None);
    assert!(default.repair_rules().unwrap());
    assert!(lab.reaches(&other_ns, &url(host6, 8080), "web"));

    // Names: the dual-stack network lists both addresses of each container.
    let peers = default.peers();
    assert!(
        peers.iter().any(|p| p.name == "web" && p.ip == web6),
        "{peers:?}"
    );
    assert!(
        peers.iter().any(|p| p.name == "web" && p.ip == web.ip),
        "{peers:?}"
    );
    assert_eq!(six.peers().len(), 1);

    // Teardown: every element, veth, netns and lease (of both families) goes; then the
    // bridges and tables.
    six.detach("db", db_id).unwrap();
    // A container no one knows any more (a crash between attach and record): the sweep takes
    // its veth, netns and both leases, and only its.
    let ghost = IncarnationId::random();
    default.attach("ghost", &ghost, None).unwrap();
    assert_eq!(default.observe().unwrap().leases6.len(), 3);
    let known = [
        ("web".to_string(), web_id.clone()),
        ("api".to_string(), api_id.clone()),
    ];
    default.sweep_orphans(&known).unwrap();
    let obs = default.observe().unwrap();
    assert_eq!((obs.leases.len(), obs.leases6.len()), (2, 2), "{obs:?}");
    assert!(!netns::is_mounted(&lab.container_ns("ghost", &ghost)));
    default.detach("web", web_id).unwrap();
    default.detach("api", api_id).unwrap();
    assert!(default.peers().is_empty() && six.peers().is_empty());
    let v6_leases = lab.layout.network_dir().join("v6/leases");
    assert_eq!(std::fs::read_dir(&v6_leases).unwrap().count(), 0);
    for n in &nets {
        n.remove_host().unwrap();
    }
    let links = lab.host(&["ip", "-o", "link"]);
    for gone in [lab.config.bridge.as_str(), &six_bridge, "bth"] {
        assert!(!links.contains(gone), "{gone} left: {links}");
    }
    let tables = lab.host(&["nft", "list", "tables"]);
    assert!(!tables.contains(&format!("t{K}")), "{tables}");
    assert!(netns::list(&lab.layout.netns_dir()).unwrap().is_empty());
}
