//! How a spec is held in memory, and that holding it compactly changed nothing it means: the
//! recreate hash of every spec and the `spec.json` agents wrote before stay as they were.

use std::path::Path;

use berth_spec::{ContainerSpec, parse_spec_str, spec_hash};

/// A spec setting every key that is in `extra`, and more.
const RICH: &str = include_str!("spec_json/rich.toml");
/// `RICH` as `spec.json`, written by berth before `extra` and the compact `env` (commit
/// 303d709): what an agent finds in its state dir after an upgrade.
const RICH_BEFORE_EXTRA: &str = include_str!("spec_json/rich.before-extra.json");
/// The spec of the bench's `specs` scenario.
const BENCH: &str = "image = \"registry.invalid/berth-bench-absent:42\"\npull = \"never\"\n\
                     state = \"stopped\"\ncommand = [\"/bin/app\", \"--id\", \"42\"]\n[env]\n\
                     APP_ID = \"42\"\nREGION = \"eu\"\n";

fn parse(text: &str) -> ContainerSpec {
    match parse_spec_str("web", Path::new("web.toml"), text) {
        Ok(p) => ContainerSpec::clone(&p.spec),
        Err(d) => panic!("{text}\n{d:#?}"),
    }
}

/// A changed hash recreates every container of every host on upgrade: these are the hashes
/// berth computed before the layout changed (at 303d709).
#[test]
fn recreate_hashes_are_pinned() {
    for (text, hash) in [
        (
            "image = \"nginx:1.27\"\n",
            "sha256:8d0c8b91995c5a28a8a6eabb3e913b1a8798306c0603bda5234f151692b0d6cf",
        ),
        (
            BENCH,
            "sha256:96b0eb2b130b82e875f2263f947b3ddbe81fd725ebea9f0cacef755c0d50387d",
        ),
        (
            RICH,
            "sha256:d3ce5dfe7064f25e7b9978486a7333b55880cbfcfd61b82017dd54bb94847339",
        ),
    ] {
        assert_eq!(spec_hash(&parse(text)), hash, "{text}");
    }
}

#[test]
fn spec_json_written_before_the_compact_layout_reads_back() {
    let rich = parse(RICH);
    let old: ContainerSpec = serde_json::from_str(RICH_BEFORE_EXTRA).unwrap();
    assert_eq!(old, rich);
    // And what is written now reads back the same (key order aside, the same document).
    let now = serde_json::to_string(&rich).unwrap();
    assert_eq!(serde_json::from_str::<ContainerSpec>(&now).unwrap(), rich);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&now).unwrap(),
        serde_json::from_str::<serde_json::Value>(RICH_BEFORE_EXTRA).unwrap()
    );
}

/// An agent holds every spec it knows; most set few keys. Such a spec holds no `extra`, and
/// the struct itself stays small (it was 864 bytes with every key inline).
#[test]
fn a_spec_of_common_keys_is_small() {
    assert!(parse(BENCH).extra.is_default());
    assert!(parse("image = \"nginx:1.27\"\n").extra.is_default());
    let rich = parse(RICH);
    assert!(!rich.extra.is_default());
    // One key of `extra` set holds them all, the others at their defaults.
    let one = parse("image = \"nginx:1.27\"\nhostname = \"h\"\n");
    assert!(!one.extra.is_default());
    assert_eq!(one.extra.hostname.as_deref(), Some("h"));
    assert_eq!(
        one.extra.stop_timeout,
        berth_spec::model::DEFAULT_STOP_TIMEOUT
    );
    let size = std::mem::size_of::<ContainerSpec>();
    assert!(
        size <= 256,
        "ContainerSpec is {size} bytes: a key most specs leave at its default belongs in \
         ExtraKeys"
    );
}
