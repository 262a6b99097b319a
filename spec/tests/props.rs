//! Properties over generated specs: rendering and parsing again gives the same spec (and so
//! the same hash); non-shaping changes keep the hash, shaping changes move it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::model::*;
use berth_spec::{
    ContainerSpec, HostFacts, HostMatch, ImageSource, parse_spec_str, render_toml, spec_hash,
};
use proptest::prelude::*;

fn image() -> impl Strategy<Value = ImageSource> {
    prop::sample::select(vec![
        "nginx:1.27",
        "ghcr.io/o/r:v1",
        "127.0.0.1:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "oci-archive:/srv/a.tar",
        "oci:/srv/layout:v2",
    ])
    .prop_map(|s| ImageSource::parse(s).unwrap())
}

fn ms() -> impl Strategy<Value = Duration> {
    (0u64..10_000_000).prop_map(Duration::from_millis)
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,8}[a-z0-9]"
}

fn text() -> impl Strategy<Value = String> {
    // Anything but NUL, including quotes, newlines and non-ASCII.
    "[^\u{0}]{0,12}"
}

fn abs_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9_.-]{1,6}", 1..4).prop_filter_map("no dot dirs", |parts| {
        (!parts.iter().any(|p| p == "." || p == "..")).then(|| format!("/{}", parts.join("/")))
    })
}

fn env_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_.-]{0,10}", text(), 0..4)
}

fn ports() -> impl Strategy<Value = Vec<PortMapping>> {
    prop::collection::btree_map(
        1u16..=65535,
        (
            1u16..=65535,
            prop::option::of(prop::sample::select(vec![
                "127.0.0.1",
                "2001:db8::1",
                "10.0.0.1",
            ])),
            prop::bool::ANY,
        ),
        0..4,
    )
    .prop_map(|m| {
        let mut v: Vec<PortMapping> = m
            .into_iter()
            .map(|(host, (container, ip, udp))| PortMapping {
                host_ip: ip.map(|i| i.parse().unwrap()),
                host,
                container,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            })
            .collect();
        v.sort();
        v
    })
}

fn mounts() -> impl Strategy<Value = Vec<Mount>> {
    prop::collection::btree_map(
        abs_path(),
        (
            0..3u8,
            abs_path(),
            word(),
            prop::option::of(1u64..1 << 40),
            prop::bool::ANY,
        ),
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(target, (kind, src, vol, size, ro))| Mount {
                kind: match kind {
                    0 => MountKind::Bind { source: src.into() },
                    1 => MountKind::Volume { name: vol },
                    _ => MountKind::Tmpfs { size },
                },
                target,
                read_only: ro,
            })
            .collect()
    })
}

fn devices() -> impl Strategy<Value = Vec<Device>> {
    prop::collection::btree_map(
        abs_path(),
        (
            abs_path(),
            prop::sample::select(vec!["r", "rw", "rwm", "m", "wm"]),
        ),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(container, (host, p))| Device {
                host: host.into(),
                container: container.into(),
                permissions: p.into(),
            })
            .collect()
    })
}

fn caps() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set(
        prop::sample::select(vec![
            "ALL",
            "CAP_CHOWN",
            "CAP_NET_ADMIN",
            "CAP_SYS_TIME",
            "CAP_BPF",
        ]),
        0..3,
    )
    .prop_map(|s| s.into_iter().map(String::from).collect())
}

