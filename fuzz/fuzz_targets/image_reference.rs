//! Any string as an image reference: parsing never panics, and an accepted reference prints
//! to a string that parses back to the same reference (normalisation is idempotent).
#![no_main]

use berth_spec::ImageSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(src) = ImageSource::parse(s) {
        let printed = src.to_string();
        let again = ImageSource::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?} which does not parse: {e}"));
        assert_eq!(again, src, "{s:?} -> {printed:?}");
    }
});
