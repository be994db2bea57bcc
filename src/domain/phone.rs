//! [`PhoneNumber`]: a number that could exist under E.164, the one phone-number type of the
//! project.
//!
//! "Possible" in libphonenumber's sense, from its data but without its weight (its Rust port
//! compiles 1 MB of XML metadata and a regex engine per country): the country code is assigned
//! and the national significant number has a length some subscriber number under that code has
//! (fixed-line, mobile, VoIP, personal or pager numbers; freephone, premium-rate and shared-cost
//! codes such as +800 cannot be a customer). The table below comes from libphonenumber's
//! `PhoneNumberMetadata.xml` (release 9.0.33), territories that share a code merged into one
//! range, capped by E.164's 15 digits. Whether a number is in service only WhatsApp can tell.
//! Pure: no I/O, no allocation beyond the digits kept.

use serde::{Deserialize, Serialize};
use std::fmt;

/// E.164 §6: at most 15 digits, country code included.
pub const MAX_DIGITS: usize = 15;

/// Country code, and the shortest and longest national significant number under it, sorted by
/// code. Spare and reserved codes (`+999`, `+28x`, `+80x`, …) are absent.
#[rustfmt::skip]
const COUNTRIES: &[(u16, u8, u8)] = &[
    (1, 10, 10), (7, 10, 10), (20, 8, 10), (27, 5, 9), (30, 10, 10), (31, 9, 11), (32, 8, 9),
    (33, 9, 9), (34, 9, 9), (36, 8, 9), (39, 6, 12), (40, 6, 9), (41, 9, 9), (43, 4, 13),
    (44, 9, 10), (45, 8, 8), (46, 7, 9), (47, 8, 8), (48, 6, 9), (49, 4, 13), (51, 8, 9),
    (52, 10, 10), (53, 6, 10), (54, 10, 11), (55, 10, 11), (56, 9, 9), (57, 8, 10), (58, 10, 10),
    (60, 8, 10), (61, 5, 9), (62, 7, 12), (63, 6, 10), (64, 8, 10), (65, 8, 8), (66, 8, 9),
    (81, 9, 10), (82, 5, 11), (84, 9, 10), (86, 7, 11), (90, 10, 10), (91, 10, 10), (92, 9, 10),
    (93, 9, 9), (94, 9, 9), (95, 6, 10), (98, 6, 10), (211, 9, 9), (212, 9, 9), (213, 8, 9),
    (216, 8, 8), (218, 9, 9), (220, 7, 7), (221, 9, 9), (222, 8, 8), (223, 8, 8), (224, 8, 9),
    (225, 10, 10), (226, 8, 8), (227, 8, 8), (228, 8, 8), (229, 8, 10), (230, 7, 8), (231, 7, 9),
    (232, 8, 8), (233, 9, 9), (234, 10, 10), (235, 8, 8), (236, 8, 8), (237, 9, 9), (238, 7, 7),
    (239, 7, 7), (240, 9, 9), (241, 7, 8), (242, 9, 9), (243, 7, 10), (244, 9, 9), (245, 7, 9),
    (246, 7, 7), (247, 5, 5), (248, 7, 7), (249, 9, 9), (250, 8, 9), (251, 9, 9), (252, 6, 9),
    (253, 8, 8), (254, 7, 9), (255, 9, 9), (256, 9, 9), (257, 8, 8), (258, 8, 9), (260, 9, 9),
    (261, 9, 9), (262, 9, 9), (263, 5, 10), (264, 8, 9), (265, 7, 9), (266, 8, 8), (267, 7, 8),
    (268, 8, 8), (269, 7, 7), (290, 4, 5), (291, 7, 7), (297, 7, 7), (298, 6, 6), (299, 6, 6),
    (350, 8, 8), (351, 9, 9), (352, 4, 11), (353, 7, 10), (354, 7, 9), (355, 8, 9), (356, 8, 8),
    (357, 8, 8), (358, 5, 10), (359, 6, 9), (370, 8, 8), (371, 8, 8), (372, 7, 8), (373, 8, 8),
    (374, 8, 8), (375, 9, 9), (376, 6, 9), (377, 8, 9), (378, 8, 10), (380, 9, 9), (381, 7, 12),
    (382, 8, 8), (383, 8, 12), (385, 8, 9), (386, 8, 8), (387, 8, 9), (389, 8, 8), (420, 9, 9),
    (421, 6, 9), (423, 7, 9), (500, 5, 5), (501, 7, 7), (502, 8, 8), (503, 8, 8), (504, 8, 8),
    (505, 8, 8), (506, 8, 8), (507, 7, 8), (508, 6, 9), (509, 8, 8), (590, 9, 9), (591, 8, 8),
    (592, 7, 7), (593, 8, 9), (594, 9, 9), (595, 7, 9), (596, 9, 9), (597, 6, 7), (598, 8, 8),
    (599, 7, 8), (670, 7, 8), (672, 6, 6), (673, 7, 7), (674, 7, 7), (675, 7, 8), (676, 5, 7),
    (677, 5, 7), (678, 5, 7), (679, 7, 7), (680, 7, 7), (681, 6, 6), (682, 5, 5), (683, 4, 7),
    (685, 5, 10), (686, 5, 8), (687, 6, 6), (688, 5, 7), (689, 8, 8), (690, 4, 7), (691, 7, 7),
    (692, 7, 7), (850, 8, 10), (852, 8, 8), (853, 8, 8), (855, 8, 9), (856, 8, 10), (870, 9, 12),
    (878, 12, 12), (880, 6, 10), (881, 9, 10), (882, 7, 12), (883, 8, 12), (886, 8, 11),
    (960, 7, 7), (961, 7, 8), (962, 8, 9), (963, 8, 9), (964, 8, 10), (965, 8, 8), (966, 9, 9),
    (967, 7, 9), (968, 8, 8), (970, 8, 9), (971, 8, 9), (972, 8, 12), (973, 8, 8), (974, 7, 8),
    (975, 7, 8), (976, 8, 10), (977, 8, 10), (992, 9, 9), (993, 8, 8), (994, 9, 9), (995, 9, 9),
    (996, 9, 9), (998, 9, 9),
];

