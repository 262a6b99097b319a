//! The HTTP side of the distribution API: endpoints (mirrors, then the origin), one ureq agent
//! per registry host (its own CA and scheme), the auth handshake, retries, manifests.
//!
//! Blocking by design: a pull streams download -> hash -> decompress -> untar on plain threads,
//! so an async client would only add a bridge. Callers on tokio use `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use berth_spec::config::RegistryConfig;
use berth_spec::{Digest, ImageReference};
use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::auth::{HostAuth, Token};
use super::credentials::Credentials;
use super::error::RegistryError;
use super::manifest::ACCEPT;
use super::rate::RateLimit;
use super::retry::RetryPolicy;

/// Docker Hub's API host: references say `docker.io`, the API lives here.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Per-request time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub connect: Duration,
    /// Until the response headers arrive.
    pub response: Duration,
    /// The longest a body may go without a byte before the stream counts as stalled.
    pub stall: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: Duration::from_secs(15),
            response: Duration::from_secs(60),
            stall: Duration::from_secs(30),
        }
    }
}

impl HttpTimeouts {
    /// `[images] http_timeout` and `stall_timeout`; connecting never takes longer than either.
    pub fn from_config(images: &berth_spec::config::ImagesConfig) -> Self {
        let d = HttpTimeouts::default();
        HttpTimeouts {
            connect: d.connect.min(images.http_timeout),
            response: images.http_timeout,
            stall: images.stall_timeout,
        }
    }
}

/// Everything the client needs from the agent config.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Keyed by `host[:port]` as in references (and mirrors by their own host).
    pub registries: BTreeMap<String, RegistryConfig>,
    pub credentials: Credentials,
    pub timeouts: HttpTimeouts,
    pub retry: RetryPolicy,
    /// `[images] max_download_rate`: bytes per second for all blob downloads together.
    pub max_download_rate: Option<u64>,
}

impl RegistrySettings {
    /// Settings from the agent config, reading its `auth_file` when set.
    pub fn from_config(
        cfg: &berth_spec::Config,
    ) -> Result<Self, super::credentials::CredentialsError> {
        let credentials = match &cfg.auth_file {
            Some(p) => Credentials::load(p)?,
            None => Credentials::none(),
        };
        Ok(RegistrySettings {
            registries: cfg.registries.clone(),
            credentials,
            timeouts: HttpTimeouts::from_config(&cfg.images),
            max_download_rate: cfg.images.max_download_rate,
            ..Default::default()
        })
    }
}

/// One place to ask for an image: a mirror or the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host to connect to (`registry-1.docker.io`, `mirror.local:5000`).
    pub host: String,
    /// The key its settings and credentials are found under (`docker.io` for the Hub).
    pub key: String,
    pub insecure: bool,
    pub ca_file: Option<std::path::PathBuf>,
}

impl Endpoint {
    pub fn base_url(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }
}

/// The endpoints for a registry: its mirrors in order, then the origin.
pub fn endpoints(registries: &BTreeMap<String, RegistryConfig>, registry: &str) -> Vec<Endpoint> {
    let origin_cfg = registries.get(registry).cloned().unwrap_or_default();
    let mut out: Vec<Endpoint> = origin_cfg
        .mirrors
        .iter()
        .map(|m| {
            let c = registries.get(m).cloned().unwrap_or_default();
            Endpoint {
                host: m.clone(),
                key: m.clone(),
                insecure: c.insecure,
                ca_file: c.ca_file,
            }
        })
        .collect();
    let host = if registry == berth_spec::reference::DOCKER_HUB {
        DOCKER_HUB_API.to_string()
    } else {
        registry.to_string()
    };
    out.push(Endpoint {
        host,
        key: registry.to_string(),
        insecure: origin_cfg.insecure,
        ca_file: origin_cfg.ca_file,
    });
    out
}

/// A manifest whose bytes were checked against the digest asked for or announced.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// The digest of `bytes`.
    pub digest: Digest,
}

/// Called before each retry with the error, the attempt number and the wait.
pub type RetryHook<'a> = &'a (dyn Fn(&RegistryError, u32, Duration) + Sync);

/// A registry client shared by every pull of the agent. Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").finish_non_exhaustive()
    }
}

pub(super) struct Inner {
    pub(super) settings: RegistrySettings,
    agents: Mutex<HashMap<String, ureq::Agent>>,
    pub(super) auth: Mutex<HashMap<String, HostAuth>>,
    pub(super) tokens: Mutex<HashMap<(String, String), Token>>,
    pub(super) rate: Option<RateLimit>,
}