fn security() -> impl Strategy<Value = Security> {
    (
        prop::bool::ANY,
        caps(),
        caps(),
        prop::bool::ANY,
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(|(privileged, add, drop, ro, nnp, unconfined)| Security {
            privileged,
            cap_drop: drop
                .into_iter()
                .filter(|c| c == "ALL" || !add.contains(c))
                .collect(),
            cap_add: add,
            read_only_rootfs: ro,
            no_new_privileges: nnp,
            seccomp: if unconfined {
                SeccompMode::Unconfined
            } else {
                SeccompMode::Default
            },
        })
}

fn health() -> impl Strategy<Value = Health> {
    (
        prop::option::of((
            prop::collection::vec(text(), 1..3),
            1u64..100_000,
            1u64..100_000,
            1u32..10,
            ms(),
        )),
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(|(check, disable, restart)| {
            let check = check.map(|(command, i, t, retries, sp)| HealthCheck {
                // Docker's CMD / CMD-SHELL / NONE prefixes are rewritten on parse.
                command: if ["CMD", "CMD-SHELL", "NONE"].contains(&command[0].as_str()) {
                    vec!["x".into()]
                } else {
                    command
                },
                interval: Duration::from_millis(i),
                timeout: Duration::from_millis(t),
                retries,
                start_period: sp,
            });
            Health {
                disable: disable && check.is_none(),
                check,
                on_unhealthy: if restart {
                    OnUnhealthy::Restart
                } else {
                    OnUnhealthy::None
                },
            }
        })
}

fn update() -> impl Strategy<Value = UpdatePolicy> {
    (
        0..3u8,
        prop::option::of(1u64..10_000_000),
        prop::option::of((0u16..1440, 1u16..1440)),
        prop::option::of(abs_path()),
        ms(),
        prop::bool::ANY,
    )
        .prop_map(
            |(s, min_age, window, lock, verify, rollback)| UpdatePolicy {
                strategy: [
                    UpdateStrategy::DownloadThenKill,
                    UpdateStrategy::KillThenDownload,
                    UpdateStrategy::StartThenKill,
                ][s as usize],
                min_age: min_age.map(Duration::from_millis),
                window: window.map(|(a, len)| Window {
                    start_minute: a,
                    end_minute: (a + len) % 1440,
                }),
                lock: lock.map(PathBuf::from),
                verify,
                rollback,
            },
        )
}

fn label_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["role", "site", "zone", "topology.example.com/rack"])
        .prop_map(String::from)
}

fn label_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["kiosk", "till", "berlin", "paris", "a-1", "a b"])
        .prop_map(String::from)
}

fn host_id() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "edge-1",
        "edge-2",
        "edge-3",
        "0123456789abcdef0123456789abcdef",
    ])
    .prop_map(String::from)
}

/// A `[match]` as the parser normalises it: value lists and host lists sorted, no duplicates.
fn host_match() -> impl Strategy<Value = HostMatch> {
    (
        prop::collection::btree_map(
            label_name(),
            prop::collection::btree_set(label_value(), 1..3),
            0..3,
        ),
        prop::option::of(prop::collection::btree_set(host_id(), 1..3)),
    )
        .prop_map(|(labels, hosts)| HostMatch {
            labels: labels
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
            hosts: hosts.map(|h| h.into_iter().collect()),
        })
}

fn host_facts() -> impl Strategy<Value = HostFacts> {
    (
        prop::option::of(host_id()),
        prop::collection::btree_map(label_name(), label_value(), 0..4),
    )
        .prop_map(|(host_id, labels)| HostFacts { host_id, labels })
}

