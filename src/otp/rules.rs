//! The OTP decisions of docs/otp-rules.md — may a code be issued or resent, is an attempt
//! right — as pure functions of a stored record, the counters and the time.
//!
//! This module owns [`OtpRecord`], the per-session state the ledger persists (the keyed digest,
//! never the code), and the outcome enums the runtime maps to flow events. It performs no I/O
//! and reads no clock; the store's ledger (`store::OtpStore`) runs these functions inside one transaction
//! and writes back exactly what they return.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::hash::{OtpDigest, OtpSubject};
use super::limits::{delta, until, CustomerActivity, CustomerNumber, GlobalSends};
use super::policy::{OtpPolicy, DAY_WINDOW, MAX_RESEND_COOLDOWN, SHORT_SEND_WINDOW};

/// A session's current code, as stored: its digest and the rules it was issued under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpRecord {
    session_id: String,
    flow: String,
    purpose: String,
    customer: CustomerNumber,
    // The number of the chat that asked for the code, when another than `customer`'s: its
    // wrong guesses are charged there, never to the number the code went to. Absent in
    // records written before third-party codes were told apart, and for self-requested codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requester: Option<CustomerNumber>,
    // The merchant whose session asked (empty in records written before merchants existed:
    // the ledger's default merchant): where the requester's wrong guesses are charged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    merchant: String,
    digest: OtpDigest,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    attempts_used: u8,
    max_attempts: u8,
    codes_sent: u32,
    next_resend_at: DateTime<Utc>,
    // Snapshot of the issuing flow's limit, so checks need no policy lookup.
    wrong_limit_per_customer: u32,
    status: CodeStatus,
    // The caller's key for the step that issued this code, so a step replayed after a crash
    // is recognised instead of counted as a second send.
    #[serde(default)]
    issue_step: Option<String>,
    // The caller's key for the step that last spent an attempt, with its verdict: a step
    // replayed after a crash (its session write lost, this record's change kept) gets the same
    // verdict back instead of spending a second attempt or finding its right code used up.
    #[serde(default)]
    check_step: Option<(String, CountedVerdict)>,
}

/// A verdict that changed the record, as remembered for replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum CountedVerdict {
    Correct,
    Wrong { attempts_left: u8 },
}

/// Where a session's code stands. Expiry is not a status: it follows from the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodeStatus {
    Active,
    /// Verified once; never verifies again.
    Used,
    /// Out of attempts.
    Locked,
    /// Withdrawn by the runtime (session ended, cancelled) without being used.
    Retired,
}

impl OtpRecord {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
    pub fn flow(&self) -> &str {
        &self.flow
    }
    pub fn purpose(&self) -> &str {
        &self.purpose
    }
    /// The number the code went to.
    pub fn customer(&self) -> &CustomerNumber {
        &self.customer
    }
    /// The number of the chat that asked for the code and whose guesses count: the
    /// customer's own unless a third party asked for a code to be sent to them.
    pub fn requester(&self) -> &CustomerNumber {
        self.requester.as_ref().unwrap_or(&self.customer)
    }
    /// The merchant whose session asked for the code; empty for the ledger's default.
    pub fn merchant(&self) -> &str {
        &self.merchant
    }
    pub fn status(&self) -> CodeStatus {
        self.status
    }
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
    pub fn next_resend_at(&self) -> DateTime<Utc> {
        self.next_resend_at
    }
    pub fn attempts_left(&self) -> u8 {
        self.max_attempts.saturating_sub(self.attempts_used)
    }
    pub fn codes_sent(&self) -> u32 {
        self.codes_sent
    }

    /// The key of the step that issued the current code, if the caller gave one.
    pub fn issue_step(&self) -> Option<&str> {
        self.issue_step.as_deref()
    }

    pub(crate) fn set_issue_step(&mut self, step: &str) {
        self.issue_step = Some(step.to_owned());
    }

    /// The verdict this record already gave the step `step`, if that step changed it.
    pub fn replayed_check(&self, step: &str) -> Option<VerifyOutcome> {
        match &self.check_step {
            Some((s, CountedVerdict::Correct)) if s == step => Some(VerifyOutcome::Correct),
            Some((s, CountedVerdict::Wrong { attempts_left })) if s == step => {
                Some(VerifyOutcome::Wrong {
                    attempts_left: *attempts_left,
                })
            }
            _ => None,
        }
    }