impl RegistryClient {
    pub fn new(settings: RegistrySettings) -> Self {
        let rate = settings.max_download_rate.map(RateLimit::new);
        RegistryClient {
            inner: Arc::new(Inner {
                rate,
                settings,
                agents: Mutex::default(),
                auth: Mutex::default(),
                tokens: Mutex::default(),
            }),
        }
    }

    pub fn settings(&self) -> &RegistrySettings {
        &self.inner.settings
    }

    /// The download budget every blob body is paid from, when one is configured.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.inner.rate.clone()
    }

    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        endpoints(&self.inner.settings.registries, registry)
    }

    /// Runs `op` until it succeeds, fails for good, or the retry policy runs out, sleeping
    /// with backoff and jitter between attempts.
    pub fn retrying<T>(
        &self,
        on_retry: RetryHook<'_>,
        mut op: impl FnMut() -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let policy = self.inner.settings.retry;
        let mut attempt = 0;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt + 1 < policy.attempts => {
                    let wait = policy.delay_now(attempt, e.retry_after());
                    on_retry(&e, attempt + 1, wait);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Tries each endpoint in order; the origin's error is the one reported.
    pub fn first_ok<T>(
        &self,
        endpoints: &[Endpoint],
        mut op: impl FnMut(&Endpoint) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut last = None;
        for ep in endpoints {
            match op(ep) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::debug!(endpoint = %ep.host, error = %e, "registry endpoint failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Protocol {
            what: "registry".into(),
            reason: "no endpoints".into(),
        }))
    }

    /// Fetches a manifest by tag or digest and checks its bytes: against the digest when asked by
    /// digest, else against the registry's `Docker-Content-Digest`.
    pub fn fetch_manifest(
        &self,
        image: &ImageReference,
        reference: &str,
        max_size: u64,
        on_retry: RetryHook<'_>,
    ) -> Result<FetchedManifest, RegistryError> {
        let eps = self.endpoints(&image.registry);
        self.retrying(on_retry, || {
            self.first_ok(&eps, |ep| self.manifest_at(ep, image, reference, max_size))
        })
    }

    fn manifest_at(
        &self,
        ep: &Endpoint,
        image: &ImageReference,
        reference: &str,
        max_size: u64,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            ep.base_url(),
            image.repository,
            reference
        );
        let what = format!("{}/{}:{reference}", image.registry, image.repository);
        let resp = self.get_whole(ep, &image.repository, &url, &[("Accept", ACCEPT)])?;
        let resp = check_status(resp, ep, &image.repository, &url, &what)?;
        let content_type = header(&resp, "content-type");
        let announced = header(&resp, "docker-content-digest");
        if let Some(len) = header(&resp, "content-length").and_then(|l| l.parse::<u64>().ok())
            && len > max_size
        {
            return Err(RegistryError::ManifestTooLarge {
                url,
                limit: max_size,
            });
        }
        let bytes = match resp
            .into_body()
            .with_config()
            .limit(max_size + 1)
            .read_to_vec()
        {
            Ok(b) => b,
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                return Err(RegistryError::ManifestTooLarge {
                    url,
                    limit: max_size,
                });
            }
            Err(e) => return Err(RegistryError::transport(&url, &e)),
        };
        if bytes.len() as u64 > max_size {
            return Err(RegistryError::ManifestTooLarge {
                url,
                limit: max_size,
            });
        }
        let digest = Digest::of(&bytes);
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            announced
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest of {what}"),
                expected,
                actual: digest.to_string(),
            });
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// Fetches a small blob (an image config) whole, verifying size and digest.
    pub fn fetch_small_blob(
        &self,
        image: &ImageReference,
        digest: &Digest,
        size: u64,
        max_size: u64,
        on_retry: RetryHook<'_>,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {digest} of {}/{}", image.registry, image.repository);
        if size > max_size {
            return Err(RegistryError::Protocol {
                what,
                reason: format!("config of {size} bytes is larger than the {max_size}-byte limit"),
            });
        }
        let eps = self.endpoints(&image.registry);
        self.retrying(on_retry, || {
            self.first_ok(&eps, |ep| {
                let url = blob_url(ep, image, digest);
                let resp = self.get_whole(ep, &image.repository, &url, &[])?;
                let resp = check_status(resp, ep, &image.repository, &url, &what)?;
                let bytes = match resp.into_body().with_config().limit(size + 1).read_to_vec() {
                    Ok(b) => b,
                    Err(ureq::Error::BodyExceedsLimit(_)) => {
                        return Err(RegistryError::SizeMismatch {
                            what: what.clone(),
                            expected: size,
                            actual: format!("more than {size}"),
                        });
                    }
                    Err(e) => return Err(RegistryError::transport(&url, &e)),
                };
                if bytes.len() as u64 != size {
                    return Err(RegistryError::SizeMismatch {
                        what: what.clone(),
                        expected: size,
                        actual: bytes.len().to_string(),
                    });
                }
                let actual = Digest::of(&bytes);
                if actual != *digest {
                    return Err(RegistryError::DigestMismatch {
                        what: what.clone(),
                        expected: digest.to_string(),
                        actual: actual.to_string(),
                    });
                }
                Ok(bytes)
            })
        })
    }

    /// The agent for an endpoint: its scheme and trust roots are per registry.
    pub(super) fn agent(&self, ep: &Endpoint) -> Result<ureq::Agent, RegistryError> {
        let mut agents = self.inner.agents.lock().expect("agents");
        if let Some(a) = agents.get(&ep.host) {
            return Ok(a.clone());
        }
        let mut roots: Vec<Certificate<'static>> = system_roots().to_vec();
        if let Some(path) = &ep.ca_file {
            let pem = std::fs::read(path).map_err(|e| RegistryError::CaFile {
                registry: ep.key.clone(),
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let before = roots.len();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => roots.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(RegistryError::CaFile {
                            registry: ep.key.clone(),
                            path: path.clone(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
            if roots.len() == before {
                return Err(RegistryError::CaFile {
                    registry: ep.key.clone(),
                    path: path.clone(),
                    reason: "no PEM certificate in it".into(),
                });
            }
        }
        let t = self.inner.settings.timeouts;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(t.connect))
            .timeout_recv_response(Some(t.response))
            .timeout_per_read(Some(t.stall))
            .timeout_send_request(Some(t.response))
            .max_redirects(5)
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::Specific(Arc::new(roots)))
                    .build(),
            )
            .build()
            .into();
        agents.insert(ep.host.clone(), agent.clone());
        Ok(agent)
    }
}

/// The host's trust roots, loaded once.
fn system_roots() -> &'static [Certificate<'static>] {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading system certificates");
        }
        found
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect()
    })
}

