//! Image references, normalised as Docker normalises them.
//!
//! `nginx` is `docker.io/library/nginx:latest`; `ghcr.io/a/b@sha256:…` pins a digest;
//! `localhost:5000/x` names a registry by its port. A spec may also name an image on disk:
//! `oci-archive:/path/img.tar` or `oci:/path/layout[:tag]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The registry Docker's short names live on.
pub const DOCKER_HUB: &str = "docker.io";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// Where a spec's image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageSource {
    Registry(ImageReference),
    /// An OCI image layout (or `docker save` archive) in a tar file.
    OciArchive {
        path: PathBuf,
    },
    /// An OCI image layout directory; `tag` picks an entry of its index by
    /// `org.opencontainers.image.ref.name`.
    OciLayout {
        path: PathBuf,
        tag: Option<String>,
    },
}

impl ImageSource {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if let Some(path) = s.strip_prefix("oci-archive:") {
            if path.is_empty() || !path.starts_with('/') {
                return Err(ReferenceError::new(
                    s,
                    "oci-archive: needs an absolute path",
                ));
            }
            return Ok(ImageSource::OciArchive {
                path: PathBuf::from(path),
            });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() || !rest.starts_with('/') {
                return Err(ReferenceError::new(s, "oci: needs an absolute path"));
            }
            // The tag is after the last ':' that follows the last '/'.
            let last_slash = rest.rfind('/').unwrap_or(0);
            let (path, tag) = match rest[last_slash..].rfind(':') {
                Some(i) => {
                    let i = last_slash + i;
                    let tag = &rest[i + 1..];
                    if !valid_tag(tag) {
                        return Err(ReferenceError::new(s, "invalid tag after the layout path"));
                    }
                    (&rest[..i], Some(tag.to_string()))
                }
                None => (rest, None),
            };
            return Ok(ImageSource::OciLayout {
                path: PathBuf::from(path),
                tag,
            });
        }
        Ok(ImageSource::Registry(ImageReference::parse(s)?))
    }

    pub fn as_registry(&self) -> Option<&ImageReference> {
        match self {
            ImageSource::Registry(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Registry(r) => r.fmt(f),
            ImageSource::OciArchive { path } => write!(f, "oci-archive:{}", path.display()),
            ImageSource::OciLayout { path, tag: None } => write!(f, "oci:{}", path.display()),
            ImageSource::OciLayout { path, tag: Some(t) } => {
                write!(f, "oci:{}:{t}", path.display())
            }
        }
    }
}

/// A fully-qualified registry reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageReference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/nginx`.
    pub repository: String,
    /// Present unless only a digest was given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`; when present it is what gets pulled.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl ReferenceError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        ReferenceError {
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

impl ImageReference {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::new(s, "empty"));
        }
        if s.trim() != s {
            return Err(ReferenceError::new(s, "surrounding whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                crate::digest::Digest::parse(d).map_err(|why| ReferenceError::new(s, why))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' unless that ':' belongs to a registry port (then a '/'
        // follows it).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(ReferenceError::new(
                s,
                format!(
                    "invalid tag {t:?}: letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-'"
                ),
            ));
        }
        if name.is_empty() {
            return Err(ReferenceError::new(s, "missing repository name"));
        }
        let (registry, path) = split_domain(name);
        if registry != DOCKER_HUB && !valid_domain(&registry) {
            return Err(ReferenceError::new(
                s,
                format!("invalid registry host {registry:?}"),
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        for component in repository.split('/') {
            if !valid_path_component(component) {
                return Err(ReferenceError::new(
                    s,
                    format!(
                        "invalid repository component {component:?}: lowercase letters and digits, separated by '.', '_', '__' or '-'"
                    ),
                ));
            }
        }
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(ReferenceError::new(
                s,
                "repository name longer than 255 characters",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What a registry is asked for: the digest when pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageReference::parse(s)
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Docker's rule: the first component is a registry if it has a '.' or ':' or is `localhost`,
/// and is not all lower-case-free of those (an upper-case first component is also a domain).
fn split_domain(name: &str) -> (String, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            let registry = if first == "index.docker.io" || first == "registry-1.docker.io" {
                DOCKER_HUB.to_string()
            } else {
                first.to_string()
            };
            (registry, rest)
        }
        _ => (DOCKER_HUB.to_string(), name),
    }
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || d.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

pub(crate) fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageReference::parse(s).unwrap().to_string()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            norm("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert_eq!(norm("127.0.0.1:5000/a/b/c"), "127.0.0.1:5000/a/b/c:latest");
        assert_eq!(norm("ghcr.io/o/r:t"), "ghcr.io/o/r:t");
        assert_eq!(
            norm(&format!("nginx@{D}")),
            format!("docker.io/library/nginx@{D}")
        );
        assert_eq!(
            norm(&format!("nginx:1@{D}")),
            format!("docker.io/library/nginx:1@{D}")
        );
        assert_eq!(norm("a__b/c-d/e.f"), "docker.io/a__b/c-d/e.f:latest");
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
    }

    #[test]
    fn reference_prefers_digest() {
        let r = ImageReference::parse(&format!("x:1@{D}")).unwrap();
        assert_eq!(r.reference(), D);
        let r = ImageReference::parse("x:1").unwrap();
        assert_eq!(r.reference(), "1");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "nginx@sha256:abc",
            "nginx@md5:0123",
            "a//b",
            "a/-b",
            "a/b-",
            "a/b_/c",
            "a/b___c",
            " nginx",
            "host:port/x",
            "host:99999999/x",
            "bad_host.com/x",
            &format!("x/{}", "a".repeat(300)),
            &format!("x:{}", "a".repeat(129)),
        ] {
            assert!(
                ImageReference::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn image_sources() {
        assert_eq!(
            ImageSource::parse("oci-archive:/x/y.tar").unwrap(),
            ImageSource::OciArchive {
                path: "/x/y.tar".into()
            }
        );
        assert_eq!(
            ImageSource::parse("oci:/x/dir:v1").unwrap(),
            ImageSource::OciLayout {
                path: "/x/dir".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageSource::parse("oci:/x/dir").unwrap(),
            ImageSource::OciLayout {
                path: "/x/dir".into(),
                tag: None
            }
        );
        assert!(ImageSource::parse("oci:relative").is_err());
        assert!(ImageSource::parse("oci-archive:").is_err());
        for s in [
            "oci-archive:/a.tar",
            "oci:/d:t",
            "oci:/d",
            "docker.io/library/x:1",
        ] {
            assert_eq!(ImageSource::parse(s).unwrap().to_string(), s);
        }
    }
}
