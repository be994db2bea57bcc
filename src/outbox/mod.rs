//! The durable outbox: delivers what session steps queued — messages through WhatsApp (or the
//! sandbox recorder), signed callbacks and hook calls to the merchant.
//!
//! Entries are written in the same atomic step as the session change that made them and are
//! taken from the store, never from memory, so a crash loses none. Entries are claimed, and
//! the claims of every entry waiting in a delivery task are renewed while they wait, so that
//! no other instance sending from the same database takes them. Before a WhatsApp send the
//! entry is durably marked in flight, in one write with the check that its claim is still this
//! instance's; an entry whose claim passed to another sender is dropped unsent. WhatsApp has no
//! idempotency key, so a send whose answer never came (no answer in time, connection lost, a
//! 2xx without a message id, a crash between claim and answer) is *in doubt*: neither failed
//! nor retried at once. Every send carries its entry id in `biz_opaque_callback_data`; a status
//! webhook echoing it settles the entry as sent.
//! An entry still in doubt after the in-doubt wait (stored as its due time, so it survives
//! restarts) is sent once more, and never a third time. Callbacks and hooks — which the merchant
//! deduplicates by event id — are simply retried.
//!
//! Each entry goes out from its own number ([`numbers`]): that number's token (or the sandbox
//! recorder when it has none), its rate limit, its share of parallel sends; Meta's pair rate
//! limit holds one (number, customer) pair. Callbacks and hooks are signed with the entry's
//! merchant's secret. An entry whose number was removed from the configuration is not sent: it
//! fails with `number_removed`, which its session sees as a delivery failure.
//!
//! At a graceful stop the outbox stops taking entries ([`Outbox::stop_dispatching`]) and the
//! sends already in flight finish and are settled ([`Outbox::deliveries_running`] reaches
//! zero); entries not yet claimed stay pending on disk for the next start.

mod doubt;
mod numbers;
mod sandbox;

pub use numbers::MAX_SENDS_PER_SECOND;
pub use sandbox::SandboxRecorder;

use crate::domain::MessageId;
use crate::flow::engine::{Event, MessageBody, TemplateRef};
use crate::merchant::MerchantClient;
use crate::runtime::{Inbox, Runtime, Work};
use crate::store::{MessageLink, OutboxEntry, OutboxPayload, OutboxState};
use crate::tenants::{Scope, Tenants};
use crate::whatsapp::{
    backoff, Button, ErrorClass, GraphApi, GraphError, GraphSetupError, Outgoing, Row, SendRequest,
};
use chrono::{DateTime, Duration as Span, Utc};
use numbers::{Line, NoLine, Senders, Transport};
use std::sync::Arc;
use std::time::Duration;

/// Callbacks are retried at least this long (docs/callbacks-and-hooks.md promises 24 hours).
const CALLBACK_RETRY_FOR: Span = Span::hours(25);
/// An operator problem (token, permissions) is retried this often until fixed.
const ALERT_RETRY: Duration = Duration::from_secs(300);
/// Free-form messages are allowed this long after the customer's last message.
const WINDOW: Span = Span::hours(24);
/// How long a send in doubt waits for a status webhook before it is sent once more. Meta's
/// first status (`sent`) normally follows an accepted send within seconds.
pub const DEFAULT_IN_DOUBT_WAIT: Duration = Duration::from_secs(120);

/// Why an entry whose number is no longer configured was not sent.
pub const NUMBER_REMOVED: &str = "number_removed";
/// Why a callback of a merchant no longer configured was not sent (nothing to sign it with).
pub const MERCHANT_REMOVED: &str = "merchant_removed";
use crate::store::{CLAIM_LEASE, CLAIM_RENEWAL};

/// Due entries read per pass, besides those already held by delivery tasks.
const BATCH: usize = 256;
/// At most this many more are read when a pass had to leave entries of busy numbers behind, so
/// that one number's backlog does not hide another's entries queued after it.
const MAX_EXTRA_SCAN: usize = 1024;

