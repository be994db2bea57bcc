//! One-time codes: generating them uniformly from a CSPRNG and reading what customers type.
//!
//! This module owns the only type that holds a code's digits, [`OtpCode`]. It never prints
//! them: `Debug` is redacted, there is no `Display`, and the digits are wiped on drop. Reading
//! them is an explicit [`OtpCode::expose`], done only where a code must leave the process (the
//! WhatsApp send, the reverse-OTP API answer) or be hashed.

use std::fmt;
use std::ops::RangeInclusive;

use rand::{CryptoRng, RngCore};
use secrecy::zeroize::Zeroize;
use subtle::ConstantTimeEq;

/// Code lengths allowed (docs/otp-rules.md).
pub const CODE_LENGTH_RANGE: RangeInclusive<u8> = 4..=10;

/// A one-time code: 4 to 10 ASCII digits.
#[derive(Clone)]
pub struct OtpCode(String);

/// A code length outside [`CODE_LENGTH_RANGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an OTP code has 4 to 10 digits, not {0}")]
pub struct InvalidCodeLength(pub u8);

impl OtpCode {
    /// The digits, for hashing, sealing and the one message that carries the code.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a code has at least 4 digits. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Rebuilds a code from digits that this crate produced (e.g. after opening a sealed copy).
    pub(crate) fn from_digits(digits: String) -> Option<Self> {
        let len = u8::try_from(digits.len()).ok()?;
        if CODE_LENGTH_RANGE.contains(&len) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Some(Self(digits))
        } else {
            let mut digits = digits;
            digits.zeroize();
            None
        }
    }
}

// Constant-time, like the digest check, in case a caller compares codes directly.
impl PartialEq for OtpCode {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for OtpCode {}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OtpCode(<{} digits>)", self.0.len())
    }
}

impl Drop for OtpCode {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Draws a code of `length` uniformly random digits.
///
/// Each digit comes from one random byte; bytes 250..=255 are thrown away and redrawn, because
/// `byte % 10` over all 256 values would make 0–5 slightly likelier than 6–9 (modulo bias).
/// Production passes `rand::rngs::OsRng`; tests may pass a seeded generator.
pub fn generate<R: RngCore + CryptoRng + ?Sized>(
    length: u8,
    rng: &mut R,
) -> Result<OtpCode, InvalidCodeLength> {
    if !CODE_LENGTH_RANGE.contains(&length) {
        return Err(InvalidCodeLength(length));
    }
    let mut digits = String::with_capacity(usize::from(length));
    let mut pool = [0u8; 16];
    while digits.len() < usize::from(length) {
        rng.fill_bytes(&mut pool);
        for &byte in &pool {
            if byte < 250 && digits.len() < usize::from(length) {
                digits.push(char::from(b'0' + byte % 10));
            }
        }
    }
    pool.zeroize();
    Ok(OtpCode(digits))
}

/// Reads a code the way a customer may type it, in the chat or on the merchant's site (the one
/// reading both `/check` and the chat use): surrounding and inner spaces, dashes and dots are
/// ignored ("123 456", "123-456", "12.34.56"), as are the invisible direction marks phones add
/// around digits in right-to-left text, and the decimal digits of every Unicode script
/// (Arabic-Indic, Persian, Devanagari, Bengali, Thai, full-width, …) count as ASCII digits.
/// Anything else, or a digit count outside 4–10, is not a code attempt.
pub fn normalize_attempt(text: &str) -> Option<OtpCode> {
    let mut digits = String::with_capacity(text.len());
    for ch in text.chars() {
        if let Some(digit) = digit_value(ch) {
            digits.push(char::from(b'0' + digit));
        } else if !is_separator(ch) {
            digits.zeroize();
            return None;
        }
    }
    OtpCode::from_digits(digits)
}

/// The code attempt in a customer's chat message: the whole message as [`normalize_attempt`]
/// reads it, or else one stretch of digits and separators inside it, for prefilled `wa.me`
/// texts and habits such as "Verify 123456" or "code: ١٢٣٤٥٦.". Either must hold exactly
/// `length` digits: in a chat, six digits typed for an eight-digit code are more likely a slip
/// (another message's number) than a guess, so they get a hint instead of costing an attempt.
/// The chat therefore takes every attempt of the right length that `/check` takes, and a
/// little more.
pub fn find_attempt(text: &str, length: usize) -> Option<OtpCode> {
    if let Some(code) = normalize_attempt(text).filter(|c| c.len() == length) {
        return Some(code);
    }
    let mut found = None;
    let mut run = String::new();
    let flush = |run: &mut String, found: &mut Option<OtpCode>| {
        if found.is_none() && run.len() == length {
            *found = OtpCode::from_digits(std::mem::take(run));
        }
        run.zeroize();
    };
    for ch in text.chars() {
        if let Some(digit) = digit_value(ch) {
            run.push(char::from(b'0' + digit));
        } else if !is_separator(ch) {
            flush(&mut run, &mut found);
        }
    }
    flush(&mut run, &mut found);
    found
}

fn is_separator(ch: char) -> bool {
    ch.is_whitespace()
        || matches!(
            ch,
            '-' | '.'
                | '\u{2010}'..='\u{2015}'
                | '\u{2212}'
                | '\u{FF0D}'
                | '\u{FF0E}'
                // Zero-width space, direction marks and isolates, the Arabic letter mark and
                // the byte-order mark: invisible, and added by phones around digits in
                // right-to-left text.
                | '\u{200B}'..='\u{200F}'
                | '\u{2066}'..='\u{2069}'
                | '\u{061C}'
                | '\u{FEFF}'
        )
}

/// The zero of every block of Unicode decimal digits (general category Nd, Unicode 15): each
/// block is ten consecutive code points, zero to nine.
const DIGIT_ZEROS: [u32; 68] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60, 0x16AC0,
    0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950,
    0x1FBF0,
];

