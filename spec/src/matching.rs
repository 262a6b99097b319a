//! Host identity rules: what a host id and a host label may be.
//!
//! The same rules (and names) as the fleet source's `[match]` uses, so a host's `host_id` and
//! `[labels]` mean one thing to the matcher and to the reporters.

/// A label name, as `[labels]` keys it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_labels() {
        assert!(validate_host_id("edge-0042").is_ok());
        assert!(validate_host_id("0123456789abcdef0123456789abcdef").is_ok());
        for bad in ["", "a b", "a\nb", &"x".repeat(254)] {
            assert!(validate_host_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_label_name("site").is_ok());
        assert!(validate_label_name("example.com/tier").is_ok());
        assert!(validate_label_name("a b").is_err());
        assert!(validate_label_value("berlin").is_ok());
        assert!(validate_label_value("a,b").is_err());
        assert!(validate_label_value("").is_err());
    }
}
