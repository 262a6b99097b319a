//! The test registries started by `tests/setup/registry` (plain, TLS + basic auth, token auth)
//! and pushing images to them over the registry HTTP API, monolithic or chunked uploads.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;

use crate::image::{Blob, Image, sha256};

/// One of the shared test registries.
#[derive(Debug, Clone)]
pub struct TestRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub tls: bool,
    pub user: Option<(String, String)>,
    pub ca: Option<PathBuf>,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through tests/run, or eval \"$(tests/setup/registry start DIR)\"")
    })
}

impl TestRegistry {
    /// Plain HTTP, no auth.
    pub fn plain() -> Self {
        TestRegistry {
            addr: env("BERTH_TEST_REGISTRY"),
            tls: false,
            user: None,
            ca: None,
        }
    }
    /// HTTPS with a test CA and htpasswd basic auth.
    pub fn tls() -> Self {
        TestRegistry {
            addr: env("BERTH_TEST_REGISTRY_TLS"),
            tls: true,
            user: Some((
                env("BERTH_TEST_REGISTRY_TLS_USER"),
                env("BERTH_TEST_REGISTRY_TLS_PASS"),
            )),
            ca: Some(env("BERTH_TEST_REGISTRY_TLS_CA").into()),
        }
    }
    /// Plain HTTP with `auth.token` (bearer tokens from the test token server).
    pub fn token() -> Self {
        TestRegistry {
            addr: env("BERTH_TEST_REGISTRY_TOKEN"),
            tls: false,
            user: Some((
                env("BERTH_TEST_REGISTRY_TOKEN_USER"),
                env("BERTH_TEST_REGISTRY_TOKEN_PASS"),
            )),
            ca: None,
        }
    }

    pub fn base(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    fn agent(&self) -> ureq::Agent {
        let mut b = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).unwrap();
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i.unwrap() {
                    ureq::tls::PemItem::Certificate(c) => Some(c),
                    _ => None,
                })
                .collect();
            b = b.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                    .build(),
            );
        }
        b.build().into()
    }

    fn basic(&self) -> Option<String> {
        self.user.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// The Authorization header for a request to `repo`, answering the registry's challenge.
    fn auth_for(&self, agent: &ureq::Agent, repo: &str) -> Option<String> {
        let user = self.user.as_ref()?;
        let resp = agent.get(format!("{}/v2/", self.base())).call().unwrap();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if challenge.starts_with("Basic") || challenge.is_empty() {
            return self.basic();
        }
        let realm = between(&challenge, "realm=\"", "\"").expect("realm");
        let service = between(&challenge, "service=\"", "\"").unwrap_or_default();
        let resp = agent
            .get(&realm)
            .query("service", &service)
            .query("scope", format!("repository:{repo}:pull,push"))
            .header(
                "Authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", user.0, user.1))
                ),
            )
            .call()
            .unwrap();
        assert_eq!(resp.status(), 200, "token server refused the test pusher");
        let v: serde_json::Value =
            serde_json::from_slice(&resp.into_body().read_to_vec().unwrap()).unwrap();
        Some(format!("Bearer {}", v["token"].as_str().unwrap()))
    }

    /// Uploads a blob unless the registry has it.
    pub fn push_blob(&self, repo: &str, bytes: &[u8], chunked: bool) -> String {
        let agent = self.agent();
        let auth = self.auth_for(&agent, repo);
        let digest = sha256(bytes);
        let with = |r: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match &auth {
            Some(a) => r.header("Authorization", a),
            None => r,
        };
        let head = with(agent.head(format!("{}/v2/{repo}/blobs/{digest}", self.base())))
            .call()
            .unwrap();
        if head.status() == 200 {
            return digest;
        }
        let withb = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| match &auth {
            Some(a) => r.header("Authorization", a),
            None => r,
        };
        let resp = withb(agent.post(format!("{}/v2/{repo}/blobs/uploads/", self.base())))
            .send_empty()
            .unwrap();
        assert_eq!(resp.status(), 202, "starting an upload to {repo}");
        let mut location = self.absolute(resp.headers()["location"].to_str().unwrap());
        if chunked {
            let chunk = (bytes.len() / 3).max(1);
            let mut start = 0;
            while start < bytes.len() {
                let end = (start + chunk).min(bytes.len());
                let resp = withb(agent.patch(&location))
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", format!("{start}-{}", end - 1))
                    .send(&bytes[start..end])
                    .unwrap();
                assert_eq!(resp.status(), 202, "chunk upload");
                location = self.absolute(resp.headers()["location"].to_str().unwrap());
                start = end;
            }
            let resp = withb(agent.put(&location))
                .query("digest", &digest)
                .send_empty()
                .unwrap();
            assert_eq!(resp.status(), 201, "closing a chunked upload");
        } else {
            let resp = withb(agent.put(&location))
                .query("digest", &digest)
                .header("Content-Type", "application/octet-stream")
                .send(bytes)
                .unwrap();
            assert_eq!(resp.status(), 201, "monolithic upload");
        }
        digest
    }

    /// Puts a manifest (or index) under `reference` (a tag or its digest).
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let agent = self.agent();
        let mut req = agent
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base()))
            .header("Content-Type", media_type);
        if let Some(a) = self.auth_for(&agent, repo) {
            req = req.header("Authorization", a);
        }
        let resp = req.send(body).unwrap();
        let status = resp.status();
        assert_eq!(
            status,
            201,
            "putting manifest {repo}:{reference}: {}",
            resp.into_body().read_to_string().unwrap_or_default()
        );
    }

    /// Pushes an image's blobs and manifest; returns the manifest digest.
    pub fn push_image(&self, repo: &str, tag: &str, img: &Image) -> String {
        self.push_image_with(repo, tag, img, false)
    }

    pub fn push_image_with(&self, repo: &str, tag: &str, img: &Image, chunked: bool) -> String {
        for l in &img.layers {
            self.push_layer(repo, l, chunked);
        }
        self.push_blob(repo, &img.config, false);
        self.put_manifest(repo, tag, &img.media_type, &img.manifest);
        img.digest()
    }

    pub fn push_layer(&self, repo: &str, l: &Blob, chunked: bool) {
        self.push_blob(repo, &l.bytes, chunked);
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http") {
            location.to_string()
        } else {
            format!("{}{location}", self.base())
        }
    }

    /// Docker's config.json granting this registry's credentials.
    pub fn auth_json(&self) -> serde_json::Value {
        let mut auths = serde_json::Map::new();
        if let Some((u, p)) = &self.user {
            auths.insert(
                self.addr.clone(),
                serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))}),
            );
        }
        serde_json::json!({ "auths": auths })
    }
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(s[i..j].to_string())
}

/// A repository name unique to this test process and call, so tests share registries safely.
pub fn unique_repo(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let mut nonce = [0u8; 3];
    getrandom_fill(&mut nonce);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        hex::encode(nonce)
    )
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("/dev/urandom");
}
