//! Any bytes as a registry manifest or index (with any of the Content-Types a registry may send):
//! parsing never panics; an accepted image manifest only names layer types berth can decode;
//! platform selection over an accepted index picks an entry that exists.
#![no_main]

use berth_agent::registry::manifest::{Compression, Descriptor, Manifest};
use berth_agent::registry::platform::{self, Platform};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("text/plain; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ct = CONTENT_TYPES[sel as usize % CONTENT_TYPES.len()];
    match Manifest::parse(body, ct) {
        Ok(Manifest::Image(m)) => {
            for l in &m.layers {
                assert!(
                    Compression::of_media_type(&l.media_type).is_some(),
                    "accepted a layer type berth cannot decode: {:?}",
                    l.media_type
                );
            }
        }
        Ok(Manifest::Index(idx)) => {
            let offered: Vec<Platform> = idx
                .manifests
                .iter()
                .map(Descriptor::platform_or_unknown)
                .collect();
            for want in [
                Platform::host(),
                Platform::new("linux", "arm", Some("v7")),
                Platform::new("linux", "arm64", None),
            ] {
                if let Some(i) = platform::select(&want, &offered) {
                    assert!(i < offered.len());
                    assert!(platform::score(&want, &offered[i]).is_some());
                }
            }
            for p in &offered {
                // Display then parse: a platform berth prints must read back.
                let shown = p.to_string();
                let _ = Platform::parse(&shown);
            }
        }
        Err(e) => {
            // Errors end up in `berth status`: one line, not a dump of the input.
            let msg = e.to_string();
            assert!(msg.len() < 4096, "error message of {} bytes", msg.len());
        }
    }
});
