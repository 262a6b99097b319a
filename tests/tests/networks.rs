//! Named networks through the agent, as root, against the real registry: a container on two
//! networks reaches each by name, containers on different networks cannot reach each other in
//! either direction, the names each sees are its networks' own, and `berth doctor --fix` on the
//! stopped agent removes every network's bridge and table (the suite's leak check then finds
//! nothing of the instance). Published ports answer on `[::1]` through the shims' relay (TCP,
//! half-closed, UDP; with the agent killed), and nothing holds them after.

use std::time::Duration;

use berth_e2e::agent::{AgentOptions, TestAgent, free_subnet, wait_until};
use berth_e2e::fixtures::web_image;
use berth_e2e::require_root;

/// `url` fetched from inside `name`'s network namespace with the host's curl (the test image's
/// static busybox cannot resolve names), resolving through the container's own /etc/hosts: the
/// body, or `None` (2 s timeout).
fn fetch(a: &TestAgent, name: &str, url: &str) -> Option<String> {
    let s = a.status_of(name)?;
    let (pid, id) = (s["pid"].as_i64()?, s["id"].as_str()?.to_string());
    let hosts = a
        .state_dir
        .join(format!("containers/{name}/{id}.etc/hosts"));
    let script = format!(
        "mount --bind {} /etc/hosts && exec nsenter -t {pid} -n curl -sS -m 2 {url}",
        hosts.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `GET /` on `[::1]:port`, half-closing the connection after the request.
fn half_closed_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("::1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The host's socat, serving UDP echo on `port` in `name`'s netns, in a process group of its
/// own (its per-datagram children go with it).
fn udp_echo_in(a: &TestAgent, name: &str, port: u16) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let pid = a.status_of(name).unwrap()["pid"].as_i64().unwrap();
    std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "socat", "-T", "5"])
        .arg(format!("UDP6-RECVFROM:{port},fork"))
        .arg("EXEC:cat")
        .process_group(0)
        .spawn()
        .unwrap()
}

fn kill_group(mut c: std::process::Child) {
    // SAFETY: kill(2) on the process group of a child we spawned as its leader.
    unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
    let _ = c.wait();
}