/// The sender.
#[derive(Debug)]
pub struct Outbox {
    runtime: Arc<Runtime>,
    inbox: Arc<Inbox>,
    /// Every number's transport, rate limit and parallel sends; every merchant's signer.
    senders: Senders,
    /// Where the messages of numbers without a token are recorded.
    recorder: Arc<SandboxRecorder>,
    /// Due entries the last pass left behind because their number was busy.
    left_behind: std::sync::atomic::AtomicUsize,
    /// Recipients — (merchant, number, customer) store keys — with a delivery task running
    /// (their later entries wait for it), and the entries those tasks hold (not read again
    /// meanwhile).
    busy: std::sync::Mutex<Busy>,
    /// When the outbox depth gauge was last counted.
    depth_counted: std::sync::Mutex<Option<std::time::Instant>>,
    /// How long a send in doubt waits for a status before it is sent once more.
    in_doubt_wait: Duration,
    /// Set at a graceful stop: no entry is claimed any more.
    draining: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Busy {
    /// Each recipient with a delivery task running, and the entries that task holds.
    recipients: std::collections::HashMap<String, Vec<String>>,
}

/// What became of one delivery attempt.
enum Outcome {
    Done,
    Retry(Duration),
    Failed(String),
    /// Sent, with no answer saying whether WhatsApp accepted it.
    InDoubt,
    /// Not sendable by our own rules (WhatsApp never saw it): recorded as failed, but not a
    /// delivery failure of the flow's.
    Skipped(String),
}

/// Why a message entry was not turned into a request.
enum NotSent {
    /// A broken entry: the flow is told its message failed.
    Failed(String),
    /// A notice (no template) that may not go outside the 24-hour window. The customer is not
    /// in the chat — e.g. they type codes on the merchant's site — so the flow carries on.
    OutsideWindow,
}

impl Outbox {
    /// Sends from the numbers of the runtime's tenants registry through `graph` (one base URL
    /// and connection pool for every number), records the messages of numbers without a token
    /// with `recorder`, and signs callbacks and hooks with each merchant's secret on
    /// `merchant`'s connection pool. Refuses a number no Graph client can be built for.
    pub fn new(
        runtime: Arc<Runtime>,
        inbox: Arc<Inbox>,
        graph: GraphApi,
        recorder: Arc<SandboxRecorder>,
        merchant: MerchantClient,
        in_doubt_wait: Duration,
    ) -> Result<Outbox, GraphSetupError> {
        let senders = Senders::new(runtime.tenants().clone(), graph, merchant)?;
        Ok(Outbox {
            runtime,
            inbox,
            senders,
            recorder,
            left_behind: Default::default(),
            busy: Default::default(),
            depth_counted: Default::default(),
            in_doubt_wait,
            draining: Default::default(),
        })
    }

    /// Takes a reloaded tenants registry: new numbers send at once, removed ones stop (their
    /// entries fail with `number_removed`), a changed token or rate applies to the next send.
    /// Without this call the change is still picked up, at the next send that sees it.
    pub fn on_tenants_changed(&self, tenants: &Tenants) {
        self.senders.on_tenants_changed(tenants);
        self.runtime.outbox_wake.notify_one();
    }

    /// Stops claiming entries: the dispatcher ends and each delivery task stops after the entry
    /// it is sending. Sends in flight go on until answered.
    pub fn stop_dispatching(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.runtime.outbox_wake.notify_one();
    }

    fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Recipients whose delivery task is still running (at a stop: sends not yet settled).
    pub fn deliveries_running(&self) -> usize {
        self.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recipients
            .len()
    }

    /// Settles entries a killed process left in flight, then delivers until the process ends.
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.recover().await {
            tracing::error!(error = %e, "recovering in-flight outbox entries failed");
        }
        tokio::spawn(self.clone().renew_claims());
        let wake = self.runtime.outbox_wake.clone();
        while !self.draining() {
            let full = match self.dispatch_due().await {
                Ok(full) => full,
                Err(e) => {
                    tracing::error!(error = %e, "outbox pass failed");
                    false
                }
            };
            // Whatever a pass leaves behind waits for a wake-up: an entry queued, a delivery
            // task ended (its recipient's next entries, or a place freed), or the poll below
            // (entries that become due later). Wake-ups that come during a pass are kept, and
            // many of them make one more pass, not one each. Only a pass that took a whole
            // batch goes on at once.
            if !full {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
    }

    /// Renews, every [`CLAIM_RENEWAL`], the claims of every entry a delivery task holds (one
    /// write for all of them): an entry waiting in its recipient's queue behind a slow Graph
    /// API, a number's rate limit or a long backlog stays this instance's, however long it
    /// waits, while an instance that died loses its entries after one lease. Ends once the
    /// outbox stops and its last delivery task has ended.
    async fn renew_claims(self: Arc<Self>) {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + CLAIM_RENEWAL, CLAIM_RENEWAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let held: Vec<String> = {
                let b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                b.recipients.values().flatten().cloned().collect()
            };
            if held.is_empty() {
                if self.draining() {
                    return;
                }
                continue;
            }
            match self
                .runtime
                .storage()
                .outbox
                .renew(&held, CLAIM_LEASE)
                .await
            {
                Ok(renewed) => {
                    tracing::debug!(held = held.len(), renewed, "outbox claims renewed")
                }
                // The next tick tries again; two may fail before a claim runs out, and a lost
                // claim only means the entry is sent by its new holder instead.
                Err(e) => tracing::warn!(error = %e, "cannot renew outbox claims"),
            }
        }
    }

    /// Counts and logs an entry this sender dropped unsent: its claim ran out and may be another
    /// sender's now, which sends it (or already did).
    fn claim_lost(&self, entry: &OutboxEntry, doing: &str) {
        self.runtime.metrics.outbox_claims_lost.inc();
        tracing::info!(entry = %entry.id, doing, "outbox claim passed to another sender; entry left to it");
    }

