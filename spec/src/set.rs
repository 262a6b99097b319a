//! Checks across the specs of one directory: host ports published twice, static addresses
//! asked for twice, `depends_on` or `network = "container:x"` naming a container that has no
//! file (or x sharing another's network itself), and dependency cycles (a sidecar depends on
//! the container whose network it joins).

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{self, Diagnostic};
use crate::parse::{Location, ParsedSpec};
use crate::ports;

/// Checks a whole set. `specs` holds every spec file by name, valid or not: a name whose file
/// failed to parse still exists (depending on it is fine), its contents are just not checked.
pub fn check_set<E>(specs: &BTreeMap<String, Result<ParsedSpec, E>>) -> Vec<Diagnostic> {
    let valid: BTreeMap<&str, &ParsedSpec> = specs
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|p| (n.as_str(), p)))
        .collect();
    let mut diags = Vec::new();
    port_conflicts(&valid, &mut diags);
    address_conflicts(&valid, &mut diags);
    missing_dependencies(specs, &valid, &mut diags);
    shared_namespaces(specs, &valid, &mut diags);
    cycles(&valid, &mut diags);
    diag::sort(&mut diags);
    diags
}

fn at(loc: &Location, key: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: loc.file.clone(),
        line: loc.line,
        column: loc.column,
        key: key.to_string(),
        message,
    }
}

fn port_conflicts(valid: &BTreeMap<&str, &ParsedSpec>, diags: &mut Vec<Diagnostic>) {
    // Bucket by (port, protocol) so the check stays linear in the number of mappings.
    let mut by_port: BTreeMap<_, Vec<(&str, usize)>> = BTreeMap::new();
    for (name, p) in valid {
        for (i, m) in p.spec.extra.ports.iter().enumerate() {
            by_port
                .entry((m.host, m.protocol))
                .or_default()
                .push((name, i));
        }
    }
    for entries in by_port.values().filter(|e| e.len() > 1) {
        for (j, &(name, i)) in entries.iter().enumerate() {
            let m = valid[name].spec.extra.ports[i];
            let earlier = entries[..j].iter().find(|&&(other, k)| {
                other != name
                    && ports::ips_overlap(m.host_ip, valid[other].spec.extra.ports[k].host_ip)
                    && valid[name]
                        .spec
                        .extra
                        .host_match
                        .may_share_host(&valid[other].spec.extra.host_match)
            });
            if let Some(&(other, k)) = earlier {
                let o = &valid[other];
                let loc = &o.places().port_places[k];
                diags.push(at(
                    &valid[name].places().port_places[i],
                    "ports",
                    format!(
                        "host port {}/{} ({}) is also published by {other} ({}:{}:{}: {})",
                        m.host,
                        m.protocol.as_str(),
                        ports::format(&m),
                        loc.file.display(),
                        loc.line,
                        loc.column,
                        ports::format(&o.spec.extra.ports[k]),
                    ),
                ));
            }
        }
    }
}

fn address_conflicts(valid: &BTreeMap<&str, &ParsedSpec>, diags: &mut Vec<Diagnostic>) {
    let mut first: BTreeMap<std::net::IpAddr, (&str, &Location)> = BTreeMap::new();
    for (name, p) in valid {
        for (ip, loc) in &p.places().ip_places {
            match first.get(ip) {
                Some((other, there)) => diags.push(at(
                    loc,
                    "ip",
                    format!(
                        "address {ip} is also asked for by {other} ({}:{}:{})",
                        there.file.display(),
                        there.line,
                        there.column
                    ),
                )),
                None => {
                    first.insert(*ip, (name, loc));
                }
            }
        }
    }
}

