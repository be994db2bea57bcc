//! Per-API-key request rates: a token bucket per configured key, so one merchant integration
//! that runs away (a retry loop, a script polling in a tight loop) cannot take the whole API.
//!
//! Each key may make `burst` requests at once and `per_second` on average; a request beyond
//! both is refused with the wait until its next token, which the caller turns into `429
//! rate_limited` with `Retry-After`. Buckets are looked up by the SHA-256 digest of the key and
//! made on a key's first accepted request: the table never holds a key, and only a key that was
//! already accepted (looked up by `auth` in the merchants' registry) reaches it, so wrong keys
//! cost nothing here (they are `throttle`'s business) and the table holds at most the keys the
//! deployment has configured since it started (a key dropped by a tenants reload keeps its
//! small bucket until the next restart).
//!
//! In-house rather than a crate: the set of keys is closed, so the whole job is the arithmetic
//! of one bucket under one small lock per key, the same as the outbox's send rate. Held in
//! memory only: a restart refills every bucket, which gives a key at most one extra burst.

use crate::tenants::KeyDigest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
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

/// One bucket per accepted key, found by the key's digest (never the key itself).
#[derive(Debug)]
pub struct KeyRates {
    rate: KeyRate,
    buckets: RwLock<HashMap<KeyDigest, Arc<Mutex<Bucket>>>>,
}

impl KeyRates {
    pub fn new(rate: KeyRate) -> KeyRates {
        KeyRates {
            rate,
            buckets: RwLock::default(),
        }
    }

    /// `key`'s bucket, made full at `now` on its first request.
    fn bucket(&self, key: &KeyDigest, now: Instant) -> Arc<Mutex<Bucket>> {
        if let Some(b) = self
            .buckets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return b.clone();
        }
        self.buckets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(*key)
            .or_insert_with(|| {
                Arc::new(Mutex::new(Bucket {
                    tokens: self.rate.burst,
                    at: now,
                }))
            })
            .clone()
    }

    /// Takes one request's token from `key`'s bucket: `Err(wait)` when it has none, `wait`
    /// being how long until it has one. Call it only for a key that was accepted.
    pub fn take(&self, key: &KeyDigest, now: Instant) -> Result<(), Duration> {
        let bucket = self.bucket(key, now);
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
    pub fn label(key: &KeyDigest) -> String {
        key.hex()[..8].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(per_second: f64, burst: f64) -> KeyRates {
        KeyRates::new(KeyRate { per_second, burst })
    }

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let r = rates(2.0, 3.0);
        for _ in 0..3 {
            assert_eq!(r.take(&KeyDigest::of(b"key-a"), t0), Ok(()));
        }
        let wait = r
            .take(&KeyDigest::of(b"key-a"), t0)
            .expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(r.take(&KeyDigest::of(b"key-a"), t1), Ok(()));
        assert!(r.take(&KeyDigest::of(b"key-a"), t1).is_err());
        // Refilling stops at the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(r.take(&KeyDigest::of(b"key-a"), later), Ok(()));
        }
        assert!(r.take(&KeyDigest::of(b"key-a"), later).is_err());
    }

    #[test]
    fn keys_do_not_share_a_bucket() {
        let t0 = Instant::now();
        let r = rates(1.0, 1.0);
        assert_eq!(r.take(&KeyDigest::of(b"key-a"), t0), Ok(()));
        assert!(r.take(&KeyDigest::of(b"key-a"), t0).is_err());
        assert_eq!(r.take(&KeyDigest::of(b"key-b"), t0), Ok(()));
    }

    #[test]
    fn the_table_holds_no_key() {
        let r = rates(1.0, 1.0);
        r.take(&KeyDigest::of(b"key-a"), Instant::now())
            .expect("a token");
        r.take(&KeyDigest::of(b"key-b"), Instant::now())
            .expect("a token");
        let debug = format!("{r:?}");
        assert!(!debug.contains("key-a") && !debug.contains("key-b"));
        assert_eq!(KeyRates::label(&KeyDigest::of(b"key-a")).len(), 8);
    }
}
