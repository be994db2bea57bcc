//! Per-customer and global counters behind the anti-abuse limits, as plain values.
//!
//! This module owns the shapes the ledger persists for limits — a customer's recent sends and
//! wrong attempts, and the service-wide sends in the current hour — and the arithmetic on them
//! (what falls in a window, when a limit frees up). It reads no clock: every method takes `now`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::policy::DAY_WINDOW;

use crate::domain::{is_user_id, PhoneNumber};

/// Not a possible E.164 number.
pub use crate::domain::PhoneError as InvalidCustomerNumber;

/// Who a code's limits count against: a customer's phone number (checked by the domain's one
/// phone-number type and kept as its digits, no `+`), or, for a chat whose customer shared no
/// number, their business-scoped user id. Its `Debug` shows only the last 4 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerNumber(String);

impl CustomerNumber {
    /// A number a merchant, a hook or an operator wrote: `+` and the digits.
    pub fn parse(raw: &str) -> Result<Self, InvalidCustomerNumber> {
        PhoneNumber::parse(raw).map(Self::from)
    }

    /// The customer's WhatsApp id: the digits of their number (a `+` allowed), or their
    /// business-scoped user id.
    pub fn from_wa_id(raw: &str) -> Result<Self, InvalidCustomerNumber> {
        if is_user_id(raw) {
            return Ok(Self(raw.to_owned()));
        }
        PhoneNumber::from_wa_id(raw).map(Self::from)
    }

    /// The key the counters are stored under, which is also the WhatsApp recipient: the phone
    /// number's digits, or the user id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form allowed in logs and the audit log: the last 4 characters only.
    pub fn masked(&self) -> String {
        let tail: String = {
            let chars: Vec<char> = self.0.chars().collect();
            chars[chars.len().saturating_sub(4)..].iter().collect()
        };
        format!("…{tail}")
    }
}

impl From<PhoneNumber> for CustomerNumber {
    fn from(number: PhoneNumber) -> Self {
        Self(number.digits().to_owned())
    }
}

impl std::fmt::Debug for CustomerNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerNumber({})", self.masked())
    }
}

/// A customer's OTP sends and wrong attempts within the last 24 hours, oldest first, and the
/// codes sent to the number at other people's request (kept apart, so that a flood of those
/// never uses up the limits of the codes the customer asks for).
///
/// Exact timestamps rather than fixed buckets, so "5 per 10 minutes" holds for every 10-minute
/// span. The lists stay short: entries older than a day are dropped on every update, and the
/// limits stop entries being added long before the lists could grow large.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerActivity {
    sends: Vec<DateTime<Utc>>,
    wrong_attempts: Vec<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    third_party_sends: Vec<DateTime<Utc>>,
}

impl CustomerActivity {
    pub fn sends_within(&self, window: Duration, now: DateTime<Utc>) -> usize {
        in_window(&self.sends, window, now).len()
    }

    pub fn wrong_within(&self, window: Duration, now: DateTime<Utc>) -> usize {
        in_window(&self.wrong_attempts, window, now).len()
    }

    /// When fewer than `limit` sends will fall within `window`; `None` if that is already so.
    pub fn send_limit_frees_at(
        &self,
        limit: u32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        frees_at(&self.sends, limit, window, now)
    }

    /// When the customer's wrong attempts drop below `limit` within a day; `None` if they are.
    pub fn wrong_limit_frees_at(&self, limit: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        frees_at(&self.wrong_attempts, limit, DAY_WINDOW, now)
    }

    pub fn third_party_sends_within(&self, window: Duration, now: DateTime<Utc>) -> usize {
        in_window(&self.third_party_sends, window, now).len()
    }

    /// When fewer than `limit` codes asked by others fall within a day; `None` if they do.
    pub fn third_party_limit_frees_at(
        &self,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        frees_at(&self.third_party_sends, limit, DAY_WINDOW, now)
    }

    /// Whether nothing falls within the last 24 hours, so the record can be dropped.
    pub fn is_idle(&self, now: DateTime<Utc>) -> bool {
        self.sends_within(DAY_WINDOW, now) == 0
            && self.wrong_within(DAY_WINDOW, now) == 0
            && self.third_party_sends_within(DAY_WINDOW, now) == 0
    }

