//! `X-Hub-Signature-256` checking: HMAC-SHA256 of the raw request bytes under the App Secret.
//!
//! Owns nothing but the check. It works on the exact bytes received — WhatsApp escapes non-ASCII
//! as `\uXXXX`, so a body re-serialized by any JSON library would no longer verify — and compares
//! in constant time through `hmac`'s `verify_slice`, never with `==`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. The webhook answers all of them with 401 alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Hub-Signature-256 header")]
    Missing,
    #[error("signature header does not start with sha256=")]
    WrongScheme,
    #[error("signature is not 64 hex digits")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
}

/// A verifier keyed once with the App Secret; cloning the keyed state per request saves
/// re-hashing the key pads.
#[derive(Clone)]
pub struct SignatureVerifier {
    keyed: HmacSha256,
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureVerifier(..)")
    }
}

impl SignatureVerifier {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    /// Checks `header` (the raw header value, if any) against `body`.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let mut check = self.begin(header)?;
        check.update(body);
        check.finish()
    }

    /// Starts checking a body that arrives in pieces: the header is read now (a malformed one
    /// is refused before any of the body is), the body is hashed as it comes.
    pub fn begin(&self, header: Option<&[u8]>) -> Result<PendingSignature, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_part = header
            .strip_prefix(b"sha256=")
            .ok_or(SignatureError::WrongScheme)?;
        let mut expected = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut expected).map_err(|_| SignatureError::Malformed)?;
        Ok(PendingSignature {
            mac: self.keyed.clone(),
            expected,
        })
    }

    /// The header value WhatsApp would send for `body`; used by tests and the load generator.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// A signature being checked against a body that is still arriving.
#[derive(Clone)]
pub struct PendingSignature {
    mac: HmacSha256,
    expected: [u8; 32],
}

impl std::fmt::Debug for PendingSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingSignature(..)")
    }
}

impl PendingSignature {
    /// Hashes the next piece of the body.
    pub fn update(&mut self, piece: &[u8]) {
        self.mac.update(piece);
    }

    /// Whether the body hashed so far is the one signed, compared in constant time.
    pub fn finish(self) -> Result<(), SignatureError> {
        self.mac
            .verify_slice(&self.expected)
            .map_err(|_| SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

    #[test]
    fn accepts_its_own_signature_and_refuses_variants() {
        let v = SignatureVerifier::new(b"secret");
        let good = v.sign(BODY);
        assert_eq!(v.verify(Some(good.as_bytes()), BODY), Ok(()));
        assert_eq!(v.verify(None, BODY), Err(SignatureError::Missing));
        let sha1 = good.replace("sha256=", "sha1=");
        assert_eq!(
            v.verify(Some(sha1.as_bytes()), BODY),
            Err(SignatureError::WrongScheme)
        );
        let truncated = &good[..good.len() - 2];
        assert_eq!(
            v.verify(Some(truncated.as_bytes()), BODY),
            Err(SignatureError::Malformed)
        );
        let not_hex = format!("sha256={}", "zz".repeat(32));
        assert_eq!(
            v.verify(Some(not_hex.as_bytes()), BODY),
            Err(SignatureError::Malformed)
        );
        let other = SignatureVerifier::new(b"other").sign(BODY);
        assert_eq!(
            v.verify(Some(other.as_bytes()), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style vector.
        let v = SignatureVerifier::new(b"key");
        assert_eq!(
            v.sign(b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn a_body_checked_in_pieces_is_the_same_body() {
        let v = SignatureVerifier::new(b"secret");
        let good = v.sign(BODY);
        let mut check = v.begin(Some(good.as_bytes())).expect("well-formed");
        for piece in BODY.chunks(7) {
            check.update(piece);
        }
        assert_eq!(check.finish(), Ok(()));
        let mut short = v.begin(Some(good.as_bytes())).expect("well-formed");
        short.update(&BODY[..BODY.len() - 1]);
        assert_eq!(short.finish(), Err(SignatureError::Mismatch));
        assert_eq!(
            v.begin(Some(b"sha256=abc")).map(|_| ()),
            Err(SignatureError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn any_changed_byte_fails(body in proptest::collection::vec(any::<u8>(), 1..256), idx in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let v = SignatureVerifier::new(b"k");
            let sig = v.sign(&body);
            let mut changed = body.clone();
            let i = idx.index(changed.len());
            changed[i] ^= flip;
            prop_assert_eq!(v.verify(Some(sig.as_bytes()), &changed), Err(SignatureError::Mismatch));
        }
    }
}
