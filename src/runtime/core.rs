//! Session steps: load a session, run the pure engine on an event, carry out the effects that
//! are decisions (codes issued and checked through the OTP ledger) and turn the rest into
//! outbox entries and timers, then persist all of it in one atomic write and flush before
//! anyone is told.
//!
//! Steps of one session never interleave: every step holds that session's lock. Inbound events,
//! timers and hook answers additionally arrive in per-customer order (see [`super::ordering`]).
//!
//! A session belongs to a merchant and one of its numbers (its record's scope): its steps run
//! on that merchant's flows, OTP limits and URLs ([`super::merchants`]), and every outbox entry
//! a step creates names the scope, so it goes out from the session's number and its callbacks
//! are signed for its merchant.

use super::flows::FlowRegistry;
use super::merchants::{MerchantRuntime, MerchantRuntimes};
pub use super::session_object::session_json;
use crate::domain::is_user_id;
use crate::flow::engine::{self, Effect, Event, SessionStatus};
use crate::flow::render::value_text;
use crate::flow::Flow;
use crate::metrics::Metrics;
use crate::otp::rules::IssueRequest;
use crate::otp::{normalize_attempt, CustomerNumber, OtpPolicy, OtpSubject, VerifyOutcome};
use crate::store::{IssueKind, IssueOutcome};
use crate::store::{LockGuard, LockKey, Storage, StoreError, TimerRef};
use crate::store::{OutboxEntry, OutboxPayload, SessionRecord, StepWrite};
use crate::tenants::{Scope, Tenants};
use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Notify;

/// Service-wide settings the runtime needs from the configuration (each merchant's own are in
/// [`MerchantRuntimes`]).
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Sent to a customer whose message matches no session and no keyword.
    pub default_reply: String,
    /// Service-wide OTP limits (per-flow code settings come from the flow file, per-merchant
    /// overrides from the tenants registry).
    pub otp_base: OtpPolicy,
}

/// A failure of a step that is not the customer's or merchant's fault.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("OTP ledger: {0}")]
    Ledger(#[from] crate::store::LedgerError),
    #[error("the flow version {0} of this session is no longer available")]
    FlowGone(String),
}

/// The conversation runtime.
#[derive(Debug)]
pub struct Runtime {
    /// Everything stateful: sessions, claims, locks, wakeups.
    pub(super) storage: Storage,
    /// Each merchant's flows, URLs and OTP limits, swapped whole when the tenants change.
    merchants: std::sync::RwLock<Arc<MerchantRuntimes>>,
    pub metrics: Arc<Metrics>,
    pub(super) config: RuntimeConfig,
    /// Woken whenever a step queued something to send.
    pub outbox_wake: Arc<Notify>,
    /// The merchants and numbers served.
    pub(super) tenants: crate::tenants::TenantsHandle,
}

/// What a step produced beyond the stored session.
#[derive(Debug, Default)]
pub struct StepReport {
    /// A reverse-OTP code for the API answer (never stored in plaintext).
    pub reverse_code: Option<String>,
    /// An anti-abuse limit refused the step's code (country, rate, block, service ceiling).
    pub otp_refusal: Option<crate::otp::IssueRefusal>,
}

impl Runtime {
    /// A runtime for the merchants of `tenants`, whose flows are loaded in `merchants`
    /// ([`MerchantRuntimes::load`]).
    pub fn new(
        storage: Storage,
        merchants: MerchantRuntimes,
        metrics: Arc<Metrics>,
        config: RuntimeConfig,
        tenants: crate::tenants::TenantsHandle,
    ) -> Runtime {
        Runtime {
            tenants,
            outbox_wake: storage.wakeups.outbox.clone(),
            storage,
            merchants: std::sync::RwLock::new(Arc::new(merchants)),
            metrics,
            config,
        }
    }

    /// The flows of the default merchant (the single-merchant setup's flows).
    pub fn flows(&self) -> Arc<FlowRegistry> {
        self.merchants().default_merchant().flows.clone()
    }

