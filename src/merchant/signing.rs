//! `X-Waotp-Signature`: the signature waotp puts on every callback and hook call.
//!
//! `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>", key WAOTP_CALLBACK_SECRET>`. The
//! timestamp is the time of the attempt (each retry is signed anew) and is covered by the MAC,
//! so a receiver that refuses timestamps more than [`TOLERANCE`] away from its clock cannot be
//! fed a recorded call again later. The body is signed as the exact bytes sent.
//!
//! Owns producing the header only; checking it is the merchant's side (docs/examples/ holds
//! verifiers in Python, Node and Rust).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// How far a receiver should let a signature's timestamp be from its own clock. The examples
/// and the docs use this figure; waotp itself never checks its own signatures.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Signs bodies with the callback secret, keyed once; cloning the keyed state per call saves
/// re-hashing the key pads.
#[derive(Clone)]
pub struct CallbackSigner {
    keyed: HmacSha256,
}

impl std::fmt::Debug for CallbackSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackSigner(..)")
    }
}

impl CallbackSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    /// The `X-Waotp-Signature` value for `body` sent at `timestamp` (unix seconds).
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let t = timestamp.to_string();
        let mut mac = self.keyed.clone();
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // Python: hmac.new(b"secret", b'1700000000.{"id":"evt_1"}', hashlib.sha256).hexdigest()
        assert_eq!(
            CallbackSigner::new(b"secret").sign(1_700_000_000, br#"{"id":"evt_1"}"#),
            "t=1700000000,v1=af784f27423c462e20039559cd4264140f7b7ed4c9090e26fd663faa5eeb8dda"
        );
    }

    #[test]
    fn the_timestamp_is_part_of_what_is_signed() {
        let signer = CallbackSigner::new(b"secret");
        let mac = |h: String| h.split_once(",v1=").map(|(_, m)| m.to_owned());
        assert_ne!(mac(signer.sign(100, b"{}")), mac(signer.sign(101, b"{}")));
        assert_ne!(mac(signer.sign(100, b"{}")), mac(signer.sign(100, b"{ }")));
    }
}
