//! Shared setup for the store's library tests: a store in a temp state dir, a registry client
//! for the test registries, and the image shapes the tests pull.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use berth_agent::layout::Layout;
use berth_agent::registry::{
    Credential, Credentials, HttpTimeouts, RegistryClient, RegistrySettings, RetryPolicy,
};
use berth_agent::store::Store;
use berth_e2e::image::{Compression, Entry, ImageBuilder, busybox_rootfs};
use berth_e2e::registry::TestRegistry;
use berth_spec::config::{ImagesConfig, RegistryConfig};

pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub layout: Layout,
    pub store: Store,
}

pub fn store_with(limits: ImagesConfig) -> TestStore {
    let dir = tempfile::Builder::new()
        .prefix("berth-store-")
        .tempdir()
        .unwrap();
    let layout = Layout {
        state_dir: dir.path().join("state"),
        run_dir: dir.path().join("run"),
    };
    let store = Store::open(&layout, &limits).unwrap();
    TestStore { dir, layout, store }
}

pub fn store() -> TestStore {
    store_with(ImagesConfig {
        min_free: 0,
        ..Default::default()
    })
}

/// A client that knows every test registry (plain and token as insecure, TLS with its CA and
/// credentials), with quick retries so fault tests stay short.
pub fn client() -> RegistryClient {
    client_with(|_| {})
}

pub fn client_with(tweak: impl FnOnce(&mut RegistrySettings)) -> RegistryClient {
    let mut registries = BTreeMap::new();
    let mut credentials = Credentials::none();
    for r in [
        TestRegistry::plain(),
        TestRegistry::tls(),
        TestRegistry::token(),
    ] {
        registries.insert(
            r.addr.clone(),
            RegistryConfig {
                insecure: !r.tls,
                ca_file: r.ca.clone(),
                mirrors: vec![],
            },
        );
        if let Some((u, p)) = &r.user {
            credentials.insert(
                &r.addr,
                Credential {
                    username: u.clone(),
                    password: p.clone(),
                },
            );
        }
    }
    let mut s = RegistrySettings {
        registries,
        credentials,
        timeouts: HttpTimeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(10),
            stall: Duration::from_secs(10),
        },
        retry: RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(50),
            max: Duration::from_millis(400),
        },
        max_download_rate: None,
    };
    tweak(&mut s);
    RegistryClient::new(s)
}

/// Marks a proxy address insecure (plain HTTP) in the settings.
pub fn insecure(s: &mut RegistrySettings, addr: &str) {
    s.registries.insert(
        addr.to_string(),
        RegistryConfig {
            insecure: true,
            ..Default::default()
        },
    );
}

/// busybox, then a layer that adds, changes and deletes, then one with an opaque dir: the
/// shapes whiteouts must get right.
pub fn layered_image(c: Compression) -> ImageBuilder {
    let mut base = busybox_rootfs();
    base.extend([
        Entry::dir("app"),
        Entry::dir("app/data"),
        Entry::file("app/data/old.txt", b"old"),
        Entry::file("app/data/keep.txt", b"keep"),
        Entry::dir("opq"),
        Entry::file("opq/hidden.txt", b"hidden by the opaque dir above"),
        Entry::dir("opq/sub"),
        Entry::file("etc/motd", b"base motd\n"),
        Entry::File {
            path: "app/setuid".into(),
            data: b"#!/bin/sh\n".to_vec(),
            mode: 0o4755,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        },
    ]);
    let second = vec![
        Entry::dir("app"),
        Entry::dir("app/data"),
        Entry::whiteout("app/data/old.txt"),
        Entry::file("app/data/new.txt", b"new"),
        Entry::file("etc/motd", b"second motd\n"),
        Entry::File {
            path: "app/owned".into(),
            data: b"owned by 1000:1000".to_vec(),
            mode: 0o600,
            uid: 1000,
            gid: 1000,
            xattrs: vec![("user.berth".into(), b"yes".to_vec())],
        },
        Entry::Dir {
            path: "app/sticky".into(),
            mode: 0o1777,
            uid: 0,
            gid: 0,
        },
        Entry::hardlink("app/hardlink", "app/owned"),
        Entry::symlink("app/abs-link", "/etc/motd"),
        Entry::symlink("app/rel-link", "../etc/motd"),
        Entry::Char {
            path: "app/null".into(),
            major: 1,
            minor: 3,
        },
        Entry::Fifo {
            path: "app/fifo".into(),
        },
        Entry::file(
            &format!("app/{}", "long-name-".repeat(15)),
            b"a PAX/GNU long name",
        ),
    ];
    let third = vec![
        Entry::opaque("opq"),
        Entry::dir("opq"),
        Entry::file("opq/fresh.txt", b"only this remains"),
        Entry::whiteout("bin/vi"),
    ];
    ImageBuilder::new()
        .layer(&base, c)
        .layer(&second, c)
        .layer(&third, c)
        .settings(berth_e2e::image::Settings {
            env: vec!["PATH=/bin".into(), "A=b".into()],
            cmd: Some(vec!["/bin/sh".into()]),
            working_dir: Some("/app".into()),
            exposed_ports: vec!["80/tcp".into()],
            stop_signal: Some("SIGQUIT".into()),
            ..Default::default()
        })
}