fn ask_udp_client() -> std::net::UdpSocket {
    let c = std::net::UdpSocket::bind("[::1]:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    c
}

/// One datagram to `[::1]:port` and its answer, if one comes from there.
fn ask_udp(c: &std::net::UdpSocket, port: u16, what: &[u8]) -> Option<Vec<u8>> {
    c.send_to(what, ("::1", port)).ok()?;
    let mut buf = [0u8; 512];
    let (n, from) = c.recv_from(&mut buf).ok()?;
    (from.port() == port).then(|| buf[..n].to_vec())
}

fn ip_of(a: &TestAgent, name: &str) -> String {
    let s = a.status_of(name).unwrap();
    s["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("no ip in {s}"))
        .to_string()
}

#[test]
fn named_networks_isolate_stacks_through_the_agent() {
    if !require_root() {
        return;
    }
    let backend = free_subnet();
    // backend is dual-stack: its IPv6 subnet derived from its IPv4 one, so it is as unique.
    // (The agent turns on net.ipv6.conf.all.forwarding on this host for it.)
    let octets: Vec<&str> = backend.split('.').collect();
    let backend6 = format!("fd00:b7:{}:{}::/64", octets[1], octets[2]);
    let opts = AgentOptions {
        extra_config: format!("[networks.backend]\nsubnet = {backend:?}\nsubnet6 = {backend6:?}\n"),
        ..Default::default()
    };
    let mut a = TestAgent::new("nw", &opts);
    a.start(&opts);
    let (web, db) = (web_image("web\n"), web_image("db\n"));
    // web's port: IPv4 only (the default network has no IPv6), so [::1] relays to IPv4.
    // And one on [::1] only: the relay, no DNAT anywhere.
    let (web_port, lo6_port) = (
        berth_e2e::fixtures::free_port(),
        berth_e2e::fixtures::free_port(),
    );
    a.write_spec(
        "web",
        &format!("image = \"{web}\"\nports = [\"{web_port}:80\", \"[::1]:{lo6_port}:80\"]\n"),
    );
    a.write_spec(
        "db",
        &format!("image = \"{db}\"\nnetworks = [\"backend\"]\n"),
    );
    // api publishes a port: IPv4 on its primary network (default, IPv4-only), IPv6 on the
    // first routed network with IPv6 (backend).
    let port = berth_e2e::fixtures::free_port();
    let udp_port = free_udp_port();
    a.write_spec(
        "api",
        &format!(
            "image = \"{web}\"\nnetworks = [\"default\", \"backend\"]\nports = [\"{port}:80\", \"{udp_port}:5353/udp\"]\n"
        ),
    );
    for n in ["web", "db", "api"] {
        a.wait_running(n);
    }
    let db_ip = ip_of(&a, "db");
    let web_ip = ip_of(&a, "web");
    let backend_prefix = backend.trim_end_matches("0/24");
    assert!(
        db_ip.starts_with(backend_prefix),
        "{db_ip} not in {backend}"
    );

    // api is on both: it reaches db and web by name.
    wait_until(Duration::from_secs(10), "api reaches db by name", || {
        fetch(&a, "api", "http://db/").as_deref() == Some("db\n")
    });
    assert_eq!(fetch(&a, "api", "http://web/").as_deref(), Some("web\n"));
    // web and db share no network: no name, and no connection in either direction.
    assert_eq!(fetch(&a, "web", "http://db/"), None);
    assert_eq!(fetch(&a, "web", &format!("http://{db_ip}/")), None);
    assert_eq!(fetch(&a, "db", &format!("http://{web_ip}/")), None);
    let hosts = a.berth(&["exec", "db", "--", "cat", "/etc/hosts"]);
    let hosts = String::from_utf8_lossy(&hosts.stdout).into_owned();
    assert!(
        hosts.contains("\tapi") && !hosts.contains("\tweb"),
        "{hosts}"
    );

    // IPv6 on backend: api's /etc/hosts names db's IPv6 address too, and api reaches db at
    // it; web, on the IPv4-only default network, has no IPv6 route to it.
    let hosts = a.berth(&["exec", "api", "--", "cat", "/etc/hosts"]);
    let hosts = String::from_utf8_lossy(&hosts.stdout).into_owned();
    let db6: std::net::Ipv6Addr = hosts
        .lines()
        .filter(|l| l.ends_with("\tdb"))
        .find_map(|l| l.split('\t').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no IPv6 line for db: {hosts}"));
    let prefix6 = backend6.trim_end_matches(":/64");
    assert!(
        db6.to_string().starts_with(prefix6),
        "{db6} not in {backend6}"
    );
    // db's own hosts file names it at both addresses.
    let own = a.berth(&["exec", "db", "--", "cat", "/etc/hosts"]);
    let own = String::from_utf8_lossy(&own.stdout).into_owned();
    assert!(own.contains(&format!("{db_ip}\tdb\n{db6}\tdb\n")), "{own}");
    // Status shows both of db's addresses.
    let status = a.status_of("db").unwrap();
    assert_eq!(status["ip6"], db6.to_string(), "{status}");
    let table = a.berth(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("db ") && l.contains(&format!("{db_ip} {db6}"))),
        "{table}"
    );
    wait_until(Duration::from_secs(10), "api reaches db over IPv6", || {
        fetch(&a, "api", &format!("http://[{db6}]/")).as_deref() == Some("db\n")
    });
    assert_eq!(fetch(&a, "web", &format!("http://[{db6}]/")), None);
    // api's port over IPv6, from the host to its own address on backend's bridge (the v6
    // gateway, a local address: `fib daddr type local`), and over IPv4 to the loopback.
    let gateway6 = format!("{prefix6}:1");
    let curl = |url: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-m", "2", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(Duration::from_secs(10), "api's port over IPv6", || {
        curl(&format!("http://[{gateway6}]:{port}/")) == "web\n"
    });
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/")), "web\n");

    let bridge = berth_agent::names::network_bridge(&a.instance, "backend");
    // [::1], which the kernel cannot DNAT to a container: the shim's relay answers, to api's
    // IPv6 address on backend, and to web's IPv4 address.
    wait_until(Duration::from_secs(10), "api's port on [::1]", || {
        curl(&format!("http://[::1]:{port}/")) == "web\n"
    });
    assert_eq!(curl(&format!("http://[::1]:{web_port}/")), "web\n");
    assert_eq!(curl(&format!("http://[::1]:{lo6_port}/")), "web\n");
    assert_eq!(curl(&format!("http://127.0.0.1:{lo6_port}/")), "");
    // A half-closed connection: the request, then EOF; the answer still comes back whole.
    let answer = half_closed_get(port);
    assert!(answer.ends_with("\r\n\r\nweb\n"), "{answer:?}");
    // UDP: an echo server in api's netns (the image has none); two clients, each its answers.
    let echo = udp_echo_in(&a, "api", 5353);
    let clients = [ask_udp_client(), ask_udp_client()];
    wait_until(Duration::from_secs(10), "UDP over [::1]", || {
        ask_udp(&clients[0], udp_port, b"one").as_deref() == Some(b"one".as_slice())
    });
    assert_eq!(
        ask_udp(&clients[1], udp_port, b"two").as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        ask_udp(&clients[0], udp_port, b"three").as_deref(),
        Some(&b"three"[..])
    );
    kill_group(echo);
    // A container cannot reach the relay: api, with CAP_NET_ADMIN in its netns, routes ::1 to
    // the host; its SYN reaches the bridge, and the host's kernel drops them (`::1` that did not
    // come in on lo).
    let rx = || {
        std::fs::read_to_string(format!("/sys/class/net/{bridge}/statistics/rx_packets"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let before = rx();
    let pid = a.status_of("api").unwrap()["pid"].as_i64().unwrap();
    let script = format!(
        "ip -6 addr del ::1/128 dev lo && ip -6 route add ::1/128 via {gateway6} && \
         exec curl -sS -m 1 http://[::1]:{port}/"
    );
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("timed out"), "{err}");
    assert!(rx() > before, "the SYN went to the host");
    // The shims relay, not the agent: killed, and started again, it changes nothing.
    a.kill9();
    assert_eq!(curl(&format!("http://[::1]:{port}/")), "web\n");
    a.start(&opts);
    assert_eq!(curl(&format!("http://[::1]:{web_port}/")), "web\n");
    // A container restarted after a crash gets its relay aimed again: its address comes with
    // the shim's start line, on a restart as on a create.
    let web_pid = a
        .status_of("web")
        .and_then(|s| s["pid"].as_i64())
        .expect("web runs");
    // SAFETY: kill(2) on the payload of a container this test's agent made.
    unsafe { libc::kill(web_pid as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(30), "web restarted", || {
        a.status_of("web").is_some_and(|s| {
            s["restarts"].as_u64() >= Some(1)
                && s["status"] == "running"
                && s["pid"].as_i64() != Some(web_pid)
        })
    });
    wait_until(
        Duration::from_secs(10),
        "web's [::1] port after its restart",
        || curl(&format!("http://[::1]:{web_port}/")) == "web\n",
    );

    // Each network's kernel objects are named from the instance.
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show", &bridge])
        .output()
        .unwrap();
    assert!(links.status.success(), "no bridge {bridge}");
    let table = format!("{}-backend", a.instance);
    let tables = std::process::Command::new("nft")
        .args(["list", "table", "inet", &table])
        .output()
        .unwrap();
    assert!(tables.status.success(), "no table {table}");

    // Teardown (TestAgent's drop) removes the containers, then doctor --fix every network's
    // bridge and table; check here that the named ones went too.
    a.teardown().unwrap();
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show", &bridge])
        .output()
        .unwrap();
    assert!(!links.status.success(), "bridge {bridge} left");
    // Nothing holds the ports on [::1] any more (nor anywhere: a [::] bind covers all).
    for p in [port, web_port, lo6_port] {
        std::net::TcpListener::bind(("::", p)).unwrap_or_else(|e| panic!("{p}/tcp: {e}"));
    }
    std::net::UdpSocket::bind(("::", udp_port)).unwrap();
    let tables = std::process::Command::new("nft")
        .args(["list", "table", "inet", &table])
        .output()
        .unwrap();
    assert!(!tables.status.success(), "table {table} left");
}

#[test]
fn a_sidecar_joins_its_containers_netns_and_follows_it_when_remade() {
    if !require_root() {
        return;
    }
    let opts = AgentOptions::default();
    let mut a = TestAgent::new("sc", &opts);
    a.start(&opts);
    let (web, sleeper) = (web_image("app\n"), berth_e2e::fixtures::sleeper_image());
    // The sidecar's spec comes first: it waits for app (an implied dependency).
    a.write_spec(
        "side",
        &format!("image = \"{sleeper}\"\nnetwork = \"container:app\"\n"),
    );
    a.write_spec(
        "app",
        &format!("image = \"{web}\"\nenv = {{ V = \"1\" }}\n"),
    );
    let app = a.wait_running("app");
    let side = a.wait_running("side");
    // Status shows the relation, in --json and in the table.
    assert_eq!(side["network_of"], "app", "{side}");
    assert!(app.get("network_of").is_none(), "{app}");
    let table = a.berth(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let line = table
        .lines()
        .find(|l| l.starts_with("side "))
        .unwrap_or_else(|| panic!("no side in {table}"));
    assert!(line.contains("(app's netns)"), "{table}");
    // One netns: the sidecar reaches app's server on loopback, and has app's address.
    assert_eq!(
        fetch(&a, "side", "http://127.0.0.1/").as_deref(),
        Some("app\n")
    );
    assert_eq!(side["ip"], app["ip"], "{side} {app}");

    // app made again (an env change): the sidecar follows it into the new netns.
    a.write_spec(
        "app",
        &format!("image = \"{web}\"\nenv = {{ V = \"2\" }}\n"),
    );
    a.wait_status("app", "recreated", Duration::from_secs(60), |s| {
        s["status"] == "running" && s["id"] != app["id"]
    });
    a.wait_status(
        "side",
        "recreated into app's new netns",
        Duration::from_secs(60),
        |s| s["status"] == "running" && s["id"] != side["id"],
    );
    wait_until(Duration::from_secs(10), "sidecar reaches app again", || {
        fetch(&a, "side", "http://127.0.0.1/").as_deref() == Some("app\n")
    });
    a.teardown().unwrap();
}