prop_compose! {
    fn spec()(
        image in image(),
        (state, restart, pull, network) in (0..3u8, 0..3u8, 0..3u8, 0..4u8),
        nets in prop::sample::subsequence(vec!["default", "backend", "front"], 1..=3).prop_shuffle(),
        addrs in prop::collection::vec((prop::bool::ANY, prop::option::of(prop::sample::select(vec!["fd00::5", "2001:db8::7"]))), 3),
        entrypoint in prop::option::of(prop::collection::vec(text(), 0..3)),
        command in prop::option::of(prop::collection::vec(text(), 0..3)),
        env in env_map(),
        labels in env_map(),
        workdir in prop::option::of(abs_path()),
        user in prop::option::of((0u32..70000, prop::option::of(word()))),
        group_add in prop::collection::vec(prop_oneof![(0u32..70000).prop_map(UserId::Id), word().prop_map(UserId::Name)], 0..3),
        hostname in prop::option::of(word()),
        stop_signal in prop::option::of(prop::sample::select(vec!["SIGTERM", "SIGQUIT", "SIGRTMIN+3"])),
        stop_timeout in ms(),
        deps in prop::collection::btree_map(word(), 0..3u8, 0..3),
        init in prop::bool::ANY,
        ports in ports(),
        mounts in mounts(),
        devices in devices(),
        res in (prop::option::of(4u64 << 20..1 << 40), prop::option::of(1u32..100_000), prop::option::of(1u64..1 << 40)),
        health in health(),
        security in security(),
        logging in (4096u64..1 << 30, 0u32..100),
        update in update(),
        host_match in host_match(),
    ) -> ContainerSpec {
        let network = [
            NetworkMode::Bridge,
            NetworkMode::Host,
            NetworkMode::None,
            NetworkMode::Container("db".into()),
        ][network as usize]
            .clone();
        let bridge = network == NetworkMode::Bridge;
        // Each network its own addresses: one spec never asks for an address twice.
        let networks = if bridge {
            nets.iter()
                .zip(&addrs)
                .enumerate()
                .map(|(i, (n, (v4, v6)))| NetworkJoin {
                    name: n.to_string(),
                    ip: v4.then(|| std::net::Ipv4Addr::new(10, 213, 0, 9 + i as u8)),
                    ip6: v6.map(|a| a.parse::<std::net::Ipv6Addr>().unwrap()).map(|a| {
                        let mut seg = a.segments();
                        seg[7] += i as u16;
                        std::net::Ipv6Addr::from(seg)
                    }),
                })
                .collect()
        } else {
            vec![]
        };
        ContainerSpec {
            name: "app".into(),
            image,
            state: [DesiredState::Running, DesiredState::Paused, DesiredState::Stopped][state as usize],
            command,
            env: env.into(),
            restart: [RestartPolicy::Always, RestartPolicy::OnFailure, RestartPolicy::Never][restart as usize],
            pull: [PullPolicy::Missing, PullPolicy::Always, PullPolicy::Never][pull as usize],
            init,
            network,
            logging: Logging { max_size: logging.0, max_files: logging.1 },
            extra: ExtraKeys {
                entrypoint,
                env_files: vec![],
                workdir,
                user: user.map(|(u, g)| User { user: UserId::Id(u), group: g.map(UserId::Name) }),
                group_add,
                hostname,
                labels: labels.into(),
                stop_signal: stop_signal.map(String::from),
                stop_timeout,
                depends_on: deps
                    .into_iter()
                    .filter(|(n, _)| n != "app")
                    .map(|(name, c)| Dependency {
                        name,
                        condition: [DependencyCondition::Started, DependencyCondition::Healthy, DependencyCondition::Completed][c as usize],
                    })
                    .collect(),
                update,
                ports: if bridge { ports } else { vec![] },
                mounts,
                devices,
                resources: Resources { memory: res.0, millicpus: res.1, pids: res.2 },
                health,
                security,
                networks,
                host_match,
            }
            .into(),
        }
    }
}