    async fn recover(&self) -> Result<(), crate::store::StoreError> {
        for entry in self.runtime.storage().outbox.in_flight().await? {
            self.settle_interrupted(entry, false).await?;
        }
        Ok(())
    }

    /// Applies the in-doubt rules to an entry whose send was interrupted (its process stopped,
    /// or — several instances — its holder's claim ran out mid-send): never a blind resend.
    /// `claimed`: this sender holds the entry's claim, and writes only while it still does.
    async fn settle_interrupted(
        &self,
        mut entry: OutboxEntry,
        claimed: bool,
    ) -> Result<(), crate::store::StoreError> {
        let outbox = &self.runtime.storage().outbox;
        let due = entry.due_ms;
        match entry.payload {
            // The merchant drops duplicates by event id: safe to send again.
            OutboxPayload::Callback { .. } | OutboxPayload::Hook { .. } => {
                entry.state = OutboxState::Pending;
            }
            // Best effort: a lost read receipt changes nothing.
            OutboxPayload::ReadReceipt { .. } => {
                entry.state = OutboxState::Failed {
                    reason: "interrupted while sending".into(),
                };
            }
            OutboxPayload::Message { .. }
            | OutboxPayload::Code { .. }
            | OutboxPayload::Text { .. } => {
                entry.state = OutboxState::InDoubt;
                if outbox.echo(&entry.id).await?.is_some() {
                    // Its status came before the stop: settled as sent at once.
                    entry.due_ms = Utc::now().timestamp_millis();
                } else {
                    tracing::warn!(entry = %entry.id, "message was being sent when the process stopped; in doubt until WhatsApp reports a status");
                    self.runtime.metrics.outbound_message("in_doubt", None);
                    entry.due_ms = self.in_doubt_due();
                }
            }
        }
        if !claimed {
            return outbox.update_outbox(&entry, due, None).await;
        }
        if !outbox.update_held(&entry, due).await? {
            self.claim_lost(&entry, "settling an interrupted send");
        }
        Ok(())
    }

    /// Starts a delivery task for every recipient with due entries and none running. Returns
    /// whether it took a whole batch of due entries (more may be due); a task that ends wakes
    /// the dispatcher again, so a recipient's later entries follow as soon as their
    /// predecessors are settled, with no pass-wide barrier.
    async fn dispatch_due(self: &Arc<Self>) -> Result<bool, crate::store::StoreError> {
        // Busy recipients are read before the due entries: a recipient not busy now gets no
        // task until this pass starts one, so its entries below are fresh.
        let busy = {
            let b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            b.recipients
                .keys()
                .cloned()
                .collect::<std::collections::HashSet<String>>()
        };
        if self.draining() {
            return Ok(false);
        }
        let extra = self
            .left_behind
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(MAX_EXTRA_SCAN);
        // Entries held by running tasks stay claimed: the store does not hand them out again.
        let limit = BATCH + extra;
        let due = self
            .runtime
            .storage()
            .outbox
            .claim_due(Utc::now(), limit, CLAIM_LEASE)
            .await?;
        let full = due.len() >= limit;
        // Counting the queue reads all of it: twice a second is enough for a gauge.
        let count_depth = {
            let mut at = self.depth_counted.lock().unwrap_or_else(|p| p.into_inner());
            let due_again = at.map_or(true, |t| t.elapsed() >= Duration::from_millis(500));
            if due_again {
                *at = Some(std::time::Instant::now());
            }
            due_again
        };
        if count_depth {
            match self.runtime.storage().outbox.depth().await {
                Ok(depth) => {
                    self.runtime.metrics.outbox_depth.set(depth as i64);
                }
                Err(e) => tracing::warn!(error = %e, "cannot count the outbox"),
            }
        }
        // Different recipients in parallel, one recipient's entries one after another in queue
        // order: sent concurrently, a step's summary and its code could reach the customer in
        // either order. A recipient is a customer of one number: the same customer talking to
        // two numbers has two independent queues.
        let default_scope = self.senders.default_scope();
        let mut by_recipient: Vec<(String, Scope, Vec<OutboxEntry>)> = Vec::new();
        let now_ms = Utc::now().timestamp_millis();
        let mut paused = std::collections::HashSet::new();
        // Claimed entries this pass does not start: given back at its end.
        let mut not_taken: Vec<String> = Vec::new();
        for entry in due {
            if entry.state == OutboxState::InFlight {
                // Its holder stopped mid-send and its claim ran out.
                let id = entry.id.clone();
                self.settle_interrupted(entry, true).await?;
                not_taken.push(id);
                continue;
            }
            let scope = entry.scope_or(&default_scope);
            let recipient = scope.customer_key(&entry.to);
            if !entry.is_queued() || busy.contains(&recipient) || paused.contains(&recipient) {
                not_taken.push(entry.id);
                continue;
            }
            // Meta's pair rate limit: nothing goes to this customer from this number until the
            // pause is over, not even a message queued after the refused one.
            let group = by_recipient.iter_mut().find(|(r, _, _)| *r == recipient);
            match group {
                Some((_, _, entries)) => entries.push(entry),
                None => {
                    if self
                        .runtime
                        .storage()
                        .outbox
                        .recipient_paused_until(&recipient)
                        .await?
                        .is_some_and(|until| until > now_ms)
                    {
                        paused.insert(recipient);
                        not_taken.push(entry.id);
                        continue;
                    }
                    by_recipient.push((recipient, scope, vec![entry]));
                }
            }
        }
        let mut left_behind = 0;
        for (recipient, scope, entries) in by_recipient {
            // Each number serves its own recipients: one held back by its rate limit never
            // holds up another's. A number with many recipients already taken leaves the rest
            // queued for a later pass instead of taking all of its queue into memory.
            let (places, taken) = match self.senders.line(&scope) {
                Ok(line) => (line.parallel.clone(), line.taken.clone()),
                Err(_) => self.senders.orphans.clone(),
            };
            let Ok(taken) = taken.try_acquire_owned() else {
                left_behind += entries.len();
                not_taken.extend(entries.into_iter().map(|e| e.id));
                continue;
            };
            let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
            {
                let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                busy.recipients.insert(recipient.clone(), ids.clone());
            }
            let this = self.clone();
            tokio::spawn(async move {
                let _taken = taken;
                let _place = places.acquire_owned().await;
                this.deliver_in_order(entries).await;
                // Whatever the task did not settle is claimable again (a settled entry's claim
                // already ended).
                if let Err(e) = this.runtime.storage().outbox.release(&ids).await {
                    tracing::error!(error = %e, "cannot give back outbox claims");
                }
                {
                    let mut busy = this.busy.lock().unwrap_or_else(|p| p.into_inner());
                    busy.recipients.remove(&recipient);
                }
                this.runtime.outbox_wake.notify_one();
            });
        }
        self.left_behind
            .store(left_behind, std::sync::atomic::Ordering::Relaxed);
        self.runtime.storage().outbox.release(&not_taken).await?;
        Ok(full)
    }

