//! [`PhoneNumber`]: a number that could exist under E.164, the one phone-number type of the
//! project.
//!
//! "Possible" in libphonenumber's sense, without its metadata: the country code is one the ITU
//! has assigned (ITU-T E.164, "List of assigned country codes"), the whole number has at most
//! 15 digits (E.164 §6) and the national significant number is long enough to be one. Only the
//! two single-digit codes, where every number has exactly 10 national digits (North American
//! Numbering Plan, Russia and Kazakhstan), get an exact length; elsewhere national lengths vary
//! within a country, and guessing them wrong would lock real customers out. Whether a number is
//! in service only WhatsApp can tell. Pure: no I/O, no allocation beyond the digits kept.

use serde::{Deserialize, Serialize};
use std::fmt;

/// E.164 §6: at most 15 digits, country code included.
pub const MAX_DIGITS: usize = 15;
/// The shortest national numbers in use (Niue, Tokelau, Saint Helena) have 4 digits.
const MIN_NATIONAL_DIGITS: usize = 4;

/// Country codes the ITU has assigned, by length. Spare and reserved codes (`+999`, `+28x`,
/// `+80x` other than 800 and 808, …) are absent, so a number using one cannot be reached.
const ONE_DIGIT: &[u16] = &[1, 7];
const TWO_DIGITS: &[u16] = &[
    20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56,
    57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
];
const THREE_DIGITS: &[(u16, u16)] = &[
    (211, 213),
    (216, 216),
    (218, 218),
    (220, 258),
    (260, 269),
    (290, 291),
    (297, 299),
    (350, 359),
    (370, 383),
    (385, 387),
    (389, 389),
    (420, 421),
    (423, 423),
    (500, 509),
    (590, 599),
    (670, 670),
    (672, 683),
    (685, 692),
    (800, 800),
    (808, 808),
    (850, 850),
    (852, 853),
    (855, 856),
    (870, 870),
    (878, 878),
    (880, 883),
    (886, 886),
    (888, 888),
    (960, 968),
    (970, 977),
    (979, 979),
    (992, 996),
    (998, 998),
];

/// Why a phone number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("an E.164 number starts with +")]
    MissingPlus,
    #[error("a phone number is digits only, with no spaces or punctuation")]
    NotDigits,
    #[error("no country uses this country code")]
    UnknownCountryCode,
    #[error("too short or too long for its country code")]
    Length,
}

/// A phone number that could exist under E.164, kept as its digits (no `+`), which is also the
/// form WhatsApp uses for a `wa_id`. Its `Debug` and `Display` show only the last 4 digits.
///
/// Stored values deserialize without the check: they were parsed when first written, and an
/// old record must stay readable if the rules here grow stricter.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses what a merchant or an operator wrote: `+` and the digits, e.g. `+919876543210`
    /// (surrounding spaces are ignored).
    pub fn parse(raw: &str) -> Result<Self, PhoneError> {
        let digits = raw
            .trim()
            .strip_prefix('+')
            .ok_or(PhoneError::MissingPlus)?;
        Self::check(digits)
    }

    /// Parses a number WhatsApp wrote (`wa_id`, recipient): digits, a leading `+` allowed.
    pub fn from_wa_id(raw: &str) -> Result<Self, PhoneError> {
        Self::check(raw.strip_prefix('+').unwrap_or(raw))
    }

    fn check(digits: &str) -> Result<Self, PhoneError> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::NotDigits);
        }
        let cc = country_code_len(digits).ok_or(PhoneError::UnknownCountryCode)?;
        let national = digits.len() - cc;
        let fits = match cc {
            // NANP (+1) and +7: every number has exactly 10 national digits.
            1 => national == 10,
            _ => national >= MIN_NATIONAL_DIGITS && digits.len() <= MAX_DIGITS,
        };
        if fits {
            Ok(Self(digits.to_owned()))
        } else {
            Err(PhoneError::Length)
        }
    }

    /// The digits, without `+`: the customer's WhatsApp id and the key the store uses.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// The E.164 form, with `+`.
    pub fn e164(&self) -> String {
        format!("+{}", self.0)
    }

    /// The form allowed in logs and the audit log: the last 4 digits only.
    pub fn masked(&self) -> String {
        let tail = &self.0[self.0.len().saturating_sub(4)..];
        format!("…{tail}")
    }
}

