//! The tunable OTP rules and their allowed ranges (documented in docs/otp-rules.md).
//!
//! This module owns [`OtpPolicy`]: defaults, the stricter transaction preset, and validation
//! against the allowed ranges. The range constants are public so the flow validator reports the
//! same limits this module enforces. It holds no state and applies no rule itself.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

pub use super::code::CODE_LENGTH_RANGE;

/// Code lifetimes allowed, in minutes.
pub const LIFETIME_MINUTES_RANGE: RangeInclusive<u64> = 1..=90;
/// Wrong attempts per code allowed.
pub const MAX_ATTEMPTS_RANGE: RangeInclusive<u8> = 1..=10;
/// Base resend cooldowns accepted, in seconds (the default is 60 s).
pub const RESEND_COOLDOWN_SECS_RANGE: RangeInclusive<u64> = 10..=3600;
/// Per-customer counts accepted for send and wrong-attempt limits.
pub const CUSTOMER_LIMIT_RANGE: RangeInclusive<u32> = 1..=1000;
/// Global OTP sends per hour accepted for the spend breaker.
pub const GLOBAL_CEILING_RANGE: RangeInclusive<u32> = 1..=1_000_000;
/// The global ceiling unless configured (`WAOTP_OTP_SENDS_PER_HOUR`).
pub const DEFAULT_GLOBAL_SENDS_PER_HOUR: u32 = 1000;

/// Codes a number may be sent per day at other people's request: one recovery with both its
/// resends (3 codes) and room for a second try.
pub const DEFAULT_THIRD_PARTY_SENDS_PER_DAY: u32 = 5;

/// The short per-customer send window ("5 per 10 minutes").
pub const SHORT_SEND_WINDOW: Duration = Duration::from_secs(10 * 60);
/// The long per-customer windows: sends per day and wrong attempts per 24 hours.
pub const DAY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Resend cooldowns double per code sent but never exceed this.
pub const MAX_RESEND_COOLDOWN: Duration = Duration::from_secs(24 * 60 * 60);

/// How codes are made, how long they live and how much a customer may ask for and guess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpPolicy {
    /// Digits per code.
    pub code_length: u8,
    /// Time from issue until the code expires.
    pub lifetime: Duration,
    /// Wrong attempts one code tolerates; the last one locks it.
    pub max_attempts: u8,
    /// Wait before the first resend; each further code doubles it.
    pub resend_cooldown: Duration,
    /// Codes one customer may be sent per 10 minutes, across flows.
    pub sends_per_10_min: u32,
    /// Codes one customer may be sent per 24 hours, across flows.
    pub sends_per_day: u32,
    /// Wrong attempts one customer may make per 24 hours across sessions before OTP is refused.
    /// Guesses count against the number of the chat (or API session) that asked for the code,
    /// never against a third party's number the code was sent to.
    pub wrong_attempts_per_day: u32,
    /// Codes one number may be sent per 24 hours at other people's request (an account
    /// recovery asked from another chat), counted apart from the codes it asks for itself.
    /// Past it such codes are silently withheld, so nobody can flood a number with codes, and
    /// the requester cannot tell.
    pub third_party_sends_per_day: u32,
    /// Codes the whole service may send per clock hour: a breaker against SMS-pumping style
    /// abuse running up the merchant's bill.
    pub global_sends_per_hour: u32,
    /// Codes one merchant may send per clock hour (its own breaker, counted apart from the
    /// service-wide one); `None` leaves only the service-wide ceiling.
    pub merchant_sends_per_hour: Option<u32>,
    /// Phone number prefixes (E.164, like `+91` or `+4420`) that may receive codes; empty
    /// allows every number.
    pub allowed_prefixes: Vec<String>,
}

impl Default for OtpPolicy {
    fn default() -> Self {
        Self {
            code_length: 6,
            lifetime: Duration::from_secs(10 * 60),
            max_attempts: 5,
            resend_cooldown: Duration::from_secs(60),
            sends_per_10_min: 5,
            sends_per_day: 10,
            wrong_attempts_per_day: 10,
            third_party_sends_per_day: DEFAULT_THIRD_PARTY_SENDS_PER_DAY,
            global_sends_per_hour: DEFAULT_GLOBAL_SENDS_PER_HOUR,
            merchant_sends_per_hour: None,
            allowed_prefixes: Vec::new(),
        }
    }
}

/// One policy value outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("otp {field} is {value}, but must be {allowed}")]
pub struct PolicyError {
    /// The setting's name as written in flow files.
    pub field: &'static str,
    pub value: String,
    pub allowed: String,
}

impl OtpPolicy {
    /// The transaction-authorization preset: a 5-minute lifetime and 3 attempts.
    pub fn transaction() -> Self {
        Self {
            lifetime: Duration::from_secs(5 * 60),
            max_attempts: 3,
            ..Self::default()
        }
    }

