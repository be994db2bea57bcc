//! Plain-language explanations of Meta's most common delivery error codes, for people reading
//! the stats API or the dashboard rather than Meta's reference.
//!
//! The wording says what happened and what a merchant can do; it follows Meta's Cloud API
//! error-code reference. Pure.

/// A short explanation of a Graph error code; `None` when the code is not in this table.
pub fn explain(code: i64) -> Option<&'static str> {
    Some(match code {
        190 => "Access token expired or invalid: renew WAOTP_ACCESS_TOKEN",
        4 | 80007 | 130429 => "Throughput limit reached: WhatsApp asked to send more slowly",
        131026 => {
            "Message undeliverable: the number has no WhatsApp account, an outdated app, or has not accepted the terms"
        }
        131047 => {
            "More than 24 hours since the customer last wrote: only a template may be sent (re-engagement window)"
        }
        131048 => "Spam rate limit: too many messages to customers who did not engage",
        131049 => {
            "Not delivered to protect the ecosystem's health (too many marketing messages to this person)"
        }
        131050 => "The customer stopped marketing messages from this business",
        131051 => "Unsupported message type",
        131056 => "Too many messages to the same customer in a short time (pair rate limit)",
        131000 | 131016 => "WhatsApp had a temporary problem; the message was retried",
        131008 => "A required parameter is missing",
        131009 => "A parameter value is not valid",
        131021 => "The recipient is the business number itself",
        131042 => "Payment problem on the WhatsApp Business account",
        131045 => "The phone number is not registered with the Cloud API",
        132000 => "The template's parameter count does not match its definition",
        132001 => "The template does not exist in this language, or is not approved yet",
        132005 => "The filled-in template text is too long",
        132007 => "The template's content violates a WhatsApp policy",
        132012 => "A template parameter has the wrong format",
        132015 => "The template is paused because of low quality",
        132016 => "The template is disabled because of low quality",
        368 => "The business account is temporarily blocked for a policy violation",
        10 | 200..=299 => "Missing permission for this phone number or app",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::explain;

    #[test]
    fn common_codes_are_explained_and_others_are_not() {
        for code in [131026, 131047, 130429, 131049, 131056, 132001, 190] {
            assert!(explain(code).is_some_and(|t| !t.is_empty()), "{code}");
        }
        assert!(explain(131047).is_some_and(|t| t.contains("24 hours")));
        assert_eq!(explain(999_999), None);
    }
}
