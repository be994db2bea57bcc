//! Graph API errors: every way a call can fail, with Meta's error JSON parsed, and the one
//! decision the outbox needs from it, [`GraphError::class`].
//!
//! Meta asks integrators to branch on `code` (not on the HTTP status, the deprecated
//! `error_subcode` or the human `message`), so the code decides through [`GraphCode`] and the HTTP
//! status only decides for codes waotp does not know. Nothing here does I/O or logging.

use serde::Deserialize;

use super::codes::{ErrorClass, GraphCode};
use super::limits::MessageError;

/// Meta's error object, as far as waotp reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct GraphErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub code: i64,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub error_data: Option<GraphErrorData>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

/// `error.error_data`: Meta's explanation of the error, the most useful field for a human.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct GraphErrorData {
    #[serde(default)]
    pub details: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    error: GraphErrorBody,
}

/// Why a call to the Graph API did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Meta answered with its error JSON.
    #[error("Graph API error {} (HTTP {status}): {}", .code.code(), .body.message)]
    Api {
        status: u16,
        code: GraphCode,
        body: GraphErrorBody,
    },
    /// A non-2xx answer without Meta's error JSON (a proxy or load balancer answered).
    #[error("Graph API answered HTTP {status} without an error object")]
    Http { status: u16 },
    /// No connection: refused, DNS, TLS, or no connection within the connect timeout. The
    /// request never left, so sending it again is safe.
    #[error("Graph API unreachable: {0}")]
    Network(String),
    /// The connection broke after the request may have been written (reset, closed early).
    #[error("Graph API connection lost before the answer: {0}")]
    Interrupted(String),
    /// No answer within the request timeout.
    #[error("Graph API did not answer in time")]
    Timeout,
    /// A 2xx answer we could not read; the message may have been accepted.
    #[error("unexpected Graph API answer: {0}")]
    BadResponse(String),
    /// Refused before any network call: the message breaks WhatsApp's limits.
    #[error(transparent)]
    Invalid(#[from] MessageError),
}

impl GraphError {
    /// Reads a non-2xx answer: Meta's error JSON when present, else only the status.
    pub fn from_response(status: u16, body: &[u8]) -> GraphError {
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => GraphError::Api {
                status,
                code: GraphCode::from_code(error.code),
                body: error,
            },
            Err(_) => GraphError::Http { status },
        }
    }

    /// Meta's error code, when Meta gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            GraphError::Api { code, .. } => Some(code.code()),
            _ => None,
        }
    }

    /// What to do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            GraphError::Api { status, code, .. } => code
                .known_class()
                .unwrap_or_else(|| class_of_status(*status)),
            GraphError::Http { status } => class_of_status(*status),
            GraphError::Network(_) => ErrorClass::Retry {
                per_recipient: false,
            },
            // Meta may have accepted the message: sending it again at once could deliver it
            // twice, dropping it could leave the customer without it.
            GraphError::Interrupted(_) | GraphError::Timeout | GraphError::BadResponse(_) => {
                ErrorClass::InDoubt
            }
            GraphError::Invalid(_) => ErrorClass::Fail,
        }
    }
}

/// The class of an error whose code we do not know: 429 and 5xx are worth retrying, 401/403
/// point at the token, any other 4xx is a request Meta will keep refusing.
fn class_of_status(status: u16) -> ErrorClass {
    match status {
        429 | 500..=599 => ErrorClass::Retry {
            per_recipient: false,
        },
        401 | 403 => ErrorClass::Alert,
        400..=499 => ErrorClass::Fail,
        _ => ErrorClass::Retry {
            per_recipient: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: i64) -> GraphError {
        let body = format!(
            r#"{{"error":{{"message":"m","type":"OAuthException","code":{code},"fbtrace_id":"t"}}}}"#
        );
        GraphError::from_response(status, body.as_bytes())
    }

    const RETRY: ErrorClass = ErrorClass::Retry {
        per_recipient: false,
    };

    #[test]
    fn classes_follow_the_code() {
        for code in [4, 80007, 130429, 131048, 1, 2, 131000, 131016, 133004] {
            assert_eq!(api(400, code).class(), RETRY, "code {code}");
        }
        assert_eq!(
            api(400, 131056).class(),
            ErrorClass::Retry {
                per_recipient: true
            }
        );
        assert_eq!(api(400, 131047).class(), ErrorClass::UseTemplate);
        for code in [
            131026, 131021, 131051, 131052, 131053, 100, 131008, 131009, 130472, 131049,
        ] {
            assert_eq!(api(400, code).class(), ErrorClass::Fail, "code {code}");
        }
        for code in [132000, 132001, 132005, 132007, 132012, 132015, 132016] {
            assert_eq!(
                api(400, code).class(),
                ErrorClass::TemplateProblem,
                "code {code}"
            );
        }
        for code in [
            0, 3, 10, 190, 200, 250, 299, 131005, 131031, 131042, 368, 133010,
        ] {
            assert_eq!(api(401, code).class(), ErrorClass::Alert, "code {code}");
        }
    }

    #[test]
    fn known_codes_round_trip() {
        for code in [4, 131056, 131047, 131026, 190, 250, 368, 133010, 0] {
            let known = GraphCode::from_code(code);
            assert!(!matches!(known, GraphCode::Unknown(_)), "code {code}");
            assert_eq!(known.code(), code);
        }
        assert_eq!(GraphCode::from_code(424242), GraphCode::Unknown(424242));
    }

    #[test]
    fn unknown_codes_fall_back_on_the_status() {
        assert_eq!(api(500, 999_999).class(), RETRY);
        assert_eq!(api(429, 999_999).class(), RETRY);
        assert_eq!(api(400, 999_999).class(), ErrorClass::Fail);
        assert_eq!(api(403, 999_999).class(), ErrorClass::Alert);
        assert_eq!(GraphError::from_response(502, b"<html>").class(), RETRY);
        assert_eq!(
            GraphError::from_response(404, b"").class(),
            ErrorClass::Fail
        );
    }

    #[test]
    fn reads_every_field_meta_sends() {
        let raw = br#"{"error":{"message":"(#131056) pair rate limit hit","type":"OAuthException","code":131056,"error_subcode":2494055,"error_data":{"messaging_product":"whatsapp","details":"too many messages"},"fbtrace_id":"Az8or2yhqkZfEZ-_4Qn_Bam"}}"#;
        let GraphError::Api { status, code, body } = GraphError::from_response(400, raw) else {
            panic!("not an API error");
        };
        assert_eq!((status, code), (400, GraphCode::PairRateLimitHit));
        assert_eq!(body.kind.as_deref(), Some("OAuthException"));
        assert_eq!(body.error_subcode, Some(2494055));
        assert_eq!(
            body.error_data.and_then(|d| d.details).as_deref(),
            Some("too many messages")
        );
        assert_eq!(body.fbtrace_id.as_deref(), Some("Az8or2yhqkZfEZ-_4Qn_Bam"));
    }
}
