//! `[match]`: which hosts run a spec, judged against a host's id and labels.
//!
//! ```toml
//! [match]
//! labels = { role = "kiosk", site = ["berlin", "paris"] }   # every name must match; a list: any value
//! hosts = ["edge-0042"]                                        # the host id must be one of these
//! ```
//!
//! Pure: the host's facts come in as a value (the agent reads them from its config and
//! `/etc/machine-id`; `berth validate --host-labels` from the command line).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decode::{Cx, index, join};
use crate::tree::{Kind, Node};

pub(crate) const MATCH_KEYS: &[&str] = &["labels", "hosts"];

/// A spec's `[match]`. The default (no `[match]`) runs everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostMatch {
    /// Label name to the values any of which matches; every name listed must match.
    pub labels: BTreeMap<String, Vec<String>>,
    /// Host ids, any of which matches; `None`: any host.
    pub hosts: Option<Vec<String>>,
}

/// What a host is, for `[match]` and for rollouts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostFacts {
    /// `host_id` from the agent config, else `/etc/machine-id`; `None` when neither is
    /// readable (then no `hosts` list matches).
    pub host_id: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl HostMatch {
    pub fn is_everywhere(&self) -> bool {
        self.labels.is_empty() && self.hosts.is_none()
    }

    pub fn matches(&self, host: &HostFacts) -> bool {
        self.mismatch(host).is_none()
    }

    /// Why this host does not run the spec, or `None` when it does.
    pub fn mismatch(&self, host: &HostFacts) -> Option<String> {
        if let Some(hosts) = &self.hosts {
            match &host.host_id {
                Some(id) if hosts.contains(id) => {}
                Some(id) => return Some(format!("host id {id:?} is not in match.hosts")),
                None => return Some("this host has no host id, and match.hosts lists some".into()),
            }
        }
        for (name, wanted) in &self.labels {
            match host.labels.get(name) {
                Some(v) if wanted.contains(v) => {}
                Some(v) => {
                    return Some(format!("label {name}={v} is not {}", one_of(wanted)));
                }
                None => {
                    return Some(format!(
                        "label {name} is not set (match wants {})",
                        one_of(wanted)
                    ));
                }
            }
        }
        None
    }

    /// Whether some host could run both specs: false only when their matches are provably
    /// disjoint (host lists with nothing in common, or one label name whose value lists share
    /// nothing). Checks across a directory (a host port published twice) judge only specs that
    /// may meet on one host.
    pub fn may_share_host(&self, other: &HostMatch) -> bool {
        if let (Some(a), Some(b)) = (&self.hosts, &other.hosts)
            && !a.iter().any(|h| b.contains(h))
        {
            return false;
        }
        self.labels.iter().all(|(name, a)| {
            other
                .labels
                .get(name)
                .is_none_or(|b| a.iter().any(|v| b.contains(v)))
        })
    }
}

fn one_of(values: &[String]) -> String {
    match values {
        [one] => format!("{one:?}"),
        many => format!(
            "one of {}",
            many.iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A label name: what `k=v,...` and TOML keys can both carry.
pub fn validate_label_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid label name {name:?}: 1-253 characters of a-z, A-Z, 0-9, '_', '-', '.', '/'"
        ))
    }
}

/// A label value: printable, and without the ',' that separates `--host-labels` pairs.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("empty label value".into());
    }
    if value.len() > 253 || value.chars().any(|c| c.is_control() || c == ',') {
        return Err(format!(
            "invalid label value {value:?}: at most 253 characters, no ',' and no control characters"
        ));
    }
    Ok(())
}

/// A host id: what `/etc/machine-id` holds (32 hex digits), or any name without spaces.
pub fn validate_host_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 253
        && id.chars().all(|c| !c.is_whitespace() && !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid host id {id:?}: 1-253 characters, no spaces or control characters"
        ))
    }
}

/// `role=kiosk,site=berlin` (as `berth validate --host-labels` takes it).
pub fn parse_label_pairs(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not name=value"))?;
        validate_label_name(k)?;
        validate_label_value(v)?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label {k} given twice"));
        }
    }
    Ok(out)
}

/// Reads `[match]`.
pub(crate) fn decode(cx: &mut Cx<'_>, n: &Node) -> Option<HostMatch> {
    let t = cx.table(n, "match", MATCH_KEYS)?;
    let mut ok = true;
    let mut labels = BTreeMap::new();
    if let Some(v) = t.get("labels") {
        match &v.kind {
            Kind::Table(lt) => {
                for (name, e) in &lt.entries {
                    let key = join("match.labels", name);
                    if let Err(why) = validate_label_name(name) {
                        cx.error(e.key_span, &key, why);
                        ok = false;
                        continue;
                    }
                    match label_values(cx, &e.value, &key) {
                        Some(values) => {
                            labels.insert(name.clone(), values);
                        }
                        None => ok = false,
                    }
                }
            }
            _ => {
                cx.error(
                    v.span,
                    "match.labels",
                    "expected a table such as { role = \"kiosk\", site = [\"berlin\", \"paris\"] }",
                );
                ok = false;
            }
        }
    }
    let mut hosts = None;
    if let Some(v) = t.get("hosts") {
        match cx.strings(v, "match.hosts") {
            Some(list) if list.is_empty() => {
                cx.error(v.span, "match.hosts", "an empty list matches no host");
                ok = false;
            }
            Some(list) => {
                let items = cx.array(v, "match.hosts").unwrap_or_default();
                let mut clean = Vec::new();
                for (i, h) in list.iter().enumerate() {
                    let span = items.get(i).map_or(v.span, |n| n.span);
                    if let Err(why) = validate_host_id(h) {
                        cx.error(span, &index("match.hosts", i), why);
                        ok = false;
                    } else if clean.contains(h) {
                        cx.error(
                            span,
                            &index("match.hosts", i),
                            format!("{h:?} is listed twice"),
                        );
                        ok = false;
                    } else {
                        clean.push(h.clone());
                    }
                }
                clean.sort();
                hosts = Some(clean);
            }
            None => ok = false,
        }
    }
    ok.then_some(HostMatch { labels, hosts })
}

