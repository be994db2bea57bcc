//! The request id: every answer carries an `X-Request-Id` header, the caller's own when it sent
//! a usable one, else one made here, and the request's log span records it, so that a log line
//! and the answer a caller kept can be matched.
//!
//! A caller's id is used as it is when it is 1 to 128 characters of `A-Z a-z 0-9 . _ : -`
//! (a UUID fits); anything else is replaced, never refused, and never reaches a log. Making one
//! costs no I/O: it comes from the thread's random generator, seeded once.

use actix_web::http::header::{HeaderMap, HeaderName};
use rand::Rng;

/// The header, in requests and answers.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// The longest caller-supplied id kept.
pub const MAX_LEN: usize = 128;

/// Whether `id` is kept as the caller sent it.
pub fn is_usable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The request's id: the caller's when usable, else a new `req_` and 24 hex digits.
pub fn of(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_usable(id))
        .map_or_else(generate, str::to_owned)
}

/// `req_` and 24 hex digits, written in place: one allocation, for the finished string.
fn generate() -> String {
    let bytes: [u8; 12] = rand::thread_rng().gen();
    let mut id = [0u8; 28];
    id[..4].copy_from_slice(b"req_");
    // Cannot fail: 12 bytes fill exactly 24 hex digits.
    let _ = hex::encode_to_slice(bytes, &mut id[4..]);
    String::from_utf8_lossy(&id).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn a_usable_id_is_kept_and_anything_else_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(
            HEADER,
            HeaderValue::from_static("0b6e3c1a-7f1e-4c55-9a51-2b8f0f3c9d10"),
        );
        assert_eq!(of(&headers), "0b6e3c1a-7f1e-4c55-9a51-2b8f0f3c9d10");
        for bad in ["", "a b", "id\"with-quote", &"x".repeat(MAX_LEN + 1)] {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER, HeaderValue::from_str(bad).expect("header"));
            let id = of(&headers);
            assert!(id.starts_with("req_") && id.len() == 28, "{bad:?} → {id}");
            assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        assert_ne!(of(&HeaderMap::new()), of(&HeaderMap::new()));
    }
}
