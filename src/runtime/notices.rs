//! What the runtime tells the merchant about a sent message outside any session step — a
//! template WhatsApp refused, a message the closed 24-hour window kept from the customer — and
//! how a `failed` status with Meta's 131047 (the window, reported late) is handled: exactly like
//! the send that Meta refuses at once with 131047.
//!
//! Notices are ordinary signed callbacks in the durable outbox, one per message and kind (the
//! outbox entry id says which), so a replayed status or a retried send never queues two.

use super::core::{session_json, Runtime, RuntimeError};
use crate::store::{MessageLink, OutboxEntry, OutboxPayload, OutboxState, StepWrite};
use chrono::Utc;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

impl Runtime {
    /// Queues a signed `session.<event>` callback about the message of `entry`, once; `details`
    /// says what happened to it. Nothing is queued without a session or its merchant's
    /// callback URL.
    pub async fn notify_delivery_problem(
        &self,
        entry: &OutboxEntry,
        event: &str,
        details: Value,
    ) -> Result<(), RuntimeError> {
        let Some(session_id) = &entry.session_id else {
            return Ok(());
        };
        let id = format!("notice:{event}:{}", entry.id);
        if self.storage.outbox.outbox_entry(&id).await?.is_some() {
            return Ok(());
        }
        let Some(record) = self.storage.sessions.get(session_id).await? else {
            return Ok(());
        };
        let Some(url) = self.callback_url(&record) else {
            return Ok(());
        };
        // Derived from the notice's id: a notice queued again carries the same event id.
        let event_id = hex::encode(&Sha256::digest(id.as_bytes())[..16]);
        let now = Utc::now();
        let body = json!({
            "id": event_id,
            "type": format!("session.{event}"),
            "created_at": now.to_rfc3339(),
            "session": session_json(&record),
            "message": details,
        });
        let notice = OutboxEntry::pending(
            id,
            Some(session_id.clone()),
            entry.to.clone(),
            OutboxPayload::Callback {
                url,
                event_id,
                body,
            },
            now,
        )
        .from_scope(&self.scope_of(&record));
        self.queue(notice).await
    }

    /// A `failed` status with 131047 for a flow message: sent again as its template when the
    /// step has one, else the session keeps waiting and the merchant is told. Returns false
    /// for what is not a flow message (a code fails the flow's delivery like any failure).
    pub(super) async fn window_closed_late(
        &self,
        link: &MessageLink,
        reason: &str,
    ) -> Result<bool, RuntimeError> {
        let Some(entry) = self.storage.outbox.outbox_entry(&link.entry_id).await? else {
            return Ok(false);
        };
        let OutboxPayload::Message { message } = &entry.payload else {
            return Ok(false);
        };
        self.metrics
            .outbound_message("outside_window", Some(131047));
        if message.template.is_some() && !entry.use_template {
            let now = Utc::now();
            let again = OutboxEntry {
                id: format!("{}:template", entry.id),
                attempts: 0,
                created_at: now,
                due_ms: now.timestamp_millis(),
                state: OutboxState::Pending,
                use_template: true,
                resent: false,
                ..entry.clone()
            };
            if self.storage.outbox.outbox_entry(&again.id).await?.is_none() {
                tracing::info!(entry = %entry.id, "WhatsApp reported the 24-hour window closed; sending the step's template");
                self.queue(again).await?;
            }
        } else {
            tracing::info!(entry = %entry.id, "WhatsApp reported the 24-hour window closed and the step has no template; the session keeps waiting");
            let details = json!({ "entry_id": entry.id, "reason": reason });
            self.notify_delivery_problem(&entry, "outside_window", details)
                .await?;
        }
        Ok(true)
    }

    /// Stores a new outbox entry durably and wakes the sender.
    async fn queue(&self, entry: OutboxEntry) -> Result<(), RuntimeError> {
        self.storage
            .sessions
            .apply_step(StepWrite {
                outbox: vec![entry],
                ..StepWrite::default()
            })
            .await?;
        self.storage.engine.durable().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }
}
