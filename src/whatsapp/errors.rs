//! Graph API errors: Meta's error JSON parsed into [`GraphError`], and the one decision the outbox
//! needs from it, [`ErrorClass`].
//!
//! Owns the table of Meta's error `code`s and what each means for a send: retry later, switch to
//! the template, give up on this message, or wake an operator. Meta asks integrators to branch on
//! `code` (not on the HTTP status, the deprecated `error_subcode` or the human `message`), so the
//! HTTP status only decides for codes this table does not know. Nothing here does I/O or logging.

use serde::Deserialize;

use super::messages::MessageError;

/// What the sender should do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again after a backoff. With `per_recipient`, only messages to the same customer have to
    /// wait (Meta's pair rate limit); others may go now.
    Retry { per_recipient: bool },
    /// The customer's 24-hour window is closed: send the step's template instead.
    UseTemplate,
    /// This message will never go out as it is: report a failed delivery to the flow.
    Fail,
    /// Our token, permissions or account are broken: alert the operator and keep the message.
    Alert,
}

/// Meta's error codes that waotp tells apart, named after Meta's titles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GraphCode {
    // Throttling: Meta asks to slow down and try again.
    TooManyCalls,
    RateLimitIssues,
    RateLimitHit,
    SpamRateLimitHit,
    PairRateLimitHit,
    // Transient: Meta's side is down or overloaded.
    ApiUnknown,
    ApiService,
    SomethingWentWrong,
    ServiceUnavailable,
    ServerTemporarilyUnavailable,
    // More than 24 hours since the customer last wrote.
    ReEngagementMessage,
    // Undeliverable, invalid request or template problems.
    InvalidParameter,
    RequiredParameterMissing,
    ParameterValueInvalid,
    RecipientCannotBeSender,
    MessageUndeliverable,
    EcosystemProtection,
    UnsupportedMessageType,
    MediaDownloadError,
    MediaUploadError,
    TemplateParameterCountMismatch,
    TemplateDoesNotExist,
    TemplateTextTooLong,
    TemplatePolicyViolated,
    TemplateParameterFormatMismatch,
    TemplatePaused,
    TemplateDisabled,
    PhoneNumberNotRegistered,
    NumberInExperiment,
    // Token, permission or account problems.
    AuthException,
    ApiMethod,
    PermissionDenied,
    AccessTokenExpired,
    /// Meta's range 200–299 of API permission errors; the exact code is kept.
    ApiPermission(i64),
    AccessDenied,
    AccountLocked,
    BusinessPaymentIssue,
    BlockedForPolicyViolation,
    /// A code this table does not know; the HTTP status decides its class.
    Unknown(i64),
}

impl GraphCode {
    pub fn from_code(code: i64) -> GraphCode {
        use GraphCode::*;
        match code {
            4 => TooManyCalls,
            80007 => RateLimitIssues,
            130429 => RateLimitHit,
            131048 => SpamRateLimitHit,
            131056 => PairRateLimitHit,
            1 => ApiUnknown,
            2 => ApiService,
            131000 => SomethingWentWrong,
            131016 => ServiceUnavailable,
            133004 => ServerTemporarilyUnavailable,
            131047 => ReEngagementMessage,
            100 => InvalidParameter,
            131008 => RequiredParameterMissing,
            131009 => ParameterValueInvalid,
            131021 => RecipientCannotBeSender,
            131026 => MessageUndeliverable,
            131049 => EcosystemProtection,
            131051 => UnsupportedMessageType,
            131052 => MediaDownloadError,
            131053 => MediaUploadError,
            132000 => TemplateParameterCountMismatch,
            132001 => TemplateDoesNotExist,
            132005 => TemplateTextTooLong,
            132007 => TemplatePolicyViolated,
            132012 => TemplateParameterFormatMismatch,
            132015 => TemplatePaused,
            132016 => TemplateDisabled,
            133010 => PhoneNumberNotRegistered,
            130472 => NumberInExperiment,
            0 => AuthException,
            3 => ApiMethod,
            10 => PermissionDenied,
            190 => AccessTokenExpired,
            200..=299 => ApiPermission(code),
            131005 => AccessDenied,
            131031 => AccountLocked,
            131042 => BusinessPaymentIssue,
            368 => BlockedForPolicyViolation,
            other => Unknown(other),
        }
    }