/// Why a phone number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("an E.164 number starts with +")]
    MissingPlus,
    #[error("a phone number is digits only, with no spaces or punctuation")]
    NotDigits,
    #[error("no subscriber number has this country code")]
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
        let (cc, min, max) = country_of(digits).ok_or(PhoneError::UnknownCountryCode)?;
        let national = digits.len() - cc;
        if (usize::from(min)..=usize::from(max)).contains(&national) && digits.len() <= MAX_DIGITS {
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

/// The country code `digits` starts with and the national lengths it allows. E.164 country
/// codes are a prefix code, so at most one of the three lengths matches.
fn country_of(digits: &str) -> Option<(usize, u8, u8)> {
    if digits.starts_with('0') {
        return None;
    }
    (1..=3).find_map(|n| {
        let code = digits.get(..n)?.parse::<u16>().ok()?;
        let i = COUNTRIES.binary_search_by_key(&code, |c| c.0).ok()?;
        let (_, min, max) = COUNTRIES[i];
        Some((n, min, max))
    })
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
            ("+80012345678", UnknownCountryCode),
            ("+447700900", Length),
            ("+9198765432", Length),
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
    fn the_table_is_sorted_prefix_free_and_within_e164() {
        assert!(COUNTRIES.windows(2).all(|w| w[0].0 < w[1].0));
        let codes: Vec<String> = COUNTRIES.iter().map(|c| c.0.to_string()).collect();
        for a in &codes {
            for b in &codes {
                assert!(
                    a == b || !b.starts_with(a.as_str()),
                    "{a} is a prefix of {b}"
                );
            }
        }
        for (code, min, max) in COUNTRIES {
            assert!(min <= max, "+{code}");
            assert!(
                code.to_string().len() + usize::from(*max) <= MAX_DIGITS,
                "+{code}"
            );
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