fn reparse(spec: &ContainerSpec) -> ContainerSpec {
    let text = render_toml(spec);
    match parse_spec_str(&spec.name, Path::new("app.toml"), &text) {
        Ok(p) => ContainerSpec::clone(&p.spec),
        Err(d) => panic!("rendered spec does not parse:\n{text}\n{d:#?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// `[match]` means: the host id is listed (when hosts are), and every label name listed is
    /// set on the host to one of its values.
    #[test]
    fn match_is_its_definition(m in host_match(), h in host_facts()) {
        let by_definition = m.hosts.as_ref().is_none_or(|hs| h.host_id.as_ref().is_some_and(|id| hs.contains(id)))
            && m.labels.iter().all(|(k, vs)| h.labels.get(k).is_some_and(|v| vs.contains(v)));
        prop_assert_eq!(m.matches(&h), by_definition);
        prop_assert_eq!(m.mismatch(&h).is_none(), by_definition);
    }

    /// Whenever one host runs both specs, the set checks must treat them as neighbours.
    #[test]
    fn may_share_host_is_never_wrong(a in host_match(), b in host_match(), h in host_facts()) {
        if a.matches(&h) && b.matches(&h) {
            prop_assert!(a.may_share_host(&b) && b.may_share_host(&a));
        }
        prop_assert_eq!(a.may_share_host(&b), b.may_share_host(&a));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_valid_spec_round_trips(spec in spec()) {
        let again = reparse(&spec);
        prop_assert_eq!(&again, &spec);
        prop_assert_eq!(spec_hash(&again), spec_hash(&spec));
        // Rendering is a fixed point.
        prop_assert_eq!(render_toml(&again), render_toml(&spec));
    }

    #[test]
    fn non_shaping_changes_keep_the_hash(spec in spec(), which in 0..9usize, other in spec()) {
        let mut changed = spec.clone();
        match which {
            0 => changed.state = other.state,
            1 => changed.restart = other.restart,
            2 => changed.pull = other.pull,
            3 => changed.extra.depends_on = other.extra.depends_on.clone(),
            4 => changed.extra.health = other.extra.health.clone(),
            5 => changed.extra.update = other.extra.update.clone(),
            6 => changed.logging = other.logging,
            7 => changed.extra.resources = other.extra.resources,
            _ => changed.extra.stop_timeout = other.extra.stop_timeout,
        }
        prop_assert_eq!(spec_hash(&changed), spec_hash(&spec));
    }

    #[test]
    fn shaping_changes_move_the_hash(spec in spec(), which in 0..13usize) {
        let mut changed = spec.clone();
        match which {
            0 => changed.image = ImageSource::parse("other.example/x:9").unwrap(),
            1 => changed.extra.entrypoint = Some(vec!["/changed".into()]).filter(|e| Some(e) != spec.extra.entrypoint.as_ref()).or(None),
            2 => { changed.env.insert("BERTH_PROP_CHANGED".into(), "1".into()); }
            3 => changed.extra.user = Some(User { user: UserId::Id(123_456), group: None }),
            4 => changed.extra.workdir = Some("/changed/dir".into()),
            5 => changed.extra.hostname = Some("changed-host".into()),
            6 => changed.extra.mounts.push(Mount { kind: MountKind::Tmpfs { size: None }, target: "/zz/changed".into(), read_only: false }),
            7 => changed.extra.devices.push(Device { host: "/dev/zz".into(), container: "/dev/zz".into(), permissions: "r".into() }),
            8 => changed.extra.ports.push(PortMapping { host_ip: None, host: 1, container: 1, protocol: Protocol::Tcp }),
            9 => changed.network = if spec.network == NetworkMode::None { NetworkMode::Host } else { NetworkMode::None },
            10 => changed.extra.security.privileged = !spec.extra.security.privileged,
            11 => { changed.extra.labels.insert("berth.prop.changed".into(), "1".into()); }
            _ => changed.init = !spec.init,
        }
        prop_assume!(changed != spec);
        prop_assert_ne!(spec_hash(&changed), spec_hash(&spec));
    }

    /// Writing the same ports, mounts, devices, capabilities or dependencies in another order
    /// means the same container.
    #[test]
    fn order_in_the_file_does_not_matter(spec in spec()) {
        let table = berth_spec::render::to_table(&spec);
        let mut reversed = table.clone();
        for key in ["ports", "mounts", "devices", "depends_on"] {
            if let Some(toml::Value::Array(a)) = reversed.get_mut(key) {
                a.reverse();
            }
        }
        if let Some(toml::Value::Table(sec)) = reversed.get_mut("security") {
            for key in ["cap_add", "cap_drop"] {
                if let Some(toml::Value::Array(a)) = sec.get_mut(key) {
                    a.reverse();
                }
            }
        }
        let text = toml::to_string(&reversed).unwrap();
        let again = parse_spec_str("app", Path::new("app.toml"), &text).unwrap().spec;
        prop_assert_eq!(spec_hash(&again), spec_hash(&spec));
        prop_assert_eq!(&*again, &spec);
    }
}
