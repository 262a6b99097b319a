//! berth's network objects over their life (as root, each test in its own lab netns): removal
//! leaves nothing, hand deletions are repaired (the table within a second, by the watcher),
//! orphans are swept without touching another instance, and errors name what is wrong.

mod netlab;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_agent::names::{IncarnationId, Names};
use berth_agent::network::{ExpectedMode, ExpectedNet, NetError, Network, TableState, netns};
use berth_agent::runtime::HostPort;
use berth_spec::model::{PortMapping, Protocol};
use netlab::{Lab, require_root, wait_for};

fn tcp(host: u16, container: u16) -> PortMapping {
    PortMapping {
        host_ip: None,
        host,
        container,
        protocol: Protocol::Tcp,
    }
}

#[test]
fn detach_leaves_no_link_netns_rule_or_lease_and_is_idempotent() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(21);
    lab.net.ensure_host().unwrap();
    lab.net.ensure_host().unwrap();
    let id = IncarnationId::random();
    let a = lab.net.attach("web", &id, None).unwrap();
    assert_eq!(
        lab.net.attach("web", &id, None).unwrap(),
        a,
        "attach is idempotent"
    );
    lab.net.publish("web", &id, a.ip, &[tcp(8080, 80)]).unwrap();
    lab.net.publish("web", &id, a.ip, &[tcp(8080, 80)]).unwrap();
    let none = IncarnationId::random();
    let iso = lab.net.attach_none("solo", &none).unwrap();
    let lo = lab.host(&[
        "nsenter",
        &format!("--net={}", iso.display()),
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(lo.lines().count(), 1, "only lo: {lo}");
    assert!(lo.contains("lo: <LOOPBACK,UP"), "{lo}");

    let veth = lab.names.veth(&id);
    assert!(lab.host(&["ip", "link"]).contains(&veth));
    let owner = Names::container_key("web", &id);
    assert!(lab.nft_ruleset().contains(&owner));

    lab.net.detach("web", &id).unwrap();
    lab.net.detach("solo", &none).unwrap();
    lab.net.detach("web", &id).unwrap();

    assert!(!lab.host(&["ip", "link"]).contains("bth"), "a veth is left");
    assert!(
        netns::list(&lab.layout.netns_dir()).unwrap().is_empty(),
        "a netns is left"
    );
    assert!(!a.netns.exists() && !iso.exists());
    assert!(!lab.nft_ruleset().contains(&owner), "an element is left");
    assert!(lab.net.ipam().leases().is_empty(), "a lease is left");
    let leases = std::fs::read_dir(lab.layout.network_dir().join("leases"))
        .unwrap()
        .count();
    assert_eq!(leases, 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&lab.layout.netns_dir().display().to_string()));
    // The fixed table stays for the next container.
    assert!(lab.nft_ruleset().contains("berth:egress"));

    // A recreated container gets its old address back.
    let again = IncarnationId::random();
    assert_eq!(lab.net.attach("web", &again, None).unwrap().ip, a.ip);
}

#[test]
fn a_deleted_veth_lease_or_bridge_comes_back_with_reconcile() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new(22);
    lab.net.ensure_host().unwrap();
    let id = IncarnationId::random();
    let a = lab.net.attach("web", &id, None).unwrap();
    let ports = vec![tcp(8080, 80)];
    lab.net.publish("web", &id, a.ip, &ports).unwrap();
    let ns = lab.container_ns("web", &id);
    lab.serve_http(&ns, "hello");
    let (other_ns, host) = (lab.other_ns.clone(), lab.host_addr());
    let url = format!("http://{host}:8080/");
    assert!(lab.reaches(&other_ns, &url, "hello"));

    lab.host(&["ip", "link", "del", &lab.names.veth(&id)]);
    std::fs::remove_file(lab.layout.network_dir().join(format!("leases/{}", a.ip))).unwrap();
    assert!(lab.curl(&other_ns, &url).is_none());

    let expected = [ExpectedNet {
        name: "web".into(),
        id: id.clone(),
        mode: ExpectedMode::Bridge {
            ip: a.ip,
            ports: ports.clone(),
            join: berth_agent::network::Join::nth(0),
        },
        made_this_boot: true,
    }];
    let notes = lab.net.reconcile(&expected, &[]).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert!(lab.reaches(&other_ns, &url, "hello"), "not repaired");
    assert_eq!(lab.net.ipam().lease_of("web", &id).unwrap().ports, ports);
    // A second pass finds nothing to do.
    assert!(lab.net.reconcile(&expected, &[]).unwrap().is_empty());
    // Even the bridge, deleted by hand, comes back with its container on it.
    lab.host(&["ip", "link", "del", &lab.config.bridge]);
    assert!(lab.curl(&other_ns, &url).is_none());
    lab.net.reconcile(&expected, &[]).unwrap();
    assert!(lab.reaches(&other_ns, &url, "hello"), "bridge not repaired");
    let observed = lab.net.observe().unwrap();
    assert_eq!(observed.table, TableState::Intact);
    assert_eq!(observed.elements.len(), 1);
}