/// `network = "container:x"`: x has a spec file, and runs in a namespace of its own.
fn shared_namespaces<E>(
    all: &BTreeMap<String, Result<ParsedSpec, E>>,
    valid: &BTreeMap<&str, &ParsedSpec>,
    diags: &mut Vec<Diagnostic>,
) {
    use crate::model::NetworkMode;
    for p in valid.values() {
        let (NetworkMode::Container(of), Some(loc)) = (&p.spec.network, &p.places().network_place)
        else {
            continue;
        };
        if !all.contains_key(of) {
            let names: Vec<&str> = all.keys().map(String::as_str).collect();
            let hint = diag::did_you_mean(of, &names)
                .map(|m| format!(" (did you mean {m:?}?)"))
                .unwrap_or_default();
            diags.push(at(
                loc,
                "network",
                format!("no spec file for container {of:?}{hint}"),
            ));
            continue;
        }
        let why = match valid.get(of.as_str()).map(|o| &o.spec.network) {
            Some(NetworkMode::Host) => format!(
                "container {of:?} uses the host's network: write network = \"host\" instead"
            ),
            Some(NetworkMode::Container(root)) => format!(
                "container {of:?} itself joins {root:?}'s network: write network = \"container:{root}\""
            ),
            _ => continue,
        };
        diags.push(at(loc, "network", why));
    }
}

fn missing_dependencies<E>(
    all: &BTreeMap<String, Result<ParsedSpec, E>>,
    valid: &BTreeMap<&str, &ParsedSpec>,
    diags: &mut Vec<Diagnostic>,
) {
    for p in valid.values() {
        for (d, loc) in p
            .spec
            .extra
            .depends_on
            .iter()
            .zip(&p.places().dependency_places)
        {
            if !all.contains_key(&d.name) {
                let names: Vec<&str> = all.keys().map(String::as_str).collect();
                let hint = diag::did_you_mean(&d.name, &names)
                    .map(|m| format!(" (did you mean {m:?}?)"))
                    .unwrap_or_default();
                diags.push(at(
                    loc,
                    "depends_on",
                    format!("no spec file for container {:?}{hint}", d.name),
                ));
            }
        }
    }
}

/// Reports each dependency cycle once per member, at that member's edge into the cycle.
fn cycles(valid: &BTreeMap<&str, &ParsedSpec>, diags: &mut Vec<Diagnostic>) {
    use crate::model::NetworkMode;
    let edges = |n: &str| -> Vec<&str> {
        let spec = &valid[n].spec;
        let joined = match &spec.network {
            NetworkMode::Container(of) => Some(of.as_str()),
            _ => None,
        };
        let mut e: Vec<&str> = spec
            .extra
            .depends_on
            .iter()
            .map(|d| d.name.as_str())
            .chain(joined)
            .filter(|d| valid.contains_key(d))
            .collect();
        e.dedup();
        e
    };
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    // Iterative DFS with colours: white (absent), grey (on the stack), black (done).
    let mut black: BTreeSet<&str> = BTreeSet::new();
    for &start in valid.keys() {
        if black.contains(start) {
            continue;
        }
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, edges(start))];
        let mut on_stack: Vec<&str> = vec![start];
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            match next.pop() {
                Some(m) if on_stack.contains(&m) => {
                    let pos = on_stack.iter().position(|x| *x == m).expect("on stack");
                    let cycle: Vec<&str> = on_stack[pos..].to_vec();
                    let path = cycle
                        .iter()
                        .chain(std::iter::once(&m))
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" -> ");
                    for (i, member) in cycle.iter().enumerate() {
                        if !reported.insert(member) {
                            continue;
                        }
                        let succ = cycle.get(i + 1).copied().unwrap_or(m);
                        let p = valid[member];
                        // The edge is a `depends_on` entry, or the network it joins.
                        let place =
                            match p.spec.extra.depends_on.iter().position(|d| d.name == succ) {
                                Some(j) => Some((&p.places().dependency_places[j], "depends_on")),
                                None => p.places().network_place.as_ref().map(|l| (l, "network")),
                            };
                        if let Some((loc, key)) = place {
                            diags.push(at(loc, key, format!("dependency cycle: {path}")));
                        }
                    }
                }
                Some(m) if !black.contains(m) => {
                    on_stack.push(m);
                    stack.push((m, edges(m)));
                }
                Some(_) => {}
                None => {
                    black.insert(node);
                    on_stack.pop();
                    stack.pop();
                }
            }
        }
    }
}
