//! Per-API-key request rates: a token bucket per configured key, so one merchant integration
//! that runs away (a retry loop, a script polling in a tight loop) cannot take the whole API.
//!
//! Each key may make `burst` requests at once and `per_second` on average; a request beyond
//! both is refused with the wait until its next token, which the caller turns into `429
//! rate_limited` with `Retry-After`. Buckets are looked up by the SHA-256 digest of the key,
//! built once from the configured keys: the table never holds a key, never grows, and needs no
//! eviction. Only a key that was already accepted (compared in constant time by `auth`) reaches
//! a bucket, so wrong keys cost nothing here (they are `throttle`'s business).
//!
//! In-house rather than a crate: the set of keys is closed, so the whole job is the arithmetic
//! of one bucket under one small lock per key, the same as the outbox's send rate. Held in
//! memory only: a restart refills every bucket, which gives a key at most one extra burst.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a key's requests are limited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyRate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Tokens held at most, and at the start.
    pub burst: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The digest a key's bucket is found by; never the key itself.
type KeyDigest = [u8; 32];

fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// One bucket per configured key.
#[derive(Debug)]
pub struct KeyRates {
    rate: KeyRate,
    buckets: HashMap<KeyDigest, Mutex<Bucket>>,
}

impl KeyRates {
    pub fn new(keys: &[SecretString], rate: KeyRate, now: Instant) -> KeyRates {
        let buckets = keys
            .iter()
            .map(|k| {
                let bucket = Bucket {
                    tokens: rate.burst,
                    at: now,
                };
                (digest(k.expose_secret().as_bytes()), Mutex::new(bucket))
            })
            .collect();
        KeyRates { rate, buckets }
    }

    /// Takes one request's token from `key`'s bucket: `Err(wait)` when it has none, `wait`
    /// being how long until it has one. A key without a bucket (not configured) is let through:
    /// it was refused before it got here.
    pub fn take(&self, key: &[u8], now: Instant) -> Result<(), Duration> {
        let Some(bucket) = self.buckets.get(&digest(key)) else {
            return Ok(());
        };
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        b.at = b.at.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - b.tokens) / self.rate.per_second,
            ))
        }
    }

    /// A short, stable name of `key` for logs: the first 8 hex digits of its digest.
    pub fn label(key: &[u8]) -> String {
        hex::encode(&digest(key)[..4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(per_second: f64, burst: f64, now: Instant) -> KeyRates {
        KeyRates::new(
            &[SecretString::from("key-a"), SecretString::from("key-b")],
            KeyRate { per_second, burst },
            now,
        )
    }

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let r = rates(2.0, 3.0, t0);
        for _ in 0..3 {
            assert_eq!(r.take(b"key-a", t0), Ok(()));
        }
        let wait = r.take(b"key-a", t0).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(r.take(b"key-a", t1), Ok(()));
        assert!(r.take(b"key-a", t1).is_err());
        // Refilling stops at the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(r.take(b"key-a", later), Ok(()));
        }
        assert!(r.take(b"key-a", later).is_err());
    }

    #[test]
    fn keys_do_not_share_a_bucket() {
        let t0 = Instant::now();
        let r = rates(1.0, 1.0, t0);
        assert_eq!(r.take(b"key-a", t0), Ok(()));
        assert!(r.take(b"key-a", t0).is_err());
        assert_eq!(r.take(b"key-b", t0), Ok(()));
    }

    #[test]
    fn the_table_holds_no_key() {
        let r = rates(1.0, 1.0, Instant::now());
        let debug = format!("{r:?}");
        assert!(!debug.contains("key-a") && !debug.contains("key-b"));
        assert_eq!(KeyRates::label(b"key-a").len(), 8);
    }
}
