//! The embedded engine behind the storage contract: each trait delegates to the sled and
//! journal handles of [`Store`] and the OTP ledger. The sled calls are synchronous and fast
//! (memory first, durability from the journal's group commit), so they run inside the async
//! methods as the runtime always ran them.
//!
//! Claims are kept in memory: one process owns the database, and a process that dies takes its
//! claims with it (its in-flight entries are found again at the next start). Outbox claims
//! keep a claimer and a lease all the same ([`super::claims`]), so that a holder that lost its
//! claim cannot send; timer claims last until the timer fires or is given back (firing twice
//! would do nothing).

use super::audit::AuditLog;
use super::otp::OtpLedger;
use super::{FlushReport, Store, StoreOptions};
use crate::domain::{DeliveryStatus, InboundEvent};
use crate::otp::limits::CustomerActivity;
use crate::otp::rules::{IssueRequest, VerifyOutcome};
use crate::otp::{CustomerNumber, OtpCode, OtpRecord, OtpSubject};
use crate::store::{
    Audit, AuditEntry, DueTimer, Engine, Idempotency, IdempotencyKey, IdempotentRequest,
    InboundCounts, InboundEvents, IssueKind, IssueOutcome, LedgerError, Listing, MerchantTotals,
    MessageLink, Metric, OtpStore, Recorded, Release, SessionPage, SessionQuery, SessionRecord,
    Sessions, Stats, StepWrite, Storage, StoreError, StoredAnswer, StoredEvent, TemplateStatus,
    TemplateStatuses, TimerRef, Timers, Totals, Wakeups,
};
use crate::tenants::Scope;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The embedded engine: the open database, the OTP ledger on it, and this process's claims.
pub struct Embedded {
    pub(super) store: Arc<Store>,
    ledger: OtpLedger,
    audit: AuditLog,
    /// Outbox entries claimed and not yet settled, with their claimers and leases.
    pub(super) outbox_claims: super::claims::OutboxClaims,
    /// Timers claimed and not yet fired.
    timer_claims: Mutex<HashSet<TimerRef>>,
    locks: Arc<super::locks::StripedLocks>,
    wakeups: Wakeups,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").finish_non_exhaustive()
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn audit_error(e: super::audit::AuditError) -> StoreError {
    StoreError::Database(e.to_string())
}

impl Embedded {
    /// Opens (or creates) the database in `dir`, sealing records with the configured OTP key
    /// or the one kept in `dir`. `observe` sees every group flush.
    pub fn open(
        dir: &Path,
        observe: impl Fn(FlushReport) + Send + 'static,
        configured_key: Option<&secrecy::SecretString>,
        options: StoreOptions,
    ) -> Result<Arc<Embedded>, StoreError> {
        let store = Store::open_with_options(dir, observe, configured_key, options)?;
        let key = crate::otp::OtpKey::load_or_create(dir, configured_key)
            .map_err(|e| StoreError::Key(e.to_string()))?;
        let ledger = OtpLedger::open(store.db(), key)
            .map_err(|e| StoreError::Database(e.to_string()))?
            .logged(store.redo());
        let audit = AuditLog::open(store.db(), store.redo()).map_err(audit_error)?;
        Ok(Arc::new(Embedded {
            store: Arc::new(store),
            ledger,
            audit,
            outbox_claims: Default::default(),
            timer_claims: Mutex::default(),
            locks: Arc::default(),
            wakeups: Wakeups::default(),
        }))
    }

    /// The storage contract over this engine (every call: the same database, locks, claims
    /// and wakeups). Each bundle is one outbox claimer, as each instance is on a shared
    /// database: a claim one bundle made is not another's to send, renew or give back.
    pub fn storage(self: &Arc<Self>) -> Storage {
        Storage {
            inbound: self.clone(),
            sessions: self.clone(),
            timers: self.clone(),
            outbox: Arc::new(super::claims::OutboxClaimer::new(self.clone())),
            idempotency: self.clone(),
            listing: self.clone(),
            otp: self.clone(),
            stats: self.clone(),
            templates: self.clone(),
            audit: self.clone(),
            locks: self.locks.clone(),
            engine: self.clone(),
            wakeups: self.wakeups.clone(),
            shared: false,
        }
    }

