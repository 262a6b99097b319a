//! Any bytes as an image config blob: parsing never panics, and an accepted config has only
//! well-formed diff ids (they become directory names) and a platform berth can score.
#![no_main]

use berth_agent::registry::platform;
use berth_agent::store::image_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = match image_config::parse(data) {
        Ok(p) => p,
        Err(e) => {
            // Errors end up in `berth status`: short, not a dump of the input.
            assert!(e.len() < 1024, "error message of {} bytes", e.len());
            return;
        }
    };
    for d in &parsed.diff_ids {
        let hex = d
            .as_str()
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("accepted diff id {d:?}"));
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "accepted diff id {d:?}"
        );
        assert!(!hex.contains('/') && !hex.contains(".."));
    }
    let _ = platform::score(&platform::Platform::host(), &parsed.platform);
    assert_eq!(parsed.config.os, parsed.platform.os);
    if let Some(h) = &parsed.config.healthcheck {
        for d in [h.interval, h.timeout, h.start_period]
            .into_iter()
            .flatten()
        {
            assert!(!d.is_zero(), "a zero duration means unset and must be None");
        }
    }
});
