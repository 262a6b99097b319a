//! Registry credentials from a file in Docker's `config.json` format (`auths`, base64 `auth`).
//!
//! Credential helpers (`credsStore`, `credHelpers`) run external programs; berth does not, and
//! says so when a file relies on them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({:?}, <redacted>)", self.username)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read auth file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid auth file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Credentials keyed by registry host (`host[:port]`, `docker.io` for Docker Hub).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_host: BTreeMap<String, Credential>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// No credentials: every registry is accessed anonymously.
    pub fn none() -> Self {
        Credentials::default()
    }

    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| CredentialsError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let cfg: DockerConfig = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if cfg.auths.is_empty() && (cfg.creds_store.is_some() || !cfg.cred_helpers.is_empty()) {
            return Err(
                "credential helpers (credsStore, credHelpers) are not supported: put the credentials in \"auths\""
                    .into(),
            );
        }
        let mut by_host = BTreeMap::new();
        for (key, entry) in cfg.auths {
            let cred = match (&entry.auth, &entry.username, &entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => decode_auth(auth)
                    .ok_or_else(|| format!("auths.{key:?}.auth is not base64 of user:password"))?,
                (_, Some(u), Some(p)) => Credential {
                    username: u.clone(),
                    password: p.clone(),
                },
                // An entry without a secret (e.g. only an identitytoken) grants nothing here.
                _ => continue,
            };
            by_host.insert(host_of_key(&key), cred);
        }
        Ok(Credentials { by_host })
    }

    pub fn insert(&mut self, host: &str, cred: Credential) {
        self.by_host.insert(host_of_key(host), cred);
    }

    /// The credential for a registry host (as in an image reference: `docker.io`,
    /// `ghcr.io`, `127.0.0.1:5000`).
    pub fn get(&self, host: &str) -> Option<&Credential> {
        self.by_host.get(&host_of_key(host))
    }
}

fn decode_auth(auth: &str) -> Option<Credential> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credential {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// `https://index.docker.io/v1/` -> `docker.io`; `https://host:5000/` -> `host:5000`.
fn host_of_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            berth_spec::reference::DOCKER_HUB.to_string()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn reads_docker_config() {
        let json = format!(
            r#"{{"auths":{{
                "https://index.docker.io/v1/":{{"auth":"{}"}},
                "127.0.0.1:5000":{{"auth":"{}"}},
                "https://ghcr.io":{{"username":"u","password":"p"}},
                "quay.io":{{"identitytoken":"x"}}
            }}}}"#,
            b64("hub:secret"),
            b64("me:pa:ss")
        );
        let c = Credentials::parse(json.as_bytes()).unwrap();
        assert_eq!(c.get("docker.io").unwrap().username, "hub");
        assert_eq!(c.get("127.0.0.1:5000").unwrap().password, "pa:ss");
        assert_eq!(c.get("ghcr.io").unwrap().password, "p");
        assert!(c.get("quay.io").is_none());
        assert!(c.get("127.0.0.1:5001").is_none());
    }

    #[test]
    fn refuses_helpers_only_and_bad_base64() {
        let e = Credentials::parse(br#"{"credsStore":"desktop"}"#).unwrap_err();
        assert!(e.contains("credsStore"), "{e}");
        let e = Credentials::parse(br#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap_err();
        assert!(e.contains("base64"), "{e}");
        assert!(Credentials::parse(b"{}").unwrap().get("x").is_none());
    }

    #[test]
    fn debug_hides_password() {
        let c = Credential {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