    /// The sled and journal handles, for the engine's own tests and tools.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The OTP ledger, for tests that drive it with a chosen random source.
    pub fn ledger(&self) -> &OtpLedger {
        &self.ledger
    }
}

impl Storage {
    /// The embedded engine on the database in `dir` (created if missing), with the server's
    /// background flushes.
    pub fn embedded(
        dir: &Path,
        configured_key: Option<&secrecy::SecretString>,
        observe: impl Fn(FlushReport) + Send + 'static,
    ) -> Result<Storage, StoreError> {
        Storage::embedded_with(dir, configured_key, observe, StoreOptions::default())
    }

    /// Like [`Storage::embedded`], with chosen background flushes (tests and tools).
    pub fn embedded_with(
        dir: &Path,
        configured_key: Option<&secrecy::SecretString>,
        observe: impl Fn(FlushReport) + Send + 'static,
        options: StoreOptions,
    ) -> Result<Storage, StoreError> {
        Ok(Embedded::open(dir, observe, configured_key, options)?.storage())
    }
}

#[async_trait::async_trait]
impl Engine for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn durable(&self) -> Result<(), StoreError> {
        self.store.logged().await
    }

    async fn healthy(&self) -> bool {
        self.store.healthy()
    }

    async fn approximate_size(&self) -> u64 {
        self.store.size_on_disk()
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }
}

#[async_trait::async_trait]
impl InboundEvents for Embedded {
    async fn record(
        &self,
        event: &InboundEvent,
        _customer_key: &str,
        now: i64,
    ) -> Result<Recorded, StoreError> {
        // The customer key is not kept: one process handles every event, queued per customer
        // in memory by the release hook.
        self.store.inbound().record(event, now)
    }

    async fn durable(&self) -> Result<(), StoreError> {
        self.store.inbound().durable().await
    }

    fn on_durable(&self, release: Option<Release>) {
        self.store.inbound().on_durable(release)
    }

    async fn pending(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        self.store.inbound().pending()
    }

    async fn pending_of(&self, customer_key: &str) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        // The key is `merchant · number · customer`, and a number belongs to one merchant: the
        // event's number and customer find its events (a scan of the pending events, which
        // only a shared database's handler needs).
        let sep = crate::tenants::SCOPE_SEPARATOR;
        let mut parts = customer_key.rsplitn(3, sep);
        let (Some(customer), Some(number)) = (parts.next(), parts.next()) else {
            return Ok(Vec::new());
        };
        Ok(self
            .store
            .inbound()
            .pending()?
            .into_iter()
            .filter(|(_, e)| {
                e.event.customer().as_str() == customer
                    && e.event.phone_number_id().unwrap_or_default() == number
            })
            .collect())
    }

    async fn mark_handled(&self, seq: u64) -> Result<(), StoreError> {
        self.store.inbound().mark_handled(seq)
    }

    async fn is_handled(&self, seq: u64) -> Result<bool, StoreError> {
        Ok(self.store.inbound().is_handled(seq))
    }

    async fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.store.inbound().next_seq())
    }

    async fn seen(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        self.store.inbound().seen(dedupe_key)
    }

    async fn all(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        self.store.inbound().all()
    }

    async fn counts(&self) -> Result<InboundCounts, StoreError> {
        Ok(InboundCounts {
            recorded: self.store.inbound().len(),
            pending: self.store.inbound().pending_len(),
        })
    }

    async fn pending_count(&self) -> Result<usize, StoreError> {
        Ok(self.store.inbound().pending_len())
    }

    async fn purge_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.store.inbound().purge_before(cutoff)
    }
}

