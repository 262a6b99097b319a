//! Content digests: `sha256:` and 64 lower-case hex digits, the only form registries use.
//!
//! A [`Digest`] exists only once its text was checked, so the store can make a file name of
//! its hex part: a digest a registry, an archive or a record on disk names reaches a path only
//! through this type. It serialises as the same string it was parsed from, so every on-disk and
//! wire format that held a `String` holds a `Digest` unchanged.
//!
//! [`DiffId`] is a layer's uncompressed digest (the image config's `rootfs.diff_ids`): the
//! store keys unpacked layers by it and blobs by their [`Digest`], and the two types keep a
//! layer's blob digest and its diff id from being mixed up.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const PREFIX: &str = "sha256:";

/// A validated `sha256:<64 hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Checks untrusted text: `sha256:` followed by 64 lower-case hex digits.
    pub fn parse(s: &str) -> Result<Digest, String> {
        Self::check(s)?;
        Ok(Digest(s.to_string()))
    }

    fn check(d: &str) -> Result<(), String> {
        let Some(hex) = d.strip_prefix(PREFIX) else {
            return Err(format!(
                "unsupported digest {:?}: only sha256 is accepted",
                clip(d)
            ));
        };
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "invalid digest {:?}: sha256 needs 64 lower-case hex digits",
                clip(d)
            ));
        }
        Ok(())
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    /// From a finished sha256 (a hasher that saw a stream).
    pub fn from_sha256(hash: [u8; 32]) -> Digest {
        Digest(format!("{PREFIX}{}", hex::encode(hash)))
    }

    /// From a store file name (the hex part alone), as the store names blobs and layers.
    pub fn from_hex(hex: &str) -> Result<Digest, String> {
        Self::parse(&format!("{PREFIX}{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits: what the store names a file or dir by. Never contains `/` or `.`.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }
}

/// Text that is not a digest may be anything, megabytes included: an error quotes a little.
fn clip(s: &str) -> String {
    const MAX: usize = 100;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Digest, String> {
        Self::check(&s)?;
        Ok(Digest(s))
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl std::str::FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Digest, String> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Digest> for String {
    fn eq(&self, other: &Digest) -> bool {
        *self == other.0
    }
}

impl PartialEq<Digest> for &str {
    fn eq(&self, other: &Digest) -> bool {
        *self == other.0
    }
}

/// A layer's diff id: the digest of its uncompressed tar stream, which names its unpacked dir.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DiffId(Digest);

impl DiffId {
    pub fn new(d: Digest) -> DiffId {
        DiffId(d)
    }

    pub fn parse(s: &str) -> Result<DiffId, String> {
        Digest::parse(s).map(DiffId)
    }

    pub fn as_digest(&self) -> &Digest {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The 64 hex digits: the unpacked layer's dir name.
    pub fn hex(&self) -> &str {
        self.0.hex()
    }
}

impl fmt::Display for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq<str> for DiffId {
    fn eq(&self, other: &str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<&str> for DiffId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn only_sha256_with_64_lower_hex_digits() {
        let d = Digest::parse(D).unwrap();
        assert_eq!(d.as_str(), D);
        assert_eq!(d.hex(), &D[7..]);
        assert_eq!(d, D);
        for bad in [
            "",
            "sha256:",
            "sha512:0123",
            "md5:x",
            &D[7..],
            &D[..70],
            &format!("{D}0"),
            &D.to_uppercase().replace("SHA256", "sha256"),
            "sha256:../../../../../../../../../../../../../../../../../../../../../../../etc/x",
            &format!("sha256:{}/{}", &D[7..39], &D[40..]),
            &format!("sha256:{}", ".".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} was accepted");
            assert!(
                serde_json::from_value::<Digest>(serde_json::json!(bad)).is_err(),
                "{bad:?} was deserialised"
            );
        }
    }

    #[test]
    fn serialises_as_the_string_it_was_parsed_from() {
        let d = Digest::parse(D).unwrap();
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{D}\""));
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
        let id = DiffId::new(d.clone());
        assert_eq!(serde_json::to_string(&id).unwrap(), j);
        assert_eq!(serde_json::from_str::<DiffId>(&j).unwrap(), id);
        assert!(serde_json::from_str::<DiffId>("\"sha256:x\"").is_err());
    }

    #[test]
    fn hashing_and_hex_round_trip() {
        let d = Digest::of(b"");
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::from_hex(d.hex()).unwrap(), d);
        assert!(Digest::from_hex("..").is_err());
    }

    #[test]
    fn errors_quote_a_little_of_long_input() {
        let e = Digest::parse(&format!("sha256:{}", "x".repeat(100_000))).unwrap_err();
        assert!(e.len() < 300, "{e}");
    }

    proptest! {
        /// Whatever is accepted is exactly the digest grammar, and its hex part is a single
        /// plain file name.
        #[test]
        fn accepted_text_is_a_safe_file_name(s in "(sha256:)?[0-9a-fA-F./]{0,70}") {
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(d.hex().len(), 64);
                prop_assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                prop_assert_eq!(d.as_str(), s.as_str());
            }
        }

        #[test]
        fn every_hash_is_a_digest(hash in any::<[u8; 32]>()) {
            let d = Digest::from_sha256(hash);
            prop_assert_eq!(Digest::parse(d.as_str()), Ok(d.clone()));
            prop_assert_eq!(Digest::from_hex(d.hex()), Ok(d));
        }
    }
}