/// The length of the assigned country code `digits` starts with. E.164 country codes are a
/// prefix code, so at most one of the three lengths matches.
fn country_code_len(digits: &str) -> Option<usize> {
    let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u16>().ok());
    if prefix(1).is_some_and(|p| ONE_DIGIT.contains(&p)) {
        return Some(1);
    }
    if prefix(2).is_some_and(|p| TWO_DIGITS.contains(&p)) {
        return Some(2);
    }
    let three = prefix(3)?;
    THREE_DIGITS
        .iter()
        .any(|(low, high)| (*low..=*high).contains(&three))
        .then_some(3)
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn possible_numbers_are_kept_as_digits() {
        for (raw, digits) in [
            ("+919876543210", "919876543210"),
            (" +14155550100 ", "14155550100"),
            ("+447700900123", "447700900123"),
            ("+79161234567", "79161234567"),
            ("+4915112345601", "4915112345601"),
            ("+6834002", "6834002"),
            ("+35799123456", "35799123456"),
            ("+972987654321", "972987654321"),
            ("+882123456789012", "882123456789012"),
        ] {
            let n = PhoneNumber::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(n.digits(), digits);
            assert_eq!(n.e164(), format!("+{digits}"));
        }
    }

    #[test]
    fn impossible_numbers_are_refused_with_the_reason() {
        use PhoneError::*;
        for (raw, why) in [
            ("919876543210", MissingPlus),
            ("+", NotDigits),
            ("+91 98765 43210", NotDigits),
            ("+91-9876543210", NotDigits),
            ("++919876543210", NotDigits),
            ("+0123456789", UnknownCountryCode),
            ("+99912345678", UnknownCountryCode),
            ("+999", UnknownCountryCode),
            ("+2101234567", UnknownCountryCode),
            ("+2801234567", UnknownCountryCode),
            ("+8011234567", UnknownCountryCode),
            ("+3841234567", UnknownCountryCode),
            ("+6711234567", UnknownCountryCode),
            ("+9691234567", UnknownCountryCode),
            ("+12", Length),
            ("+1415555010", Length),
            ("+141555501000", Length),
            ("+7916123456", Length),
            ("+91987", Length),
            ("+9112345678901234", Length),
            ("+1234567890123456", Length),
        ] {
            assert_eq!(PhoneNumber::parse(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn whatsapp_ids_need_no_plus() {
        assert_eq!(
            PhoneNumber::from_wa_id("16505551234").map(|n| n.e164()),
            Ok("+16505551234".to_owned())
        );
        assert_eq!(
            PhoneNumber::from_wa_id("+16505551234").map(|n| n.e164()),
            Ok("+16505551234".to_owned())
        );
        assert_eq!(
            PhoneNumber::from_wa_id("99912345678"),
            Err(PhoneError::UnknownCountryCode)
        );
    }

    #[test]
    fn logs_see_the_last_four_digits_only() {
        let n = PhoneNumber::parse("+919876543210").expect("valid");
        assert_eq!(format!("{n:?}"), "PhoneNumber(…3210)");
        assert_eq!(n.to_string(), "…3210");
        assert!(!format!("{n:?} {n}").contains("98765"));
    }

    #[test]
    fn country_codes_are_prefix_free() {
        let mut all: Vec<String> = ONE_DIGIT.iter().map(u16::to_string).collect();
        all.extend(TWO_DIGITS.iter().map(u16::to_string));
        for (low, high) in THREE_DIGITS {
            assert!(low <= high);
            all.extend((*low..=*high).map(|c| c.to_string()));
        }
        for a in &all {
            for b in &all {
                assert!(
                    a == b || !b.starts_with(a.as_str()),
                    "{a} is a prefix of {b}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_plus_and_at_most_15_digits(raw in "\\PC{0,20}") {
            if let Ok(n) = PhoneNumber::parse(&raw) {
                prop_assert!(raw.trim().starts_with('+'));
                prop_assert!(n.digits().len() <= MAX_DIGITS);
                prop_assert!(n.digits().bytes().all(|b| b.is_ascii_digit()));
            }
        }

        #[test]
        fn a_parsed_number_parses_again_to_itself(digits in "[1-9][0-9]{6,14}") {
            if let Ok(n) = PhoneNumber::from_wa_id(&digits) {
                prop_assert_eq!(PhoneNumber::parse(&n.e164()), Ok(n));
            }
        }
    }
}
