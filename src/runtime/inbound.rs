//! Routing what customers and WhatsApp send: a message goes to the session it answers
//! (WhatsApp's `context.id`), else to the customer's most recent active session with the number
//! it was sent to, else starts a flow of that number's merchant whose keyword it contains, else
//! gets the default reply. A customer's conversations with two numbers never mix: sessions, the
//! 24-hour window and the default reply are kept per (merchant, number, customer). A delivery status moves the
//! sent message's state forward only, and a failed prompt or code becomes the flow's
//! delivery-failure event — except Meta's 131047 for a prompt (the 24-hour window, reported
//! late), which is handled like the same refusal at send time. A status that echoes an outbox
//! entry whose send is in doubt proves WhatsApp accepted it, and settles it — when it is reported
//! for the number the entry went out from (another number did not send it).

use super::core::{Runtime, RuntimeError};
use crate::domain::{DeliveryStatus, InboundMessage, MessageContent, StatusKind};
use crate::flow::engine::Event;
use crate::store::{Delivery, MessageLink, OutboxEntry, OutboxPayload, OutboxState, StepWrite};
use crate::tenants::Scope;
use chrono::{DateTime, Utc};
use std::time::Instant;

/// What a customer's message means to a flow.
fn event_of(content: &MessageContent) -> Option<Event> {
    Some(match content {
        MessageContent::Text { body } => Event::Text { body: body.clone() },
        MessageContent::ButtonReply { id, .. } | MessageContent::ListReply { id, .. } => {
            Event::Reply { id: id.clone() }
        }
        MessageContent::QuickReply { payload, text } => Event::QuickReply {
            payload: payload.clone(),
            label: text.clone(),
        },
        // Media, locations, orders and the like are answers the flow cannot use: an empty
        // text makes it re-prompt.
        MessageContent::Media { .. }
        | MessageContent::Location { .. }
        | MessageContent::Contacts { .. }
        | MessageContent::Order { .. }
        | MessageContent::FlowReply { .. }
        | MessageContent::Unsupported { .. } => Event::Text {
            body: String::new(),
        },
        // Reactions, deletions, edits and system notices are not answers.
        MessageContent::Reaction { .. }
        | MessageContent::Revoked { .. }
        | MessageContent::Edited { .. }
        | MessageContent::System { .. } => return None,
    })
}

/// The read receipt (with "typing…") for customer message `m`, recorded as inbound event `seq`,
/// queued in the same write as the step that answers it. Same due time as the answer and
/// before it (`read:` sorts before `ses_`): the customer sees "read" and "typing…" while the
/// answer goes out.
pub(super) fn read_receipt(
    scope: &Scope,
    seq: u64,
    m: &InboundMessage,
    now: DateTime<Utc>,
) -> OutboxEntry {
    OutboxEntry::pending(
        format!("read:{seq}"),
        None,
        m.from.as_str().to_owned(),
        OutboxPayload::ReadReceipt {
            message_id: m.id.as_str().to_owned(),
        },
        now,
    )
    .from_scope(scope)
}

impl Runtime {
    /// The read receipt for customer message `m` (see [`read_receipt`]), or none when the number
    /// it was sent to runs in sandbox mode: the sandbox shows no receipts, so queuing one would
    /// only cost a claim and two outbox writes that change nothing.
    pub(super) fn read_receipt_for(
        &self,
        scope: &Scope,
        seq: u64,
        m: &InboundMessage,
        now: DateTime<Utc>,
    ) -> Option<OutboxEntry> {
        let sandbox = self
            .tenants()
            .current()
            .resolve(scope)
            .is_some_and(|(_, number)| number.access_token.is_none());
        (!sandbox).then(|| read_receipt(scope, seq, m, now))
    }

