//! The OTP ledger: the state behind docs/otp-rules.md.

use crate::otp::limits::CustomerActivity;
use crate::otp::rules::{IssueRequest, VerifyOutcome};
use crate::otp::{CustomerNumber, OtpCode, OtpRecord, OtpSubject};
use crate::store::{IssueKind, IssueOutcome, LedgerError};
use chrono::{DateTime, Utc};

/// Each session's current code (its keyed digest, never the code), each customer's sends and
/// wrong attempts per merchant, the hourly ceilings, the sealed copy of a code awaiting
/// delivery, and the audit entry of every change.
///
/// Every state-changing call is **one atomic change**: it reads what it needs, asks the pure
/// rules (`crate::otp::rules`), and writes their answer with its audit entry together —
/// counters are incremented and compared in the same transaction — so two concurrent calls
/// (two guesses, two issues, on two instances) can never both take the last attempt or the
/// last send, and a crash leaves all of a change or none of it. Durable like every write
/// ([`crate::store::Engine::durable`]).
#[async_trait::async_trait]
pub trait OtpStore: Send + Sync + std::fmt::Debug {
    /// Issues a code for `req.subject` at `step` (the step's key): [`IssueOutcome::Issued`]
    /// with the fresh code, [`IssueOutcome::AlreadyIssued`] when this step already issued the
    /// current code (a replay: nothing counted again), or the rules' refusal (audited).
    async fn issue(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<IssueOutcome, LedgerError>;

    /// Checks an attempt against the subject's current code and counts it; `step` names the
    /// step checking, so that a replay of the same step answers the same without counting
    /// twice.
    async fn verify_step(
        &self,
        subject: &OtpSubject,
        attempt: &OtpCode,
        now: DateTime<Utc>,
        step: Option<&str>,
    ) -> Result<VerifyOutcome, LedgerError>;

    /// Withdraws the session's code (the session ended): no attempt can match it any more.
    async fn consume(
        &self,
        session_id: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), LedgerError>;

    /// The code awaiting delivery and its generation, opened for the one send that needs it.
    async fn code_for_sending(
        &self,
        session_id: &str,
    ) -> Result<Option<(OtpCode, u32)>, LedgerError>;

    /// WhatsApp accepted the message of `generation`: its sealed copy is deleted (audited).
    async fn confirm_sent(
        &self,
        session_id: &str,
        generation: u32,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// The session's current record (digest and counters, never the code).
    async fn record(&self, session_id: &str) -> Result<Option<OtpRecord>, LedgerError>;

    /// A customer's recent sends and wrong attempts at the default merchant, and at `merchant`.
    async fn customer_activity(
        &self,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError>;
    async fn merchant_customer_activity(
        &self,
        merchant: &str,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError>;

    /// Names the default merchant and moves the per-customer records of a store written before
    /// merchants existed under it (once). Returns how many moved.
    async fn adopt_default_merchant(&self, merchant: &str) -> Result<usize, LedgerError>;

    /// A sealer under the key this ledger seals codes with, for the other sealed copies of a
    /// code (sandbox mode's recorded messages): every instance on the database opens them.
    fn code_sealer(&self) -> crate::otp::CodeSealer;

    /// Deletes entries no rule needs any more (older than `retention`, or past every window);
    /// never a live record, so it cannot weaken a limit in force. Returns how many went.
    async fn sweep(
        &self,
        now: DateTime<Utc>,
        retention: std::time::Duration,
    ) -> Result<usize, LedgerError>;
}
