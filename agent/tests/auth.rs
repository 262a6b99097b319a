//! Pulls through each kind of test registry: TLS with basic auth, bearer tokens (including a
//! refused scope), and the failures a wrong setup gives.

mod common;

use berth_agent::registry::{Credential, Credentials, RegistryError};
use berth_agent::store::{PullOptions, StoreError, no_progress};
use berth_e2e::image::{Compression, Entry, ImageBuilder};
use berth_e2e::registry::{TestRegistry, unique_repo};
use berth_spec::ImageReference;

use common::*;

fn small_image(tag: &str) -> berth_e2e::image::Image {
    ImageBuilder::new()
        .layer(
            &[Entry::dir("etc"), Entry::file("etc/which", tag.as_bytes())],
            Compression::Gzip,
        )
        .build()
}

fn pull(
    reg: &TestRegistry,
    repo: &str,
    client: &berth_agent::registry::RegistryClient,
) -> Result<berth_agent::image::ResolvedImage, StoreError> {
    let t = store();
    let r: ImageReference = format!("{}/{repo}:v1", reg.addr).parse().unwrap();
    t.store
        .pull(client, &r, &PullOptions::default(), &no_progress)
}

#[test]
fn tls_with_basic_auth() {
    let reg = TestRegistry::tls();
    let repo = unique_repo("tls");
    let img = small_image("tls");
    reg.push_image(&repo, "v1", &img);
    let got = pull(&reg, &repo, &client()).unwrap();
    assert_eq!(got.reference_digest, img.digest());

    // Without credentials the registry's challenge cannot be answered.
    let anon = client_with(|s| s.credentials = Credentials::none());
    let err = pull(&reg, &repo, &anon).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Registry {
                source: RegistryError::Auth { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());

    // Wrong password: refused, and said so.
    let wrong = client_with(|s| {
        s.credentials.insert(
            &reg.addr,
            Credential {
                username: "berth".into(),
                password: "wrong".into(),
            },
        )
    });
    let err = pull(&reg, &repo, &wrong).unwrap_err();
    assert!(
        err.to_string().contains("credentials not accepted"),
        "{err}"
    );

    // Without the CA the certificate is not trusted.
    let no_ca = client_with(|s| {
        s.registries.get_mut(&reg.addr).unwrap().ca_file = None;
    });
    let err = pull(&reg, &repo, &no_ca).unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate")
            || err.to_string().contains("UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn bearer_token_flow() {
    let reg = TestRegistry::token();
    let repo = unique_repo("tok");
    let img = small_image("token");
    reg.push_image(&repo, "v1", &img);
    let got = pull(&reg, &repo, &client()).unwrap();
    assert_eq!(got.reference_digest, img.digest());

    // The token server wants credentials.
    let anon = client_with(|s| s.credentials = Credentials::none());
    let err = pull(&reg, &repo, &anon).unwrap_err();
    assert!(err.to_string().contains("requires credentials"), "{err}");
}

#[test]
fn refused_scope_is_denied() {
    let reg = TestRegistry::token();
    // The token server grants nothing under denied/: nothing can be pushed there either, so
    // the registry answers a pull with the refused-scope challenge.
    let repo = format!("denied/{}", unique_repo("x"));
    let err = pull(&reg, &repo, &client()).unwrap_err();
    match &err {
        StoreError::Registry {
            source: RegistryError::Denied {
                repository, reason, ..
            },
            ..
        } => {
            assert_eq!(repository, &repo);
            assert!(reason.contains("pull"), "{reason}");
        }
        other => panic!("expected denied, got {other}"),
    }
    assert!(!err.is_transient());
}

#[test]
fn missing_image_is_not_found_and_not_transient() {
    let reg = TestRegistry::plain();
    let err = pull(&reg, &unique_repo("nothing-here"), &client()).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Registry {
                source: RegistryError::NotFound { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());
}