#[test]
fn a_flushed_or_deleted_table_is_restored_within_a_second_by_the_watcher() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(23);
    let lab = Arc::new(lab);
    lab.net.ensure_host().unwrap();
    let id = IncarnationId::random();
    let a = lab.net.attach("web", &id, None).unwrap();
    lab.net.publish("web", &id, a.ip, &[tcp(8080, 80)]).unwrap();

    let repairs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let (inner, repairs) = (Arc::clone(&lab), Arc::clone(&repairs));
        lab.net
            .spawn_watcher(move |_drift| {
                if inner.net.repair_rules().unwrap_or(false) {
                    repairs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
            .unwrap()
    };
    // berth's own changes are not drift.
    lab.net.unpublish("web", &id).unwrap();
    lab.net.publish("web", &id, a.ip, &[tcp(8080, 80)]).unwrap();

    let table = lab.names.nft_table().to_string();
    let owner = Names::container_key("web", &id);
    let intact = || {
        let r = lab.nft_ruleset();
        r.contains("berth:loopback-guard") && r.contains(&owner)
    };
    for (what, cmd) in [
        ("flush", vec!["nft", "flush", "table", "inet", &table]),
        ("delete", vec!["nft", "delete", "table", "inet", &table]),
        ("flush ruleset", vec!["nft", "flush", "ruleset"]),
    ] {
        lab.host(&cmd);
        let took = wait_for(
            &format!("the table after {what}"),
            Duration::from_secs(1),
            intact,
        );
        eprintln!("restored after {what} in {took:?}");
    }
    assert!(repairs.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    drop(watcher);
}

#[test]
fn orphans_are_swept_and_another_instance_is_never_touched() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(24);
    lab.net.ensure_host().unwrap();
    // A second instance on the same host, with its own bridge, subnet and table.
    let other_names = Names::new("u24");
    let other_layout = berth_agent::layout::Layout {
        state_dir: lab.dir.path().join("state2"),
        run_dir: lab.dir.path().join("run2"),
    };
    let other_config = berth_spec::config::NetworkConfig {
        bridge: "ub24".into(),
        subnet: "10.222.24.0/24".into(),
        ..Default::default()
    };
    let host = std::fs::File::open(&lab.host_ns).unwrap();
    let other: Network = netns::in_netns(&host, || {
        Network::new(other_names.clone(), &other_config, &other_layout)
    })
    .unwrap()
    .unwrap();
    other.ensure_host().unwrap();
    let theirs = IncarnationId::random();
    let t = other.attach("web", &theirs, None).unwrap();
    other
        .publish("web", &theirs, t.ip, &[tcp(9090, 80)])
        .unwrap();

    let (keep, gone) = (IncarnationId::random(), IncarnationId::random());
    let k = lab.net.attach("keep", &keep, None).unwrap();
    let g = lab.net.attach("gone", &gone, None).unwrap();
    lab.net
        .publish("keep", &keep, k.ip, &[tcp(8080, 80)])
        .unwrap();
    lab.net
        .publish("gone", &gone, g.ip, &[tcp(8081, 80)])
        .unwrap();

    lab.net
        .sweep_orphans(&[("keep".into(), keep.clone())])
        .unwrap();
    let links = lab.host(&["ip", "link"]);
    assert!(links.contains(&lab.names.veth(&keep)));
    assert!(!links.contains(&lab.names.veth(&gone)));
    assert!(
        links.contains(&other_names.veth(&theirs)),
        "another instance's veth was removed"
    );
    assert!(lab.net.ipam().lease_of("gone", &gone).is_none());
    assert!(!lab.layout.netns("gone", &gone).exists());
    assert!(other_layout.netns("web", &theirs).exists());
    let ruleset = lab.nft_ruleset();
    assert!(ruleset.contains(&Names::container_key("keep", &keep)));
    assert!(!ruleset.contains(&Names::container_key("gone", &gone)));
    assert!(
        ruleset.contains(&Names::container_key("web", &theirs)),
        "{ruleset}"
    );

    other.detach("web", &theirs).unwrap();
    other.remove_host().unwrap();
    assert!(!lab.host(&["ip", "link"]).contains("ub24"));
    assert!(!lab.nft_ruleset().contains("table inet u24"));
    assert!(
        lab.nft_ruleset()
            .contains(&format!("table inet {}", lab.names.nft_table()))
    );
    drop(other);
    for (_, _, p) in netns::list(&other_layout.netns_dir()).unwrap() {
        let _ = netns::remove(&p);
    }
}

#[test]
fn addresses_and_ports_are_checked_with_errors_that_say_why() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(25);
    lab.net.ensure_host().unwrap();
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let a = IncarnationId::random();
    let got = lab.net.attach("db", &a, Some(ip("10.220.25.50"))).unwrap();
    assert_eq!(got.ip, ip("10.220.25.50"));

    let b = IncarnationId::random();
    let taken = lab
        .net
        .attach("web", &b, Some(ip("10.220.25.50")))
        .unwrap_err();
    assert!(matches!(taken, NetError::AddressTaken { .. }), "{taken}");
    assert!(
        taken.to_string().contains("held by container db"),
        "{taken}"
    );
    let outside = lab.net.attach("web", &b, Some(ip("10.9.9.9"))).unwrap_err();
    assert!(
        outside
            .to_string()
            .contains("outside subnet 10.220.25.0/24"),
        "{outside}"
    );
    let reserved = lab
        .net
        .attach("web", &b, Some(ip("10.220.25.1")))
        .unwrap_err();
    assert!(reserved.to_string().contains("reserved"), "{reserved}");
    // A failed attach leaves nothing behind.
    assert!(!lab.host(&["ip", "link"]).contains(&lab.names.veth(&b)));
    assert!(!lab.layout.netns("web", &b).exists());

    let w = lab.net.attach("web", &b, None).unwrap();
    lab.net.publish("db", &a, got.ip, &[tcp(8080, 80)]).unwrap();
    let clash = lab
        .net
        .publish("web", &b, w.ip, &[tcp(8080, 80)])
        .unwrap_err();
    assert!(
        clash
            .to_string()
            .contains("already published by container db"),
        "{clash}"
    );

    // A subnet that another interface's network sits in is refused at ensure_host.
    let bad = berth_spec::config::NetworkConfig {
        bridge: "xb25".into(),
        subnet: "10.221.0.0/16".into(),
        ..Default::default()
    };
    let host = std::fs::File::open(&lab.host_ns).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = berth_agent::layout::Layout {
        state_dir: dir.path().join("s"),
        run_dir: dir.path().join("r"),
    };
    let net = netns::in_netns(&host, || Network::new(Names::new("x25"), &bad, &layout))
        .unwrap()
        .unwrap();
    let e = net.ensure_host().unwrap_err();
    assert!(
        e.to_string()
            .contains("overlaps address 10.221.25.1/24 on uplink"),
        "{e}"
    );
    let _ = net.remove_host();
}

