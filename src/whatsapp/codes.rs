//! Meta's error codes and what each means for a send: retry later, switch to the template, give
//! up on this message, wake an operator, or treat the send as in doubt.
//!
//! The table follows Meta's Cloud API error-code reference; a code it does not list is kept as
//! [`GraphCode::Unknown`] and classified by HTTP status in `errors`. Pure.

/// Meta's pair rate limit: about one message every 6 seconds from a business number to one
/// customer. After a 131056 the next send to that customer waits at least this long.
pub const PAIR_RATE_LIMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(6);

/// What the sender should do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again after a backoff. With `per_recipient`, only messages to the same customer have to
    /// wait (Meta's pair rate limit, at least [`PAIR_RATE_LIMIT_WAIT`]); others may go now.
    Retry { per_recipient: bool },
    /// The customer's 24-hour window is closed: send the step's template instead.
    UseTemplate,
    /// This message will never go out as it is: report a failed delivery to the flow.
    Fail,
    /// The approved template itself is refused (missing, paused, disabled, wrong parameters):
    /// the delivery fails as with [`ErrorClass::Fail`], and an operator must fix the template.
    TemplateProblem,
    /// Our token, permissions or account are broken: alert the operator and keep the message.
    Alert,
    /// The request may have reached WhatsApp but no answer says whether it was accepted (no
    /// answer in time, connection lost after the request was written, a 2xx without a message
    /// id). Neither failed nor to be retried blindly: a second send could deliver it twice.
    InDoubt,
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
    pub(super) fn known_class(self) -> Option<ErrorClass> {
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
            | NumberInExperiment => ErrorClass::Fail,
            // 132000/132001/132005/132007/132012/132015/132016: the template (its name,
            // language, parameters, approval or quality state) is what Meta refuses; every send
            // of it fails until someone fixes it in WhatsApp Manager or the flow file.
            TemplateParameterCountMismatch
            | TemplateDoesNotExist
            | TemplateTextTooLong
            | TemplatePolicyViolated
            | TemplateParameterFormatMismatch
            | TemplatePaused
            | TemplateDisabled => ErrorClass::TemplateProblem,
            // Expired or revoked token, missing permission, locked account, unpaid bill, policy
            // block, or our own business number not registered with the Cloud API: no message can
            // go until a human fixes it, so keep the message and alert rather than fail every
            // customer's flow.
            PhoneNumberNotRegistered
            | AuthException
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
