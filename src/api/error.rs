//! The one mapping from API failures to HTTP answers, and the catalogue of every error code the
//! API can answer with.
//!
//! Every refusal is `{"error": {"code", "message", "param", "doc_url"}}`: `param` names the
//! request field at fault (`null` when no one field is), `doc_url` is the code's entry in the
//! error table of `docs/http-api.md` (a path relative to the project's root, so that it is
//! right wherever the documentation is published). A refusal the caller should retry later
//! adds `retry_after` (seconds, also sent as `Retry-After`); one about an existing session adds
//! its `session_id`. Codes are stable: a new failure gets a new code in [`CATALOGUE`], which is
//! also where the OpenAPI description and the documentation take them from.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Where the error codes are documented, relative to the project's root.
pub const DOC_PAGE: &str = "docs/http-api.md";

/// One documented error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: &'static str,
    pub status: u16,
    /// What the caller can do about it, as the documentation and OpenAPI say it.
    pub meaning: &'static str,
}

const fn code(code: &'static str, status: u16, meaning: &'static str) -> ErrorCode {
    ErrorCode {
        code,
        status,
        meaning,
    }
}

/// Every error code the HTTP API answers with.
pub const CATALOGUE: &[ErrorCode] = &[
    code("unauthorized", 401, "The API key is missing or unknown: send `Authorization: Bearer <key>` with one of `WAOTP_API_KEYS`."),
    code("too_many_attempts", 429, "Too many wrong API keys came from this address: wait `retry_after` seconds."),
    code("rate_limited", 429, "This API key made more requests than `WAOTP_API_BURST` at once or `WAOTP_API_RATE` per second: wait `retry_after` seconds."),
    code("payload_too_large", 413, "The body is over 64 KiB."),
    code("body_timeout", 408, "The body did not arrive within 10 seconds of the request's head."),
    code("invalid_json", 400, "The body is not the JSON object the route takes (syntax, a missing or unknown field)."),
    code("invalid_idempotency_key", 400, "`Idempotency-Key` must be 1 to 255 printable ASCII characters."),
    code("idempotency_key_reused", 422, "This `Idempotency-Key` came first with another request: use a new key."),
    code("idempotency_key_in_use", 409, "A request with this `Idempotency-Key` is still being answered: retry shortly."),
    code("unknown_flow", 400, "No flow of that name is started through the API."),
    code("missing_var", 400, "A required variable is absent or empty, or leaves a template parameter empty; `param` names it."),
    code("invalid_vars", 400, "Variables over the limits, or one that makes a template parameter too long; `param` names it."),
    code("invalid_phone", 400, "The number is not a possible E.164 number; `param` names the field."),
    code("unknown_number", 400, "`from` (or the sandbox's `to`) is not one of your numbers: give the phone number id or business number of a number of the key's merchant, or leave it out for the first one."),
    code("business_number_unset", 400, "The flow needs `WAOTP_BUSINESS_NUMBER` for its wa.me link; set it."),
    code("session_active", 409, "The customer already has an active session of this flow; `session_id` is that session: read, cancel or check it."),
    code("country_not_allowed", 422, "The number is outside `WAOTP_OTP_ALLOWED_PREFIXES`: no code can go to it. Not retryable."),
    code("customer_rate_limited", 429, "The customer was sent too many codes (5 per 10 minutes, 10 per 24 hours): retry after `retry_after` seconds."),
    code("customer_blocked", 429, "The customer typed too many wrong codes in 24 hours: no code is issued or checked for them until `retry_after` seconds pass."),
    code("global_ceiling", 429, "The service-wide ceiling of codes per hour (`WAOTP_OTP_SENDS_PER_HOUR`, the spend breaker) is reached: retry after `retry_after` seconds, or raise the ceiling."),
    code("not_found", 404, "No such session (never created, or purged after the retention period)."),
    code("invalid_code", 400, "The string is not a code (4 to 10 digits, separators aside): nothing was counted."),
    code("check_in_chat", 409, "This session's code is typed in the WhatsApp chat only (`check = \"chat\"`): nothing was counted."),
    code("reverse_otp", 409, "A reverse-OTP session is verified by the customer's own WhatsApp message, never by `/check`."),
    code("no_code_pending", 409, "The session is not waiting for a code now (it waits for a button, a timer or a hook); `session_id` names it: read its `state`. Nothing was counted."),
    code("session_completed", 409, "The session has already ended; `session_id` names it: read it for its outcome. Nothing was counted."),
    code("invalid_filter", 400, "A query parameter of the listing is not valid; `param` names it."),
    code("invalid_cursor", 400, "`starting_after` is not a cursor: pass the `next_cursor` of a page as it is."),
    code("invalid_query", 400, "The query string cannot be read."),
    code("invalid_date", 400, "A time is not RFC 3339 (e.g. `2026-01-31T09:00:00Z`; write `+` as `%2B` in a URL)."),
    code("invalid_range", 400, "`from` is after `to`."),
    code("not_sandbox", 404, "Sandbox routes exist only in sandbox mode."),
    code("invalid_message", 400, "Give exactly one of `text` or `button`."),
    code("route_not_found", 404, "No route has this path."),
    code("method_not_allowed", 405, "The `/v1` path takes other methods, listed in the `Allow` header."),
    code("internal_error", 500, "Something failed on the server's side (it is logged with the request id): retry."),
];