#[async_trait::async_trait]
impl Sessions for Embedded {
    async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.store.sessions().get(id)
    }

    async fn active(&self, customer: &str, flow: &str) -> Result<Option<String>, StoreError> {
        self.store.sessions().active(customer, flow)
    }

    async fn active_for(&self, customer: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.store.sessions().active_for(customer)
    }

    async fn apply_step(&self, write: StepWrite) -> Result<(), StoreError> {
        let fired = write.timer_remove.clone();
        self.store.sessions().apply(write)?;
        if let Some(timer) = fired {
            locked(&self.timer_claims).remove(&timer);
        }
        Ok(())
    }

    async fn adopt_unscoped_keys(&self, default: &Scope) -> Result<usize, StoreError> {
        self.store.sessions().adopt_unscoped_keys(default)
    }

    async fn touch_window(&self, customer: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.store.sessions().touch_window(customer, at)
    }

    async fn last_customer_message(
        &self,
        customer: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.store.sessions().last_customer_message(customer)
    }

    async fn last_default_reply(
        &self,
        customer: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.store.sessions().last_default_reply(customer)
    }

    async fn note_default_reply(
        &self,
        customer: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.store.sessions().note_default_reply(customer, at)
    }

    async fn link(&self, message_id: &str) -> Result<Option<MessageLink>, StoreError> {
        self.store.sessions().link(message_id)
    }

    async fn put_link(&self, message_id: &str, link: &MessageLink) -> Result<(), StoreError> {
        self.store.sessions().put_link(message_id, link)
    }

    async fn park_status(
        &self,
        message_id: &str,
        status: &DeliveryStatus,
    ) -> Result<(), StoreError> {
        self.store.sessions().park_status(message_id, status)
    }

    async fn take_parked(&self, message_id: &str) -> Result<Vec<DeliveryStatus>, StoreError> {
        self.store.sessions().take_parked(message_id)
    }

    async fn put_flow_source(&self, hash: &str, name: &str, text: &str) -> Result<(), StoreError> {
        self.store.sessions().put_flow_source(hash, name, text)
    }

    async fn flow_source(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        self.store.sessions().flow_source(hash)
    }

    async fn record_sandbox(
        &self,
        customer: &str,
        at: DateTime<Utc>,
        entry_id: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.store
            .sessions()
            .record_sandbox(customer, at, entry_id, body)
    }

    async fn sandbox_messages(&self, customer: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        self.store.sessions().sandbox_messages(customer)
    }

    async fn purge_completed_before(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        self.store.sessions().purge_completed_before(cutoff)
    }
}

#[async_trait::async_trait]
impl Timers for Embedded {
    async fn claim_due_timers(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        _lease: Duration,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let mut claims = locked(&self.timer_claims);
        let due = self
            .store
            .sessions()
            .due_timers(now, limit.saturating_add(claims.len()))?;
        let mut out = Vec::new();
        for t in due {
            if out.len() >= limit {
                break;
            }
            if claims.insert(t.timer.clone()) {
                out.push(t);
            }
        }
        Ok(out)
    }

    async fn release_timer(&self, timer: &TimerRef) -> Result<(), StoreError> {
        locked(&self.timer_claims).remove(timer);
        Ok(())
    }

    async fn drop_timer(&self, timer: &TimerRef) -> Result<(), StoreError> {
        self.store.sessions().drop_timer(timer)?;
        locked(&self.timer_claims).remove(timer);
        Ok(())
    }

    async fn due_count(&self, now: DateTime<Utc>, limit: usize) -> Result<usize, StoreError> {
        Ok(self.store.sessions().due_timers(now, limit)?.len())
    }
}

