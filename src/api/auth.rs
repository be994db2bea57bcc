//! Merchant API keys: `Authorization: Bearer <key>`, compared in constant time against every
//! configured key (no early exit, so timing does not tell which key was close). Wrong keys are
//! counted per client and a client that keeps presenting them is made to wait (see
//! [`super::throttle`]); the dashboard's login form goes through the same count. An accepted
//! key then takes a token from its own bucket ([`super::rate`]): a key over its rate is
//! answered 429 `rate_limited`.

use super::error::ApiError;
use super::rate::{KeyRate, KeyRates};
use super::throttle::AuthThrottle;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The configured keys, the count of wrong ones and each key's request rate, shared by every
/// worker.
#[derive(Debug)]
pub struct ApiKeys {
    keys: Vec<SecretString>,
    throttle: AuthThrottle,
    rates: KeyRates,
}

/// What became of a presented key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    Accepted,
    Refused,
    /// The client must wait this long before a key of its is looked at again.
    Wait(Duration),
}

impl ApiKeys {
    pub fn new(keys: Vec<SecretString>, rate: KeyRate) -> ApiKeys {
        ApiKeys {
            rates: KeyRates::new(&keys, rate, Instant::now()),
            keys,
            throttle: AuthThrottle::default(),
        }
    }

    pub fn keys(&self) -> &[SecretString] {
        &self.keys
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
        if is_known_key(given, &self.keys) {
            KeyCheck::Accepted
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

/// Refuses the request unless it carries one of `keys` and that key is within its rate.
pub fn require_key(req: &HttpRequest, keys: &ApiKeys) -> Result<(), ApiError> {
    let given = bearer(req);
    match keys.check(req, given) {
        KeyCheck::Accepted => keys.rates.take(given, Instant::now()).map_err(|wait| {
            tracing::debug!(
                key = %KeyRates::label(given),
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

/// Whether `given` is one of `keys`, compared in constant time against every key.
pub fn is_known_key(given: &[u8], keys: &[SecretString]) -> bool {
    let mut ok = subtle::Choice::from(0u8);
    for key in keys {
        let key = key.expose_secret().as_bytes();
        // ct_eq on slices of different lengths is false without comparing contents.
        ok |= key.ct_eq(given);
    }
    bool::from(ok) && !given.is_empty()
}
