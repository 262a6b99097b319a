//! Named networks with real traffic (as root, in a lab netns): each network is a bridge, subnet
//! and table of its own; containers on different networks cannot open connections to each
//! other in either direction (and can once the isolation rules are flushed, which repair puts
//! back); a container on two networks reaches both; an internal network has no way out; each
//! network's names are its own; nothing is left after detaching.

mod netlab;

use std::fs::File;

use berth_agent::names::IncarnationId;
use berth_agent::network::{Egress, Join, NetDef, Network, netns};
use berth_spec::Config;
use berth_spec::config::NamedNetworkConfig;
use netlab::{Lab, require_root};

/// The lab's default network plus `backend` (routed) and `vault` (internal).
fn config(lab: &Lab) -> Config {
    let mut c = Config {
        instance: lab.names.instance().to_string(),
        ..Config::default()
    };
    c.network.bridge = lab.config.bridge.clone();
    c.network.subnet = lab.config.subnet.clone();
    c.networks.insert(
        "backend".into(),
        NamedNetworkConfig {
            subnet: Some(format!("10.223.{}.0/24", lab.k)),
            ..Default::default()
        },
    );
    c.networks.insert(
        "vault".into(),
        NamedNetworkConfig {
            subnet: Some(format!("10.224.{}.0/24", lab.k)),
            internal: true,
            ..Default::default()
        },
    );
    c
}

#[test]
fn named_networks_isolate_stacks_with_real_traffic() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new(41);
    let defs = NetDef::from_config(&config(&lab)).unwrap();
    assert_eq!(
        defs.iter().map(|d| d.bridge.as_str()).collect::<Vec<_>>(),
        ["tb41", "t41-backend", "t41-vault"]
    );
    assert_eq!(defs[2].egress, Egress::Internal);
    let nets: Vec<Network> = defs.iter().map(|d| lab.open_network(d)).collect();
    let (default, backend, vault) = (&nets[0], &nets[1], &nets[2]);
    for n in &nets {
        n.ensure_host().unwrap();
    }
    assert_eq!(backend.table(), "t41-backend");

    let ids: Vec<IncarnationId> = (0..4).map(|_| IncarnationId::random()).collect();
    let (web_id, db_id, api_id, secret_id) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let web = default.attach("web", web_id, None).unwrap();
    let db = backend.attach("db", db_id, None).unwrap();
    // api is on both: eth0 on the default network (its default route), eth1 on backend.
    let api0 = default.attach("api", api_id, None).unwrap();
    let api1 = backend
        .attach_as("api", api_id, None, &Join::nth(1))
        .unwrap();
    let secret = vault.attach("secret", secret_id, None).unwrap();
    assert!(db.ip.to_string().starts_with("10.223.41."), "{db:?}");
    assert!(
        secret.ip.to_string().starts_with("10.224.41."),
        "{secret:?}"
    );
    assert_eq!(api0.netns, api1.netns);

    let ns = |name: &str, id: &IncarnationId| lab.container_ns(name, id);
    let (web_ns, db_ns, api_ns, secret_ns) = (
        ns("web", web_id),
        ns("db", db_id),
        ns("api", api_id),
        ns("secret", secret_id),
    );
    let inside = lab.host(&[
        "nsenter",
        &format!("--net={}", api_ns.display()),
        "ip",
        "-o",
        "addr",
    ]);
    assert!(
        inside.contains(&format!("eth1    inet {}/24", api1.ip)),
        "{inside}"
    );
    let routes = lab.host(&[
        "nsenter",
        &format!("--net={}", api_ns.display()),
        "ip",
        "route",
    ]);
    assert!(
        routes.contains("default via 10.220.41.1 dev eth0"),
        "{routes}"
    );
    assert!(!routes.contains("default via 10.223"), "{routes}");

    lab.serve_http(&db_ns, "db");
    lab.serve_http(&web_ns, "web");
    lab.serve_http(&secret_ns, "secret");
    let url = |ip: std::net::IpAddr| format!("http://{ip}/");

    // Same network: api reaches db (through eth1) and web (through eth0).
    assert!(lab.reaches(&api_ns, &url(db.ip), "db"));
    assert!(lab.reaches(&api_ns, &url(web.ip), "web"));
    // Different networks: nothing opens in either direction.
    assert_eq!(lab.curl(&web_ns, &url(db.ip)), None);
    assert_eq!(lab.curl(&db_ns, &url(web.ip)), None);
    assert_eq!(lab.curl(&db_ns, &url(secret.ip)), None);
    assert_eq!(lab.curl(&secret_ns, &url(db.ip)), None);
    assert_eq!(lab.curl(&api_ns, &url(secret.ip)), None);

    // It is the isolation rules that keep them apart (each side's table has a pair): without
    // them web reaches db; repair (what the drift watcher runs) puts them back.
    for table in ["t41", "t41-backend"] {
        lab.host(&["nft", "flush", "chain", "inet", table, "forward"]);
    }
    assert!(lab.reaches(&web_ns, &url(db.ip), "db"));
    assert!(default.repair_rules().unwrap());
    assert!(backend.repair_rules().unwrap());
    let rules = lab.host(&["nft", "list", "chain", "inet", "t41-backend", "forward"]);
    assert!(rules.contains("berth:isolate-in"), "{rules}");
    assert_eq!(lab.curl(&web_ns, &url(db.ip)), None);

    // Egress: db goes out (masqueraded), secret's network is internal and does not.
    let other = lab.other_addr();
    let other_ns = lab.other_ns.clone();
    lab.serve_peer_echo(&other_ns, &other, 7000);
    let out = |ns: &std::path::Path| {
        lab.try_in(
            ns,
            &[
                "socat",
                "-T2",
                "-",
                &format!("TCP:{other}:7000,connect-timeout=2"),
            ],
        )
    };
    let (ok, seen) = out(&db_ns);
    assert!(
        ok && seen.contains(&format!("peer={}", lab.host_addr())),
        "{seen}"
    );
    let (ok, seen) = out(&secret_ns);
    assert!(!ok && !seen.contains("peer="), "{seen}");
    let vault_rules = lab.host(&["nft", "list", "table", "inet", "t41-vault"]);
    assert!(!vault_rules.contains("berth:egress"), "{vault_rules}");
    assert!(vault_rules.contains("berth:internal-out"), "{vault_rules}");

    // Each network's names are its own.
    let names = |n: &Network| {
        let mut v: Vec<String> = n.peers().into_iter().map(|p| p.name).collect();
        v.sort();
        v
    };
    assert_eq!(names(backend), ["api", "db"]);
    assert_eq!(names(default), ["api", "web"]);
    assert_eq!(names(vault), ["secret"]);

    // Teardown: every veth, netns and lease goes; then each network's bridge and table.
    backend.detach("api", api_id).unwrap();
    default.detach("api", api_id).unwrap();
    default.detach("web", web_id).unwrap();
    backend.detach("db", db_id).unwrap();
    vault.detach("secret", secret_id).unwrap();
    for n in &nets {
        n.remove_host().unwrap();
    }
    let links = lab.host(&["ip", "-o", "link"]);
    for gone in ["tb41", "t41-backend", "t41-vault", "bth"] {
        assert!(!links.contains(gone), "{gone} left: {links}");
    }
    let tables = lab.host(&["nft", "list", "tables"]);
    assert!(!tables.contains("t41"), "{tables}");
    assert!(netns::list(&lab.layout.netns_dir()).unwrap().is_empty());
}

