//! Platforms (`linux/arm64/v8`) and the matcher that picks an index entry for this host.
//!
//! Written by hand because variants matter on the edge: an arm/v7 host can run v6 and v5
//! images but not v8, arm64 images may or may not say `v8`, and an amd64 host with AVX2 can run
//! `amd64/v3` builds. The matcher is pure: the host platform comes in as a value.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An OCI platform, normalised (`aarch64` -> `arm64/v8`, `armhf` -> `arm/v7`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        normalize(os, architecture, variant)
    }

    /// This host's platform, as images name it.
    pub fn host() -> Self {
        Platform::new("linux", host_arch(), host_variant().as_deref())
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let arch = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next();
        if parts.next().is_some() {
            return None;
        }
        Some(Platform::new(os, arch, variant))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
fn host_arch() -> &'static str {
    "amd64"
}
#[cfg(target_arch = "aarch64")]
fn host_arch() -> &'static str {
    "arm64"
}
#[cfg(target_arch = "arm")]
fn host_arch() -> &'static str {
    "arm"
}
#[cfg(target_arch = "x86")]
fn host_arch() -> &'static str {
    "386"
}
#[cfg(target_arch = "riscv64")]
fn host_arch() -> &'static str {
    "riscv64"
}
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "x86",
    target_arch = "riscv64"
)))]
fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

/// The x86-64 micro-architecture level this CPU reaches (v1..v3), as Go's GOAMD64 names them.
#[cfg(target_arch = "x86_64")]
fn host_variant() -> Option<String> {
    let v2 = std::arch::is_x86_feature_detected!("sse4.2")
        && std::arch::is_x86_feature_detected!("popcnt")
        && std::arch::is_x86_feature_detected!("ssse3");
    let v3 = v2
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("fma");
    Some(
        if v3 {
            "v3"
        } else if v2 {
            "v2"
        } else {
            "v1"
        }
        .to_string(),
    )
}
#[cfg(target_arch = "aarch64")]
fn host_variant() -> Option<String> {
    Some("v8".into())
}
/// 32-bit arm: v7 when built for ARMv7 (armhf), else v6 (armel on a Raspberry Pi 1 / Zero).
#[cfg(target_arch = "arm")]
fn host_variant() -> Option<String> {
    if cfg!(target_feature = "v7") {
        Some("v7".into())
    } else {
        Some("v6".into())
    }
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
fn host_variant() -> Option<String> {
    None
}

/// Maps the many spellings to the OCI ones: `x86_64`/`x86-64` -> `amd64`, `aarch64` -> `arm64`
/// (variant `v8` when absent or `8`), `armhf` -> `arm/v7`, `armel` -> `arm/v6`, `i386` -> `386`,
/// `7` -> `v7`.
pub fn normalize(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
    let os = os.to_ascii_lowercase();
    let variant = variant
        .filter(|v| !v.is_empty())
        .map(|v| v.to_ascii_lowercase());
    let (arch, variant) = match architecture.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" | "amd64" => ("amd64", variant),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_deref() {
                None | Some("8") | Some("v8") => Some("v8".to_string()),
                _ => variant,
            },
        ),
        "armhf" => ("arm", Some("v7".to_string())),
        "armel" => ("arm", Some("v6".to_string())),
        "arm" => ("arm", variant),
        "i386" | "i486" | "i586" | "i686" | "386" => ("386", variant),
        other => {
            return Platform {
                os,
                architecture: other.to_string(),
                variant: variant.map(|v| with_v(&v)),
            };
        }
    };
    Platform {
        os,
        architecture: arch.to_string(),
        variant: variant.map(|v| with_v(&v)),
    }
}

fn with_v(v: &str) -> String {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        format!("v{v}")
    } else {
        v.to_string()
    }
}

/// The level of a `vN` variant; `None` for anything else.
fn level(variant: Option<&str>) -> Option<u32> {
    variant?.strip_prefix('v')?.parse().ok()
}

/// How well `offered` suits a host of platform `host`: `None` if it cannot run there, else a
/// score where higher is better (the newest variant the host can run).
pub fn score(host: &Platform, offered: &Platform) -> Option<u32> {
    if host.os != offered.os || host.architecture != offered.architecture {
        return None;
    }
    match host.architecture.as_str() {
        // Levels are backwards compatible: a v7 host runs v5..v7, an amd64/v3 host runs v1..v3.
        // An absent variant means the baseline.
        "arm" | "amd64" => {
            let baseline = if host.architecture == "arm" { 5 } else { 1 };
            let host_level = level(host.variant.as_deref()).unwrap_or(baseline);
            let offered_level = match offered.variant.as_deref() {
                None => baseline,
                Some(_) => level(offered.variant.as_deref())?,
            };
            (offered_level <= host_level).then_some(offered_level)
        }
        // arm64 variants are normalised to v8; v9 hosts run v8 code.
        "arm64" => {
            let host_level = level(host.variant.as_deref()).unwrap_or(8);
            let offered_level = level(offered.variant.as_deref()).unwrap_or(8);
            (offered_level <= host_level).then_some(offered_level)
        }
        _ => (host.variant == offered.variant || offered.variant.is_none()).then_some(0),
    }
}

