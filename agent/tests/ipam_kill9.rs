//! Leases survive kill -9 at any instant: a child process allocates and releases in a loop and
//! is killed at random moments; every lease it reported is on disk, nothing is torn, and the
//! next allocation never hands out an address that is still leased.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_agent::names::IncarnationId;
use berth_agent::network::{Ipam, Subnet};

const CHILD_ENV: &str = "BERTH_IPAM_KILL9_DIR";

fn subnet() -> Subnet {
    // A /26: small enough that releases and reuse happen often.
    Subnet::parse("10.77.0.0/26").unwrap()
}

/// The child: allocates and releases forever, reporting each completed step on stdout.
#[test]
#[ignore = "run by ipam_survives_kill9 in a child process"]
fn kill9_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let ipam = Ipam::open(std::path::Path::new(&dir), subnet()).unwrap();
    let round = std::process::id();
    let mut held: Vec<(String, IncarnationId)> = Vec::new();
    for i in 0u64.. {
        if held.len() >= 40 || (i % 3 == 2 && !held.is_empty()) {
            let (name, id) = held.remove((i as usize * 7) % held.len());
            let ip = ipam.lease_of(&name, &id).unwrap().ip;
            // Announced first: killed mid-release, the lease may or may not be gone.
            println!("r {ip} {name} {id}");
            assert_eq!(ipam.release(&name, &id).unwrap(), Some(ip));
            println!("R {ip} {name} {id}");
        } else {
            let (name, id) = (format!("c{round}-{i}"), IncarnationId::random());
            let lease = ipam.allocate(&name, &id, None).unwrap();
            println!("L {} {name} {id}", lease.ip);
            held.push((name, id));
        }
    }
}

#[test]
fn ipam_survives_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // ip -> (name, id) as the children reported it.
    let mut expected: BTreeMap<IpAddr, (String, String)> = BTreeMap::new();
    let mut releasing: Option<IpAddr> = None;
    let mut steps = 0;
    for round in 0..24u64 {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "kill9_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Let it run for a varying while, then kill it wherever it is.
        let start = Instant::now();
        let budget = Duration::from_millis(30 + (round * 37) % 120);
        while start.elapsed() < budget {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            // The harness prints "test kill9_child ... " before the first report, on its line.
            let parts: Vec<&str> = line.split_whitespace().collect();
            let Some(&[op, ip, name, id]) = parts.get(parts.len().saturating_sub(4)..) else {
                continue;
            };
            if !["L", "R", "r"].contains(&op) {
                continue;
            }
            let ip: IpAddr = ip.parse().unwrap();
            steps += 1;
            match op {
                "L" => {
                    let prev = expected.insert(ip, (name.to_string(), id.to_string()));
                    assert!(prev.is_none(), "{ip} leased twice: {prev:?} and {name}");
                }
                "r" => releasing = Some(ip),
                "R" => {
                    assert_eq!(
                        expected.remove(&ip),
                        Some((name.to_string(), id.to_string()))
                    );
                    releasing = None;
                }
                _ => {}
            }
        }

        // What is on disk now: every reported lease, at most one more (killed between writing
        // it and reporting it), and every file whole.
        let ipam = Ipam::open(dir.path(), subnet()).expect("a torn lease file");
        let on_disk: BTreeMap<IpAddr, (String, String)> = ipam
            .leases()
            .into_iter()
            .map(|l| (l.ip, (l.name, l.id.to_string())))
            .collect();
        if let Some(ip) = releasing.take()
            && !on_disk.contains_key(&ip)
        {
            expected.remove(&ip);
        }
        for (ip, holder) in &expected {
            assert_eq!(
                on_disk.get(ip),
                Some(holder),
                "lease of {ip} lost (round {round})"
            );
        }
        let extra: Vec<_> = on_disk
            .keys()
            .filter(|ip| !expected.contains_key(ip))
            .collect();
        assert!(extra.len() <= 1, "unexplained leases {extra:?}");
        // Whatever the crash left, a new allocation never takes a leased address.
        let probe = ipam
            .allocate(&format!("probe{round}"), &IncarnationId::random(), None)
            .unwrap();
        assert!(
            !on_disk.contains_key(&probe.ip),
            "{} handed out twice",
            probe.ip
        );
        ipam.release_ip(probe.ip).unwrap();
        // The dead child's containers are gone: sweep their leases, as the agent would.
        for ip in on_disk.keys() {
            ipam.release_ip(*ip).unwrap();
        }
        ipam.remove_stale_temps().unwrap();
        expected.clear();
    }
    eprintln!("{steps} completed steps across 24 kills");
    assert!(
        steps > 100,
        "the children did too little to prove anything ({steps} steps)"
    );
}