#[test]
fn a_network_dropped_from_the_config_goes_once_no_container_uses_it() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(42);
    let defs = NetDef::from_config(&config(&lab)).unwrap();
    let nets: Vec<Network> = defs.iter().map(|d| lab.open_network(d)).collect();
    for n in &nets {
        n.ensure_host().unwrap();
    }
    let backend = &nets[1];
    let id = IncarnationId::random();
    backend.attach("db", &id, None).unwrap();
    let host = File::open(&lab.host_ns).unwrap();
    let retire = || {
        netns::in_netns(&host, || {
            berth_agent::network::retire_removed(&lab.names, &lab.layout, &["default", "vault"])
        })
        .unwrap()
    };
    let has = |what: &[&str], needle: &str| lab.host(what).contains(needle);

    // The config dropped backend, but db still holds an address on it: kept, and said so.
    let notes = retire();
    assert!(
        notes.iter().any(|n| n.contains("kept while db")),
        "{notes:?}"
    );
    assert!(has(&["ip", "-o", "link"], "t42-backend"));

    backend.detach("db", &id).unwrap();
    let notes = retire();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("removed bridge t42-backend")),
        "{notes:?}"
    );
    assert!(!has(&["ip", "-o", "link"], "t42-backend"));
    assert!(!has(&["nft", "list", "tables"], "t42-backend"));
    assert!(has(&["nft", "list", "tables"], "t42-vault"));
    assert!(!lab.layout.network_dir().join("named/backend").exists());
    // Nothing more to do the next time.
    assert!(retire().is_empty());
    for n in [&nets[0], &nets[2]] {
        n.remove_host().unwrap();
    }
}
