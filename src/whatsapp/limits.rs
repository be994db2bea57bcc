//! WhatsApp's limits on outbound messages and the checks that enforce them.
//!
//! Owns the numbers (from Meta's Cloud API reference) and [`MessageError`]; `messages` calls the
//! checks while it builds a body, so nothing that breaks a limit reaches the network. Pure.

/// Meta's limits (Cloud API reference, interactive and text objects).
pub(super) const TEXT_MAX: usize = 4096;
pub(super) const INTERACTIVE_BODY_MAX: usize = 1024;
pub(super) const BUTTONS_MAX: usize = 3;
pub(super) const BUTTON_TITLE_MAX: usize = 20;
pub(super) const BUTTON_ID_MAX: usize = 256;
pub(super) const LIST_BUTTON_MAX: usize = 20;
pub(super) const LIST_ROWS_MAX: usize = 10;
pub(super) const SECTION_TITLE_MAX: usize = 24;
pub(super) const ROW_TITLE_MAX: usize = 24;
pub(super) const ROW_ID_MAX: usize = 200;
pub(super) const ROW_DESCRIPTION_MAX: usize = 72;
pub(super) const CODE_MAX: usize = 15;
pub(super) const TRACKER_MAX: usize = 512;
pub(super) const TEMPLATE_NAME_MAX: usize = 512;
pub(super) const LANGUAGE_MAX: usize = 15;
/// A template's body text parameter: 32768 characters when the body is the send's only
/// component, 1024 when other components (buttons) go with it (Cloud API reference,
/// parameter object).
pub const TEMPLATE_PARAMETER_MAX: usize = 32768;
pub const TEMPLATE_PARAMETER_WITH_BUTTONS_MAX: usize = 1024;
/// Quick-reply buttons one template may have, and the longest payload one may carry.
pub(super) const QUICK_REPLIES_MAX: usize = 10;
pub(super) const QUICK_REPLY_PAYLOAD_MAX: usize = 256;

/// The longest body parameter a template send may carry.
pub fn template_parameter_max(with_buttons: bool) -> usize {
    if with_buttons {
        TEMPLATE_PARAMETER_WITH_BUTTONS_MAX
    } else {
        TEMPLATE_PARAMETER_MAX
    }
}

/// A value as a template text parameter: Meta refuses parameters with a newline or a tab or more
/// than four consecutive spaces (error 132018), so every run of whitespace becomes one space and
/// the ends are trimmed. Free-form and interactive texts are sent as written.
pub fn template_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Why a message was refused before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("recipient must be a possible E.164 number (digits, optionally after a +) or a business-scoped user id")]
    InvalidRecipient,
    /// Meta refuses authentication templates to a business-scoped user id (error 131062).
    #[error("an authentication template needs the customer's phone number; WhatsApp gave only a business-scoped user id")]
    NeedsPhoneNumber,
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} has {len} characters; WhatsApp allows {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{count} {what}; WhatsApp allows 1 to {max}")]
    WrongCount {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{what} `{value}` appears twice")]
    Duplicate { what: &'static str, value: String },
    #[error("a list with several sections needs a title on each")]
    UntitledSection,
}

/// A send to a number that cannot exist would only come back as an error from Meta.
pub(super) fn check_recipient(to: &str) -> Result<(), MessageError> {
    crate::domain::PhoneNumber::from_wa_id(to)
        .map(drop)
        .map_err(|_| MessageError::InvalidRecipient)
}

/// Meta counts characters, not bytes: an emoji title of 20 characters is fine.
pub(super) fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), MessageError> {
    let len = value.chars().count();
    if value.trim().is_empty() {
        Err(MessageError::Empty { field })
    } else if len > max {
        Err(MessageError::TooLong { field, len, max })
    } else {
        Ok(())
    }
}

pub(super) fn check_count(
    what: &'static str,
    count: usize,
    max: usize,
) -> Result<(), MessageError> {
    if count == 0 || count > max {
        Err(MessageError::WrongCount { what, count, max })
    } else {
        Ok(())
    }
}

pub(super) fn check_unique<'a>(
    what: &'static str,
    values: impl Iterator<Item = &'a str>,
) -> Result<(), MessageError> {
    let mut seen = std::collections::HashSet::new();
    for value in values {
        if !seen.insert(value) {
            return Err(MessageError::Duplicate {
                what,
                value: value.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn template_text_collapses_whitespace_meta_refuses() {
        assert_eq!(template_text(" Asha\nDevi\t\tRao  "), "Asha Devi Rao");
        assert_eq!(template_text("₹1,499      (cash)"), "₹1,499 (cash)");
        assert_eq!(template_text("\r\n\t "), "");
    }

    proptest! {
        /// Whatever a merchant sends, the parameter has no newline or tab, never more than one
        /// space in a row, no space at either end, and keeps every other character in order.
        #[test]
        fn template_text_is_always_acceptable(value in "\\PC*|[ \t\r\na-z]*") {
            let text = template_text(&value);
            prop_assert!(!text.contains(['\n', '\r', '\t']));
            prop_assert!(!text.contains("  "));
            prop_assert_eq!(text.trim(), text.as_str());
            let kept: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            let left: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            prop_assert_eq!(kept, left);
            prop_assert_eq!(template_text(&text), text);
        }
    }
}
