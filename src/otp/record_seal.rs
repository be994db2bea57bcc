//! Encryption at rest for records that may hold a code typed by a customer.
//!
//! A customer answers an OTP prompt by sending the code as a WhatsApp message, and every inbound
//! message is kept (for replay after a crash and for deduplication) before anyone knows whether
//! it is a code. No code may be on disk in plaintext (docs/durability.md), so those records are
//! sealed with ChaCha20-Poly1305 under a key derived from the OTP key (its own HKDF label), a
//! random nonce, and the record's storage key as associated data so a sealed record cannot be
//! moved. This module owns no storage and never logs.

use chacha20poly1305::aead::{Aead, AeadInPlace, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::RngCore;

use super::key::OtpKey;
use super::seal::SealError;

const RECORD_KEY_INFO: &[u8] = b"waotp/record-seal-key/v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Seals and opens stored records.
pub struct RecordSealer(ChaCha20Poly1305);

impl std::fmt::Debug for RecordSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordSealer(..)")
    }
}

impl RecordSealer {
    pub fn new(key: &OtpKey) -> Self {
        Self(super::seal::derive_cipher(key, RECORD_KEY_INFO))
    }

    /// `nonce || ciphertext` of `plain`, bound to `slot` (the record's storage key).
    ///
    /// The nonce comes from the thread's CSPRNG (ChaCha12, seeded and periodically reseeded
    /// from the operating system's), which spares every record a system call.
    pub fn seal(&self, plain: &[u8], slot: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        out.resize(NONCE_LEN, 0);
        rand::thread_rng().fill_bytes(&mut out);
        out.extend_from_slice(plain);
        let (nonce, text) = out.split_at_mut(NONCE_LEN);
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(nonce), slot, text)
            .expect("ChaCha20-Poly1305 encryption of an in-memory record cannot fail");
        out.extend_from_slice(&tag);
        out
    }

    /// The plaintext of a sealed record stored under `slot`.
    pub fn open(&self, sealed: &[u8], slot: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: slot,
                },
            )
            .map_err(|_| SealError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn round_trips_and_refuses_tampering_and_moves() {
        let key = OtpKey::generate(&mut OsRng);
        let sealer = RecordSealer::new(&key);
        let sealed = sealer.seal(b"{\"text\":\"123456\"}", b"slot-1");
        assert!(!sealed.windows(6).any(|w| w == b"123456"));
        assert_eq!(
            sealer.open(&sealed, b"slot-1").expect("opens"),
            b"{\"text\":\"123456\"}"
        );
        assert!(
            sealer.open(&sealed, b"slot-2").is_err(),
            "moved to another slot"
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(sealer.open(&tampered, b"slot-1").is_err());
        let other = RecordSealer::new(&OtpKey::generate(&mut OsRng));
        assert!(other.open(&sealed, b"slot-1").is_err(), "another key");
    }
}