    /// From when the record is idle ([`is_idle`](Self::is_idle)) unless something is added:
    /// a day after its latest entry; `None` if it holds none.
    pub fn idle_at(&self) -> Option<DateTime<Utc>> {
        [&self.sends, &self.wrong_attempts, &self.third_party_sends]
            .into_iter()
            .filter_map(|times| times.last())
            .max()
            .map(|latest| *latest + delta(DAY_WINDOW))
    }

    /// Counts a code sent to this number at someone else's request.
    pub fn record_third_party_send(&mut self, now: DateTime<Utc>) {
        self.prune(now);
        insert_sorted(&mut self.third_party_sends, now);
    }

    pub fn record_send(&mut self, now: DateTime<Utc>) {
        self.prune(now);
        insert_sorted(&mut self.sends, now);
    }

    pub fn record_wrong_attempt(&mut self, now: DateTime<Utc>) {
        self.prune(now);
        insert_sorted(&mut self.wrong_attempts, now);
    }

    fn prune(&mut self, now: DateTime<Utc>) {
        let cutoff = now - delta(DAY_WINDOW);
        self.sends.retain(|t| *t > cutoff);
        self.wrong_attempts.retain(|t| *t > cutoff);
        self.third_party_sends.retain(|t| *t > cutoff);
    }
}

// Window queries rely on order; inserting in place keeps it even if the clock steps back.
fn insert_sorted(times: &mut Vec<DateTime<Utc>>, at: DateTime<Utc>) {
    let index = times.partition_point(|t| *t <= at);
    times.insert(index, at);
}

fn in_window(times: &[DateTime<Utc>], window: Duration, now: DateTime<Utc>) -> &[DateTime<Utc>] {
    let cutoff = now - delta(window);
    let first = times.partition_point(|t| *t <= cutoff);
    &times[first..]
}

fn frees_at(
    times: &[DateTime<Utc>],
    limit: u32,
    window: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let recent = in_window(times, window, now);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // With n entries in the window and room for `limit - 1` before refusing, the entry that
    // must age out is the (n - limit)-th oldest.
    let excess = recent.len().checked_sub(limit)?;
    recent.get(excess).map(|t| *t + delta(window))
}

/// OTP sends by the whole service in the current clock hour: the spend breaker's counter.
///
/// A fixed hour keeps it one small record however high the ceiling; the price is that up to
/// twice the ceiling can pass across an hour boundary, which is acceptable for a breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalSends {
    hour: i64,
    count: u32,
}

impl GlobalSends {
    /// A counter kept elsewhere (a database row): `count` sends in the clock hour of `now`.
    pub fn in_hour_of(now: DateTime<Utc>, count: u32) -> Self {
        Self {
            hour: hour_of(now),
            count,
        }
    }

    pub fn count_at(&self, now: DateTime<Utc>) -> u32 {
        if self.hour == hour_of(now) {
            self.count
        } else {
            0
        }
    }

    pub fn record_send(&mut self, now: DateTime<Utc>) {
        let count = self.count_at(now).saturating_add(1);
        *self = Self {
            hour: hour_of(now),
            count,
        };
    }

    /// Start of the next clock hour, when the ceiling resets.
    pub fn resets_at(now: DateTime<Utc>) -> DateTime<Utc> {
        DateTime::from_timestamp((hour_of(now) + 1) * 3600, 0).unwrap_or(now)
    }
}

fn hour_of(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(3600)
}