/// The catalogue entry of `code`.
pub fn catalogued(code: &str) -> Option<&'static ErrorCode> {
    CATALOGUE.iter().find(|c| c.code == code)
}

/// The documentation of `code`: its anchor in the error table.
pub fn doc_url(code: &str) -> String {
    format!("{DOC_PAGE}#{code}")
}

/// An API failure with its snake_case code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, e.g. `vars.order_id`.
    pub param: Option<String>,
    /// Seconds the caller should wait: `retry_after` in the body and a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// The existing session the refusal is about (an active one, or one that has ended).
    pub session_id: Option<String>,
}

/// The body of every refusal.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    param: Option<&'a str>,
    doc_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        debug_assert!(
            catalogued(code).is_some_and(|c| c.status == status.as_u16()),
            "error code `{code}` with status {status} is not in the catalogue"
        );
        ApiError {
            status,
            code,
            message: message.into(),
            param: None,
            retry_after: None,
            session_id: None,
        }
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// Tells the caller to come back in `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// Names the existing session the refusal is about.
    pub fn with_session(mut self, id: impl Into<String>) -> ApiError {
        self.session_id = Some(id.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such session")
    }

    /// A failure that is ours, not the caller's: logged in full, answered briefly.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; try again",
        )
    }

    /// The JSON body of this refusal.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
                doc_url: doc_url(self.code),
                retry_after: self.retry_after,
                session_id: self.session_id.as_deref(),
            },
        })
        .unwrap_or_default()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((actix_web::http::header::RETRY_AFTER, secs));
        }
        res.json(self.body())
    }
}

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads a request body of at most [`MAX_BODY_BYTES`], refusing in the API's own shape what
/// the framework's extractor would answer in its own (a body too large, too slow or cut off).
pub async fn read_body(
    mut payload: actix_web::web::Payload,
) -> Result<actix_web::web::Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut body = actix_web::web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            if crate::request_deadline::is_deadline(&e) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the body did not arrive in time",
                )
            } else {
                ApiError::bad_request("invalid_json", format!("request body: {e}"))
            }
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("a request body is at most {MAX_BODY_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON body into `T`, with a clear 400 on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))
}

/// The answer to a request no route takes: `405` with `Allow` for a `/v1` path that takes
/// other methods, else `404`.
pub async fn route_not_found(req: actix_web::HttpRequest) -> HttpResponse {
    let allowed = super::routes::methods_of(req.path());
    if allowed.is_empty() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            format!("no route {} {}", req.method(), req.path()),
        )
        .error_response();
    }
    let allow = allowed
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut res = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} takes {allow}, not {}", req.path(), req.method()),
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        res.headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_refusals() {
        let mut seen = std::collections::BTreeSet::new();
        for c in CATALOGUE {
            assert!(seen.insert(c.code), "`{}` twice", c.code);
            assert!(
                c.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                c.code
            );
            assert!((400..600).contains(&c.status), "{}", c.code);
        }
    }

    #[test]
    fn a_refusal_has_the_whole_shape() {
        let e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "customer_blocked", "wait")
            .retry_after(30);
        let body = e.body();
        assert_eq!(body["error"]["code"], "customer_blocked");
        assert_eq!(body["error"]["param"], serde_json::Value::Null);
        assert_eq!(
            body["error"]["doc_url"],
            "docs/http-api.md#customer_blocked"
        );
        assert_eq!(body["error"]["retry_after"], 30);
        assert!(body["error"].get("session_id").is_none());
        let res = e.error_response();
        assert_eq!(res.headers().get("retry-after").expect("header"), "30");
    }
}
