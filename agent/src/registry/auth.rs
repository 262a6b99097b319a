//! Answering a registry's 401: Basic with the configured credentials, or the bearer-token
//! flow (ask the realm for a token for `repository:<name>:pull`, cache it until it expires).

use std::time::{Duration, Instant};

use base64::Engine;
use ureq::http::Response;

use super::challenge::{self, Challenge};
use super::client::{Endpoint, RegistryClient, status_error};
use super::credentials::Credential;
use super::error::RegistryError;

/// How a host wants to be authenticated, learnt from its first 401.
#[derive(Debug, Clone)]
pub(super) enum HostAuth {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    value: String,
    expires: Instant,
}

impl RegistryClient {
    /// A GET with this host's authentication, answering one 401 challenge. The body may
    /// stream for as long as it keeps moving (layer blobs).
    pub(crate) fn get(
        &self,
        ep: &Endpoint,
        repository: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<ureq::Body>, RegistryError> {
        self.get_with(ep, repository, url, headers, None)
    }

    /// [`Self::get`] for a small body read whole (a manifest, a config): the whole exchange,
    /// body included, must finish within `http_timeout`, so a server that trickles bytes
    /// (slow-loris) cannot hold a pull forever.
    pub(crate) fn get_whole(
        &self,
        ep: &Endpoint,
        repository: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let limit = self.inner.settings.timeouts.response;
        self.get_with(ep, repository, url, headers, Some(limit))
    }

    fn get_with(
        &self,
        ep: &Endpoint,
        repository: &str,
        url: &str,
        headers: &[(&str, &str)],
        whole: Option<Duration>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let agent = self.agent(ep)?;
        let mut sent_auth = false;
        for round in 0..2 {
            let auth = self.authorization(ep, repository)?;
            let mut req = agent.get(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
                sent_auth = true;
            }
            if let Some(limit) = whole {
                req = req.config().timeout_per_call(Some(limit)).build();
            }
            let resp = req.call().map_err(|e| RegistryError::transport(url, &e))?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(challenge::parse)
                .collect();
            if round == 1 {
                return Err(self.rejected(ep, repository, &challenges, sent_auth));
            }
            self.learn(ep, repository, &challenges, sent_auth)?;
        }
        unreachable!("the loop returns in its second round")
    }

    fn rejected(
        &self,
        ep: &Endpoint,
        repository: &str,
        challenges: &[Challenge],
        sent_auth: bool,
    ) -> RegistryError {
        let insufficient = challenges.iter().any(
            |c| matches!(c, Challenge::Bearer { error: Some(e), .. } if e == "insufficient_scope"),
        );
        if insufficient || (sent_auth && self.credential(ep).is_some()) {
            RegistryError::Denied {
                registry: ep.key.clone(),
                repository: repository.to_string(),
                reason: if insufficient {
                    "the token does not grant pull access".into()
                } else {
                    "credentials not accepted".into()
                },
            }
        } else {
            RegistryError::Auth {
                registry: ep.key.clone(),
                reason: "the registry requires credentials (add them to the auth file)".into(),
            }
        }
    }

    /// Records what a 401 asked for; fails when it cannot be answered.
    fn learn(
        &self,
        ep: &Endpoint,
        repository: &str,
        challenges: &[Challenge],
        sent_auth: bool,
    ) -> Result<(), RegistryError> {
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } => Some((realm.clone(), service.clone())),
            _ => None,
        });
        let state = if let Some((realm, service)) = bearer {
            if realm.starts_with("http://") && !ep.insecure {
                return Err(RegistryError::Auth {
                    registry: ep.key.clone(),
                    reason: format!("refusing plain-http token realm {realm} of an https registry"),
                });
            }
            self.inner
                .tokens
                .lock()
                .expect("token cache")
                .remove(&(ep.host.clone(), scope(repository)));
            HostAuth::Bearer { realm, service }
        } else if challenges.contains(&Challenge::Basic) {
            if self.credential(ep).is_none() || sent_auth {
                return Err(self.rejected(ep, repository, challenges, sent_auth));
            }
            HostAuth::Basic
        } else {
            return Err(RegistryError::Auth {
                registry: ep.key.clone(),
                reason: "401 without a challenge berth understands".into(),
            });
        };
        self.inner
            .auth
            .lock()
            .expect("auth state")
            .insert(ep.host.clone(), state);
        Ok(())
    }

    fn credential(&self, ep: &Endpoint) -> Option<&Credential> {
        self.inner.settings.credentials.get(&ep.key)
    }

    /// The Authorization header for a request to `ep`, fetching a token when needed.
    fn authorization(
        &self,
        ep: &Endpoint,
        repository: &str,
    ) -> Result<Option<String>, RegistryError> {
        let state = self
            .inner
            .auth
            .lock()
            .expect("auth state")
            .get(&ep.host)
            .cloned();
        match state {
            None => Ok(None),
            Some(HostAuth::Basic) => Ok(self.credential(ep).map(basic)),
            Some(HostAuth::Bearer { realm, service }) => {
                let key = (ep.host.clone(), scope(repository));
                if let Some(t) = self.inner.tokens.lock().expect("token cache").get(&key)
                    && t.expires > Instant::now()
                {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let token = self.fetch_token(ep, &realm, service.as_deref(), &key.1)?;
                let value = format!("Bearer {}", token.value);
                self.inner
                    .tokens
                    .lock()
                    .expect("token cache")
                    .insert(key, token);
                Ok(Some(value))
            }
        }
    }

    fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let agent = self.agent(ep)?;
        // A token server that never answers, or trickles its answer, fails within the timeout.
        let limit = self.inner.settings.timeouts.response;
        let mut req = agent
            .get(realm)
            .query("scope", scope)
            .config()
            .timeout_per_call(Some(limit))
            .build();
        if let Some(s) = service {
            req = req.query("service", s);
        }
        if let Some(c) = self.credential(ep) {
            req = req.header("Authorization", basic(c));
        }
        let resp = req
            .call()
            .map_err(|e| match RegistryError::transport(realm, &e) {
                RegistryError::Transport {
                    url,
                    reason,
                    transient,
                } => RegistryError::Transport {
                    url,
                    reason: format!("token server: {reason}"),
                    transient,
                },
                other => other,
            })?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RegistryError::Auth {
                registry: ep.key.clone(),
                reason: if self.credential(ep).is_some() {
                    format!("token server {realm} refused the credentials (HTTP {status})")
                } else {
                    format!("token server {realm} requires credentials (HTTP {status})")
                },
            });
        }
        if !(200..300).contains(&status) {
            return Err(status_error(resp, realm));
        }
        let body = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| RegistryError::transport(realm, &e))?;
        let reply: Reply = serde_json::from_slice(&body).map_err(|e| RegistryError::Auth {
            registry: ep.key.clone(),
            reason: format!("invalid reply from token server {realm}: {e}"),
        })?;
        let value = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Auth {
                registry: ep.key.clone(),
                reason: format!("token server {realm} sent no token"),
            })?;
        // Refresh a little early so a token never expires in flight.
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(60).max(20) - 10);
        Ok(Token {
            value,
            expires: Instant::now() + lifetime,
        })
    }
}

fn scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

fn basic(c: &Credential) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header() {
        let c = Credential {
            username: "a".into(),
            password: "b".into(),
        };
        assert_eq!(basic(&c), "Basic YTpi");
    }
}