    /// Delivers one recipient's due entries in queue order. Once a WhatsApp message has to wait
    /// for a retry, the recipient's later messages wait behind it, so they still arrive in order.
    async fn deliver_in_order(&self, entries: Vec<OutboxEntry>) {
        let mut held_until: Option<i64> = None;
        for mut entry in entries {
            if self.draining() {
                // A graceful stop: this entry and the rest stay pending for the next start.
                break;
            }
            let whatsapp = is_whatsapp(&entry.payload);
            if entry.state == OutboxState::InDoubt && !self.resend_in_doubt(&mut entry).await {
                continue;
            }
            if let (Some(after), true) = (held_until, whatsapp) {
                let old_due = entry.due_ms;
                entry.due_ms = after + 1;
                held_until = Some(entry.due_ms);
                match self
                    .runtime
                    .storage()
                    .outbox
                    .update_held(&entry, old_due)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => self.claim_lost(&entry, "postponing"),
                    Err(e) => {
                        tracing::error!(entry = %entry.id, error = %e, "cannot postpone an outbox entry")
                    }
                }
                continue;
            }
            // A WhatsApp message is in flight on disk before it leaves the process, so that it
            // is never sent twice. Claimed one at a time, right before its send: an entry still
            // waiting its turn when the process dies is plainly pending, not "sent, result
            // unknown". Callbacks and hooks are sent again after a crash anyway (the merchant
            // drops duplicates by event id), but they too wait for the disk: the step that
            // queued one may not be durable yet, and a merchant must never hear of an outcome
            // a crash would undo. So do read receipts: one sent before its step is durable is
            // sent again when a crash makes the start replay the customer's message.
            //
            // Only while this sender still holds the entry's claim, checked in the same write:
            // an entry that waited here longer than its lease may be another sender's now, and
            // sending it too would be a duplicate.
            let old_due = entry.due_ms;
            entry.state = OutboxState::InFlight;
            match self
                .runtime
                .storage()
                .outbox
                .begin_send(&entry, old_due, CLAIM_LEASE)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    self.claim_lost(&entry, "starting a send");
                    continue;
                }
                Err(e) => {
                    tracing::error!(entry = %entry.id, error = %e, "cannot claim an outbox entry");
                    continue;
                }
            }
            if let Err(e) = self.runtime.store_durable().await {
                tracing::error!(entry = %entry.id, error = %e, "cannot claim an outbox entry");
                continue;
            }
            let retry_at = self.deliver(entry).await;
            if whatsapp && retry_at.is_some() {
                held_until = retry_at;
            }
        }
    }

    /// One attempt; returns the new due time when the entry waits for a retry.
    async fn deliver(&self, mut entry: OutboxEntry) -> Option<i64> {
        entry.attempts += 1;
        let now = Utc::now();
        let mut link = None;
        let scope = entry.scope_or(&self.senders.default_scope());
        let outcome = match entry.payload.clone() {
            OutboxPayload::Callback {
                url,
                event_id,
                body,
            } => {
                self.runtime.metrics.callback_attempts.inc();
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                let answer = match self.senders.merchant(&scope.merchant) {
                    Some(client) => client.deliver_callback(&url, &event_id, &bytes, now).await,
                    None => Err(crate::merchant::CallbackError::MerchantRemoved),
                };
                match answer {
                    Ok(()) => Outcome::Done,
                    Err(e) => {
                        self.runtime.metrics.callback_failures.inc();
                        tracing::warn!(entry = %entry.id, error = %e, "callback failed");
                        if e.retryable() && now - entry.created_at < CALLBACK_RETRY_FOR {
                            Outcome::Retry(backoff(entry.attempts, &mut rand::thread_rng()))
                        } else {
                            Outcome::Failed(e.to_string())
                        }
                    }
                }
            }
            OutboxPayload::Hook { hook, url, body } => {
                self.runtime.metrics.hook_attempts.inc();
                let answer = match self.senders.merchant(&scope.merchant) {
                    Some(client) => client.call_hook(&url, &body, now).await,
                    None => Err(crate::merchant::HookError::MerchantRemoved),
                };
                let event = match answer {
                    Ok(fields) => Event::HookOk { hook, fields },
                    Err(e) => {
                        self.runtime.metrics.hook_failures.inc();
                        tracing::warn!(entry = %entry.id, error = %e, "hook failed");
                        Event::HookError {
                            hook,
                            reason: e.reason(),
                        }
                    }
                };
                if let Some(session_id) = entry.session_id.clone() {
                    // In order with what the session's customer sends to its number.
                    let queue = entry
                        .scope_or(&self.runtime.default_scope())
                        .customer_key(&entry.to);
                    self.inbox
                        .submit(&queue, Work::Session { session_id, event });
                }
                Outcome::Done
            }
            OutboxPayload::ReadReceipt { message_id } => {
                // Best effort, once: a late or missing receipt changes nothing for the flow.
                // From the number the customer wrote to; none once that number is removed.
                let line = self.senders.line(&scope).ok();
                if let Some((Transport::Graph(client), line)) =
                    line.as_ref().map(|l| (&l.transport, l))
                {
                    line.rate.acquire().await;
                    match MessageId::parse(message_id) {
                        Ok(id) => {
                            if let Err(e) = client.mark_read(&id).await {
                                tracing::warn!(entry = %entry.id, error = %e, "read receipt failed");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(entry = %entry.id, error = %e, "read receipt for an invalid message id")
                        }
                    }
                }
                Outcome::Done
            }
            payload => match self.senders.line(&scope) {
                Err(NoLine::Removed) => Outcome::Failed(NUMBER_REMOVED.to_owned()),
                Err(NoLine::Broken(reason)) => {
                    self.runtime.metrics.operator_alerts.inc();
                    tracing::error!(entry = %entry.id, scope = %scope, error = %reason, "OPERATOR ALERT: the entry's number cannot send; message kept");
                    Outcome::Retry(ALERT_RETRY)
                }
                Ok(line) => {
                    self.deliver_message(&mut entry, &scope, &line, &payload, now, &mut link)
                        .await
                }
            },
        };
        self.settle(entry, outcome, link).await
    }

    /// One attempt at a WhatsApp message from `line`'s number.
    async fn deliver_message(
        &self,
        entry: &mut OutboxEntry,
        scope: &Scope,
        line: &Line,
        payload: &OutboxPayload,
        now: DateTime<Utc>,
        link: &mut Option<(String, MessageLink)>,
    ) -> Outcome {
        match self.build_message(scope, entry, payload, now).await {
            Err(NotSent::Failed(reason)) => Outcome::Failed(reason),
            Err(NotSent::OutsideWindow) => {
                Outcome::Skipped("outside the 24-hour window and the step has no template".into())
            }
            Ok(None) => Outcome::Done,
            Ok(Some((request, generation))) => {
                // Meta's per-number throughput limit; the sandbox records without one.
                if matches!(line.transport, Transport::Graph(_)) {
                    line.rate.acquire().await;
                }
                match self.send(scope, line, entry, &request).await {
                    Ok(message_id) => {
                        let (outcome, accepted) =
                            self.accepted(entry, message_id, generation, now).await;
                        *link = accepted;
                        outcome
                    }
                    Err(e) if e.class() == ErrorClass::InDoubt => {
                        self.runtime.metrics.outbound_message("in_doubt", None);
                        tracing::warn!(entry = %entry.id, error = %e, "send in doubt: WhatsApp may have accepted it; waiting for a status");
                        // A status may have overtaken the lost answer.
                        match self.runtime.storage().outbox.echo(&entry.id).await {
                            Ok(Some(message_id)) => {
                                let (outcome, accepted) =
                                    self.accepted(entry, message_id, generation, now).await;
                                *link = accepted;
                                outcome
                            }
                            _ => Outcome::InDoubt,
                        }
                    }
                    Err(e) => self.classify(entry, scope, &request, &e).await,
                }
            }
        }
    }

    async fn classify(
        &self,
        entry: &mut OutboxEntry,
        scope: &Scope,
        request: &SendRequest,
        e: &GraphError,
    ) -> Outcome {
        self.runtime.metrics.outbound_message("error", e.code());
        match e.class() {
            ErrorClass::Retry {
                per_recipient: false,
            } => {
                tracing::warn!(entry = %entry.id, error = %e, "send throttled or failed; retrying");
                Outcome::Retry(backoff(entry.attempts, &mut rand::thread_rng()))
            }
            ErrorClass::Retry {
                per_recipient: true,
            } => {
                let wait = pair_rate_wait(entry.attempts, &mut rand::thread_rng());
                let until =
                    (Utc::now() + Span::from_std(wait).unwrap_or_default()).timestamp_millis();
                let recipient = scope.customer_key(&entry.to);
                if let Err(e) = self
                    .runtime
                    .storage()
                    .outbox
                    .pause_recipient(&recipient, until)
                    .await
                {
                    tracing::error!(entry = %entry.id, error = %e, "cannot record the pair rate pause");
                }
                tracing::warn!(entry = %entry.id, error = %e, wait_secs = wait.as_secs(), "pair rate limit: this customer's messages wait");
                Outcome::Retry(wait)
            }
            // The code already goes in a template: another template cannot help.
            ErrorClass::UseTemplate if matches!(entry.payload, OutboxPayload::Code { .. }) => {
                self.runtime.stats_send_failed(entry, e.code()).await;
                Outcome::Failed(format!(
                    "WhatsApp error 131047: the code's template was refused outside the 24-hour window ({e})"
                ))
            }
            ErrorClass::UseTemplate if !entry.use_template => {
                entry.use_template = true;
                Outcome::Retry(Duration::ZERO)
            }
            ErrorClass::UseTemplate | ErrorClass::Fail => {
                self.runtime.stats_send_failed(entry, e.code()).await;
                Outcome::Failed(e.to_string())
            }
            ErrorClass::TemplateProblem => {
                let template = template_name(&request.message).unwrap_or("(none)");
                self.runtime.metrics.operator_alerts.inc();
                self.runtime.metrics.template_error(template, e.code());
                tracing::error!(entry = %entry.id, template, code = ?e.code(), error = %e, "OPERATOR ALERT: WhatsApp refused the template; fix it in WhatsApp Manager or the flow file");
                self.runtime.stats_send_failed(entry, e.code()).await;
                let details = serde_json::json!({
                    "entry_id": entry.id,
                    "template": template,
                    "error": { "code": e.code(), "message": e.to_string() },
                });
                if let Err(err) = self
                    .runtime
                    .notify_delivery_problem(entry, "template_failed", details)
                    .await
                {
                    tracing::error!(entry = %entry.id, error = %err, "cannot queue the merchant's template notice");
                }
                Outcome::Failed(e.to_string())
            }
            ErrorClass::Alert => {
                self.runtime.metrics.operator_alerts.inc();
                tracing::error!(entry = %entry.id, error = %e, "OPERATOR ALERT: the Graph API refused our token or permissions; message kept");
                Outcome::Retry(ALERT_RETRY)
            }
            // Answered before `classify` by the caller.
            ErrorClass::InDoubt => Outcome::InDoubt,
        }
    }

    async fn settle(
        &self,
        mut entry: OutboxEntry,
        outcome: Outcome,
        link: Option<(String, MessageLink)>,
    ) -> Option<i64> {
        let old_due = entry.due_ms;
        let mut failed_session = None;
        match outcome {
            Outcome::Done => entry.state = OutboxState::Done,
            Outcome::Retry(after) => {
                entry.state = OutboxState::Pending;
                entry.due_ms =
                    (Utc::now() + Span::from_std(after).unwrap_or_default()).timestamp_millis();
            }
            Outcome::InDoubt => {
                entry.state = OutboxState::InDoubt;
                entry.due_ms = self.in_doubt_due();
            }
            Outcome::Skipped(reason) => {
                tracing::info!(entry = %entry.id, %reason, "message not sent");
                self.runtime.metrics.outbound_message("dropped", None);
                if matches!(entry.payload, OutboxPayload::Message { .. }) {
                    self.runtime
                        .metrics
                        .outbound_message("outside_window", None);
                    let details = serde_json::json!({ "entry_id": entry.id, "reason": reason });
                    if let Err(e) = self
                        .runtime
                        .notify_delivery_problem(&entry, "outside_window", details)
                        .await
                    {
                        tracing::error!(entry = %entry.id, error = %e, "cannot queue the merchant's window notice");
                    }
                }
                entry.state = OutboxState::Failed { reason };
            }
            Outcome::Failed(reason) => {
                tracing::warn!(entry = %entry.id, %reason, "delivery failed");
                if matches!(
                    entry.payload,
                    OutboxPayload::Message { .. } | OutboxPayload::Code { .. }
                ) {
                    self.runtime.metrics.outbound_message("failed", None);
                    failed_session = entry.session_id.clone().map(|s| (s, reason.clone()));
                }
                entry.state = OutboxState::Failed { reason };
            }
        }
        let link_ref = link.as_ref().map(|(id, l)| (id.as_str(), l));
        if let Err(e) = self
            .runtime
            .storage()
            .outbox
            .update_outbox(&entry, old_due, link_ref)
            .await
        {
            tracing::error!(entry = %entry.id, error = %e, "cannot record the outbox result");
        }
        if link.is_some() {
            self.runtime.stats_accepted(&entry, Utc::now()).await;
        }
        // A delivered entry needs no flush of its own: lost in a crash, it is found in flight
        // and not sent again (a callback is, harmlessly), and the next flush — the next claim
        // or step — carries it. A retry or failure is flushed, so that it is not mistaken for
        // an interrupted send.
        if entry.state != OutboxState::Done {
            if let Err(e) = self.runtime.store_durable().await {
                tracing::error!(error = %e, "flushing outbox results failed");
            }
        }
        if let Some((message_id, _)) = &link {
            if let Err(e) = self.runtime.apply_parked(message_id).await {
                tracing::error!(error = %e, "applying early delivery statuses failed");
            }
        }
        if entry.state == OutboxState::Pending {
            self.runtime.outbox_wake.notify_one();
        }
        if let Some((session_id, reason)) = failed_session {
            let record = self
                .runtime
                .storage()
                .sessions
                .get(&session_id)
                .await
                .ok()
                .flatten();
            // Queued with the session's own customer (the code may have gone to another number),
            // in order with what that customer sends.
            let customer = record
                .as_ref()
                .map_or(entry.to.as_str(), |r| r.customer.as_str());
            let elsewhere = customer != entry.to.trim_start_matches('+');
            let scope = match &record {
                Some(r) => self.runtime.scope_of(r),
                None => entry.scope_or(&self.runtime.default_scope()),
            };
            self.inbox.submit(
                &scope.customer_key(customer),
                Work::Session {
                    session_id,
                    event: Event::DeliveryFailed { reason, elsewhere },
                },
            );
        }
        (entry.state == OutboxState::Pending).then_some(entry.due_ms)
    }

    async fn send(
        &self,
        scope: &Scope,
        line: &Line,
        entry: &OutboxEntry,
        request: &SendRequest,
    ) -> Result<String, GraphError> {
        match &line.transport {
            Transport::Graph(client) => client.send(request).await.map(|id| id.as_str().to_owned()),
            Transport::Sandbox => self
                .recorder
                .record(
                    scope,
                    entry,
                    request,
                    self.template_text(entry, request).await.as_deref(),
                )
                .await
                .map_err(|e| GraphError::Network(e.to_string())),
        }
    }

    /// What the customer would see of a templated send, for the sandbox: the session's flow
    /// file has the template's content.
    async fn template_text(&self, entry: &OutboxEntry, request: &SendRequest) -> Option<String> {
        let (name, language, parameters) = match &request.message {
            Outgoing::Template {
                name,
                language,
                body_parameters,
                ..
            } => (name, language, body_parameters.clone()),
            Outgoing::AuthenticationCode { name, language, .. } => (name, language, Vec::new()),
            _ => return None,
        };
        let sessions = &self.runtime.storage().sessions;
        let record = sessions.get(entry.session_id.as_ref()?).await.ok()??;
        let flow = self
            .runtime
            .flows_of(&record.merchant)
            .version(&record.engine, sessions.as_ref())
            .await?;
        crate::flow::template_content::customer_text(flow.file(), name, language, &parameters, None)
    }

    /// Refuses a template WhatsApp has paused or disabled (as last reported) in the account of
    /// `scope`'s merchant: sending it would only fail, so the session takes its delivery-failure
    /// path with the reason `template_paused` or `template_disabled`.
    async fn check_template(
        &self,
        scope: &Scope,
        name: &str,
        language: &str,
    ) -> Result<(), NotSent> {
        let merchants = self.runtime.merchants();
        let waba = merchants
            .get_or_default(&scope.merchant)
            .merchant
            .waba_id
            .as_deref();
        let status = self
            .runtime
            .storage()
            .templates
            .get(waba, name, language)
            .await;
        match status.as_ref().and_then(|s| s.blocked_reason()) {
            Some(reason) => Err(NotSent::Failed(reason.to_owned())),
            None => Ok(()),
        }
    }

    /// Whether free-form messages may go from `scope`'s number to `customer` now: the window
    /// is per (number, customer). For the single merchant's number a window opened before
    /// windows were kept per number (stored under the customer alone) still counts.
    async fn window_open(&self, scope: &Scope, customer: &str, now: DateTime<Utc>) -> bool {
        let sessions = &self.runtime.storage().sessions;
        let open = |key: String| async move {
            matches!(sessions.last_customer_message(&key).await, Ok(Some(at)) if now - at < WINDOW)
        };
        open(scope.customer_key(customer)).await
            || (*scope == self.senders.default_scope() && open(customer.to_owned()).await)
    }

    /// The request for a message entry; `Ok(None)` when there is nothing left to send (a code
    /// already sent, used or replaced). The second value is the code generation sent.
    async fn build_message(
        &self,
        scope: &Scope,
        entry: &OutboxEntry,
        payload: &OutboxPayload,
        now: DateTime<Utc>,
    ) -> Result<Option<(SendRequest, Option<u32>)>, NotSent> {
        let request = |message| {
            let mut r = SendRequest::new(entry.to.clone(), message);
            r.tracker = Some(entry.id.clone());
            r
        };
        match payload {
            OutboxPayload::Text { text } => Ok(Some((request(Outgoing::text(text.clone())), None))),
            OutboxPayload::Message { message } => {
                let use_template =
                    entry.use_template || !self.window_open(scope, &entry.to, now).await;
                let outgoing = match (use_template, &message.template) {
                    (false, _) => free_form_of(&message.body),
                    (true, Some(t)) => {
                        self.check_template(scope, &t.name, &t.language).await?;
                        template_of(t)
                    }
                    (true, None) => return Err(NotSent::OutsideWindow),
                };
                Ok(Some((request(outgoing), None)))
            }
            OutboxPayload::Code {
                template,
                text,
                generation,
            } => {
                let Some(session_id) = &entry.session_id else {
                    return Ok(None);
                };
                let Some((code, current)) = self
                    .runtime
                    .storage()
                    .otp
                    .code_for_sending(session_id)
                    .await
                    .map_err(|e| NotSent::Failed(e.to_string()))?
                else {
                    return Ok(None);
                };
                if current != *generation {
                    return Ok(None);
                }
                let outgoing = match (template, text) {
                    (Some(t), _) => {
                        self.check_template(scope, &t.name, &t.language).await?;
                        Outgoing::AuthenticationCode {
                            name: t.name.clone(),
                            language: t.language.clone(),
                            code: code.expose().to_owned(),
                        }
                    }
                    (None, Some(text)) => Outgoing::text(format!("{text} {}", code.expose())),
                    (None, None) => {
                        return Err(NotSent::Failed(
                            "no authentication template for the code".into(),
                        ))
                    }
                };
                Ok(Some((request(outgoing), Some(*generation))))
            }
            OutboxPayload::Callback { .. }
            | OutboxPayload::Hook { .. }
            | OutboxPayload::ReadReceipt { .. } => Ok(None),
        }
    }
}

