//! Merchant API keys: `Authorization: Bearer <key>`, compared in constant time against every
//! configured key (no early exit, so timing does not tell which key was close).

use super::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Refuses the request unless it carries one of `keys`.
pub fn require_key(req: &HttpRequest, keys: &[SecretString]) -> Result<(), ApiError> {
    if is_known_key(bearer(req), keys) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown API key (Authorization: Bearer <key>)",
        ))
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