    /// Handles one inbound customer message (recorded as inbound event `seq`) sent to the
    /// number of `scope`.
    pub(super) async fn route_message(
        &self,
        seq: u64,
        m: &InboundMessage,
        scope: &Scope,
    ) -> Result<(), RuntimeError> {
        let customer = m.from.as_str();
        let key = scope.customer_key(customer);
        let now = Utc::now();
        let sent_at = DateTime::from_timestamp(m.timestamp, 0).unwrap_or(now);
        self.storage
            .sessions
            .touch_window(&key, sent_at.min(now))
            .await?;
        let Some(event) = event_of(&m.content) else {
            return Ok(());
        };

        // The session whose message this answers, else the customer's most recent one.
        let by_context = match m.context.as_ref().and_then(|c| c.message_id.as_ref()) {
            Some(id) => self
                .storage
                .sessions
                .link(id.as_str())
                .await?
                .and_then(|l| l.session_id),
            None => None,
        };
        let mut target = None;
        if let Some(id) = by_context {
            target =
                self.storage.sessions.get(&id).await?.filter(|r| {
                    r.is_active() && r.customer == customer && &self.scope_of(r) == scope
                });
            // A tap on a button of a session that has ended answers that session only: handed
            // to another one, "Confirm" on yesterday's order would confirm today's.
            let is_tap = matches!(
                m.content,
                MessageContent::ButtonReply { .. }
                    | MessageContent::ListReply { .. }
                    | MessageContent::QuickReply { .. }
            );
            if target.is_none() && is_tap {
                tracing::info!(customer = %crate::telemetry::Masked(customer), "a reply to a message of an ended session; ignored");
                return Ok(());
            }
        }
        if target.is_none() {
            target = self
                .storage
                .sessions
                .active_for(&key)
                .await?
                .into_iter()
                .max_by_key(|r| r.updated_at);
        }
        if let Some(record) = target {
            let _guard = self.lock(&record.id).await?;
            // Re-read under the lock: the session may have moved on meanwhile.
            let Some(mut record) = self.storage.sessions.get(&record.id).await? else {
                return Ok(());
            };
            // `last_inbound` holds the next sequence number expected (sequence numbers start at 0).
            if !record.is_active() || record.last_inbound > seq {
                return Ok(());
            }
            record.last_inbound = seq + 1;
            let flow = self.flow_of(&record).await?;
            let started = Instant::now();
            let write = StepWrite {
                outbox: self
                    .read_receipt_for(scope, seq, m, now)
                    .into_iter()
                    .collect(),
                ..StepWrite::default()
            };
            self.step(&mut record, &flow, event, now, write).await?;
            self.metrics
                .step_seconds
                .observe(started.elapsed().as_secs_f64());
            return Ok(());
        }

        if let MessageContent::Text { body } = &m.content {
            // Only the merchant's own flows start here (none while a reload is adding it).
            let flows = self
                .merchants()
                .get(&scope.merchant)
                .map(|m| m.flows.current());
            if let Some(flow) = flows.as_ref().and_then(|f| f.flow_for_keyword(body)) {
                match self
                    .open_session(
                        scope,
                        flow,
                        customer,
                        Default::default(),
                        None,
                        None,
                        Some((seq, m)),
                    )
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(super::commands::StartError::Runtime(e)) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, flow = flow.id().as_str(), "keyword could not start its flow");
                    }
                }
            }
        }

        // Nobody is waiting for this message: the default reply, once per inbound event and at
        // most once an hour per customer, so that nobody can make the bot talk without end.
        if self.config().default_reply.is_empty() {
            return Ok(());
        }
        let id = format!("inbound:{seq}");
        let recently = self
            .storage
            .sessions
            .last_default_reply(&key)
            .await?
            .is_some_and(|at| now - at < chrono::Duration::hours(1));
        if !recently && self.storage.outbox.outbox_entry(&id).await?.is_none() {
            self.storage.sessions.note_default_reply(&key, now).await?;
            self.storage
                .sessions
                .apply_step(StepWrite {
                    outbox: vec![OutboxEntry::pending(
                        id,
                        None,
                        customer.to_owned(),
                        OutboxPayload::Text {
                            text: self.config().default_reply.clone(),
                        },
                        now,
                    )
                    .from_scope(scope)],
                    ..StepWrite::default()
                })
                .await?;
            self.storage.engine.durable().await?;
            self.outbox_wake.notify_one();
        }
        Ok(())
    }

    /// The sent message a status is about. WhatsApp may report a status before the sender has
    /// recorded the message id it was given (the link is written just after the Graph API
    /// answered); the tracker we attached, echoed back, names the outbox entry and so the
    /// session, so an early `failed` still reaches the flow.
    async fn link_of(&self, s: &DeliveryStatus) -> Result<Option<MessageLink>, RuntimeError> {
        if let Some(link) = self.storage.sessions.link(s.message_id.as_str()).await? {
            return Ok(Some(link));
        }
        let Some(entry_id) = &s.callback_data else {
            return Ok(None);
        };
        let Some(mut entry) = self.storage.outbox.outbox_entry(entry_id).await? else {
            return Ok(None);
        };
        // Only the number the entry went out from can echo its tracker: another number's
        // status carrying it did not send this entry, and must not settle it as sent.
        let tenants = self.tenants().current();
        if let Some(reported) = tenants.scope_of(s.phone_number_id.as_deref()) {
            let sent_from = entry.scope_or(&tenants.default_scope());
            if reported.number != sent_from.number {
                return Ok(None);
            }
        }
        // WhatsApp accepted this entry's send, whatever the sender heard (or did not): noted so
        // that a send in doubt is settled as sent instead of being sent again.
        if matches!(entry.state, OutboxState::InFlight | OutboxState::InDoubt) {
            self.storage
                .outbox
                .note_echo(&entry.id, s.message_id.as_str())
                .await?;
        }
        if entry.state == OutboxState::InDoubt {
            // Due now: the sender settles it with this message id at once.
            let old_due = entry.due_ms;
            entry.due_ms = Utc::now().timestamp_millis();
            self.storage
                .outbox
                .update_outbox(&entry, old_due, None)
                .await?;
            self.outbox_wake.notify_one();
        }
        if !matches!(
            entry.payload,
            OutboxPayload::Message { .. } | OutboxPayload::Code { .. }
        ) {
            return Ok(None);
        }
        Ok(Some(MessageLink {
            tracked: entry.session_id.is_some(),
            session_id: entry.session_id,
            entry_id: entry.id,
            delivery: Delivery::Accepted,
            sent_at: Utc::now(),
        }))
    }

    /// Handles a delivery status for a message we sent.
    pub async fn track_status(&self, s: &DeliveryStatus) -> Result<(), RuntimeError> {
        let message_id = s.message_id.as_str();
        let Some(link) = self.link_of(s).await? else {
            // Not ours as far as we know yet, and without a tracker to say otherwise: the send
            // call may still be on its way back. Park the status; whoever stores the link second
            // (the sender, or this re-check) applies it, so it is neither lost nor dropped.
            self.storage.sessions.park_status(message_id, s).await?;
            if self.storage.sessions.link(message_id).await?.is_some() {
                self.apply_parked(message_id).await?;
            }
            // No flush needed: the inbound event stays pending until this handler returns, so a
            // crash before the parked status reaches disk replays it.
            return Ok(());
        };
        self.apply_status(s, link).await
    }

    /// Applies parked statuses once a message's link is stored.
    pub async fn apply_parked(&self, message_id: &str) -> Result<(), RuntimeError> {
        for parked in self.storage.sessions.take_parked(message_id).await? {
            if let Some(link) = self.storage.sessions.link(message_id).await? {
                self.apply_status(&parked, link).await?;
            }
        }
        Ok(())
    }

    async fn apply_status(
        &self,
        s: &DeliveryStatus,
        mut link: crate::store::MessageLink,
    ) -> Result<(), RuntimeError> {
        let next = match s.status {
            StatusKind::Sent => Delivery::Sent,
            StatusKind::Delivered => Delivery::Delivered,
            StatusKind::Read | StatusKind::Played => Delivery::Read,
            StatusKind::Failed => Delivery::Failed,
            StatusKind::Other(_) => return Ok(()),
        };
        // Forward only: a late `delivered` never undoes `read`, and `failed` is final.
        if link.delivery == Delivery::Failed || next <= link.delivery {
            return Ok(());
        }
        let code = s.errors.first().map(|e| e.code);
        self.metrics.outbound_message(
            match next {
                Delivery::Accepted => "accepted",
                Delivery::Sent => "sent",
                Delivery::Delivered => "delivered",
                Delivery::Read => "read",
                Delivery::Failed => "failed",
            },
            code,
        );
        if next >= Delivery::Delivered && link.delivery < Delivery::Delivered {
            let at = DateTime::from_timestamp(s.timestamp, 0).unwrap_or_else(Utc::now);
            let secs = (at - link.sent_at).num_milliseconds().max(0) as f64 / 1000.0;
            self.metrics.delivery_latency.observe(secs);
        }
        let at = DateTime::from_timestamp(s.timestamp, 0).unwrap_or_else(Utc::now);
        self.stats_status(&link, next, code, at).await;
        link.delivery = next;
        self.storage
            .sessions
            .put_link(s.message_id.as_str(), &link)
            .await?;
        if next == Delivery::Failed && link.tracked {
            if let Some(session_id) = &link.session_id {
                let reason = match s.errors.first() {
                    Some(e) => match e.title.as_deref().or(e.message.as_deref()) {
                        Some(title) => format!("WhatsApp error {}: {title}", e.code),
                        None => format!("WhatsApp error {}", e.code),
                    },
                    None => "WhatsApp reported the message failed".to_owned(),
                };
                let failed_to = self
                    .storage
                    .outbox
                    .outbox_entry(&link.entry_id)
                    .await?
                    .map(|e| e.to);
                let elsewhere = match failed_to {
                    Some(to) => self.failed_elsewhere(session_id, &to).await?,
                    None => false,
                };
                if !elsewhere
                    && code == Some(131047)
                    && self.window_closed_late(&link, &reason).await?
                {
                    self.storage.engine.durable().await?;
                    return Ok(());
                }
                self.apply_event(session_id, Event::DeliveryFailed { reason, elsewhere })
                    .await?;
                return Ok(());
            }
        }
        self.storage.engine.durable().await?;
        Ok(())
    }
}
