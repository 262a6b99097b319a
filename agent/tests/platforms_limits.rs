//! Multi-platform indexes resolved per host, and the limits that stop oversized images early.

mod common;

use berth_agent::registry::{Platform, RegistryError};
use berth_agent::store::{PullOptions, StoreError, no_progress};
use berth_e2e::image::{Compression, Entry, ImageBuilder, index};
use berth_e2e::proxy::FaultProxy;
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_spec::ImageReference;
use berth_spec::config::ImagesConfig;

use common::*;

fn arch_image(arch: &str, variant: Option<&str>, docker: bool) -> berth_e2e::image::Image {
    let mut b = ImageBuilder::new().platform(arch, variant).layer(
        &[Entry::file(
            "arch",
            format!("{arch}/{variant:?}").as_bytes(),
        )],
        Compression::Gzip,
    );
    if docker {
        b = b.docker();
    }
    b.build()
}

fn push_index(docker: bool) -> (ImageReference, Vec<berth_e2e::image::Image>, String) {
    let reg = TestRegistry::plain();
    let repo = unique_repo("multi");
    let imgs = vec![
        arch_image("arm64", Some("v8"), docker),
        arch_image("arm", Some("v7"), docker),
        arch_image("arm", Some("v6"), docker),
        arch_image("amd64", None, docker),
    ];
    for img in &imgs {
        for l in &img.layers {
            reg.push_layer(&repo, l, true);
        }
        reg.push_blob(&repo, &img.config, false);
        reg.put_manifest(&repo, &img.digest(), &img.media_type, &img.manifest);
    }
    let plats = [
        ("arm64", Some("v8")),
        ("arm", Some("v7")),
        ("arm", Some("v6")),
        ("amd64", None),
    ];
    let entries: Vec<_> = imgs
        .iter()
        .zip(plats)
        .map(|(i, (a, v))| (i, a, v))
        .collect();
    let (body, mt) = index(&entries, docker);
    reg.put_manifest(&repo, "v1", &mt, &body);
    let digest = berth_e2e::image::sha256(&body);
    (
        format!("{}/{repo}:v1", reg.addr).parse().unwrap(),
        imgs,
        digest,
    )
}

fn pull_for(
    r: &ImageReference,
    p: Option<&str>,
) -> Result<berth_agent::image::ResolvedImage, StoreError> {
    let t = store();
    let opts = PullOptions {
        platform: p.map(|p| Platform::parse(p).unwrap()),
        ..Default::default()
    };
    let got = t.store.pull(&client(), r, &opts, &no_progress)?;
    let content = std::fs::read(got.layers[0].join("arch")).unwrap();
    assert!(!content.is_empty());
    Ok(got)
}

#[test]
fn index_resolves_to_each_platform() {
    for docker in [false, true] {
        let (r, imgs, index_digest) = push_index(docker);
        let host = pull_for(&r, None).unwrap();
        assert_eq!(host.reference_digest, index_digest);
        if berth_e2e::image::host_arch() == "amd64" {
            assert_eq!(host.manifest_digest, imgs[3].digest());
        }
        assert_eq!(
            pull_for(&r, Some("linux/arm64")).unwrap().manifest_digest,
            imgs[0].digest()
        );
        assert_eq!(
            pull_for(&r, Some("linux/aarch64")).unwrap().manifest_digest,
            imgs[0].digest()
        );
        assert_eq!(
            pull_for(&r, Some("linux/arm/v7")).unwrap().manifest_digest,
            imgs[1].digest()
        );
        assert_eq!(
            pull_for(&r, Some("linux/arm/v6")).unwrap().manifest_digest,
            imgs[2].digest()
        );
        let got = pull_for(&r, Some("linux/arm/v7")).unwrap();
        assert_eq!(got.config.variant.as_deref(), Some("v7"));
        let err = pull_for(&r, Some("linux/riscv64")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::NoPlatform { .. }), "{msg}");
        for p in [
            "linux/arm64/v8",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/amd64",
        ] {
            assert!(msg.contains(p), "{msg} should list {p}");
        }
        let err = pull_for(&r, Some("linux/arm/v5")).unwrap_err();
        assert!(matches!(err, StoreError::NoPlatform { .. }), "{err}");
    }
}

#[test]
fn single_manifest_for_another_platform_is_refused() {
    let reg = TestRegistry::plain();
    let repo = unique_repo("foreign");
    let img = arch_image("s390x", None, false);
    reg.push_image(&repo, "v1", &img);
    let r: ImageReference = format!("{}/{repo}:v1", reg.addr).parse().unwrap();
    let err = store()
        .store
        .pull(&client(), &r, &PullOptions::default(), &no_progress)
        .unwrap_err();
    assert!(err.to_string().contains("linux/s390x"), "{err}");
}

fn limited(
    limits: ImagesConfig,
) -> (
    ImageReference,
    FaultProxy,
    berth_agent::registry::RegistryClient,
    TestStore,
) {
    let reg = TestRegistry::plain();
    let repo = unique_repo("limits");
    let img = ImageBuilder::new()
        .layer(&[Entry::file("a", &vec![0u8; 1 << 20])], Compression::Gzip)
        .layer(&[Entry::file("b", b"b")], Compression::Gzip)
        .layer(&[Entry::file("c", b"c")], Compression::Gzip)
        .build();
    reg.push_image(&repo, "v1", &img);
    let proxy = FaultProxy::start(&reg.addr);
    let addr = proxy.addr.clone();
    let client = client_with(|s| insecure(s, &addr));
    let r = format!("{}/{repo}:v1", proxy.addr).parse().unwrap();
    (r, proxy, client, store_with(limits))
}

#[test]
fn limits_stop_oversized_images() {
    let base = ImagesConfig {
        min_free: 0,
        ..Default::default()
    };

    let (r, proxy, client, t) = limited(ImagesConfig {
        max_layers: 2,
        ..base.clone()
    });
    let err = t
        .store
        .pull(&client, &r, &PullOptions::default(), &no_progress)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Limit {
                setting: "max_layers",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        proxy.stats().count_for("/blobs/"),
        0,
        "nothing fetched past the manifest"
    );

    let (r, _p, client, t) = limited(ImagesConfig {
        max_manifest_size: 100,
        ..base.clone()
    });
    let err = t
        .store
        .pull(&client, &r, &PullOptions::default(), &no_progress)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Registry {
                source: RegistryError::ManifestTooLarge { .. },
                ..
            }
        ),
        "{err}"
    );

    // A decompression bomb in miniature: 1 MiB of zeros against a 64 KiB limit.
    let (r, _p, client, t) = limited(ImagesConfig {
        max_layer_size: 64 << 10,
        ..base.clone()
    });
    let err = t
        .store
        .pull(&client, &r, &PullOptions::default(), &no_progress)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Limit {
                setting: "max_layer_size",
                ..
            }
        ),
        "{err}"
    );
    assert!(t.store.list().unwrap().is_empty());
}

#[test]
fn pull_that_cannot_fit_fails_before_downloading() {
    let (r, proxy, client, t) = limited(ImagesConfig {
        min_free: u64::MAX / 4,
        ..Default::default()
    });
    let err = t
        .store
        .pull(&client, &r, &PullOptions::default(), &no_progress)
        .unwrap_err();
    match &err {
        StoreError::NoSpace {
            needed, available, ..
        } => {
            assert!(*needed > 0 && *available > 0, "{err}");
        }
        other => panic!("expected no space, got {other}"),
    }
    assert!(err.to_string().contains("min_free"), "{err}");
    // Only the manifest and the config were fetched.
    assert_eq!(proxy.stats().count_for("/blobs/"), 1);
}
