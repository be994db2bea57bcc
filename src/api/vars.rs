//! The limits on a session's `vars`, checked at the door: vars are stored with the session,
//! copied into every step and rendered into messages, so their size is bounded before any of
//! that happens.

use super::error::ApiError;
use serde_json::Value;
use std::collections::BTreeMap;

/// At most this many vars per session.
pub const MAX_VARS: usize = 32;
/// A var's name: 1 to this many bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// A var's value, as JSON: at most this many bytes (WhatsApp's longest interactive body is
/// 1,024 characters).
pub const MAX_VALUE_BYTES: usize = 1024;
/// All vars together, as JSON: at most this many bytes.
pub const MAX_TOTAL_BYTES: usize = 8 * 1024;

/// `400 invalid_vars` naming the first limit broken.
pub fn check_vars(vars: &BTreeMap<String, Value>) -> Result<(), ApiError> {
    let refuse = |message: String| Err(ApiError::bad_request("invalid_vars", message));
    if vars.len() > MAX_VARS {
        return refuse(format!(
            "{} vars; at most {MAX_VARS} are allowed",
            vars.len()
        ));
    }
    let mut total = 2;
    for (name, value) in vars {
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
            return refuse(format!(
                "var names are 1 to {MAX_NAME_BYTES} bytes without control characters; `{}…` is not",
                name.chars().take(16).collect::<String>()
            ));
        }
        let len = value.to_string().len();
        if len > MAX_VALUE_BYTES {
            return Err(ApiError::bad_request(
                "invalid_vars",
                format!(
                    "var `{name}` is {len} bytes as JSON; at most {MAX_VALUE_BYTES} are allowed"
                ),
            )
            .with_param(format!("vars.{name}")));
        }
        // `"name":value,` as JSON.
        total += name.len() + 4 + len;
    }
    if total > MAX_TOTAL_BYTES {
        return refuse(format!(
            "vars are {total} bytes as JSON; at most {MAX_TOTAL_BYTES} are allowed in all"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: impl IntoIterator<Item = (String, Value)>) -> BTreeMap<String, Value> {
        pairs.into_iter().collect()
    }

    fn refused(v: &BTreeMap<String, Value>) -> bool {
        matches!(check_vars(v), Err(e) if e.code == "invalid_vars")
    }

    #[test]
    fn each_limit_holds_exactly_at_its_edge() {
        let many = |n: usize| vars((0..n).map(|i| (format!("v{i}"), json!("x"))));
        assert!(check_vars(&many(MAX_VARS)).is_ok());
        assert!(refused(&many(MAX_VARS + 1)));

        let named = |n: usize| vars([("n".repeat(n), json!(1))]);
        assert!(check_vars(&named(MAX_NAME_BYTES)).is_ok());
        assert!(refused(&named(MAX_NAME_BYTES + 1)));
        assert!(refused(&named(0)));
        assert!(refused(&vars([("a\nb".to_owned(), json!(1))])));

        // A string's JSON has its two quotes.
        let valued = |n: usize| vars([("v".to_owned(), json!("x".repeat(n - 2)))]);
        assert!(check_vars(&valued(MAX_VALUE_BYTES)).is_ok());
        assert!(refused(&valued(MAX_VALUE_BYTES + 1)));
        let nested = vars([(
            "v".to_owned(),
            json!({"deep": ["x".repeat(MAX_VALUE_BYTES)]}),
        )]);
        assert!(refused(&nested));

        // Nine values of 1,000 bytes each pass one by one, not together.
        let big = |n: usize| vars((0..n).map(|i| (format!("v{i}"), json!("x".repeat(998)))));
        assert!(check_vars(&big(8)).is_ok());
        assert!(refused(&big(9)));
        assert_eq!(
            serde_json::to_string(&big(8)).expect("json").len(),
            2 + 8 * (4 + 2 + 1000) - 1,
            "the running total counts the JSON as written (less the last comma)"
        );
    }
}