/// One value or a list of values, sorted.
fn label_values(cx: &mut Cx<'_>, v: &Node, key: &str) -> Option<Vec<String>> {
    let (mut values, spans): (Vec<String>, Vec<_>) = match &v.kind {
        Kind::Str(s) => (vec![s.clone()], vec![v.span]),
        Kind::Array(items) => {
            let list = cx.strings(v, key)?;
            if list.is_empty() {
                cx.error(v.span, key, "an empty list matches no host");
                return None;
            }
            (list, items.iter().map(|n| n.span).collect())
        }
        _ => {
            cx.error(
                v.span,
                key,
                format!(
                    "expected a string or an array of strings, found {}",
                    v.kind.describe()
                ),
            );
            return None;
        }
    };
    let mut ok = true;
    for (i, value) in values.iter().enumerate() {
        if let Err(why) = validate_label_value(value) {
            cx.error(spans[i], key, why);
            ok = false;
        }
    }
    values.sort();
    values.dedup();
    ok.then_some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: Option<&str>, labels: &[(&str, &str)]) -> HostFacts {
        HostFacts {
            host_id: id.map(str::to_string),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn m(labels: &[(&str, &[&str])], hosts: Option<&[&str]>) -> HostMatch {
        HostMatch {
            labels: labels
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
                .collect(),
            hosts: hosts.map(|h| h.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn every_name_must_match_and_a_list_means_any() {
        let sel = m(
            &[("role", &["kiosk"]), ("site", &["berlin", "paris"])],
            None,
        );
        assert!(sel.matches(&host(None, &[("role", "kiosk"), ("site", "paris")])));
        assert!(sel.matches(&host(
            Some("x"),
            &[("role", "kiosk"), ("site", "berlin"), ("extra", "1")]
        )));
        let why = sel
            .mismatch(&host(None, &[("role", "kiosk"), ("site", "rome")]))
            .unwrap();
        assert_eq!(why, "label site=rome is not one of \"berlin\", \"paris\"");
        let why = sel.mismatch(&host(None, &[("site", "paris")])).unwrap();
        assert_eq!(why, "label role is not set (match wants \"kiosk\")");
        assert!(HostMatch::default().matches(&host(None, &[])));
    }

    #[test]
    fn hosts_lists_need_a_host_id() {
        let sel = m(&[], Some(&["edge-1", "edge-2"]));
        assert!(sel.matches(&host(Some("edge-2"), &[])));
        assert!(!sel.matches(&host(Some("edge-3"), &[])));
        assert!(!sel.matches(&host(None, &[])));
        // Both kinds: both must hold.
        let both = m(&[("role", &["kiosk"])], Some(&["edge-1"]));
        assert!(both.matches(&host(Some("edge-1"), &[("role", "kiosk")])));
        assert!(!both.matches(&host(Some("edge-1"), &[("role", "till")])));
        assert!(!both.matches(&host(Some("edge-2"), &[("role", "kiosk")])));
    }

    #[test]
    fn overlap_is_false_only_when_provably_disjoint() {
        let a = m(&[("site", &["berlin"])], None);
        let b = m(&[("site", &["paris", "rome"])], None);
        let c = m(&[("site", &["rome", "berlin"])], None);
        let d = m(&[("role", &["kiosk"])], None);
        assert!(!a.may_share_host(&b) && !b.may_share_host(&a));
        assert!(a.may_share_host(&c) && b.may_share_host(&c));
        assert!(a.may_share_host(&d), "different names can meet on one host");
        let h1 = m(&[], Some(&["h1"]));
        let h2 = m(&[], Some(&["h2", "h3"]));
        assert!(!h1.may_share_host(&h2));
        assert!(h1.may_share_host(&HostMatch::default()));
        assert!(h1.may_share_host(&a), "h1 may carry site=berlin");
    }

    #[test]
    fn label_pairs() {
        let l = parse_label_pairs("role=kiosk,site=berlin").unwrap();
        assert_eq!(l["role"], "kiosk");
        assert_eq!(l["site"], "berlin");
        assert!(parse_label_pairs("").unwrap().is_empty());
        for bad in ["role", "=x", "a=", "a=1,a=2", "a b=1"] {
            assert!(parse_label_pairs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_values_ids() {
        assert!(validate_label_name("topology.kubernetes.io/zone").is_ok());
        assert!(validate_label_name("a=b").is_err());
        assert!(validate_label_value("x,y").is_err());
        assert!(validate_host_id("0123456789abcdef0123456789abcdef").is_ok());
        assert!(validate_host_id("edge 1").is_err());
        assert!(validate_host_id("").is_err());
    }
}