#[async_trait::async_trait]
impl Idempotency for Embedded {
    async fn idempotent(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentRequest>, StoreError> {
        self.store.sessions().idempotent(key, now)
    }

    async fn keep_answer(
        &self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        self.store.sessions().keep_answer(key, answer)
    }

    async fn answer(
        &self,
        key: &IdempotencyKey,
        record: &IdempotentRequest,
    ) -> Result<Option<StoredAnswer>, StoreError> {
        self.store.sessions().answer(key, record)
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.store.sessions().purge_idempotency(now)
    }
}

#[async_trait::async_trait]
impl Listing for Embedded {
    async fn list(&self, query: &SessionQuery) -> Result<SessionPage, StoreError> {
        // A page may read many records: off the async workers.
        let (store, query) = (self.store.clone(), query.clone());
        tokio::task::spawn_blocking(move || store.sessions().list(&query))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl OtpStore for Embedded {
    fn code_sealer(&self) -> crate::otp::CodeSealer {
        crate::otp::CodeSealer::new(self.ledger.key())
    }

    async fn issue(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<IssueOutcome, LedgerError> {
        self.ledger.issue(req, kind, step, now)
    }

    async fn verify_step(
        &self,
        subject: &OtpSubject,
        attempt: &OtpCode,
        now: DateTime<Utc>,
        step: Option<&str>,
    ) -> Result<VerifyOutcome, LedgerError> {
        self.ledger.verify_step(subject, attempt, now, step)
    }

    async fn consume(
        &self,
        session_id: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), LedgerError> {
        self.ledger.consume(session_id, now, reason)
    }

    async fn code_for_sending(
        &self,
        session_id: &str,
    ) -> Result<Option<(OtpCode, u32)>, LedgerError> {
        self.ledger.code_for_sending(session_id)
    }

    async fn confirm_sent(
        &self,
        session_id: &str,
        generation: u32,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.ledger.confirm_sent(session_id, generation, now)
    }

    async fn record(&self, session_id: &str) -> Result<Option<OtpRecord>, LedgerError> {
        self.ledger.record(session_id)
    }

    async fn customer_activity(
        &self,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError> {
        self.ledger.customer_activity(customer)
    }

    async fn merchant_customer_activity(
        &self,
        merchant: &str,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError> {
        self.ledger.merchant_customer_activity(merchant, customer)
    }

    async fn adopt_default_merchant(&self, merchant: &str) -> Result<usize, LedgerError> {
        self.ledger.adopt_default_merchant(merchant)
    }

    async fn sweep(&self, now: DateTime<Utc>, retention: Duration) -> Result<usize, LedgerError> {
        self.ledger.sweep(now, retention)
    }
}

#[async_trait::async_trait]
impl Stats for Embedded {
    async fn count(
        &self,
        scope: &Scope,
        flow: &str,
        metric: Metric<'_>,
        at: DateTime<Utc>,
        n: u64,
    ) -> Result<(), StoreError> {
        self.store.stats().count(scope, flow, metric, at, n)
    }

    async fn code_sent_at(&self, session_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.store.stats().code_sent_at(session_id, at)
    }

    async fn sent_at(&self, session_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.store.stats().sent_at(session_id)
    }

    async fn session_done(&self, session_id: &str) -> Result<(), StoreError> {
        self.store.stats().session_done(session_id)
    }

    async fn query(
        &self,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Totals, StoreError> {
        self.store.stats().query(flow, from_hour, to_hour)
    }

    async fn query_merchant(
        &self,
        merchant: &str,
        default: &Scope,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<MerchantTotals, StoreError> {
        self.store
            .stats()
            .query_merchant(merchant, default, flow, from_hour, to_hour)
    }
}

#[async_trait::async_trait]
impl TemplateStatuses for Embedded {
    async fn get(&self, waba: Option<&str>, name: &str, language: &str) -> Option<TemplateStatus> {
        self.store.templates().get(waba, name, language)
    }

    async fn get_exact(
        &self,
        waba: Option<&str>,
        name: &str,
        language: &str,
    ) -> Option<TemplateStatus> {
        self.store.templates().get_exact(waba, name, language)
    }

    async fn all(&self) -> Vec<TemplateStatus> {
        self.store.templates().all()
    }

    async fn of_account(&self, waba: Option<&str>) -> Vec<TemplateStatus> {
        self.store.templates().of_account(waba)
    }

    async fn put(&self, status: TemplateStatus) -> Result<Option<TemplateStatus>, StoreError> {
        let replaced = self.store.templates().put(status)?;
        // The statuses are not logged in the journal: a sled flush makes them durable.
        self.store.durable().await?;
        Ok(replaced)
    }

    async fn adopt_unowned(&self, waba: &str) -> Result<usize, StoreError> {
        let moved = self.store.templates().adopt_unowned(waba)?;
        self.store.durable().await?;
        Ok(moved)
    }
}

#[async_trait::async_trait]
impl Audit for Embedded {
    async fn read_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        self.audit.read_from(from, limit).map_err(audit_error)
    }

    async fn for_session(&self, session_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit.for_session(session_id).map_err(audit_error)
    }
}