    /// The flows of `merchant` (kept for its sessions after it is no longer served).
    pub fn flows_of(&self, merchant: &str) -> Arc<FlowRegistry> {
        self.merchants().get_or_default(merchant).flows.clone()
    }

    /// Every merchant's flows, URLs and OTP limits as they are now.
    pub fn merchants(&self) -> Arc<MerchantRuntimes> {
        self.merchants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The settings of the merchant of `scope` (kept, without a callback URL, for its sessions
    /// after it is no longer served).
    pub fn merchant_of(&self, scope: &Scope) -> Arc<MerchantRuntime> {
        self.merchants().get_or_default(&scope.merchant).clone()
    }

    /// Rebuilds each merchant's flows, URLs and OTP limits after the tenants registry changed
    /// (the tenants file watcher calls it once the new registry is in place). A merchant whose
    /// flow source and URLs are unchanged keeps its loaded flows; one whose new flows do not
    /// load keeps its old ones, and the error says which (every message, `file:line:col`).
    pub fn on_tenants_changed(&self, tenants: &Tenants) -> Result<(), String> {
        let mut current = self.merchants.write().unwrap_or_else(|p| p.into_inner());
        let (next, errors) = current.rebuilt(tenants, &self.config.otp_base);
        *current = Arc::new(next);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }

    /// Reloads a merchant's flows whenever one of its flow files changes (polled) and every
    /// merchant's on SIGHUP, until the process ends.
    pub async fn watch_flows(self: Arc<Self>, every: std::time::Duration) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every);
        loop {
            #[cfg(unix)]
            let hup_fired = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fired = std::future::pending::<()>();
            tokio::select! {
                _ = tick.tick() => {
                    for m in self.merchants().iter() {
                        m.flows.reload_if_changed();
                    }
                }
                _ = hup_fired => {
                    tracing::info!("SIGHUP: reloading flows");
                    for m in self.merchants().iter() {
                        m.flows.reload();
                    }
                }
            }
        }
    }

    /// The scope of the single-merchant setup, and of records written before scopes existed.
    pub fn default_scope(&self) -> Scope {
        self.tenants.current().default_scope()
    }