#[test]
fn a_forward_chain_that_drops_is_reported_with_the_fix() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new(26);
    lab.net.ensure_host().unwrap();
    let id = IncarnationId::random();
    lab.net.attach("web", &id, None).unwrap();
    let ns = lab.container_ns("web", &id);
    let (other_ns, other) = (lab.other_ns.clone(), lab.other_addr());
    lab.serve_peer_echo(&other_ns, &other, 7000);
    let egress = |lab: &Lab| {
        lab.try_in(
            &ns,
            &[
                "socat",
                "-T1",
                "-",
                &format!("TCP:{other}:7000,connect-timeout=1"),
            ],
        )
        .1
        .contains("peer=")
    };
    assert!(egress(&lab));
    assert_eq!(lab.net.check_forward_blocked().unwrap(), None);

    lab.host(&["nft", "add", "table", "ip", "filter"]);
    lab.host(&[
        "nft",
        "add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }",
    ]);
    let msg = lab.net.check_forward_blocked().unwrap().expect("a blocker");
    assert!(msg.contains("chain FORWARD in table ip filter"), "{msg}");
    assert!(
        msg.contains("iptables -I FORWARD -i tb26 -j ACCEPT"),
        "{msg}"
    );
    assert!(
        !egress(&lab),
        "the message would be false: egress still works"
    );

    // Following the advice (in nft terms) clears it, and traffic flows again.
    lab.host(&["nft", "insert rule ip filter FORWARD iifname tb26 accept"]);
    lab.host(&["nft", "insert rule ip filter FORWARD oifname tb26 accept"]);
    assert_eq!(lab.net.check_forward_blocked().unwrap(), None);
    assert!(egress(&lab));
}

