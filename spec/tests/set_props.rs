//! The checks across a directory of specs for networks, against a model: `network =
//! "container:x"` names a spec that exists and has a namespace of its own, a static address is
//! asked for once, and a chain of sidecars that comes back to itself is a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use berth_spec::{check_set, parse_spec_str};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Mode {
    Bridge,
    Host,
    None,
    /// container:s<k>; k may name no spec.
    Container(usize),
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Bridge),
        Just(Mode::Host),
        Just(Mode::None),
        (0..6usize).prop_map(Mode::Container),
    ]
}

fn text(i: usize, mode: &Mode, ip: Option<u8>) -> String {
    let mut t = "image = \"busybox:1\"\n".to_string();
    match mode {
        Mode::Bridge => {
            if let Some(o) = ip {
                t += &format!("ip = \"10.213.0.{o}\"\n");
            }
        }
        Mode::Host => t += "network = \"host\"\n",
        Mode::None => t += "network = \"none\"\n",
        Mode::Container(k) => {
            // A spec never joins itself (the parser refuses that on its own).
            let k = if *k == i { i + 1 } else { *k };
            t += &format!("network = \"container:s{k}\"\n");
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn network_checks_across_specs(
        specs in prop::collection::vec((mode(), prop::option::of(1u8..4)), 1..6),
    ) {
        let mut set = BTreeMap::new();
        let mut modes: BTreeMap<String, Mode> = BTreeMap::new();
        let mut ips: BTreeMap<u8, usize> = BTreeMap::new();
        for (i, (m, ip)) in specs.iter().enumerate() {
            let name = format!("s{i}");
            let m = match m {
                Mode::Container(k) if *k == i => Mode::Container(i + 1),
                other => other.clone(),
            };
            if let (Mode::Bridge, Some(o)) = (&m, ip) {
                *ips.entry(*o).or_default() += 1;
            }
            let parsed = parse_spec_str(&name, Path::new(&format!("{name}.toml")), &text(i, &m, *ip));
            prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
            set.insert(name.clone(), parsed);
            modes.insert(name, m);
        }
        let diags: Vec<String> = check_set(&set).iter().map(ToString::to_string).collect();
        let count = |needle: &str| diags.iter().filter(|d| d.contains(needle)).count();

        // The model.
        let mut missing = 0;
        let mut joins_host = 0;
        let mut joins_sidecar = 0;
        for m in modes.values() {
            if let Mode::Container(k) = m {
                match modes.get(&format!("s{k}")) {
                    None => missing += 1,
                    Some(Mode::Host) => joins_host += 1,
                    Some(Mode::Container(_)) => joins_sidecar += 1,
                    _ => {}
                }
            }
        }
        let twice: usize = ips.values().map(|n| n.saturating_sub(1)).sum();
        // Cycles: follow each sidecar's edge; a walk that meets itself is one.
        let mut in_cycle = BTreeSet::new();
        for start in modes.keys() {
            let mut seen = vec![start.clone()];
            let mut at = start.clone();
            while let Some(Mode::Container(k)) = modes.get(&at) {
                let next = format!("s{k}");
                if !modes.contains_key(&next) {
                    break;
                }
                if let Some(pos) = seen.iter().position(|s| *s == next) {
                    in_cycle.extend(seen[pos..].iter().cloned());
                    break;
                }
                seen.push(next.clone());
                at = next;
            }
        }

        prop_assert_eq!(count("no spec file for container"), missing, "{:#?}", diags);
        prop_assert_eq!(count("uses the host's network"), joins_host, "{:#?}", diags);
        prop_assert_eq!(count("itself joins"), joins_sidecar, "{:#?}", diags);
        prop_assert_eq!(count("is also asked for by"), twice, "{:#?}", diags);
        prop_assert_eq!(count("dependency cycle"), in_cycle.len(), "{:#?}", diags);
    }
}
