//! Merchant API keys: `Authorization: Bearer <key>`, resolved to the merchant it belongs to.
//! A key is looked up by its SHA-256 digest in the registry of merchants
//! ([`crate::tenants::Tenants::merchant_for_key`]), so the time taken says nothing about how
//! close a wrong key was, and no key is kept in memory. Wrong keys are counted per client and a
//! client that keeps presenting them is made to wait (see [`super::throttle`]); the dashboard's
//! login form goes through the same count. An accepted key then takes a token from its own
//! bucket ([`super::rate`]): a key over its rate is answered 429 `rate_limited`.
//!
//! Every route behind a key answers for that key's merchant only: [`require_key`] hands the
//! handler the merchant, and what belongs to another merchant is answered as if it did not
//! exist.

use super::error::ApiError;
use super::rate::{KeyRate, KeyRates};
use super::throttle::AuthThrottle;
use crate::tenants::{KeyDigest, Merchant, TenantsHandle};
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The registry keys are looked up in, the count of wrong ones and each key's request rate,
/// shared by every worker.
#[derive(Debug)]
pub struct ApiKeys {
    tenants: TenantsHandle,
    throttle: AuthThrottle,
    rates: KeyRates,
}

/// What became of a presented key.
#[derive(Debug, Clone)]
pub enum KeyCheck {
    /// A key of this merchant.
    Accepted(Arc<Merchant>, KeyDigest),
    Refused,
    /// The client must wait this long before a key of its is looked at again.
    Wait(Duration),
}

impl ApiKeys {
    pub fn new(tenants: TenantsHandle, rate: KeyRate) -> ApiKeys {
        ApiKeys {
            tenants,
            rates: KeyRates::new(rate),
            throttle: AuthThrottle::default(),
        }
    }

    /// The registry keys resolve in.
    pub fn tenants(&self) -> &TenantsHandle {
        &self.tenants
    }

    /// Checks `given`, presented by the client at `req`'s peer address. An empty key is refused
    /// without being counted: it guesses nothing.
    pub fn check(&self, req: &HttpRequest, given: &[u8]) -> KeyCheck {
        if given.is_empty() {
            return KeyCheck::Refused;
        }
        let client = req.peer_addr().map(|a| a.ip());
        let now = Instant::now();
        if let Err(wait) = self.throttle.admit(client, now) {
            return KeyCheck::Wait(wait);
        }
        let digest = KeyDigest::of(given);
        if let Some(merchant) = self.tenants.current().merchant_for_digest(&digest) {
            KeyCheck::Accepted(merchant.clone(), digest)
        } else {
            if let Some(wait) = self.throttle.failed(client, now) {
                tracing::warn!(
                    client = ?client,
                    wait_seconds = wait.as_secs(),
                    "repeated wrong API keys: client throttled"
                );
            }
            KeyCheck::Refused
        }
    }
}

/// Whole seconds to announce in `Retry-After` for `wait` (at least one).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The 429 of a client that must wait.
pub fn too_many_attempts(wait: Duration) -> ApiError {
    let secs = retry_after_secs(wait);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!("too many wrong API keys from this address; try again in {secs} s"),
    )
    .retry_after(secs)
}

/// The 429 of a key over its request rate.
pub fn rate_limited(wait: Duration) -> ApiError {
    let secs = retry_after_secs(wait);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests with this API key; try again in {secs} s"),
    )
    .retry_after(secs)
}

/// Refuses the request unless it carries a merchant's key and that key is within its rate;
/// returns the merchant the key belongs to.
pub fn require_key(req: &HttpRequest, keys: &ApiKeys) -> Result<Arc<Merchant>, ApiError> {
    let given = bearer(req);
    match keys.check(req, given) {
        KeyCheck::Accepted(merchant, digest) => keys
            .rates
            .take(&digest, Instant::now())
            .map(|()| merchant)
            .map_err(|wait| {
                tracing::debug!(
                    key = %KeyRates::label(&digest),
                    wait_ms = wait.as_millis() as u64,
                    "API key over its rate"
                );
                rate_limited(wait)
            }),
        KeyCheck::Wait(wait) => Err(too_many_attempts(wait)),
        KeyCheck::Refused => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown API key (Authorization: Bearer <key>)",
        )),
    }
}

/// The key the request presents (empty when none); check it with [`require_key`] first.
pub fn bearer(req: &HttpRequest) -> &[u8] {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::{FlowSource, Number, Tenants};

    fn merchant(id: &str, key: &str) -> Merchant {
        Merchant {
            api_keys: vec![KeyDigest::of(key.as_bytes())],
            ..Merchant::new(
                id,
                FlowSource::Dir("flows".into()),
                vec![Number::new(format!("{id}-1"))],
            )
        }
    }

    fn accepted(check: KeyCheck) -> Option<String> {
        match check {
            KeyCheck::Accepted(m, _) => Some(m.id.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_key_resolves_to_its_merchant_in_the_registry_as_it_is_now() {
        let handle = TenantsHandle::new(
            Tenants::new(vec![merchant("a", "key-a"), merchant("b", "key-b")]).expect("tenants"),
        );
        let keys = ApiKeys::new(
            handle.clone(),
            KeyRate {
                per_second: 10.0,
                burst: 10.0,
            },
        );
        let req = actix_web::test::TestRequest::default()
            .peer_addr("192.0.2.7:4000".parse().expect("address"))
            .to_http_request();
        assert_eq!(accepted(keys.check(&req, b"key-a")).as_deref(), Some("a"));
        assert_eq!(accepted(keys.check(&req, b"key-b")).as_deref(), Some("b"));
        assert!(matches!(keys.check(&req, b"key-c"), KeyCheck::Refused));
        assert!(matches!(keys.check(&req, b""), KeyCheck::Refused));
        // A reload that drops b's key: refused from the next request on.
        handle.replace(Tenants::new(vec![merchant("a", "key-a")]).expect("tenants"));
        assert!(matches!(keys.check(&req, b"key-b"), KeyCheck::Refused));
        assert_eq!(accepted(keys.check(&req, b"key-a")).as_deref(), Some("a"));
    }
}