/// The index of the best entry of `offered` for `host`: the highest score, and among equals the
/// first (registries list the preferred manifest first).
pub fn select(host: &Platform, offered: &[Platform]) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (i, p) in offered.iter().enumerate() {
        if let Some(s) = score(host, p)
            && best.is_none_or(|(_, b)| s > b)
        {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn normalises_spellings() {
        assert_eq!(p("linux/aarch64"), p("linux/arm64/v8"));
        assert_eq!(p("linux/arm64"), p("linux/arm64/v8"));
        assert_eq!(p("linux/arm64/8"), p("linux/arm64/v8"));
        assert_eq!(p("linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("linux/armhf"), p("linux/arm/v7"));
        assert_eq!(p("linux/armel"), p("linux/arm/v6"));
        assert_eq!(p("linux/arm/7"), p("linux/arm/v7"));
        assert_eq!(p("linux/i686"), p("linux/386"));
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("a/b/c/d").is_none());
    }

    #[test]
    fn picks_per_host() {
        let offered = vec![
            p("linux/amd64"),
            p("linux/arm64/v8"),
            p("linux/arm/v6"),
            p("linux/arm/v7"),
            p("unknown/unknown"),
            p("windows/amd64"),
        ];
        assert_eq!(select(&p("linux/amd64/v2"), &offered), Some(0));
        assert_eq!(select(&p("linux/arm64/v8"), &offered), Some(1));
        assert_eq!(select(&p("linux/arm64"), &offered), Some(1));
        assert_eq!(select(&p("linux/arm/v7"), &offered), Some(3));
        assert_eq!(select(&p("linux/arm/v6"), &offered), Some(2));
        assert_eq!(select(&p("linux/arm/v5"), &offered), None);
        assert_eq!(select(&p("linux/riscv64"), &offered), None);
    }

    #[test]
    fn arm64_without_variant_matches() {
        let offered = vec![p("linux/amd64"), Platform::new("linux", "arm64", None)];
        assert_eq!(select(&p("linux/arm64/v8"), &offered), Some(1));
    }

    #[test]
    fn amd64_levels() {
        let offered = vec![p("linux/amd64/v3"), p("linux/amd64/v2"), p("linux/amd64")];
        assert_eq!(select(&p("linux/amd64/v3"), &offered), Some(0));
        assert_eq!(select(&p("linux/amd64/v2"), &offered), Some(1));
        assert_eq!(select(&p("linux/amd64/v1"), &offered), Some(2));
        assert_eq!(select(&p("linux/amd64/v1"), &offered[..2]), None);
    }

    #[test]
    fn v7_host_never_takes_v8_or_arm64() {
        let offered = vec![p("linux/arm/v8"), p("linux/arm64")];
        assert_eq!(select(&p("linux/arm/v7"), &offered), None);
    }

    #[test]
    fn host_is_normalised() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert_eq!(h, normalize(&h.os, &h.architecture, h.variant.as_deref()));
    }

    fn arb_platform() -> impl Strategy<Value = Platform> {
        (
            prop::sample::select(vec!["linux", "windows"]),
            prop::sample::select(vec!["amd64", "arm64", "arm", "386", "s390x"]),
            prop::option::of(prop::sample::select(vec![
                "v1", "v2", "v3", "v5", "v6", "v7", "v8",
            ])),
        )
            .prop_map(|(o, a, v)| Platform::new(o, a, v))
    }

    proptest! {
        #[test]
        fn selection_is_a_best_match(host in arb_platform(), offered in prop::collection::vec(arb_platform(), 0..8)) {
            match select(&host, &offered) {
                Some(i) => {
                    let s = score(&host, &offered[i]).unwrap();
                    prop_assert_eq!(&offered[i].os, &host.os);
                    prop_assert_eq!(&offered[i].architecture, &host.architecture);
                    for (j, o) in offered.iter().enumerate() {
                        if let Some(t) = score(&host, o) {
                            prop_assert!(t < s || (t == s && j >= i));
                        }
                    }
                }
                None => prop_assert!(offered.iter().all(|o| score(&host, o).is_none())),
            }
        }

        #[test]
        fn exact_platform_always_runs(host in arb_platform()) {
            prop_assert!(score(&host, &host).is_some());
        }
    }
}
