//! Durations (`"10s"`, `"1m30s"`, `"500ms"`) and sizes (`"256MiB"`, `"256m"`, `"1G"`).
//!
//! Sizes read as Docker reads `--memory`: a bare `k`/`m`/`g`/`t` suffix, either case, is binary
//! (1024-based), and so are the IEC `KiB`/`MiB`/`GiB`/`TiB`. The decimal `KB`/`MB`/`GB` are
//! refused with a hint, because Docker users read them as binary while the SI reading is not.

use std::fmt::Write as _;
use std::time::Duration;

/// Parses `"1h"`, `"1m30s"`, `"250ms"`, `"2d"`; a bare `"0"` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number at {rest:?} (e.g. \"10s\", \"1m30s\")"
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: bad number {:?}", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit after {number} (ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (ms, s, m, h or d)"
                ));
            }
        };
        let part = Duration::try_from_secs_f64(number * seconds)
            .map_err(|_| format!("invalid duration {s:?}: out of range"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("invalid duration {s:?}: out of range"))?;
    }
    // Milliseconds are the finest unit kept, so that a duration prints back exactly
    // (and `0.3s`, which is 0.29999... in binary, means 300ms).
    let ms = (total.as_nanos() + 500_000) / 1_000_000;
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| format!("invalid duration {s:?}: out of range"))
}

/// The canonical form of a duration: `1m30s`, `250ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= len {
            let _ = write!(out, "{}{unit}", ms / len);
            ms %= len;
        }
    }
    out
}

/// Parses a size in bytes as Docker does; see the module comment.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    if digits == 0 {
        return Err(format!(
            "invalid size {s:?}: expected a number such as \"256MiB\" or \"1g\""
        ));
    }
    let number: f64 = t[..digits]
        .parse()
        .map_err(|_| format!("invalid size {s:?}: bad number"))?;
    let unit = t[digits..].trim();
    let shift = match unit {
        "" | "b" | "B" => 0,
        "k" | "K" | "KiB" | "kib" | "Kib" => 10,
        "m" | "M" | "MiB" | "mib" | "Mib" => 20,
        "g" | "G" | "GiB" | "gib" | "Gib" => 30,
        "t" | "T" | "TiB" | "tib" | "Tib" => 40,
        "kb" | "KB" | "kB" | "mb" | "MB" | "gb" | "GB" | "tb" | "TB" => {
            let iec = format!("{}iB", unit[..1].to_uppercase());
            return Err(format!(
                "invalid size {s:?}: decimal unit {unit:?} is ambiguous; write {}{iec} (binary, as Docker reads it) or a byte count",
                &t[..digits]
            ));
        }
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use k, m, g, KiB, MiB, GiB)"
            ));
        }
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: too large"));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("invalid size {s:?}: not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// Parses a transfer rate: a size per second, `"2MiB/s"`, `"512k/s"`, `"1000000/s"`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let Some(size) = s.trim().strip_suffix("/s") else {
        return Err(format!(
            "invalid rate {s:?}: expected a size per second such as \"2MiB/s\""
        ));
    };
    let bytes = parse_size(size).map_err(|e| format!("invalid rate {s:?}: {e}"))?;
    if bytes == 0 {
        return Err(format!("invalid rate {s:?}: must be more than zero"));
    }
    Ok(bytes)
}

/// The canonical form of a size: the largest IEC unit that divides it, `256MiB`, `1536KiB`.
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}")
}

/// Serialises a `Duration` as its canonical string.
pub mod duration_serde {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Serialises an `Option<Duration>` as its canonical string or null.
pub mod opt_duration_serde {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0.3s").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("1.0004s").unwrap(), Duration::from_secs(1));
        for bad in ["", "10", "s", "10x", "1m30", "-1s", "1 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in ["1m30s", "250ms", "0s", "1d2h3m4s5ms"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2MiB/s"), Ok(2 << 20));
        assert_eq!(parse_rate("512k/s"), Ok(512 << 10));
        assert_eq!(parse_rate("1000/s"), Ok(1000));
        assert!(parse_rate("2MiB").unwrap_err().contains("per second"));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("2MB/s").unwrap_err().contains("ambiguous"));
        assert!(parse_rate("/s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256m").unwrap(), 256 << 20);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        let e = parse_size("256MB").unwrap_err();
        assert!(e.contains("256MiB"), "{e}");
        for bad in ["", "MiB", "1x", "0.3b", "-1m"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1536 << 10), "1536KiB");
        assert_eq!(format_size(100), "100");
    }
}
