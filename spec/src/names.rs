//! Rules for names users choose: container names (file stems) and the agent's instance.

/// A container's name is its file stem: a DNS label, because it becomes a hostname, a
/// directory and part of kernel object names.
pub fn validate_container_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid container name {name:?}: 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

/// An instance prefixes kernel object names (15-byte interface names among them), so it is
/// short and plain.
pub fn validate_instance(instance: &str) -> Result<(), String> {
    let ok = !instance.is_empty()
        && instance.len() <= 12
        && instance.as_bytes()[0].is_ascii_lowercase()
        && instance
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid instance {instance:?}: 1-12 characters of a-z, 0-9 and '-', starting with a letter"
        ))
    }
}

/// A network's name: what specs list in `networks` and what the network's kernel objects are
/// attributed to. `default` is the name of `[network]`.
pub fn validate_network_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if !ok {
        return Err(format!(
            "invalid network name {name:?}: 1-32 characters of a-z, 0-9 and '-', starting with a letter, not ending with '-'"
        ));
    }
    if name == crate::config::DEFAULT_NETWORK {
        return Err("\"default\" is the name of [network]; choose another name".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names() {
        for ok in ["web", "a", "web-1", "1web", &"a".repeat(63)] {
            assert!(validate_container_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Web", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(validate_container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn network_names() {
        for ok in ["backend", "b2", "front-end"] {
            assert!(validate_network_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Back", "1net", "a_b", "a-", "default", &"a".repeat(33)] {
            assert!(validate_network_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instances() {
        assert!(validate_instance("berth").is_ok());
        assert!(validate_instance("t-1").is_ok());
        for bad in ["", "1a", "Berth", "a_b", "abcdefghijklm"] {
            assert!(validate_instance(bad).is_err(), "{bad}");
        }
    }
}