pub(crate) fn blob_url(ep: &Endpoint, image: &ImageReference, digest: &Digest) -> String {
    format!("{}/v2/{}/blobs/{digest}", ep.base_url(), image.repository)
}

pub(crate) fn header<B>(resp: &Response<B>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Maps 403/404/other failures to errors; passes 2xx through.
pub(crate) fn check_status(
    resp: Response<ureq::Body>,
    ep: &Endpoint,
    repository: &str,
    url: &str,
    what: &str,
) -> Result<Response<ureq::Body>, RegistryError> {
    match resp.status().as_u16() {
        200..=299 => Ok(resp),
        403 => Err(RegistryError::Denied {
            registry: ep.key.clone(),
            repository: repository.to_string(),
            reason: "HTTP 403".into(),
        }),
        404 => Err(RegistryError::NotFound {
            registry: ep.key.clone(),
            what: what.to_string(),
        }),
        _ => Err(status_error(resp, url)),
    }
}

pub(crate) fn status_error(resp: Response<ureq::Body>, url: &str) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = header(&resp, "retry-after")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let detail = resp
        .into_body()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    let detail: String = detail.trim().chars().take(200).collect();
    RegistryError::Status {
        url: url.to_string(),
        status,
        detail,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_come_from_the_images_config() {
        let images = berth_spec::config::ImagesConfig {
            http_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(7),
            ..Default::default()
        };
        let t = HttpTimeouts::from_config(&images);
        assert_eq!(t.response, Duration::from_secs(5));
        assert_eq!(t.stall, Duration::from_secs(7));
        // Connecting never takes longer than a whole request may.
        assert_eq!(t.connect, Duration::from_secs(5));
        let d = HttpTimeouts::from_config(&Default::default());
        assert_eq!(d, HttpTimeouts::default());
    }

    #[test]
    fn docker_hub_goes_to_its_api_host_after_mirrors() {
        let mut regs = BTreeMap::new();
        regs.insert(
            "docker.io".to_string(),
            RegistryConfig {
                mirrors: vec!["m1.local:5000".into(), "m2.local".into()],
                ..Default::default()
            },
        );
        regs.insert(
            "m1.local:5000".to_string(),
            RegistryConfig {
                insecure: true,
                ..Default::default()
            },
        );
        let eps = endpoints(&regs, "docker.io");
        let hosts: Vec<_> = eps.iter().map(|e| e.base_url()).collect();
        assert_eq!(
            hosts,
            [
                "http://m1.local:5000",
                "https://m2.local",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(eps[2].key, "docker.io");
        let eps = endpoints(&regs, "127.0.0.1:5000");
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].base_url(), "https://127.0.0.1:5000");
    }
}
