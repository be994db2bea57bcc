//! The keyed digest under which codes are stored for checking.
//!
//! This module owns [`OtpDigest`], the only form in which a code is persisted for checking, and
//! [`OtpSubject`], what a code is bound to. The digest is HMAC-SHA256 under the OTP key over an
//! unambiguous encoding of everything the code is bound to, so a code issued for one session,
//! purpose or amount never verifies for another. Digests are compared in constant time.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::code::OtpCode;
use super::key::OtpKey;

// Versioned so the encoding can change without old digests verifying under new rules.
const DIGEST_DOMAIN: &[u8] = b"waotp/otp-digest/v1";

impl OtpKey {
    /// The keyed digest of `code` for `subject`.
    pub fn digest(&self, subject: &OtpSubject, code: &OtpCode) -> OtpDigest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes())
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(DIGEST_DOMAIN);
        put_field(&mut mac, subject.session_id.as_bytes());
        put_field(&mut mac, subject.purpose.as_bytes());
        put_field(&mut mac, code.expose().as_bytes());
        put_len(&mut mac, subject.bound.len());
        for (name, value) in &subject.bound {
            put_field(&mut mac, name.as_bytes());
            put_field(&mut mac, value.as_bytes());
        }
        OtpDigest(mac.finalize().into_bytes().into())
    }

    /// Whether `attempt` is the code `stored` was made from, for the same subject. The digest
    /// comparison is constant-time, so response timing reveals nothing about how close a guess
    /// came.
    pub fn verify(&self, subject: &OtpSubject, attempt: &OtpCode, stored: &OtpDigest) -> bool {
        self.digest(subject, attempt).ct_eq(stored)
    }
}

// Every field is length-prefixed so that no two different field lists encode to the same
// bytes ("ab"+"c" vs "a"+"bc").
fn put_len(mac: &mut Hmac<Sha256>, len: usize) {
    mac.update(&(len as u64).to_be_bytes());
}

fn put_field(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    put_len(mac, bytes.len());
    mac.update(bytes);
}

/// What a code is bound to: the session, the purpose of the check and any further fields the
/// customer approved (for transactions: amount, currency, payee). Changing any of them makes
/// the code fail verification.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpSubject {
    session_id: String,
    purpose: String,
    // A sorted map gives one canonical order, whatever order the caller added fields in.
    bound: BTreeMap<String, String>,
}

impl OtpSubject {
    pub fn new(session_id: impl Into<String>, purpose: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            purpose: purpose.into(),
            bound: BTreeMap::new(),
        }
    }

    /// A transaction authorization's subject: the code approves exactly this amount, currency
    /// and payee. Use it both when issuing and when checking, so the field names always match.
    pub fn transaction(
        session_id: impl Into<String>,
        purpose: impl Into<String>,
        amount: impl Into<String>,
        currency: impl Into<String>,
        payee: impl Into<String>,
    ) -> Self {
        Self::new(session_id, purpose)
            .bind("amount", amount)
            .bind("currency", currency)
            .bind("payee", payee)
    }

    /// Binds a further field, e.g. `.bind("amount", "120.00")`.
    pub fn bind(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.bound.insert(name.into(), value.into());
        self
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn purpose(&self) -> &str {
        &self.purpose
    }
}

impl fmt::Debug for OtpSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bound values (amounts, payees) are customer data: names only.
        f.debug_struct("OtpSubject")
            .field("session_id", &self.session_id)
            .field("purpose", &self.purpose)
            .field("bound", &self.bound.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// HMAC-SHA256 of a code and its subject: what the ledger stores instead of the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpDigest(#[serde(with = "hex_bytes")] [u8; 32]);

impl OtpDigest {
    fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for OtpDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest plus a stolen key would let anyone test all codes offline; keep it out of logs.
        f.write_str("OtpDigest(<redacted>)")
    }
}

mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::code::normalize_attempt;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use secrecy::SecretString;

    fn key() -> OtpKey {
        OtpKey::generate(&mut StdRng::seed_from_u64(1))
    }

    fn code(digits: &str) -> OtpCode {
        normalize_attempt(digits).expect("valid code")
    }

    fn transaction() -> OtpSubject {
        OtpSubject::transaction(
            "sess-1",
            "transaction_authorization",
            "120.00",
            "EUR",
            "ACME Ltd",
        )
    }

    #[test]
    fn correct_code_verifies() {
        let key = key();
        let stored = key.digest(&transaction(), &code("123456"));
        assert!(key.verify(&transaction(), &code("123456"), &stored));
        assert!(!key.verify(&transaction(), &code("123457"), &stored));
    }

    #[test]
    fn every_field_is_bound() {
        let key = key();
        let stored = key.digest(&transaction(), &code("123456"));
        let changed = [
            OtpSubject::new("sess-2", "transaction_authorization")
                .bind("amount", "120.00")
                .bind("currency", "EUR")
                .bind("payee", "ACME Ltd"),
            OtpSubject::new("sess-1", "signup")
                .bind("amount", "120.00")
                .bind("currency", "EUR")
                .bind("payee", "ACME Ltd"),
            transaction().bind("amount", "1200.00"),
            transaction().bind("currency", "USD"),
            transaction().bind("payee", "Mallory"),
            transaction().bind("extra", ""),
            OtpSubject::new("sess-1", "transaction_authorization")
                .bind("amount", "120.00")
                .bind("currency", "EUR"),
        ];
        for subject in &changed {
            assert!(
                !key.verify(subject, &code("123456"), &stored),
                "{subject:?}"
            );
        }
        let other_key = OtpKey::generate(&mut StdRng::seed_from_u64(2));
        assert!(!other_key.verify(&transaction(), &code("123456"), &stored));
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let key = key();
        let a = key.digest(&OtpSubject::new("ab", "c"), &code("1234"));
        let b = key.digest(&OtpSubject::new("a", "bc"), &code("1234"));
        assert_ne!(a, b);
        let c = key.digest(&OtpSubject::new("s", "p").bind("ab", "c"), &code("1234"));
        let d = key.digest(&OtpSubject::new("s", "p").bind("a", "bc"), &code("1234"));
        assert_ne!(c, d);
    }

    #[test]
    fn bind_order_does_not_matter() {
        let key = key();
        let one = OtpSubject::new("s", "p").bind("a", "1").bind("b", "2");
        let two = OtpSubject::new("s", "p").bind("b", "2").bind("a", "1");
        assert_eq!(
            key.digest(&one, &code("1234")),
            key.digest(&two, &code("1234"))
        );
    }

    #[test]
    fn digest_comparison_is_subtle_constant_time() {
        // The comparison goes through `subtle::ConstantTimeEq`; check it agrees with equality on
        // digests that differ only in their last byte (the case an early-exit `==` leaks).
        let a = OtpDigest([7; 32]);
        let mut last = [7; 32];
        last[31] = 8;
        assert!(a.ct_eq(&OtpDigest([7; 32])));
        assert!(!a.ct_eq(&OtpDigest(last)));
        let choice: subtle::Choice = a.0.ct_eq(&last);
        assert_eq!(choice.unwrap_u8(), 0);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let key = OtpKey::from_configured(&SecretString::from("k".repeat(40))).expect("long");
        let stored = key.digest(&transaction(), &code("123456"));
        let shown = format!("{key:?} {stored:?} {:?}", transaction());
        assert!(!shown.contains("kkkk"));
        assert!(!shown.contains(&hex::encode(stored.0)));
        assert!(!shown.contains("ACME"));
    }

    proptest! {
        /// Changing any one field — session, purpose, any bound value — or the code makes
        /// verification fail.
        #[test]
        fn any_single_change_fails_verification(
            fields in prop::collection::vec(".{0,12}", 5),
            which in 0usize..6,
            extra in "[a-z0-9]{1,3}",
        ) {
            let key = key();
            let build = |f: &[String]| {
                OtpSubject::new(f[0].clone(), f[1].clone())
                    .bind("amount", f[2].clone())
                    .bind("currency", f[3].clone())
                    .bind("payee", f[4].clone())
            };
            let stored = key.digest(&build(&fields), &code("123456"));
            prop_assert!(key.verify(&build(&fields), &code("123456"), &stored));
            let (subject, attempt) = if which < 5 {
                let mut changed = fields.clone();
                changed[which].push_str(&extra);
                (build(&changed), code("123456"))
            } else {
                (build(&fields), code("1234567"))
            };
            prop_assert!(!key.verify(&subject, &attempt, &stored));
        }

        #[test]
        fn only_the_issued_code_verifies(a in "[0-9]{6}", b in "[0-9]{6}", session in ".{0,20}") {
            let key = key();
            let subject = OtpSubject::new(session, "signup");
            let stored = key.digest(&subject, &code(&a));
            prop_assert_eq!(key.verify(&subject, &code(&b), &stored), a == b);
        }
    }
}
