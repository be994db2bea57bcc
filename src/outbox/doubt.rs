//! Sends in doubt: what the outbox does with a send whose answer never came, once its wait is
//! over — settle it as sent when a status webhook echoed its entry id, else send it once more,
//! and never a third time — and the bookkeeping of a send WhatsApp accepted, shared by a normal
//! answer and an echoed status. The wait itself is stored as the entry's due time.

use super::{Outbox, Outcome};
use crate::store::{Delivery, MessageLink, OutboxEntry, OutboxPayload, OutboxState};
use chrono::{DateTime, Duration as Span, Utc};

impl Outbox {
    /// The due time of an entry that falls in doubt now.
    pub(super) fn in_doubt_due(&self) -> i64 {
        (Utc::now() + Span::from_std(self.in_doubt_wait).unwrap_or_default()).timestamp_millis()
    }

    /// An entry whose wait in doubt is over. A status that echoed it settles it as sent; else it
    /// is sent once more (true: go on and send it), and after a second doubt it is given up.
    pub(super) async fn resend_in_doubt(&self, entry: &mut OutboxEntry) -> bool {
        let echoed = match self.runtime.storage().outbox.echo(&entry.id).await {
            Ok(echoed) => echoed,
            Err(e) => {
                tracing::error!(entry = %entry.id, error = %e, "cannot read an outbox entry's status echo");
                return false;
            }
        };
        if let Some(message_id) = echoed {
            let (outcome, link) = self.accepted(entry, message_id, None, Utc::now()).await;
            self.settle(entry.clone(), outcome, link).await;
            return false;
        }
        if entry.resent {
            self.runtime.metrics.outbound_message("unconfirmed", None);
            let reason = "sent twice without an answer or a status from WhatsApp; delivery unknown";
            tracing::warn!(entry = %entry.id, reason, "message given up");
            let old_due = entry.due_ms;
            entry.state = OutboxState::Failed {
                reason: reason.into(),
            };
            // Only while this sender holds the claim: a new holder may be deciding anew.
            match self
                .runtime
                .storage()
                .outbox
                .update_held(entry, old_due)
                .await
            {
                Ok(true) => {}
                Ok(false) => self.claim_lost(entry, "giving up a send in doubt"),
                Err(e) => {
                    tracing::error!(entry = %entry.id, error = %e, "cannot record the outbox result")
                }
            }
            return false;
        }
        tracing::warn!(entry = %entry.id, "no status came for a send in doubt; sending it once more");
        self.runtime.metrics.outbound_message("resent", None);
        entry.resent = true;
        entry.state = OutboxState::Pending;
        true
    }

    /// The outcome and link of a send WhatsApp accepted as `message_id`.
    pub(super) async fn accepted(
        &self,
        entry: &OutboxEntry,
        message_id: String,
        generation: Option<u32>,
        now: DateTime<Utc>,
    ) -> (Outcome, Option<(String, MessageLink)>) {
        self.runtime.metrics.outbound_message("accepted", None);
        if let (OutboxPayload::Code { .. }, Some(session_id)) = (&entry.payload, &entry.session_id)
        {
            let generation = match (generation, &entry.payload) {
                (Some(g), _) => g,
                (None, OutboxPayload::Code { generation, .. }) => *generation,
                (None, _) => 0,
            };
            if let Err(e) = self
                .runtime
                .storage()
                .otp
                .confirm_sent(session_id, generation, now)
                .await
            {
                tracing::error!(error = %e, "cannot drop the sealed code after sending");
            }
        }
        let link = MessageLink {
            session_id: entry.session_id.clone(),
            entry_id: entry.id.clone(),
            delivery: Delivery::Accepted,
            sent_at: now,
            tracked: entry.session_id.is_some(),
        };
        (Outcome::Done, Some((message_id, link)))
    }
}
