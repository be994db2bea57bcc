//! What is kept to be read back: funnel stats, template statuses, the OTP audit log.

use super::StoreError;
use crate::store::AuditEntry;
use crate::store::TemplateStatus;
use crate::store::{MerchantTotals, Metric, Totals};
use crate::tenants::Scope;
use chrono::{DateTime, Utc};

/// Verification funnel aggregates per merchant, number, flow and hour.
#[async_trait::async_trait]
pub trait Stats: Send + Sync + std::fmt::Debug {
    /// Adds `n` to `metric` of `flow` at `scope` in the hour of `at` (an atomic increment:
    /// concurrent counts from several instances all land).
    async fn count(
        &self,
        scope: &Scope,
        flow: &str,
        metric: Metric<'_>,
        at: DateTime<Utc>,
        n: u64,
    ) -> Result<(), StoreError>;

    /// When the session's latest code was accepted by WhatsApp (to measure sent → verified),
    /// reading it back, and forgetting it once the session is done.
    async fn code_sent_at(&self, session_id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    async fn sent_at(&self, session_id: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    async fn session_done(&self, session_id: &str) -> Result<(), StoreError>;

    /// Totals of every merchant over the hours `from_hour` up to, not including, `to_hour`
    /// (hours since the epoch), of one flow or all.
    async fn query(
        &self,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Totals, StoreError>;

    /// Like [`Stats::query`], for one merchant, with its numbers apart. Counters written before
    /// merchants existed are `default`'s.
    async fn query_merchant(
        &self,
        merchant: &str,
        default: &Scope,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<MerchantTotals, StoreError>;
}

/// What WhatsApp last said about each message template, per WhatsApp Business Account.
/// Read before every template send: reads are cheap (an in-memory copy kept in step).
#[async_trait::async_trait]
pub trait TemplateStatuses: Send + Sync + std::fmt::Debug {
    /// The status of `name`/`language` at account `waba` — its own record, else a record
    /// without an account; with `waba: None`, the most recent record from any account.
    async fn get(&self, waba: Option<&str>, name: &str, language: &str) -> Option<TemplateStatus>;

    /// Exactly the record of `waba` (`None`: the record without an account).
    async fn get_exact(
        &self,
        waba: Option<&str>,
        name: &str,
        language: &str,
    ) -> Option<TemplateStatus>;

    /// Every record, and those of one account (`None`: those without an account).
    async fn all(&self) -> Vec<TemplateStatus>;
    async fn of_account(&self, waba: Option<&str>) -> Vec<TemplateStatus>;

    /// Stores `status` (durably when this returns: template changes are rare), replacing the
    /// record of its account and template; returns the record it replaced.
    async fn put(&self, status: TemplateStatus) -> Result<Option<TemplateStatus>, StoreError>;

    /// Gives records without an account to `waba` (once, at start). Returns how many.
    async fn adopt_unowned(&self, waba: &str) -> Result<usize, StoreError>;
}

/// The append-only audit log of OTP activity. Entries are written by the OTP ledger inside its
/// own changes ([`crate::store::OtpStore`]); nothing edits or deletes one.
#[async_trait::async_trait]
pub trait Audit: Send + Sync + std::fmt::Debug {
    /// Entries with ids from `from` on, in append order, at most `limit` of them. Ids grow
    /// with append order (gaps allowed).
    async fn read_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError>;

    /// Every entry of one session, in append order (may scan: for tests and tools).
    async fn for_session(&self, session_id: &str) -> Result<Vec<AuditEntry>, StoreError>;
}
