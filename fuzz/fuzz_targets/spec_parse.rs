//! Any bytes as a spec file (and, split at a NUL, a drop-in): the parser never panics, and a
//! spec it accepts renders to TOML that parses back to the same spec and hash.
#![no_main]

use std::path::Path;

use berth_spec::{SourceFile, parse_spec, parse_spec_str, render_toml, spec_hash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (base, dropin) = match text.split_once('\0') {
        Some((b, d)) => (b, Some(d)),
        None => (text, None),
    };
    let mut files = vec![SourceFile::new("/specs/f.toml", base)];
    if let Some(d) = dropin {
        files.push(SourceFile::new("/specs/f.toml.d/10.toml", d));
    }
    let result = parse_spec("f", &files, &mut |_: &Path| Ok("A=1\n".to_string()));
    if let Ok(parsed) = result {
        let mut spec = berth_spec::ContainerSpec::clone(&parsed.spec);
        // Env files were read through the callback; render without them to compare alone.
        spec.extra.env_files.clear();
        let rendered = render_toml(&spec);
        let again = parse_spec_str("f", Path::new("f.toml"), &rendered)
            .unwrap_or_else(|d| panic!("rendered spec does not parse:\n{rendered}\n{d:?}"))
            .spec;
        assert_eq!(*again, spec, "round trip changed the spec:\n{rendered}");
        assert_eq!(spec_hash(&again), spec_hash(&spec));
    }
    let _ = berth_spec::Config::parse(Path::new("berth.toml"), base);
});
