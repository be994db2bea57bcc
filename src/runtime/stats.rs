//! Feeding the funnel aggregates ([`crate::store::Stats`]) as sessions progress.
//!
//! Each place where a session moves on (a step written, a code checked, a message accepted or
//! reported delivered) calls one method here, so those places stay short and the counting rules
//! live together. Every count is filed under the session's merchant and number (the default
//! scope for a session written before merchants existed). Counting is best effort by design: a failure is logged and never fails the
//! step or the send it describes. Writes land before the caller's group commit, so they become
//! durable together with the change they count.

use super::core::Runtime;
use crate::flow::engine::SessionStatus;
use crate::store::StoreError;
use crate::store::{bucket_of, Metric};
use crate::store::{Delivery, MessageLink, OutboxEntry, OutboxPayload, SessionRecord};
use crate::tenants::Scope;
use chrono::{DateTime, Utc};

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

impl Runtime {
    fn counted(&self, what: &str, result: Result<(), StoreError>) {
        if let Err(e) = result {
            tracing::warn!(error = %e, what, "cannot update the stats");
        }
    }

    /// The merchant and number a session's counts are filed under. Only a record from before
    /// merchants existed needs the registry.
    fn stats_scope(&self, record: &SessionRecord) -> Scope {
        if record.merchant.is_empty() {
            self.tenants().current().default_scope()
        } else {
            Scope::new(record.merchant.clone(), record.number.clone())
        }
    }

    /// The flow of a session, for counting events that only know the session id.
    async fn flow_of_session(&self, session_id: Option<&str>) -> Option<SessionRecord> {
        let id = session_id?;
        match self.storage.sessions.get(id).await {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(error = %e, "stats: cannot read the session");
                None
            }
        }
    }

    /// After a step was written: the first step of a session counts a start, and a step that
    /// completed it counts the outcome. Steps only ever run on active sessions, so a completed
    /// status here means "completed by this step".
    pub(crate) async fn stats_after_step(&self, record: &SessionRecord, now: DateTime<Utc>) {
        let stats = &self.storage.stats;
        let flow = record.engine.flow_id.as_str();
        let scope = &self.stats_scope(record);
        if record.step == 1 {
            self.counted(
                "started",
                stats.count(scope, flow, Metric::Started, now, 1).await,
            );
        }
        if record.engine.status == SessionStatus::Completed {
            let outcome = record.engine.outcome.as_deref().unwrap_or("unknown");
            self.counted(
                "outcome",
                stats
                    .count(scope, flow, Metric::Outcome(outcome), now, 1)
                    .await,
            );
            self.counted("session done", stats.session_done(&record.id).await);
        }
    }

    /// A correct code: counts a verification and the time since that code was sent.
    pub(crate) async fn stats_verified(&self, record: &SessionRecord, now: DateTime<Utc>) {
        let stats = &self.storage.stats;
        let flow = record.engine.flow_id.as_str();
        let scope = &self.stats_scope(record);
        self.counted(
            "verified",
            stats.count(scope, flow, Metric::Verified, now, 1).await,
        );
        // Reverse-OTP codes are never sent by us, so they have no sent time and no latency.
        if let Ok(Some(sent)) = stats.sent_at(&record.id).await {
            let bucket = bucket_of(seconds_between(sent, now));
            self.counted(
                "verify latency",
                stats
                    .count(scope, flow, Metric::VerifyLatency(bucket), now, 1)
                    .await,
            );
        }
    }

    /// An OTP limit refused a code or a check.
    pub(crate) async fn stats_limit(
        &self,
        record: &SessionRecord,
        reason: &str,
        now: DateTime<Utc>,
    ) {
        let flow = record.engine.flow_id.as_str();
        let scope = &self.stats_scope(record);
        self.counted(
            "limit",
            self.storage
                .stats
                .count(scope, flow, Metric::LimitBreach(reason), now, 1)
                .await,
        );
    }

    /// WhatsApp accepted an outbox message and its link is stored (so a status for it can be
    /// matched from now on); only codes are counted.
    pub(crate) async fn stats_accepted(&self, entry: &OutboxEntry, now: DateTime<Utc>) {
        if !matches!(entry.payload, OutboxPayload::Code { .. }) {
            return;
        }
        let Some(record) = self.flow_of_session(entry.session_id.as_deref()).await else {
            return;
        };
        let stats = &self.storage.stats;
        let flow = record.engine.flow_id.as_str();
        let scope = &self.stats_scope(&record);
        // Only a running session can still be verified; a finished one keeps no code time.
        // Written before the count, so whoever sees the count can rely on the time being there.
        if record.is_active() {
            self.counted("code time", stats.code_sent_at(&record.id, now).await);
        }
        self.counted(
            "code sent",
            stats.count(scope, flow, Metric::CodeSent, now, 1).await,
        );
    }

    /// WhatsApp refused a flow's message for good when we sent it.
    pub(crate) async fn stats_send_failed(&self, entry: &OutboxEntry, code: Option<i64>) {
        if !matches!(
            entry.payload,
            OutboxPayload::Message { .. } | OutboxPayload::Code { .. }
        ) {
            return;
        }
        if let Some(record) = self.flow_of_session(entry.session_id.as_deref()).await {
            let flow = record.engine.flow_id.as_str();
            let scope = &self.stats_scope(&record);
            self.counted(
                "send failure",
                self.storage
                    .stats
                    .count(scope, flow, Metric::Failure(code), Utc::now(), 1)
                    .await,
            );
        }
    }

    /// A delivery status moved a sent message forward to `next` (already checked to be a
    /// move forward). `at` is when WhatsApp says it happened, for the latency.
    pub(crate) async fn stats_status(
        &self,
        link: &MessageLink,
        next: Delivery,
        code: Option<i64>,
        at: DateTime<Utc>,
    ) {
        // Only failures and the codes' own deliveries are counted: look the entry up first, so
        // that the statuses of ordinary messages cost no session read.
        if next != Delivery::Failed
            && !matches!(
                self.storage.outbox.outbox_entry(&link.entry_id).await,
                Ok(Some(OutboxEntry {
                    payload: OutboxPayload::Code { .. },
                    ..
                }))
            )
        {
            return;
        }
        let Some(record) = self.flow_of_session(link.session_id.as_deref()).await else {
            return;
        };
        let stats = &self.storage.stats;
        let flow = record.engine.flow_id.as_str();
        let scope = &self.stats_scope(&record);
        let now = Utc::now();
        if next == Delivery::Failed {
            self.counted(
                "failure",
                stats
                    .count(scope, flow, Metric::Failure(code), now, 1)
                    .await,
            );
            return;
        }
        // A `read` that overtook its `delivered` counts as delivered too, once.
        if next >= Delivery::Delivered && link.delivery < Delivery::Delivered {
            let bucket = bucket_of(seconds_between(link.sent_at, at));
            self.counted(
                "delivered",
                stats
                    .count(scope, flow, Metric::CodeDelivered, now, 1)
                    .await,
            );
            self.counted(
                "delivery latency",
                stats
                    .count(scope, flow, Metric::DeliveryLatency(bucket), now, 1)
                    .await,
            );
        }
        if next == Delivery::Read {
            self.counted(
                "read",
                stats.count(scope, flow, Metric::CodeRead, now, 1).await,
            );
        }
    }
}
