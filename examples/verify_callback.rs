//! Verifies waotp's `X-Waotp-Signature` on a callback or hook call, as a merchant's Rust backend
//! would (crates `hmac`, `sha2`, `hex`):
//!
//! ```text
//! X-Waotp-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">
//! ```
//!
//! keyed with `WAOTP_CALLBACK_SECRET`. Check the raw body bytes before parsing any JSON, and
//! refuse a timestamp more than five minutes from your clock: a recorded call cannot be replayed
//! later. Run as `WAOTP_CALLBACK_SECRET=… cargo run --example verify_callback -- '<header>' <
//! body`: exits 0 when the call is genuine, 1 when it is not. `tests/callback_examples.rs` calls
//! [`verify`] directly.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

/// How far a timestamp may be from the receiver's clock, in seconds.
pub const TOLERANCE_SECONDS: u64 = 300;

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    Stale,
    Mismatch,
}

/// Checks `header` against the raw `body` for a receiver whose clock reads `now` (unix seconds).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64) -> Result<(), Refused> {
    let mut timestamp = None;
    let mut macs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", mac)) => macs.push(mac),
            _ => {}
        }
    }
    let (Some(t), false) = (timestamp, macs.is_empty()) else {
        return Err(Refused::Malformed);
    };
    let sent: u64 = t.parse().map_err(|_| Refused::Malformed)?;
    if now.abs_diff(sent) > TOLERANCE_SECONDS {
        return Err(Refused::Stale);
    }
    let mut keyed = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Refused::Malformed)?;
    keyed.update(t.as_bytes());
    keyed.update(b".");
    keyed.update(body);
    // `verify_slice` compares in constant time.
    let genuine = macs
        .iter()
        .any(|mac| hex::decode(mac).is_ok_and(|mac| keyed.clone().verify_slice(&mac).is_ok()));
    if genuine {
        Ok(())
    } else {
        Err(Refused::Mismatch)
    }
}

#[allow(dead_code)]
fn main() {
    let secret = std::env::var("WAOTP_CALLBACK_SECRET").unwrap_or_default();
    let header = std::env::args().nth(1).unwrap_or_default();
    let mut body = Vec::new();
    if std::io::stdin().read_to_end(&mut body).is_err() {
        std::process::exit(1);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Err(refused) = verify(secret.as_bytes(), &header, &body, now) {
        eprintln!("refused: {refused:?}");
        std::process::exit(1);
    }
}
