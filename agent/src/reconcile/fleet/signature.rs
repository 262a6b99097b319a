//! The signature policy: is this commit signed, by a key in allowed_signers, for its
//! committer, in the `git` namespace, while the key was (and is) valid?
//!
//! Pure: the commit's bytes, the parsed allowed signers and the time come in; the crypto is
//! the ssh-key crate's SshSig verification (what `ssh-keygen -Y verify` does).

use ssh_key::{HashAlg, SshSig};

use super::commit::Commit;
use super::signers::{AllowedSigners, Entry, Validity};
use super::{Reason, Refusal};

/// git signs commits in this SshSig namespace.
pub const NAMESPACE: &str = "git";

/// When a check happens: now, and the host's offset from UTC for local valid-after/before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Seconds since the epoch.
    pub now: i64,
    /// Seconds east of UTC.
    pub local_offset: i64,
}

/// Who signed a commit, as far as allowed_signers says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signer {
    /// The committer email the key's line allowed.
    pub principal: String,
    /// `SHA256:...` of the key.
    pub fingerprint: String,
    /// The allowed_signers line that matched.
    pub line: usize,
}

/// Checks one commit against the policy. The key must be valid both at the committer time
/// (as `git verify-commit` checks) and now (an expired key signs nothing new, backdated or not).
pub fn verify(commit: &Commit, signers: &AllowedSigners, clock: Clock) -> Result<Signer, Refusal> {
    judge(commit, signers, clock).map_err(|(reason, detail)| Refusal {
        commit: commit.id.clone(),
        reason,
        detail,
    })
}

/// Why a commit is refused: the reason and what the refusal says.
type Verdict<T> = Result<T, (Reason, String)>;

/// The policy's steps, in order: an ssh signature, a listed key, the crypto, a line for the
/// committer in the git namespace, valid then and now.
fn judge(commit: &Commit, signers: &AllowedSigners, clock: Clock) -> Verdict<Signer> {
    let ssh_sig = ssh_signature(commit)?;
    let key = ssh_sig.public_key();
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let lines: Vec<_> = signers.lines_for(key).collect();
    if lines.is_empty() {
        return Err((
            Reason::UnknownSigner,
            format!("signed by key {fingerprint}, which is not in allowed_signers"),
        ));
    }
    // The crypto first: a forged signature naming a listed key is a bad signature, whatever
    // its line would say.
    if ssh_sig.namespace() != NAMESPACE {
        return Err((
            Reason::BadSignature,
            format!(
                "signed in namespace {:?}, not {NAMESPACE:?}",
                ssh_sig.namespace()
            ),
        ));
    }
    let payload = &commit.signature.as_ref().expect("read above").payload;
    lines[0]
        .key
        .verify(NAMESPACE, payload, &ssh_sig)
        .map_err(|e| {
            (
                Reason::BadSignature,
                format!("signature by {fingerprint} does not verify: {e}"),
            )
        })?;
    let email = &commit.committer_email;
    let for_committer: Vec<&Entry> = lines
        .iter()
        .copied()
        .filter(|l| l.allows_principal(email))
        .collect();
    if for_committer.is_empty() {
        return Err((
            Reason::UnknownSigner,
            format!(
                "signed by key {fingerprint}, listed for {} (line {}) but not for the committer {email}",
                lines[0].principals, lines[0].line
            ),
        ));
    }
    let in_namespace: Vec<&Entry> = for_committer
        .iter()
        .copied()
        .filter(|l| l.allows_namespace(NAMESPACE))
        .collect();
    if in_namespace.is_empty() {
        return Err((
            Reason::UnknownSigner,
            format!(
                "key {fingerprint} is listed for {email} only outside the git namespace (line {})",
                for_committer[0].line
            ),
        ));
    }
    valid_then_and_now(commit, &in_namespace, clock, fingerprint)
}

/// The commit's signature, if it is an ssh one that parses.
fn ssh_signature(commit: &Commit) -> Verdict<SshSig> {
    let Some(sig) = &commit.signature else {
        return Err((Reason::Unsigned, "has no signature".into()));
    };
    if !sig.armored.starts_with("-----BEGIN SSH SIGNATURE-----") {
        let what = if sig.armored.contains("PGP SIGNATURE") {
            "a gpg signature"
        } else {
            "a signature that is not an ssh one"
        };
        return Err((
            Reason::UnknownSigner,
            format!("carries {what}; only ssh signatures (gpg.format = ssh) are checked"),
        ));
    }
    SshSig::from_pem(sig.armored.as_bytes()).map_err(|e| {
        (
            Reason::BadSignature,
            format!("unreadable ssh signature: {e}"),
        )
    })
}