    /// Remembers that step `step` changed this record with `outcome` (correct or wrong only;
    /// other verdicts change nothing and replay identically by themselves).
    pub(crate) fn set_check_step(&mut self, step: &str, outcome: VerifyOutcome) {
        let verdict = match outcome {
            VerifyOutcome::Correct => CountedVerdict::Correct,
            VerifyOutcome::Wrong { attempts_left } => CountedVerdict::Wrong { attempts_left },
            _ => return,
        };
        self.check_step = Some((step.to_owned(), verdict));
    }

    /// The record with its code withdrawn, for when the session ends.
    pub fn retired(&self) -> Self {
        let mut next = self.clone();
        if next.status == CodeStatus::Active {
            next.status = CodeStatus::Retired;
        }
        next
    }
}

/// Who a code is for and under which rules.
#[derive(Debug, Clone, Copy)]
pub struct IssueRequest<'a> {
    pub subject: &'a OtpSubject,
    pub flow: &'a str,
    /// The number the code goes to.
    pub customer: &'a CustomerNumber,
    /// The number of the chat (or API session) asking for it. When it differs from
    /// `customer` the code is a third party's request: its sends and wrong guesses are
    /// charged to the requester, and the target only counts it against its third-party cap.
    pub requester: &'a CustomerNumber,
    /// The merchant whose session asks: sends and wrong attempts are counted per merchant and
    /// customer, so that one merchant's customers never lock themselves out at another. Empty
    /// for the ledger's default merchant.
    pub merchant: &'a str,
    /// A code that is never sent (a decoy standing in for a third party's code): charged to
    /// the requester exactly like the real one, but no target limit applies to it.
    pub decoy: bool,
    pub policy: &'a OtpPolicy,
}

impl IssueRequest<'_> {
    /// Whether someone other than the code's recipient asked for it.
    pub fn is_third_party(&self) -> bool {
        !self.decoy && self.customer != self.requester
    }
}

/// Why no code was issued. Customers are told as little as possible about which limit hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueRefusal {
    /// The number is outside the allowed prefixes.
    CountryNotAllowed,
    /// Too soon after the previous code of this session.
    Cooldown { retry_after: Duration },
    /// The customer was sent too many codes in the last 10 minutes or day.
    CustomerRateLimited { retry_after: Duration },
    /// The customer made too many wrong attempts in the last 24 hours.
    CustomerBlocked { retry_after: Duration },
    /// The service-wide hourly ceiling is reached.
    GlobalCeiling { retry_after: Duration },
    /// This session's code is out of attempts: no new code for it.
    Locked,
    /// This session's code was already used or withdrawn.
    Consumed,
    /// A resend for a session that never had a code.
    NotIssued,
}

impl IssueRefusal {
    /// Stable label for metrics and the audit log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CountryNotAllowed => "country_not_allowed",
            Self::Cooldown { .. } => "cooldown",
            Self::CustomerRateLimited { .. } => "customer_rate_limited",
            Self::CustomerBlocked { .. } => "customer_blocked",
            Self::GlobalCeiling { .. } => "global_ceiling",
            Self::Locked => "locked",
            Self::Consumed => "consumed",
            Self::NotIssued => "not_issued",
        }
    }

    /// Whether this refusal is an anti-abuse limit breach (for metrics and alerting).
    pub fn is_limit_breach(&self) -> bool {
        matches!(
            self,
            Self::CountryNotAllowed
                | Self::CustomerRateLimited { .. }
                | Self::CustomerBlocked { .. }
                | Self::GlobalCeiling { .. }
        )
    }
}

/// The result of checking one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Right code: it is now used up.
    Correct,
    /// Wrong code, counted. `attempts_left == 0` means that was the last attempt and the code
    /// is now locked: the flow should end `locked`.
    Wrong { attempts_left: u8 },
    /// Refused uncounted: the code was already out of attempts.
    Locked,
    /// Refused uncounted: the code's lifetime is over.
    Expired,
    /// No code was issued for this session.
    NotIssued,
    /// The code was already used or withdrawn.
    Consumed,
    /// Refused uncounted: the customer made too many wrong attempts in the last 24 hours.
    CustomerBlocked { retry_after: Duration },
}

impl VerifyOutcome {
    /// Whether the session's code can no longer be verified because of wrong guesses.
    pub fn locks_session(&self) -> bool {
        matches!(self, Self::Wrong { attempts_left: 0 } | Self::Locked)
    }

    /// Stable label for metrics and the audit log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Correct => "correct",
            Self::Wrong { attempts_left: 0 } => "wrong_locked",
            Self::Wrong { .. } => "wrong",
            Self::Locked => "locked",
            Self::Expired => "expired",
            Self::NotIssued => "not_issued",
            Self::Consumed => "consumed",
            Self::CustomerBlocked { .. } => "customer_blocked",
        }
    }
}