/// A std duration as chrono's, saturating (policy durations are far below the limit).
pub(crate) fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Time from `now` until `then`, zero when `then` has passed.
pub(crate) fn until(then: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (then - now).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::policy::SHORT_SEND_WINDOW;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("in range")
    }

    #[test]
    fn customer_numbers() {
        let n = CustomerNumber::parse("+919876543210").expect("valid");
        assert_eq!(n.as_str(), "919876543210");
        assert_eq!(n.masked(), "…3210");
        assert_eq!(CustomerNumber::from_wa_id("919876543210"), Ok(n.clone()));
        assert!(!format!("{n:?}").contains("98765"));
        for bad in [
            "",
            "+",
            "+0123456",
            "12345",
            "+91 98765",
            "1234567890123456",
            "+99912345678",
        ] {
            assert!(CustomerNumber::parse(bad).is_err(), "{bad}");
        }
        // A chat without a number counts under its business-scoped user id; a merchant's
        // number is never one.
        let user = CustomerNumber::from_wa_id("US.13491208655302741918").expect("user id");
        assert_eq!(user.as_str(), "US.13491208655302741918");
        assert!(!format!("{user:?}").contains("1349120865"));
        assert!(CustomerNumber::parse("US.13491208655302741918").is_err());
    }

    #[test]
    fn sliding_send_window() {
        let mut a = CustomerActivity::default();
        for i in 0..5 {
            a.record_send(t(i * 60));
        }
        assert_eq!(a.sends_within(SHORT_SEND_WINDOW, t(240)), 5);
        // Full at 5: frees when the first send is 10 minutes old.
        assert_eq!(
            a.send_limit_frees_at(5, SHORT_SEND_WINDOW, t(300)),
            Some(t(600))
        );
        assert_eq!(a.send_limit_frees_at(6, SHORT_SEND_WINDOW, t(300)), None);
        assert_eq!(a.sends_within(SHORT_SEND_WINDOW, t(600)), 4);
        assert_eq!(a.send_limit_frees_at(5, SHORT_SEND_WINDOW, t(600)), None);
        assert_eq!(a.sends_within(DAY_WINDOW, t(600)), 5);
    }

    #[test]
    fn a_clock_step_back_keeps_entries_ordered() {
        let mut a = CustomerActivity::default();
        a.record_send(t(100));
        a.record_send(t(50));
        a.record_send(t(150));
        assert_eq!(a.sends, [t(50), t(100), t(150)]);
        assert_eq!(a.sends_within(SHORT_SEND_WINDOW, t(160)), 3);
    }

    #[test]
    fn old_entries_are_pruned_on_update() {
        let mut a = CustomerActivity::default();
        a.record_wrong_attempt(t(0));
        a.record_wrong_attempt(t(86_400 + 1));
        assert_eq!(a.wrong_attempts.len(), 1);
        assert_eq!(a.wrong_within(DAY_WINDOW, t(86_401)), 1);
    }

    #[test]
    fn wrong_limit_frees_after_a_day() {
        let mut a = CustomerActivity::default();
        for i in 0..10 {
            a.record_wrong_attempt(t(i));
        }
        assert_eq!(a.wrong_limit_frees_at(10, t(100)), Some(t(86_400)));
        assert_eq!(a.wrong_limit_frees_at(10, t(86_400)), None);
    }

    #[test]
    fn a_record_is_idle_from_a_day_after_its_latest_entry() {
        let mut a = CustomerActivity::default();
        assert_eq!(a.idle_at(), None);
        assert!(a.is_idle(t(0)));
        a.record_send(t(100));
        a.record_wrong_attempt(t(300));
        a.record_third_party_send(t(200));
        assert_eq!(a.idle_at(), Some(t(300 + 86_400)));
        for now in [t(300), t(300 + 86_399), t(300 + 86_400), t(300 + 86_401)] {
            assert_eq!(
                a.is_idle(now),
                a.idle_at().is_some_and(|at| at <= now),
                "{now}"
            );
        }
    }

    #[test]
    fn a_counter_kept_elsewhere_counts_only_in_its_hour() {
        let start = t(0) - TimeDelta::seconds(t(0).timestamp() % 3600);
        let kept = GlobalSends::in_hour_of(start + TimeDelta::seconds(59), 7);
        assert_eq!(kept.count_at(start + TimeDelta::seconds(3599)), 7);
        assert_eq!(kept.count_at(start + TimeDelta::seconds(3600)), 0);
        let mut counted = GlobalSends::default();
        for _ in 0..7 {
            counted.record_send(start);
        }
        assert_eq!(kept, counted);
    }

    #[test]
    fn global_counter_resets_each_hour() {
        let start = t(0) - TimeDelta::seconds(t(0).timestamp() % 3600);
        let mut g = GlobalSends::default();
        g.record_send(start);
        g.record_send(start + TimeDelta::seconds(3599));
        assert_eq!(g.count_at(start + TimeDelta::seconds(10)), 2);
        assert_eq!(g.count_at(start + TimeDelta::seconds(3600)), 0);
        assert_eq!(
            GlobalSends::resets_at(start + TimeDelta::seconds(10)),
            start + TimeDelta::seconds(3600)
        );
        g.record_send(start + TimeDelta::seconds(3600));
        assert_eq!(g.count_at(start + TimeDelta::seconds(3600)), 1);
    }
}