    /// Meta's numeric code, for logs and metrics.
    pub fn code(self) -> i64 {
        use GraphCode::*;
        match self {
            TooManyCalls => 4,
            RateLimitIssues => 80007,
            RateLimitHit => 130429,
            SpamRateLimitHit => 131048,
            PairRateLimitHit => 131056,
            ApiUnknown => 1,
            ApiService => 2,
            SomethingWentWrong => 131000,
            ServiceUnavailable => 131016,
            ServerTemporarilyUnavailable => 133004,
            ReEngagementMessage => 131047,
            InvalidParameter => 100,
            RequiredParameterMissing => 131008,
            ParameterValueInvalid => 131009,
            RecipientCannotBeSender => 131021,
            MessageUndeliverable => 131026,
            EcosystemProtection => 131049,
            UnsupportedMessageType => 131051,
            MediaDownloadError => 131052,
            MediaUploadError => 131053,
            TemplateParameterCountMismatch => 132000,
            TemplateDoesNotExist => 132001,
            TemplateTextTooLong => 132005,
            TemplatePolicyViolated => 132007,
            TemplateParameterFormatMismatch => 132012,
            TemplatePaused => 132015,
            TemplateDisabled => 132016,
            PhoneNumberNotRegistered => 133010,
            NumberInExperiment => 130472,
            AuthException => 0,
            ApiMethod => 3,
            PermissionDenied => 10,
            AccessTokenExpired => 190,
            ApiPermission(code) | Unknown(code) => code,
            AccessDenied => 131005,
            AccountLocked => 131031,
            BusinessPaymentIssue => 131042,
            BlockedForPolicyViolation => 368,
        }
    }

    /// The class of a known code; `None` for [`GraphCode::Unknown`].
    fn known_class(self) -> Option<ErrorClass> {
        use GraphCode::*;
        let class = match self {
            // Throttling (4 app-level calls, 80007 account, 130429 throughput, 131048 spam
            // limit): everything slows down.
            TooManyCalls | RateLimitIssues | RateLimitHit | SpamRateLimitHit => ErrorClass::Retry {
                per_recipient: false,
            },
            // 131056: too many messages to this one customer; others may still be sent.
            PairRateLimitHit => ErrorClass::Retry {
                per_recipient: true,
            },
            // Meta's own outages (1 unknown, 2 service, 131000, 131016, 133004).
            ApiUnknown
            | ApiService
            | SomethingWentWrong
            | ServiceUnavailable
            | ServerTemporarilyUnavailable => ErrorClass::Retry {
                per_recipient: false,
            },
            // 131047: the 24-hour customer service window is closed; only templates may go.
            ReEngagementMessage => ErrorClass::UseTemplate,
            // The recipient cannot get this message, or the request itself is wrong (bad
            // parameter, unsupported type, missing/paused/disabled template): repeating the same
            // request fails the same way, so the flow hears of a failed delivery.
            InvalidParameter
            | RequiredParameterMissing
            | ParameterValueInvalid
            | RecipientCannotBeSender
            | MessageUndeliverable
            | EcosystemProtection
            | UnsupportedMessageType
            | MediaDownloadError
            | MediaUploadError
            | TemplateParameterCountMismatch
            | TemplateDoesNotExist
            | TemplateTextTooLong
            | TemplatePolicyViolated
            | TemplateParameterFormatMismatch
            | TemplatePaused
            | TemplateDisabled
            | PhoneNumberNotRegistered
            | NumberInExperiment => ErrorClass::Fail,
            // Expired or revoked token, missing permission, locked account, unpaid bill, policy
            // block: no message can go until a human fixes it, so keep the message and alert.
            AuthException
            | ApiMethod
            | PermissionDenied
            | AccessTokenExpired
            | ApiPermission(_)
            | AccessDenied
            | AccountLocked
            | BusinessPaymentIssue
            | BlockedForPolicyViolation => ErrorClass::Alert,
            Unknown(_) => return None,
        };
        Some(class)
    }
}

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
    /// No answer: connection refused or reset, DNS, TLS.
    #[error("Graph API unreachable: {0}")]
    Network(String),
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
            GraphError::Network(_) | GraphError::Timeout => ErrorClass::Retry {
                per_recipient: false,
            },
            // Meta may have accepted the message; sending it again could deliver it twice, so
            // a human looks first.
            GraphError::BadResponse(_) => ErrorClass::Alert,
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
            131026, 131021, 131051, 131052, 131053, 100, 131008, 131009, 132000, 132001, 132005,
            132007, 132012, 132015, 132016, 133010, 130472, 131049,
        ] {
            assert_eq!(api(400, code).class(), ErrorClass::Fail, "code {code}");
        }
        for code in [0, 3, 10, 190, 200, 250, 299, 131005, 131031, 131042, 368] {
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