/// What an accepted issue or resend writes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueGrant {
    pub record: OtpRecord,
    /// The requester's activity, with this send counted.
    pub activity: CustomerActivity,
    /// For a third party's code, the target's activity with this send counted against its
    /// third-party cap (written under the target's number).
    pub target_activity: Option<CustomerActivity>,
    pub global: GlobalSends,
    /// Whether this code replaced an unused one of the same session.
    pub replaced: bool,
    /// A third party's code that must not be sent: the target is outside the allowed
    /// countries or has had its third-party cap of codes. The requester is told nothing
    /// (telling would reveal that the target exists); the code works as a decoy.
    pub withheld: bool,
}

/// What a check writes back; `None` fields are left unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyDecision {
    pub outcome: VerifyOutcome,
    pub record: Option<OtpRecord>,
    pub activity: Option<CustomerActivity>,
}

/// Decides a first code for a session. A session whose code is still unused gets the
/// resend rules instead (cooldown, attempts carried over), so re-entering an OTP step can
/// never reset the attempt counter.
///
/// `activity` is the requester's; `target` the recipient's, read only for a third party's
/// code (pass the requester's again otherwise).
pub fn decide_issue(
    req: IssueRequest<'_>,
    prev: Option<&OtpRecord>,
    activity: &CustomerActivity,
    target: &CustomerActivity,
    global: &GlobalSends,
    digest: OtpDigest,
    now: DateTime<Utc>,
) -> Result<IssueGrant, IssueRefusal> {
    match prev {
        Some(p) if p.status == CodeStatus::Active || p.status == CodeStatus::Locked => {
            decide_resend(req, prev, activity, target, global, digest, now)
        }
        _ => grant(req, None, activity, target, global, digest, now),
    }
}

/// Decides a new code replacing the session's current one.
pub fn decide_resend(
    req: IssueRequest<'_>,
    prev: Option<&OtpRecord>,
    activity: &CustomerActivity,
    target: &CustomerActivity,
    global: &GlobalSends,
    digest: OtpDigest,
    now: DateTime<Utc>,
) -> Result<IssueGrant, IssueRefusal> {
    let prev = prev.ok_or(IssueRefusal::NotIssued)?;
    match prev.status {
        CodeStatus::Active => {}
        CodeStatus::Locked => return Err(IssueRefusal::Locked),
        CodeStatus::Used | CodeStatus::Retired => return Err(IssueRefusal::Consumed),
    }
    if now < prev.next_resend_at {
        return Err(IssueRefusal::Cooldown {
            retry_after: until(prev.next_resend_at, now),
        });
    }
    grant(req, Some(prev), activity, target, global, digest, now)
}

// The requester's limits and the global ceiling refuse openly: the requester's own history
// decides them, identically whether the code is real, a third party's or a decoy. What only
// the target's number decides (its country, its third-party cap) never shows: the code is
// withheld and answers like a decoy.
fn grant(
    req: IssueRequest<'_>,
    prev: Option<&OtpRecord>,
    activity: &CustomerActivity,
    target: &CustomerActivity,
    global: &GlobalSends,
    digest: OtpDigest,
    now: DateTime<Utc>,
) -> Result<IssueGrant, IssueRefusal> {
    let policy = req.policy;
    let third_party = req.is_third_party();
    let allowed = policy.allows_number(req.customer.as_str());
    if !allowed && !third_party && !req.decoy {
        return Err(IssueRefusal::CountryNotAllowed);
    }
    if let Some(at) = activity.wrong_limit_frees_at(policy.wrong_attempts_per_day, now) {
        return Err(IssueRefusal::CustomerBlocked {
            retry_after: until(at, now),
        });
    }
    let short = activity.send_limit_frees_at(policy.sends_per_10_min, SHORT_SEND_WINDOW, now);
    let day = activity.send_limit_frees_at(policy.sends_per_day, DAY_WINDOW, now);
    if let Some(at) = short.max(day) {
        return Err(IssueRefusal::CustomerRateLimited {
            retry_after: until(at, now),
        });
    }
    if global.count_at(now) >= policy.global_sends_per_hour {
        return Err(IssueRefusal::GlobalCeiling {
            retry_after: until(GlobalSends::resets_at(now), now),
        });
    }
    let (attempts_used, max_attempts, codes_sent) = match prev {
        Some(p) => (
            p.attempts_used,
            p.max_attempts,
            p.codes_sent.saturating_add(1),
        ),
        None => (0, policy.max_attempts, 1),
    };
    let withheld = third_party
        && (!allowed
            || target
                .third_party_limit_frees_at(policy.third_party_sends_per_day, now)
                .is_some());
    let record = OtpRecord {
        session_id: req.subject.session_id().to_owned(),
        flow: req.flow.to_owned(),
        purpose: req.subject.purpose().to_owned(),
        customer: req.customer.clone(),
        requester: (req.requester != req.customer).then(|| req.requester.clone()),
        merchant: req.merchant.to_owned(),
        digest,
        issued_at: now,
        expires_at: now + delta(policy.lifetime),
        attempts_used,
        max_attempts,
        codes_sent,
        next_resend_at: now + delta(resend_cooldown(policy.resend_cooldown, codes_sent)),
        wrong_limit_per_customer: policy.wrong_attempts_per_day,
        status: CodeStatus::Active,
        issue_step: None,
        check_step: None,
    };
    let mut activity = activity.clone();
    activity.record_send(now);
    let target_activity = (third_party && !withheld).then(|| {
        let mut target = target.clone();
        target.record_third_party_send(now);
        target
    });
    let mut global = *global;
    global.record_send(now);
    Ok(IssueGrant {
        record,
        activity,
        target_activity,
        global,
        replaced: prev.is_some(),
        withheld,
    })
}