fn digit_value(ch: char) -> Option<u8> {
    let cp = u32::from(ch);
    let block = DIGIT_ZEROS
        .partition_point(|&zero| zero <= cp)
        .checked_sub(1)?;
    u8::try_from(cp - DIGIT_ZEROS[block])
        .ok()
        .filter(|d| *d < 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::{OsRng, StdRng};
    use rand::{CryptoRng, RngCore, SeedableRng};

    /// Pearson's chi-squared statistic of digit counts against a uniform expectation.
    fn chi_squared(counts: &[u64; 10]) -> f64 {
        let total: u64 = counts.iter().sum();
        let expected = total as f64 / 10.0;
        counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum()
    }

    fn digit_counts<R: RngCore + CryptoRng>(rng: &mut R, codes: usize, length: u8) -> [u64; 10] {
        let mut counts = [0u64; 10];
        for _ in 0..codes {
            let code = generate(length, rng).expect("valid length");
            for b in code.expose().bytes() {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        counts
    }

    #[test]
    fn digits_are_uniform_chi_squared_seeded() {
        // Seeded, so the result is fixed: this test cannot flake. 27.88 is the chi-squared
        // critical value for 9 degrees of freedom at p = 0.001.
        let mut rng = StdRng::seed_from_u64(0x005e_ed0f_c0de);
        let counts = digit_counts(&mut rng, 100_000, 6);
        let stat = chi_squared(&counts);
        assert!(stat < 27.88, "chi-squared {stat} for counts {counts:?}");
    }

    #[test]
    fn digits_are_uniform_chi_squared_os_rng() {
        // OsRng is what production uses. With 9 degrees of freedom a statistic above 60.0 has
        // probability about 1.3e-9 for a uniform source, so a failure means bias, not bad luck.
        let counts = digit_counts(&mut OsRng, 100_000, 6);
        let stat = chi_squared(&counts);
        assert!(stat < 60.0, "chi-squared {stat} for counts {counts:?}");
    }

    #[test]
    fn modulo_biased_generator_is_caught_by_the_statistic() {
        // Guards the test itself: a naive `byte % 10` generator over a large sample must fail.
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u64; 10];
        for _ in 0..1_000_000 {
            counts[usize::from((rng.next_u32() as u8) % 10)] += 1;
        }
        assert!(chi_squared(&counts) > 27.88);
    }

    #[test]
    fn every_position_is_uniform() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut per_position = [[0u64; 10]; 10];
        for _ in 0..20_000 {
            let code = generate(10, &mut rng).expect("valid length");
            for (pos, b) in code.expose().bytes().enumerate() {
                per_position[pos][usize::from(b - b'0')] += 1;
            }
        }
        for counts in &per_position {
            assert!(chi_squared(counts) < 27.88, "{counts:?}");
        }
    }

    #[test]
    fn lengths_outside_range_are_refused() {
        for length in [0, 1, 3, 11, 255] {
            assert_eq!(generate(length, &mut OsRng), Err(InvalidCodeLength(length)));
        }
    }

    #[test]
    fn debug_never_shows_digits() {
        let code = OtpCode::from_digits("9081726354".into()).expect("valid");
        let shown = format!("{code:?} {:?}", Some(&code));
        assert!(!shown.contains("9081726354"), "{shown}");
        assert!(shown.contains("10 digits"));
    }

    #[test]
    fn typed_codes_are_normalized() {
        let cases = [
            ("123456", Some("123456")),
            (" 123 456 ", Some("123456")),
            ("123-456", Some("123456")),
            ("12.34.56", Some("123456")),
            ("١٢٣٤٥٦", Some("123456")),
            ("१२३४५६", Some("123456")),
            ("１２３４５６", Some("123456")),
            ("123", None),
            ("12345678901", None),
            ("12345a", None),
            ("my code is 123456", None),
            ("", None),
            ("- -", None),
        ];
        for (typed, want) in cases {
            let got = normalize_attempt(typed);
            assert_eq!(got.as_ref().map(OtpCode::expose), want, "{typed:?}");
        }
    }

    #[test]
    fn every_listed_digit_block_is_unicode_digits_zero_to_nine() {
        assert!(
            DIGIT_ZEROS.windows(2).all(|w| w[0] + 10 <= w[1]),
            "sorted, apart"
        );
        for zero in DIGIT_ZEROS {
            for d in 0..10 {
                let ch = char::from_u32(zero + d).expect("a char");
                assert!(ch.is_numeric(), "{:#x}", zero + d);
                assert_eq!(digit_value(ch), Some(d as u8));
            }
        }
        for not_digit in ['a', '²', '½', 'Ⅻ', '٫', '/', '\u{9}'] {
            assert_eq!(digit_value(not_digit), None, "{not_digit:?}");
        }
    }

    #[test]
    fn codes_are_found_in_chat_messages() {
        let cases = [
            ("Verify 123456", Some("123456")),
            ("my code is 123 456.", Some("123456")),
            ("code: ١٢٣٤٥٦", Some("123456")),
            ("\u{200F}١٢٣٤٥٦\u{200F}", Some("123456")),
            ("１２３－４５６", Some("123456")),
            ("๑๒๓๔๕๖", Some("123456")),
            ("12345", None),
            ("1234 5678", None),
            ("order 12 code 654321", Some("654321")),
            ("call 555 1234", None),
            ("hello", None),
            ("1234567 is not it", None),
        ];
        for (typed, want) in cases {
            let got = find_attempt(typed, 6);
            assert_eq!(got.as_ref().map(OtpCode::expose), want, "{typed:?}");
        }
    }

    /// A code written in one digit script with separators and direction marks around it.
    fn typed_as(code: &str, zero: u32, seps: &[&str]) -> String {
        let mut out = String::from(seps[0]);
        for (i, b) in code.bytes().enumerate() {
            out.push(char::from_u32(zero + u32::from(b - b'0')).expect("a digit"));
            out.push_str(seps[(i + 1) % seps.len()]);
        }
        out
    }

    proptest! {
        #[test]
        fn any_script_and_separators_read_back_the_code(
            length in 4u8..=10,
            seed in any::<u64>(),
            zero in prop::sample::select(DIGIT_ZEROS.to_vec()),
            seps in prop::collection::vec(
                prop::sample::select(vec!["", "", " ", "-", ".", "\u{200E}", "\u{2009}", "\u{FF0D}"]),
                1..4,
            ),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let code = generate(length, &mut rng).expect("valid length");
            let typed = typed_as(code.expose(), zero, &seps);
            prop_assert_eq!(normalize_attempt(&typed), Some(code.clone()));
            prop_assert_eq!(find_attempt(&typed, code.len()), Some(code));
        }

        #[test]
        fn the_chat_takes_whatever_check_takes(text in ".{0,24}", length in 4usize..=10) {
            if let Some(code) = normalize_attempt(&text).filter(|c| c.len() == length) {
                prop_assert_eq!(find_attempt(&text, length), Some(code));
            }
        }

        #[test]
        fn the_chat_takes_whatever_check_takes_for_typed_codes(
            digits in "[0-9０-９٠-٩०-९]{4,10}",
            seps in "[ .-]{0,3}",
        ) {
            let typed = format!("{seps}{digits}{seps}");
            if let Some(code) = normalize_attempt(&typed) {
                prop_assert_eq!(find_attempt(&typed, code.len()), Some(code));
            }
        }

        #[test]
        fn a_code_inside_a_sentence_is_found(seed in any::<u64>(), before in "[a-zA-Z :]{0,12}", after in "[a-zA-Z !]{0,12}") {
            let mut rng = StdRng::seed_from_u64(seed);
            let code = generate(6, &mut rng).expect("valid length");
            let typed = format!("{before} {} {after}", code.expose());
            prop_assert_eq!(find_attempt(&typed, 6), Some(code));
        }

        #[test]
        fn generated_codes_have_requested_length(length in 4u8..=10, seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let code = generate(length, &mut rng).expect("valid length");
            prop_assert_eq!(code.len(), usize::from(length));
            prop_assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        }

        #[test]
        fn generated_codes_survive_typing_with_separators(
            length in 4u8..=10,
            seed in any::<u64>(),
            sep in prop::sample::select(vec![" ", "-", "  ", " - "]),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let code = generate(length, &mut rng).expect("valid length");
            let (a, b) = code.expose().split_at(code.len() / 2);
            let typed = format!(" {a}{sep}{b} ");
            prop_assert_eq!(normalize_attempt(&typed), Some(code));
        }

        #[test]
        fn normalize_never_panics_and_yields_digits(text in ".{0,40}") {
            if let Some(code) = normalize_attempt(&text) {
                prop_assert!(CODE_LENGTH_RANGE.contains(&(code.len() as u8)));
                prop_assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}