/// How long a customer's messages wait after Meta's pair rate limit: the backoff, but never less
/// than Meta's pace of one message every 6 seconds to one customer.
fn pair_rate_wait(attempts: u32, rng: &mut impl rand::Rng) -> Duration {
    backoff(attempts, rng).max(crate::whatsapp::PAIR_RATE_LIMIT_WAIT)
}

/// The template a request sends, for operator logs.
fn template_name(message: &Outgoing) -> Option<&str> {
    match message {
        Outgoing::Template { name, .. } | Outgoing::AuthenticationCode { name, .. } => Some(name),
        _ => None,
    }
}

/// Whether an entry goes to WhatsApp (and so takes its place in the customer's message order).
fn is_whatsapp(payload: &OutboxPayload) -> bool {
    matches!(
        payload,
        OutboxPayload::Message { .. }
            | OutboxPayload::Code { .. }
            | OutboxPayload::Text { .. }
            | OutboxPayload::ReadReceipt { .. }
    )
}

fn free_form_of(body: &MessageBody) -> Outgoing {
    match body {
        MessageBody::Text { text } => Outgoing::text(text.clone()),
        MessageBody::Buttons { text, buttons } => Outgoing::Buttons {
            body: text.clone(),
            buttons: buttons
                .iter()
                .map(|b| Button {
                    id: b.id.clone(),
                    title: b.title.clone(),
                })
                .collect(),
        },
        MessageBody::List { text, button, rows } => Outgoing::list(
            text.clone(),
            button.clone(),
            rows.iter()
                .map(|r| Row {
                    id: r.id.clone(),
                    title: r.title.clone(),
                    description: r.description.clone(),
                })
                .collect(),
        ),
    }
}

fn template_of(t: &TemplateRef) -> Outgoing {
    Outgoing::Template {
        name: t.name.clone(),
        language: t.language.clone(),
        body_parameters: t.parameters.clone(),
        quick_replies: t.quick_replies.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_pair_rate_limit_holds_a_customer_for_at_least_six_seconds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempts in 0..12 {
            let wait = pair_rate_wait(attempts, &mut rng);
            assert!(
                wait >= Duration::from_secs(6),
                "attempt {attempts}: {wait:?}"
            );
        }
    }
}
