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

/// Why a message was refused before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("recipient must be a possible E.164 number: digits, optionally after a +")]
    InvalidRecipient,
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