/// Decides the merchant's own hourly ceiling for a code the other rules granted: the merchant's
/// count with this send, or [`IssueRefusal::GlobalCeiling`] (the merchant's breaker refuses
/// like the service's). Without a ceiling of its own the code is only counted.
pub fn decide_merchant_ceiling(
    policy: &OtpPolicy,
    merchant: &GlobalSends,
    now: DateTime<Utc>,
) -> Result<GlobalSends, IssueRefusal> {
    if policy
        .merchant_sends_per_hour
        .is_some_and(|ceiling| merchant.count_at(now) >= ceiling)
    {
        return Err(IssueRefusal::GlobalCeiling {
            retry_after: until(GlobalSends::resets_at(now), now),
        });
    }
    let mut merchant = *merchant;
    merchant.record_send(now);
    Ok(merchant)
}

/// The wait after the `codes_sent`-th code of a session: the base, doubled per earlier code.
pub fn resend_cooldown(base: Duration, codes_sent: u32) -> Duration {
    let doublings = codes_sent.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings).min(MAX_RESEND_COOLDOWN)
}

/// Decides one attempt. `activity` is the record's requester's (see [`OtpRecord::requester`]):
/// a wrong guess is charged to the chat that typed it. `matches` compares the attempt with the stored digest (in constant
/// time); it is only called when the attempt may count, so refused attempts cost no hashing.
pub fn decide_verify(
    record: Option<&OtpRecord>,
    activity: &CustomerActivity,
    now: DateTime<Utc>,
    matches: impl FnOnce(&OtpDigest) -> bool,
) -> VerifyDecision {
    let refuse = |outcome| VerifyDecision {
        outcome,
        record: None,
        activity: None,
    };
    let Some(record) = record else {
        return refuse(VerifyOutcome::NotIssued);
    };
    match record.status {
        CodeStatus::Active => {}
        CodeStatus::Locked => return refuse(VerifyOutcome::Locked),
        CodeStatus::Used | CodeStatus::Retired => return refuse(VerifyOutcome::Consumed),
    }
    if let Some(at) = activity.wrong_limit_frees_at(record.wrong_limit_per_customer, now) {
        return refuse(VerifyOutcome::CustomerBlocked {
            retry_after: until(at, now),
        });
    }
    if record.attempts_used >= record.max_attempts {
        return refuse(VerifyOutcome::Locked);
    }
    if now >= record.expires_at {
        return refuse(VerifyOutcome::Expired);
    }
    let mut next = record.clone();
    if matches(&record.digest) {
        next.status = CodeStatus::Used;
        return VerifyDecision {
            outcome: VerifyOutcome::Correct,
            record: Some(next),
            activity: None,
        };
    }
    next.attempts_used += 1;
    if next.attempts_used >= next.max_attempts {
        next.status = CodeStatus::Locked;
    }
    let mut activity = activity.clone();
    activity.record_wrong_attempt(now);
    VerifyDecision {
        outcome: VerifyOutcome::Wrong {
            attempts_left: next.attempts_left(),
        },
        record: Some(next),
        activity: Some(activity),
    }
}

#[cfg(test)]
mod tests;