/// The first of the committer's lines valid both at the commit's time and now, or why none is.
fn valid_then_and_now(
    commit: &Commit,
    lines: &[&Entry],
    clock: Clock,
    fingerprint: String,
) -> Verdict<Signer> {
    let email = &commit.committer_email;
    let mut why_not = None;
    for line in lines {
        let at_commit = line.valid_at(commit.committer_time, clock.local_offset);
        let at_now = line.valid_at(clock.now, clock.local_offset);
        match (at_commit, at_now) {
            (Validity::Valid, Validity::Valid) => {
                return Ok(Signer {
                    principal: email.clone(),
                    fingerprint,
                    line: line.line,
                });
            }
            (Validity::Valid, v) => why_not = Some((line.line, v, "now")),
            (v, _) => why_not = Some((line.line, v, "at the commit's time")),
        }
    }
    let (line, validity, when) = why_not.expect("at least one line was judged");
    let state = match validity {
        Validity::NotYet => "not yet valid",
        _ => "expired",
    };
    Err((
        Reason::ExpiredKey,
        format!("key {fingerprint} for {email} is {state} {when} (allowed_signers line {line})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::commit::{CommitId, parse_commit};
    use super::super::testdata::{self, ALICE, CI, MALLORY};
    use super::*;

    fn commit(name: &str) -> Commit {
        let (id, raw) = testdata::raw(name);
        parse_commit(&CommitId::parse(&id).unwrap(), raw).unwrap()
    }

    fn signers(text: &str) -> AllowedSigners {
        AllowedSigners::parse(text).unwrap()
    }

    const NOW: Clock = Clock {
        now: 1_780_000_000 + 86_400,
        local_offset: 0,
    };

    fn reason(r: Result<Signer, Refusal>) -> (Reason, String) {
        let r = r.unwrap_err();
        (r.reason, r.detail)
    }

    /// Commits signed by real `git commit -S` with ssh-keygen keys verify; the rest is refused
    /// with the reason that fits.
    #[test]
    fn real_git_signatures() {
        let s = signers(&format!("alice@example.com {ALICE}\nci@example.com {CI}\n"));
        let ok = verify(&commit(testdata::FIRST_SIGNED), &s, NOW).unwrap();
        assert_eq!(ok.principal, "alice@example.com");
        assert_eq!(ok.line, 1);
        assert!(
            ok.fingerprint.starts_with("SHA256:p4WW7j1v"),
            "{}",
            ok.fingerprint
        );
        // ECDSA, committed at +0200.
        assert_eq!(
            verify(&commit(testdata::CI_ECDSA), &s, NOW).unwrap().line,
            2
        );

        let (r, d) = reason(verify(&commit(testdata::UNSIGNED), &s, NOW));
        assert_eq!((r, d.as_str()), (Reason::Unsigned, "has no signature"));
        let (r, d) = reason(verify(&commit(testdata::MALLORY_SIGNED), &s, NOW));
        assert_eq!(r, Reason::UnknownSigner);
        assert!(d.contains("not in allowed_signers"), "{d}");
        let (r, d) = reason(verify(&commit(testdata::FILE_NAMESPACE), &s, NOW));
        assert_eq!(r, Reason::BadSignature);
        assert!(d.contains("namespace \"file\""), "{d}");
    }

    #[test]
    fn tampered_payload_does_not_verify() {
        let s = signers(&format!("alice@example.com {ALICE}\n"));
        let mut c = commit(testdata::FIRST_SIGNED);
        let sig = c.signature.as_mut().unwrap();
        let at = sig.payload.len() - 2;
        sig.payload[at] ^= 1;
        let (r, d) = reason(verify(&c, &s, NOW));
        assert_eq!(r, Reason::BadSignature);
        assert!(d.contains("does not verify"), "{d}");
        // A signature block that is not one at all.
        c.signature.as_mut().unwrap().armored =
            "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n".into();
        assert_eq!(reason(verify(&c, &s, NOW)).0, Reason::BadSignature);
        c.signature.as_mut().unwrap().armored = "-----BEGIN PGP SIGNATURE-----\n".into();
        let (r, d) = reason(verify(&c, &s, NOW));
        assert_eq!(r, Reason::UnknownSigner);
        assert!(d.contains("gpg signature"), "{d}");
    }

    #[test]
    fn principal_namespace_and_validity_are_the_line_s() {
        let c = commit(testdata::FIRST_SIGNED);
        // Listed, but for someone else.
        let (r, d) = reason(verify(
            &c,
            &signers(&format!("bob@example.com {ALICE}\n")),
            NOW,
        ));
        assert_eq!(r, Reason::UnknownSigner);
        assert!(d.contains("not for the committer alice@example.com"), "{d}");
        // Patterns and negations are the line's.
        assert!(verify(&c, &signers(&format!("*@example.com {ALICE}\n")), NOW).is_ok());
        assert!(
            verify(
                &c,
                &signers(&format!("*@example.com,!alice@* {ALICE}\n")),
                NOW
            )
            .is_err()
        );
        // A line for other namespaces only.
        let (r, _) = reason(verify(
            &c,
            &signers(&format!("alice@example.com namespaces=\"file\" {ALICE}\n")),
            NOW,
        ));
        assert_eq!(r, Reason::UnknownSigner);
        assert!(
            verify(
                &c,
                &signers(&format!(
                    "alice@example.com namespaces=\"file,g*\" {ALICE}\n"
                )),
                NOW
            )
            .is_ok()
        );
        // Expired now, though valid when committed: refused.
        let expiring = signers(&format!(
            "alice@example.com valid-before=\"20260529Z\" {ALICE}\n"
        ));
        let (r, d) = reason(verify(&c, &expiring, NOW));
        assert_eq!(r, Reason::ExpiredKey);
        assert!(d.contains("expired now"), "{d}");
        // Valid now but not when committed (a backdated commit by a key added later).
        let late = signers(&format!(
            "alice@example.com valid-after=\"20270101Z\" {ALICE}\n"
        ));
        let later = Clock {
            now: 1_830_000_000,
            local_offset: 0,
        };
        let (r, d) = reason(verify(&c, &late, later));
        assert_eq!(r, Reason::ExpiredKey);
        assert!(d.contains("not yet valid at the commit's time"), "{d}");
        // One valid line among several for the key is enough.
        let two = signers(&format!(
            "alice@example.com valid-before=\"20260529Z\" {ALICE}\nalice@example.com {ALICE}\n"
        ));
        assert_eq!(verify(&c, &two, NOW).unwrap().line, 2);
        // The attacker's key listed for someone else does not help the attacker either.
        let m = commit(testdata::MALLORY_SIGNED);
        let (r, _) = reason(verify(
            &m,
            &signers(&format!("mallory@evil.example {MALLORY}\n")),
            NOW,
        ));
        assert_eq!(r, Reason::UnknownSigner);
    }
}