    /// Every value outside its allowed range, so a flow author sees all problems at once.
    pub fn validate(&self) -> Result<(), Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, field, value: &dyn fmt::Display, allowed: String| {
            if !ok {
                errors.push(PolicyError {
                    field,
                    value: value.to_string(),
                    allowed,
                });
            }
        };
        check(
            CODE_LENGTH_RANGE.contains(&self.code_length),
            "code_length",
            &self.code_length,
            range_text(&CODE_LENGTH_RANGE, "digits"),
        );
        let lifetime_secs = self.lifetime.as_secs();
        let (min_life, max_life) = (
            LIFETIME_MINUTES_RANGE.start() * 60,
            LIFETIME_MINUTES_RANGE.end() * 60,
        );
        check(
            (min_life..=max_life).contains(&lifetime_secs),
            "lifetime",
            &format_args!("{lifetime_secs} seconds"),
            range_text(&LIFETIME_MINUTES_RANGE, "minutes"),
        );
        check(
            MAX_ATTEMPTS_RANGE.contains(&self.max_attempts),
            "max_attempts",
            &self.max_attempts,
            range_text(&MAX_ATTEMPTS_RANGE, "attempts"),
        );
        check(
            RESEND_COOLDOWN_SECS_RANGE.contains(&self.resend_cooldown.as_secs()),
            "resend_cooldown",
            &format_args!("{} seconds", self.resend_cooldown.as_secs()),
            range_text(&RESEND_COOLDOWN_SECS_RANGE, "seconds"),
        );
        for (field, value) in [
            ("sends_per_10_min", self.sends_per_10_min),
            ("sends_per_day", self.sends_per_day),
            ("wrong_attempts_per_day", self.wrong_attempts_per_day),
            ("third_party_sends_per_day", self.third_party_sends_per_day),
        ] {
            check(
                CUSTOMER_LIMIT_RANGE.contains(&value),
                field,
                &value,
                range_text(&CUSTOMER_LIMIT_RANGE, "per customer"),
            );
        }
        check(
            self.sends_per_10_min <= self.sends_per_day,
            "sends_per_10_min",
            &self.sends_per_10_min,
            format!("at most sends_per_day ({})", self.sends_per_day),
        );
        check(
            GLOBAL_CEILING_RANGE.contains(&self.global_sends_per_hour),
            "global_sends_per_hour",
            &self.global_sends_per_hour,
            range_text(&GLOBAL_CEILING_RANGE, "per hour"),
        );
        for prefix in &self.allowed_prefixes {
            check(
                prefix_digits(prefix).is_some(),
                "allowed_prefixes",
                &format_args!("{prefix:?}"),
                "'+' followed by 1 to 15 digits".to_string(),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Whether a number (E.164 digits, without `+`) may receive codes under the allow-list.
    pub fn allows_number(&self, digits: &str) -> bool {
        self.allowed_prefixes.is_empty()
            || self
                .allowed_prefixes
                .iter()
                .filter_map(|p| prefix_digits(p))
                .any(|p| digits.starts_with(p))
    }
}

/// The digits of a phone number prefix such as `+91`; `None` when it is not one.
pub(crate) fn prefix_digits(prefix: &str) -> Option<&str> {
    let digits = prefix.strip_prefix('+')?;
    let ok = (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(digits)
}

fn range_text<T: fmt::Display>(range: &RangeInclusive<T>, unit: &str) -> String {
    format!("{} to {} {unit}", range.start(), range.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_spec_and_are_valid() {
        let p = OtpPolicy::default();
        assert_eq!(p.code_length, 6);
        assert_eq!(p.lifetime, Duration::from_secs(600));
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.resend_cooldown, Duration::from_secs(60));
        assert_eq!((p.sends_per_10_min, p.sends_per_day), (5, 10));
        assert_eq!(p.wrong_attempts_per_day, 10);
        assert_eq!(p.third_party_sends_per_day, 5);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn transaction_preset_is_stricter_and_valid() {
        let p = OtpPolicy::transaction();
        assert_eq!(p.lifetime, Duration::from_secs(300));
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn every_out_of_range_value_is_reported() {
        let p = OtpPolicy {
            code_length: 3,
            lifetime: Duration::from_secs(91 * 60),
            max_attempts: 0,
            resend_cooldown: Duration::from_secs(1),
            sends_per_10_min: 20,
            sends_per_day: 10,
            wrong_attempts_per_day: 0,
            third_party_sends_per_day: 5,
            global_sends_per_hour: 0,
            merchant_sends_per_hour: None,
            allowed_prefixes: vec!["91".into(), "+".into(), "+44".into()],
        };
        let errors = p.validate().expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "code_length",
                "lifetime",
                "max_attempts",
                "resend_cooldown",
                "wrong_attempts_per_day",
                "sends_per_10_min",
                "global_sends_per_hour",
                "allowed_prefixes",
                "allowed_prefixes",
            ]
        );
        assert_eq!(
            errors[0].to_string(),
            "otp code_length is 3, but must be 4 to 10 digits"
        );
    }

    #[test]
    fn range_edges_are_inclusive() {
        let p = OtpPolicy {
            code_length: 10,
            lifetime: Duration::from_secs(60),
            max_attempts: 10,
            ..OtpPolicy::default()
        };
        assert_eq!(p.validate(), Ok(()));
        let p = OtpPolicy {
            code_length: 4,
            lifetime: Duration::from_secs(90 * 60),
            max_attempts: 1,
            ..OtpPolicy::default()
        };
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn allow_list_matches_prefixes() {
        let open = OtpPolicy::default();
        assert!(open.allows_number("447700900123"));
        let p = OtpPolicy {
            allowed_prefixes: vec!["+91".into(), "+4420".into()],
            ..OtpPolicy::default()
        };
        assert!(p.allows_number("919876543210"));
        assert!(p.allows_number("442079460000"));
        assert!(!p.allows_number("447700900123"));
        assert!(!p.allows_number("19175550123"));
    }
}
