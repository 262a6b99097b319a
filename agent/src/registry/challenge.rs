//! `WWW-Authenticate` challenges (RFC 7235): `Bearer realm="…",service="…",scope="…"`.
//!
//! By hand because the header grammar is small and the HTTP crates leave it to the caller.

use std::collections::BTreeMap;

/// One parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        /// `insufficient_scope` when the token lacked the rights asked for.
        error: Option<String>,
    },
}

/// Parses the challenges of a `WWW-Authenticate` header value, in order; unknown schemes are
/// skipped, as is a Bearer challenge without a realm.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        let scheme_len = rest
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(rest.len());
        let scheme = rest[..scheme_len].to_ascii_lowercase();
        rest = rest[scheme_len..].trim_start_matches([' ', '\t', ',']);
        let (params, after) = parse_params(rest);
        rest = after;
        match scheme.as_str() {
            "basic" => out.push(Challenge::Basic),
            "bearer" => {
                if let Some(realm) = params.get("realm") {
                    out.push(Challenge::Bearer {
                        realm: realm.clone(),
                        service: params.get("service").cloned(),
                        scope: params.get("scope").cloned(),
                        error: params.get("error").cloned(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Reads `key=value` / `key="quoted"` pairs until something that is not a pair (the next
/// challenge's scheme).
fn parse_params(mut s: &str) -> (BTreeMap<String, String>, &str) {
    let mut params = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', '\t', ',']);
        let Some(eq) = s.find('=') else { break };
        let key = &s[..eq];
        if key.is_empty() || key.contains([' ', '\t', ',', '"']) {
            break;
        }
        let mut value = String::new();
        let mut rest = &s[eq + 1..];
        if let Some(q) = rest.strip_prefix('"') {
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            rest = &q[end.min(q.len())..];
        } else {
            let end = rest.find([',', ' ', '\t']).unwrap_or(rest.len());
            value.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        params.insert(key.to_ascii_lowercase(), value);
        s = rest;
    }
    (params, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
                error: None,
            }]
        );
    }

    #[test]
    fn basic_and_errors() {
        assert_eq!(
            parse(r#"Basic realm="Registry Realm""#),
            vec![Challenge::Basic]
        );
        let c = parse(
            r#"Bearer realm="http://a/t",service="s",scope="repository:x:pull",error="insufficient_scope""#,
        );
        match &c[0] {
            Challenge::Bearer { error, .. } => {
                assert_eq!(error.as_deref(), Some("insufficient_scope"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn several_challenges_and_odd_spacing() {
        let c = parse(r#"Negotiate, Basic realm="x" , Bearer realm=http://r/t, service="a\"b""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], Challenge::Basic);
        assert_eq!(
            c[1],
            Challenge::Bearer {
                realm: "http://r/t".into(),
                service: Some("a\"b".into()),
                scope: None,
                error: None
            }
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in [
            "",
            "Bearer",
            "Bearer realm=\"unterminated",
            "=,=",
            "Bearer service=x",
        ] {
            let _ = parse(s);
        }
        assert!(parse("Bearer service=x").is_empty());
    }
}