    /// The merchant and number a session belongs to.
    pub fn scope_of(&self, record: &SessionRecord) -> Scope {
        if record.merchant.is_empty() {
            self.default_scope()
        } else {
            Scope::new(record.merchant.clone(), record.number.clone())
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The merchants and numbers served (swapped whole when the tenants file is reloaded).
    pub fn tenants(&self) -> &crate::tenants::TenantsHandle {
        &self.tenants
    }

    /// Waits until every store write made so far is on disk: the journal's group `fdatasync`
    /// covers the redo records of the sessions, outbox, stats and OTP ledger writes.
    pub async fn store_durable(&self) -> Result<(), StoreError> {
        self.storage.engine.durable().await
    }

    /// The storage contract the runtime works through.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The lock that serialises steps of one session.
    pub(super) async fn lock(&self, session_id: &str) -> Result<LockGuard, StoreError> {
        self.storage
            .locks
            .lock(LockKey::Session(session_id.to_owned()))
            .await
    }

    /// The lock that serialises starting sessions for one customer (scoped key) and flow.
    pub(super) async fn lock_start(
        &self,
        customer: &str,
        flow: &str,
    ) -> Result<LockGuard, StoreError> {
        // Start locks never share a stripe with session locks: a start holds its start lock
        // while it takes the new session's lock.
        self.storage
            .locks
            .lock(LockKey::Start {
                customer: customer.to_owned(),
                flow: flow.to_owned(),
            })
            .await
    }

    /// The flow version a session runs on.
    pub(super) async fn flow_of(&self, record: &SessionRecord) -> Result<Arc<Flow>, RuntimeError> {
        self.flows_of(&record.merchant)
            .version(&record.engine, self.storage.sessions.as_ref())
            .await
            .ok_or_else(|| RuntimeError::FlowGone(record.engine.flow_hash.clone()))
    }

    /// Applies `first` (and every OTP verdict it leads to) to the session, persists the result
    /// with its outbox entries and timer atomically, and waits until it is on disk. The caller
    /// holds the session's lock.
    pub(super) async fn step(
        &self,
        record: &mut SessionRecord,
        flow: &Flow,
        first: Event,
        now: DateTime<Utc>,
        mut write: StepWrite,
    ) -> Result<StepReport, RuntimeError> {
        let was_active = record.is_active() && record.engine.status != SessionStatus::New;
        let report = self
            .advance(record, flow, first, now, &mut write, false)
            .await?;
        self.persist(record, was_active, now, write).await?;
        Ok(report)
    }

    /// Runs the engine on `first` and every OTP verdict it leads to, collecting what the step
    /// writes; nothing is stored yet. With `stop_at_refusal` (an API start, which an OTP limit
    /// refuses without storing anything) it stops at the first limit refusal, before the flow
    /// reacts to it: no end, no callback, no completion counted for a session that never was.
    pub(super) async fn advance(
        &self,
        record: &mut SessionRecord,
        flow: &Flow,
        first: Event,
        now: DateTime<Utc>,
        write: &mut StepWrite,
        stop_at_refusal: bool,
    ) -> Result<StepReport, RuntimeError> {
        let mut report = StepReport::default();
        let mut queue = VecDeque::from([first]);
        let mut index = 0usize;
        while let Some(event) = queue.pop_front() {
            let (next, effects) = engine::step(flow, &record.engine, event, now, &mut OsRng);
            record.engine = next;
            for effect in effects {
                let follow = self
                    .carry_out(record, effect, now, write, &mut index, &mut report)
                    .await?;
                if stop_at_refusal && report.otp_refusal.is_some() {
                    return Ok(report);
                }
                if let Some(follow) = follow {
                    queue.push_back(follow);
                }
            }
        }
        Ok(report)
    }

    /// Writes what [`Runtime::advance`] collected in one atomic write and waits until it is on
    /// disk. `was_active`: the session was running before this step.
    pub(super) async fn persist(
        &self,
        record: &mut SessionRecord,
        was_active: bool,
        now: DateTime<Utc>,
        mut write: StepWrite,
    ) -> Result<(), RuntimeError> {
        record.step += 1;
        record.updated_at = now;
        let flow_id = record.engine.flow_id.as_str().to_owned();
        if record.engine.status == SessionStatus::Completed {
            if was_active || write.activate.is_none() {
                let key = self.scope_of(record).customer_key(&record.customer);
                write.deactivate = Some((key, flow_id));
            }
            write.activate = None;
            if let Some(k) = record.timer_key.take() {
                write.timer_remove = Some(k);
            }
        }
        let queued_outbox = !write.outbox.is_empty();
        write.record = Some(record.clone());
        self.storage.sessions.apply_step(write).await?;
        self.stats_after_step(record, now).await;
        self.storage.engine.durable().await?;
        if queued_outbox {
            self.outbox_wake.notify_one();
        }
        Ok(())
    }

    fn entry(
        &self,
        record: &SessionRecord,
        index: &mut usize,
        to: String,
        payload: OutboxPayload,
        now: DateTime<Utc>,
    ) -> OutboxEntry {
        let id = format!("{}:{}:{}", record.id, record.step, index);
        *index += 1;
        OutboxEntry::pending(id, Some(record.id.clone()), to, payload, now)
            .from_scope(&self.scope_of(record))
    }

    /// Carries out one effect. Returns the event it leads to at once (an OTP verdict).
    async fn carry_out(
        &self,
        record: &mut SessionRecord,
        effect: Effect,
        now: DateTime<Utc>,
        write: &mut StepWrite,
        index: &mut usize,
        report: &mut StepReport,
    ) -> Result<Option<Event>, RuntimeError> {
        match effect {
            Effect::Send(message) => {
                let e = self.entry(
                    record,
                    index,
                    record.customer.clone(),
                    OutboxPayload::Message { message },
                    now,
                );
                write.outbox.push(e);
            }
            Effect::IssueOtp(req) => {
                let mut subject = OtpSubject::new(record.id.clone(), req.purpose.clone());
                for (k, v) in &req.bound {
                    subject = subject.bind(k.clone(), v.clone());
                }
                record.otp_purpose = Some(req.purpose.clone());
                record.otp_bound = req.bound.keys().cloned().collect();
                let send_to = req.send_to.as_deref().filter(|s| !s.is_empty());
                // A chat WhatsApp identifies only by a business-scoped user id has no number to
                // send an authentication template to (Meta refuses it, 131062): unless the code
                // goes to another number, the flow takes its delivery-failure branch.
                if send_to.is_none() && req.deliver && !req.reverse && is_user_id(&record.customer)
                {
                    return Ok(Some(Event::DeliveryFailed {
                        reason: "the customer shared no phone number (business-scoped user id only); a code needs one".into(),
                        elsewhere: false,
                    }));
                }
                let Ok(requester) = CustomerNumber::from_wa_id(&record.customer) else {
                    return Ok(Some(Event::DeliveryFailed {
                        reason: "the session's number is not valid".into(),
                        elsewhere: false,
                    }));
                };
                // Another number to send to that is not a phone number cannot get the code: it
                // becomes a decoy, charged like the real one, so this chat sees no difference.
                let target = send_to.map(CustomerNumber::parse);
                let decoy = (!req.deliver && !req.reverse) || matches!(target, Some(Err(_)));
                let customer = match target {
                    Some(Ok(number)) if !decoy => number,
                    _ => requester.clone(),
                };
                let scope = self.scope_of(record);
                let policy = OtpPolicy {
                    code_length: u8::try_from(req.length).unwrap_or(6),
                    lifetime: std::time::Duration::from_secs(req.lifetime_secs.max(1) as u64),
                    max_attempts: u8::try_from(req.max_attempts).unwrap_or(5),
                    ..self.merchant_of(&scope).otp_base.clone()
                };
                let kind = match (req.reverse, req.resend) {
                    (true, _) => IssueKind::Reverse,
                    (false, true) => IssueKind::Resend,
                    (false, false) => IssueKind::First,
                };
                let step_key = format!("{}:{}", record.id, record.step);
                let issued = self
                    .storage
                    .otp
                    .issue(
                        IssueRequest {
                            subject: &subject,
                            flow: record.engine.flow_id.as_str(),
                            customer: &customer,
                            requester: &requester,
                            merchant: &scope.merchant,
                            decoy,
                            policy: &policy,
                        },
                        kind,
                        &step_key,
                        now,
                    )
                    .await?;
                let info = match issued {
                    IssueOutcome::Issued(issued) => {
                        self.metrics.otp("issued", record.engine.flow_id.as_str());
                        if req.reverse {
                            report.reverse_code = Some(issued.code.expose().to_owned());
                        }
                        Some(issued.info)
                    }
                    // A replay of this very step: the code exists; queue its message again
                    // (the outbox entry id is the same, so it is sent once).
                    IssueOutcome::AlreadyIssued(info) => Some(info),
                    IssueOutcome::Refused(refusal) => {
                        use crate::otp::IssueRefusal as R;
                        self.metrics.limit_breach(refusal.as_str());
                        self.stats_limit(record, refusal.as_str(), now).await;
                        tracing::warn!(session_id = %record.id, reason = refusal.as_str(), "OTP refused by limits");
                        if refusal.is_limit_breach() {
                            report.otp_refusal = Some(refusal);
                            record.otp_refused = Some(refusal.as_str().to_owned());
                        }
                        // The customer is told no more than the flow's refusal message says.
                        return Ok(Some(match refusal {
                            R::Cooldown { retry_after } => Event::OtpResendTooSoon {
                                wait_secs: retry_after.as_secs().max(1),
                            },
                            R::Locked => Event::OtpLocked,
                            R::Consumed | R::NotIssued => Event::OtpExpired,
                            R::CountryNotAllowed
                            | R::CustomerRateLimited { .. }
                            | R::CustomerBlocked { .. }
                            | R::GlobalCeiling { .. } => Event::OtpRefused,
                        }));
                    }
                };
                // A decoy (`deliver = false`, no such account) keeps its code unsent, so every
                // guess is wrong and the customer-visible answers match the real path.
                // A withheld third-party code (target capped or not allowed) is a decoy too.
                if let Some(issued) = info.filter(|i| !decoy && !req.reverse && !i.withheld) {
                    let e = self.entry(
                        record,
                        index,
                        customer.as_str().to_owned(),
                        OutboxPayload::Code {
                            template: req.template.clone(),
                            text: None,
                            generation: issued.generation,
                        },
                        now,
                    );
                    write.outbox.push(e);
                }
                if req.resend {
                    return Ok(Some(Event::OtpResent));
                }
            }
            Effect::VerifyOtp { code } => {
                let (event, _) = self.verify_attempt(record, &code, now).await?;
                return Ok(Some(event));
            }
            Effect::CallHook { hook, url, vars } => {
                let body = json!({
                    "session_id": record.id,
                    "flow": record.engine.flow_id.as_str(),
                    "hook": hook,
                    "customer": record.to,
                    "vars": vars,
                });
                let url = self.resolve_url(record, &url);
                let e = self.entry(
                    record,
                    index,
                    record.customer.clone(),
                    OutboxPayload::Hook { hook, url, body },
                    now,
                );
                write.outbox.push(e);
            }
            Effect::SetTimer { id, at, seq } => {
                let k = TimerRef::new(at, &record.id, &id);
                if let Some(old) = record.timer_key.replace(k.clone()) {
                    if old != k {
                        write.timer_remove = Some(old);
                    }
                }
                write.timer_set = Some((k, seq));
            }
            Effect::CancelTimer { .. } => {
                if let Some(old) = record.timer_key.take() {
                    write.timer_remove = Some(old);
                }
            }
            Effect::Complete {
                outcome,
                callback_url,
                event_id,
            } => {
                self.storage
                    .otp
                    .consume(&record.id, now, "session ended")
                    .await?;
                let flow = record.engine.flow_id.as_str().to_owned();
                self.metrics.session_completed(&flow, &outcome);
                if let Some(url) = callback_url
                    .map(|u| self.resolve_url(record, &u))
                    .or_else(|| self.callback_url(record))
                {
                    let mut snapshot = record.clone();
                    snapshot.engine.outcome = Some(outcome);
                    snapshot.engine.status = SessionStatus::Completed;
                    let e =
                        self.callback(record, &snapshot, index, url, event_id, "completed", now);
                    write.outbox.push(e);
                }
            }
            Effect::NotifyMerchant {
                event,
                event_id,
                callback_url,
            } => {
                if let Some(url) = callback_url
                    .map(|u| self.resolve_url(record, &u))
                    .or_else(|| self.callback_url(record))
                {
                    let e = self.callback(record, record, index, url, event_id, &event, now);
                    write.outbox.push(e);
                }
            }
        }
        Ok(None)
    }

    /// The outbox entry of a signed `session.<event>` callback carrying `snapshot`.
    #[allow(clippy::too_many_arguments)]
    fn callback(
        &self,
        record: &SessionRecord,
        snapshot: &SessionRecord,
        index: &mut usize,
        url: String,
        event_id: String,
        event: &str,
        now: DateTime<Utc>,
    ) -> OutboxEntry {
        let body = json!({
            "id": event_id,
            "type": format!("session.{event}"),
            "created_at": now.to_rfc3339(),
            "session": session_json(snapshot),
        });
        let payload = OutboxPayload::Callback {
            url,
            event_id,
            body,
        };
        self.entry(record, index, record.customer.clone(), payload, now)
    }

    /// Checks a typed code against the session's current code: the one path shared by the chat
    /// and `POST /v1/sessions/{id}/check`. Returns the engine event and the ledger's verdict.
    pub(super) async fn verify_attempt(
        &self,
        record: &SessionRecord,
        typed: &str,
        now: DateTime<Utc>,
    ) -> Result<(Event, VerifyOutcome), RuntimeError> {
        let mut subject = OtpSubject::new(
            record.id.clone(),
            record.otp_purpose.clone().unwrap_or_default(),
        );
        // Bound fields are read from the session as it is now: had the amount, currency or
        // payee changed since the code was issued, the digest no longer matches.
        for name in &record.otp_bound {
            subject = subject.bind(name.clone(), value_text(record.engine.vars.get(name)));
        }
        let verdict = match normalize_attempt(typed) {
            // Keyed by the step, like issuing: a step replayed after a crash gets its verdict
            // again instead of spending a second attempt.
            Some(code) => {
                let step = format!("{}:{}", record.id, record.step);
                self.storage
                    .otp
                    .verify_step(&subject, &code, now, Some(&step))
                    .await?
            }
            // Not digits at all: no guess at a code, so nothing is counted; the flow re-prompts.
            None => {
                let left = self
                    .storage
                    .otp
                    .record(&record.id)
                    .await?
                    .map_or(0, |r| r.attempts_left());
                if left == 0 {
                    VerifyOutcome::NotIssued
                } else {
                    VerifyOutcome::Wrong {
                        attempts_left: left,
                    }
                }
            }
        };
        let flow = record.engine.flow_id.as_str();
        let event = match verdict {
            VerifyOutcome::Correct => {
                self.metrics.otp("verified", flow);
                self.stats_verified(record, now).await;
                Event::OtpCorrect
            }
            VerifyOutcome::Wrong { attempts_left: 0 } | VerifyOutcome::Locked => {
                self.metrics.otp("locked", flow);
                Event::OtpLocked
            }
            VerifyOutcome::Wrong { attempts_left } => {
                self.metrics.otp("failed", flow);
                Event::OtpWrong {
                    attempts_left: u32::from(attempts_left),
                }
            }
            VerifyOutcome::CustomerBlocked { .. } => {
                self.metrics.limit_breach("customer_blocked");
                self.stats_limit(record, "customer_blocked", now).await;
                Event::OtpLocked
            }
            VerifyOutcome::Expired | VerifyOutcome::NotIssued | VerifyOutcome::Consumed => {
                self.metrics.otp("expired", flow);
                Event::OtpExpired
            }
        };
        Ok((event, verdict))
    }

    /// Whether a failed message to `failed_to` (digits) went to another number than the
    /// session's customer: a code sent to a third party, whose failure the chat must not see.
    pub async fn failed_elsewhere(
        &self,
        session_id: &str,
        failed_to: &str,
    ) -> Result<bool, RuntimeError> {
        Ok(self
            .storage
            .sessions
            .get(session_id)
            .await?
            .is_some_and(|r| r.customer != failed_to.trim_start_matches('+')))
    }

    /// Replaces `{NAME}` in a flow's URL by the session's merchant's setting or the
    /// environment variable NAME.
    pub(super) fn resolve_url(&self, record: &SessionRecord, url: &str) -> String {
        let merchant = self.merchant_of(&self.scope_of(record));
        crate::flow::urls::resolve(url, |name| merchant.urls().value(name))
    }

    /// Where the session's merchant takes callbacks, if it set a URL.
    pub(super) fn callback_url(&self, record: &SessionRecord) -> Option<String> {
        let merchant = self.merchant_of(&self.scope_of(record));
        merchant.callback_url().map(str::to_owned)
    }
}
