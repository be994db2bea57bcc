//! The merchant's side of `X-Waotp-Signature`, written against `hmac` directly so that the fakes
//! do not trust waotp's own signer: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`, compared
//! in constant time, refused when the timestamp is more than five minutes from the receiver's
//! clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far from the receiver's clock a timestamp may be.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a merchant refuses a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

/// Checks `header` against `body` as a merchant whose clock reads `now` (unix seconds) would.
pub fn check(secret: &str, header: Option<&str>, body: &[u8], now: i64) -> Result<(), Refused> {
    let header = header.ok_or(Refused::Missing)?;
    let mut timestamp = None;
    let mut macs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| Refused::Malformed)?),
            Some(("v1", mac)) => macs.push(hex::decode(mac).map_err(|_| Refused::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refused::Malformed)?;
    if macs.is_empty() {
        return Err(Refused::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(Refused::Stale);
    }
    let mut keyed = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    keyed.update(format!("{timestamp}.").as_bytes());
    keyed.update(body);
    if macs
        .iter()
        .any(|mac| keyed.clone().verify_slice(mac).is_ok())
    {
        Ok(())
    } else {
        Err(Refused::Mismatch)
    }
}

/// The timestamp a header carries (for tests that compare attempts).
pub fn timestamp(header: &str) -> Option<i64> {
    header
        .split(',')
        .find_map(|p| p.trim().strip_prefix("t="))
        .and_then(|t| t.parse().ok())
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}
