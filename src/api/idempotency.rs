//! `Idempotency-Key` on `POST /v1/sessions`, as Stripe has it.
//!
//! A key belongs to the API key that sent it (scoped by a digest of the API key, which is never
//! stored) and to the request it first came with (a digest of method, path and the canonical
//! JSON body). The same key with another request is refused (`422 idempotency_key_reused`); with
//! the same request it gets the first answer again, status and body — a reverse-OTP code
//! included — marked `Idempotent-Replayed: true`. Keys are kept 24 hours (`store::Idempotency`).
//! Two requests with one key at the same moment: the second is refused (`409
//! idempotency_key_in_use`) rather than left to race. Requests without the header pay nothing.

use super::error::ApiError;
use crate::store::{IdempotencyKey, IdempotentStart, StoredAnswer};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;

const SCOPE_DOMAIN: &[u8] = b"waotp/idempotency-scope/v1";
const REQUEST_DOMAIN: &[u8] = b"waotp/idempotency-request/v1";

/// A request that carries an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct Idempotent {
    pub key: IdempotencyKey,
    /// Digest of method, path and canonical body, hex.
    pub request: String,
}

impl Idempotent {
    /// `None` without the header; `400 invalid_idempotency_key` for an empty, overlong or
    /// non-printable one. `api_key` is the caller's (already checked) API key and `body` the
    /// request's JSON.
    pub fn of(
        req: &HttpRequest,
        api_key: &[u8],
        body: &Value,
    ) -> Result<Option<Idempotent>, ApiError> {
        let Some(raw) = req.headers().get(HEADER) else {
            return Ok(None);
        };
        let key = raw
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
            .filter(|k| k.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    format!(
                        "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"
                    ),
                )
            })?;
        Ok(Some(Idempotent {
            key: IdempotencyKey::new(&scope(api_key), key),
            request: request_digest(req.method().as_str(), req.path(), body),
        }))
    }

    /// What the step starting the session records.
    pub fn start(&self, at: DateTime<Utc>) -> IdempotentStart {
        IdempotentStart {
            key: self.key.clone(),
            request: self.request.clone(),
            at,
        }
    }

    /// The refusal of a key first used with another request.
    pub fn reused() -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was first used with a different request; use a new key",
        )
    }
}

/// The first answer, given again.
pub fn replay(answer: StoredAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    HttpResponse::build(status)
        .insert_header((REPLAYED_HEADER, "true"))
        .json(answer.body)
}

/// What a key is scoped by: a digest of the API key.
fn scope(api_key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SCOPE_DOMAIN);
    h.update(api_key);
    h.finalize().into()
}

/// Digest of method, path and body; the body in canonical form (object keys sorted, no
/// whitespace), so the same request written differently is still the same request.
pub fn request_digest(method: &str, path: &str, body: &Value) -> String {
    let mut canonical = Vec::new();
    write_canonical(body, &mut canonical);
    let mut h = Sha256::new();
    h.update(REQUEST_DOMAIN);
    for part in [method.as_bytes(), path.as_bytes(), &canonical] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// Keys of requests being answered right now (in this process; a restart ends them all).
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashSet<IdempotencyKey>>);

/// A key held by one request until it is answered.
#[derive(Debug)]
pub struct Claim {
    set: Arc<InFlight>,
    key: IdempotencyKey,
}

impl InFlight {
    /// Holds `key` for the caller, or `409 idempotency_key_in_use` while another request has it.
    pub fn claim(self: &Arc<Self>, key: &IdempotencyKey) -> Result<Claim, ApiError> {
        let fresh = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone());
        if fresh {
            Ok(Claim {
                set: self.clone(),
                key: key.clone(),
            })
        } else {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "another request with this Idempotency-Key is being answered; retry shortly",
            ))
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_request_written_differently_has_one_digest() {
        let a: Value = serde_json::from_str(r#"{"to":"+1","flow":"f","vars":{"b":1,"a":[1,"x"]}}"#)
            .expect("json");
        let b: Value = serde_json::from_str(
            r#"{ "flow": "f", "vars": { "a": [1, "x"], "b": 1 }, "to": "+1" }"#,
        )
        .expect("json");
        let d = request_digest;
        let c = json!({"to": "+1", "flow": "f", "vars": {"b": 2, "a": [1, "x"]}});
        assert_eq!(d("POST", "/v1/sessions", &a), d("POST", "/v1/sessions", &b));
        assert_ne!(d("POST", "/v1/sessions", &a), d("POST", "/v1/sessions", &c));
        assert_ne!(d("POST", "/v1/sessions", &a), d("POST", "/v1/other", &a));
        assert_ne!(d("POST", "/v1/sessions", &a), d("PUT", "/v1/sessions", &a));
    }

    #[test]
    fn a_key_is_held_by_one_request_at_a_time() {
        let set = Arc::new(InFlight::default());
        let key = IdempotencyKey::new(&scope(b"api key"), "k");
        let claim = set.claim(&key).expect("free");
        let other = IdempotencyKey::new(&scope(b"another api key"), "k");
        assert!(
            set.claim(&other).is_ok(),
            "another API key's key is another key"
        );
        assert_eq!(
            set.claim(&key).map(drop).map_err(|e| e.code),
            Err("idempotency_key_in_use")
        );
        drop(claim);
        assert!(set.claim(&key).is_ok());
    }
}