#[test]
fn a_reserved_host_port_is_held_and_a_foreign_element_is_named() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::new(27);
    lab.net.ensure_host().unwrap();
    let id = IncarnationId::random();
    let a = lab.net.attach("web", &id, None).unwrap();
    let ns = lab.container_ns("web", &id);
    lab.serve_http(&ns, "hello");
    lab.net.publish("web", &id, a.ip, &[tcp(8080, 80)]).unwrap();

    // The shim holds this socket (runtime::ports, here in the lab's host netns): no other
    // process can take the port meanwhile.
    let host_ns = lab.host_ns.clone();
    let host_ns_file = std::fs::File::open(&host_ns).unwrap();
    let hold = || {
        netns::in_netns(&host_ns_file, || {
            berth_agent::runtime::ports::hold(&[HostPort {
                ip: None,
                port: 8080,
                protocol: Protocol::Tcp,
                loopback6_to: None,
            }])
        })
        .unwrap()
    };
    let held = hold().unwrap();
    let (ok, out) = lab.try_in(&host_ns, &["socat", "-T1", "TCP-LISTEN:8080", "-"]);
    assert!(!ok && out.contains("Address already in use"), "{out}");
    let again = hold().unwrap_err();
    assert!(again.contains("8080/tcp is in use"), "{again}");
    // Traffic still goes to the container: DNAT runs before any socket would see it.
    let (other_ns, url) = (
        lab.other_ns.clone(),
        format!("http://{}:8080/", lab.host_addr()),
    );
    assert!(lab.reaches(&other_ns, &url, "hello"));
    drop(held);
    assert!(hold().is_ok());

    // An element no container explains blocks its key, and the error names it; the sweep
    // removes it, and the port can be published.
    let table = lab.names.nft_table().to_string();
    let rule = format!(
        "add element inet {table} pub4_any {{ tcp . 9000 comment \"intruder\" : 10.220.27.99 . 80 }}"
    );
    lab.host(&["nft", &rule]);
    let e = lab
        .net
        .publish("web", &id, a.ip, &[tcp(9000, 80)])
        .unwrap_err();
    assert!(
        e.to_string().contains("published by container intruder"),
        "{e}"
    );
    // All or nothing: the refused batch left 8080 published, and the lease says so.
    assert_eq!(
        lab.net.ipam().lease_of("web", &id).unwrap().ports,
        vec![tcp(8080, 80)]
    );
    assert!(lab.reaches(&other_ns, &url, "hello"));
    lab.net
        .sweep_orphans(&[("web".into(), id.clone())])
        .unwrap();
    lab.net.publish("web", &id, a.ip, &[tcp(9000, 80)]).unwrap();
    assert!(!lab.nft_ruleset().contains("intruder"));
}

