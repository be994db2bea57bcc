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

/// Code lengths SPEC §9 allows.
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

/// Reads a code the way a customer may type it: surrounding and inner spaces, dashes and dots
/// are ignored ("123 456", "123-456"), and digits from the scripts customers commonly type in
/// (Arabic-Indic, Persian, Devanagari, Bengali, full-width) count as ASCII digits. Anything
/// else, or a digit count outside 4–10, is not a code attempt.
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

fn is_separator(ch: char) -> bool {
    ch.is_whitespace() || matches!(ch, '-' | '.' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

fn digit_value(ch: char) -> Option<u8> {
    // Zero code points of the decimal digit blocks accepted; each block is ten consecutive
    // code points, so the digit is the offset from its zero.
    const ZEROS: [u32; 6] = [0x30, 0x660, 0x6F0, 0x966, 0x9E6, 0xFF10];
    let cp = u32::from(ch);
    ZEROS
        .iter()
        .find(|&&zero| (zero..zero + 10).contains(&cp))
        .and_then(|&zero| u8::try_from(cp - zero).ok())
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

    proptest! {
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
