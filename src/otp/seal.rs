//! Sealing the one copy of a code that must be kept until WhatsApp accepts the message.
//!
//! The outbox needs the plaintext code once, at send time, possibly after a restart. This module
//! encrypts that copy with ChaCha20-Poly1305 under a key derived (HKDF-SHA256, its own info
//! label) from the OTP key, with a random nonce and the session id as associated data, so a
//! sealed code cannot be moved to another session. It owns no storage and never logs.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::{CryptoRng, RngCore};
use secrecy::zeroize::Zeroize;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::code::OtpCode;
use super::key::OtpKey;

// Distinct from the digest's use of the key, so the two can never be confused.
const SEAL_KEY_INFO: &[u8] = b"waotp/otp-seal-key/v1";
const SEAL_AAD_DOMAIN: &[u8] = b"waotp/otp-seal/v1";

/// Encrypts and decrypts codes for the outbox.
pub struct CodeSealer(ChaCha20Poly1305);

/// A code encrypted for one session: safe to write to disk.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCode {
    #[serde(with = "hex_vec")]
    nonce: Vec<u8>,
    #[serde(with = "hex_vec")]
    ciphertext: Vec<u8>,
}

/// A sealed code that does not open: wrong key, wrong session or damaged bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sealed OTP code cannot be opened (wrong key, wrong session or damaged)")]
pub struct SealError;

/// A ChaCha20-Poly1305 cipher under a key derived from the OTP key (HKDF-SHA256, `info`
/// naming its use), the derived bytes wiped after use.
pub(super) fn derive_cipher(key: &OtpKey, info: &[u8]) -> ChaCha20Poly1305 {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(None, key.bytes())
        .expand(info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&okm));
    okm.zeroize();
    cipher
}

impl CodeSealer {
    pub fn new(key: &OtpKey) -> Self {
        Self(derive_cipher(key, SEAL_KEY_INFO))
    }

    pub fn seal<R: RngCore + CryptoRng + ?Sized>(
        &self,
        session_id: &str,
        code: &OtpCode,
        rng: &mut R,
    ) -> SealedCode {
        // A random 96-bit nonce: a few million codes per key keep the collision chance
        // negligible, and codes are short-lived.
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let aad = associated_data(session_id);
        let ciphertext = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: code.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption of a short message cannot fail");
        SealedCode {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    pub fn open(&self, session_id: &str, sealed: &SealedCode) -> Result<OtpCode, SealError> {
        if sealed.nonce.len() != 12 {
            return Err(SealError);
        }
        let aad = associated_data(session_id);
        let plain = self
            .0
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError)?;
        let digits = String::from_utf8(plain).map_err(|e| {
            e.into_bytes().zeroize();
            SealError
        })?;
        OtpCode::from_digits(digits).ok_or(SealError)
    }
}

fn associated_data(session_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(SEAL_AAD_DOMAIN.len() + 8 + session_id.len());
    aad.extend_from_slice(SEAL_AAD_DOMAIN);
    aad.extend_from_slice(&(session_id.len() as u64).to_be_bytes());
    aad.extend_from_slice(session_id.as_bytes());
    aad
}

mod hex_vec {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl fmt::Debug for CodeSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeSealer(<redacted>)")
    }
}

impl fmt::Debug for SealedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedCode(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::code::generate;
    use rand::rngs::{OsRng, StdRng};
    use rand::SeedableRng;

    fn sealer(seed: u64) -> CodeSealer {
        CodeSealer::new(&OtpKey::generate(&mut StdRng::seed_from_u64(seed)))
    }

    #[test]
    fn round_trip() {
        let sealer = sealer(1);
        let code = generate(10, &mut OsRng).expect("valid length");
        let sealed = sealer.seal("sess-1", &code, &mut OsRng);
        assert_eq!(sealer.open("sess-1", &sealed), Ok(code));
    }

    #[test]
    fn ciphertext_does_not_contain_the_code() {
        let sealer = sealer(1);
        let code = generate(10, &mut OsRng).expect("valid length");
        let sealed = sealer.seal("sess-1", &code, &mut OsRng);
        let json = serde_json::to_string(&sealed).expect("serialize");
        assert!(!json.contains(code.expose()));
        let bytes = &sealed.ciphertext;
        assert!(!bytes
            .windows(code.len())
            .any(|w| w == code.expose().as_bytes()));
    }

    #[test]
    fn nonces_differ_between_seals() {
        let sealer = sealer(1);
        let code = generate(6, &mut OsRng).expect("valid length");
        let a = sealer.seal("s", &code, &mut OsRng);
        let b = sealer.seal("s", &code, &mut OsRng);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn wrong_session_key_or_tampering_fails() {
        let sealer = sealer(1);
        let code = generate(6, &mut OsRng).expect("valid length");
        let sealed = sealer.seal("sess-1", &code, &mut OsRng);
        assert_eq!(sealer.open("sess-2", &sealed), Err(SealError));
        assert_eq!(self::sealer(2).open("sess-1", &sealed), Err(SealError));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(sealer.open("sess-1", &tampered), Err(SealError));
        let mut short_nonce = sealed;
        short_nonce.nonce.pop();
        assert_eq!(sealer.open("sess-1", &short_nonce), Err(SealError));
    }

    #[test]
    fn seal_key_differs_from_digest_key() {
        // HKDF with its own label: the AEAD key is not the raw OTP key.
        let key = OtpKey::generate(&mut StdRng::seed_from_u64(3));
        let mut okm = [0u8; 32];
        Hkdf::<Sha256>::new(None, key.bytes())
            .expand(SEAL_KEY_INFO, &mut okm)
            .expect("valid length");
        assert_ne!(&okm[..], key.bytes());
    }
}