/// nft decodes berth's hand-encoded batch into exactly the rules intended (the other direction
/// of the byte vectors captured from `nft -f` in the unit tests).
#[test]
fn the_table_reads_back_as_intended() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(28);
    lab.net.ensure_host().unwrap();
    let id = IncarnationId::parse("0123456789ab").unwrap();
    let a = lab.net.attach("web", &id, None).unwrap();
    let local = PortMapping {
        host_ip: Some("127.0.0.1".parse().unwrap()),
        ..tcp(8080, 80)
    };
    let udp = PortMapping {
        protocol: Protocol::Udp,
        ..tcp(5353, 53)
    };
    lab.net.publish("web", &id, a.ip, &[local, udp]).unwrap();
    let got = lab.host(&["nft", "list", "table", "inet", "t28"]);
    let comment = lab.net.observe().unwrap();
    assert_eq!(comment.table, TableState::Intact);
    let want = r#"table inet t28 {
	comment "berth ruleset v1 HASH"
	map pub4_ip {
		type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
		elements = { 127.0.0.1 . tcp . 8080 comment "web-0123456789ab" : 10.220.28.2 . 80 }
	}

	map pub4_any {
		type inet_proto . inet_service : ipv4_addr . inet_service
		elements = { udp . 5353 comment "web-0123456789ab" : 10.220.28.2 . 53 }
	}

	chain publish {
		dnat ip to ip daddr . meta l4proto . th dport map @pub4_ip comment "berth:publish-ip4"
		meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @pub4_any comment "berth:publish-any4"
	}

	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 127.0.0.0/8 return comment "berth:loopback-is-host-only"
		jump publish comment "berth:publish"
	}

	chain output {
		type nat hook output priority -100; policy accept;
		jump publish comment "berth:publish"
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.220.28.0/24 oifname != "tb28" masquerade comment "berth:egress"
		oifname "tb28" ct status dnat ip saddr 10.220.28.0/24 masquerade comment "berth:hairpin"
		oifname "tb28" ip saddr 127.0.0.0/8 masquerade comment "berth:host-loopback"
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iif != "lo" ip daddr 127.0.0.0/8 ct status ! dnat counter packets 0 bytes 0 drop comment "berth:loopback-guard"
	}
}
"#;
    let hash = got
        .lines()
        .nth(1)
        .and_then(|l| l.trim().strip_prefix("comment \"berth ruleset v1 "))
        .and_then(|l| l.strip_suffix('"'))
        .expect("version comment");
    assert_eq!(got, want.replace("HASH", hash));
}

/// A Linux bridge takes 1023 ports (BR_MAX_PORTS is 1024 and port 0 is reserved): the next
/// container gets an error that says so and leaves nothing behind; once a port is free again,
/// the same attach succeeds.
#[test]
fn a_full_bridge_is_reported_and_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(29);
    lab.net.ensure_host().unwrap();
    // Fill the bridge with veth ends (this kernel has no dummy links), as many as it takes.
    let batch = lab.dir.path().join("fill.ip");
    let mut cmds = String::new();
    for i in 0..1100 {
        cmds.push_str(&format!(
            "link add f{i} type veth peer name g{i}\nlink set f{i} master tb29\n"
        ));
    }
    std::fs::write(&batch, cmds).unwrap();
    let _ = lab.try_in(
        &lab.host_ns,
        &["ip", "-force", "-batch", &batch.display().to_string()],
    );
    let ports = lab
        .host(&["ip", "-o", "link", "show", "master", "tb29"])
        .lines()
        .count();
    assert_eq!(
        ports,
        berth_agent::network::MAX_BRIDGE_PORTS,
        "the bridge's capacity"
    );

    let id = IncarnationId::random();
    let e = lab.net.attach("late", &id, None).unwrap_err();
    assert!(matches!(e, NetError::BridgeFull { .. }), "{e}");
    assert!(e.to_string().contains("at most 1023 ports"), "{e}");
    assert!(lab.net.ipam().lease_of("late", &id).is_none());
    assert!(!lab.layout.netns("late", &id).exists());
    assert!(!lab.host(&["ip", "link"]).contains(&lab.names.veth(&id)));

    lab.host(&["ip", "link", "del", "f7"]);
    lab.net.attach("late", &id, None).unwrap();
}
