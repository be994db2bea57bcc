//! Sandbox mode's stand-in for WhatsApp: outbound messages are recorded, not sent, and listed by
//! `GET /v1/sandbox/messages`. A code in a recorded message is kept sealed (AEAD) like every
//! other copy of a code, and opened only for that listing.
//!
//! Messages are recorded per [`Scope`] and customer — what one number sent one customer — and
//! each says which number it went out from (`from`, the `phone_number_id`).

use crate::otp::{normalize_attempt, CodeSealer, SealedCode};
use crate::store::{OutboxEntry, OutboxPayload};
use crate::store::{Sessions, StoreError};
use crate::tenants::Scope;
use crate::whatsapp::{Outgoing, SendRequest};
use chrono::Utc;
use rand::rngs::OsRng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Records outbound messages in the store.
pub struct SandboxRecorder {
    sessions: Arc<dyn Sessions>,
    sealer: CodeSealer,
    /// Listings waiting for a customer's next message (`wait=` on the listing route), per
    /// scope and customer so that a recorded message wakes only its own listings, not every one.
    watchers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl std::fmt::Debug for SandboxRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxRecorder").finish_non_exhaustive()
    }
}

impl SandboxRecorder {
    pub fn new(sessions: Arc<dyn Sessions>, sealer: CodeSealer) -> SandboxRecorder {
        SandboxRecorder {
            sessions,
            sealer,
            watchers: Mutex::default(),
        }
    }

    /// Waits (up to `wait`) until at least `min` messages from `scope`'s number to `customer`
    /// are recorded, then lists them as [`SandboxRecorder::messages`] does.
    pub async fn messages_when(
        &self,
        scope: &Scope,
        customer: &str,
        min: usize,
        wait: Duration,
    ) -> Result<Vec<Value>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let watched = scope.customer_key(customer.trim_start_matches('+'));
        loop {
            let notify = self
                .watchers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(watched.clone())
                .or_default()
                .clone();
            let (messages, done) = {
                // Registered before reading, so a message recorded in between still wakes us.
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let messages = self.messages(scope, customer).await;
                let done = !matches!(&messages, Ok(m) if m.len() < min)
                    || tokio::time::Instant::now() >= deadline;
                if !done {
                    let _ = tokio::time::timeout_at(deadline, notified).await;
                }
                (messages, done)
            };
            drop(notify);
            let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
            if watchers
                .get(&watched)
                .is_some_and(|n| Arc::strong_count(n) == 1)
            {
                watchers.remove(&watched);
            }
            drop(watchers);
            if done {
                return messages;
            }
        }
    }

    /// Records what `scope`'s number would have sent; returns a made-up WhatsApp message id.
    /// `template_text` is what the customer would see of a templated send.
    pub async fn record(
        &self,
        scope: &Scope,
        entry: &OutboxEntry,
        request: &SendRequest,
        template_text: Option<&str>,
    ) -> Result<String, StoreError> {
        let message_id = format!("wamid.sandbox.{}", entry.id.replace(':', "."));
        let recorded_as = scope.customer_key(request.to.trim_start_matches('+'));
        // A send in doubt sent once more: the sandbox, unlike WhatsApp, knows whether it
        // already took the first one.
        if entry.resent
            && self
                .sessions
                .sandbox_messages(&recorded_as)
                .await?
                .iter()
                .any(|m| m["id"] == message_id.as_str())
        {
            return Ok(message_id);
        }
        let now = Utc::now();
        let seal_key = entry.session_id.clone().unwrap_or_else(|| entry.id.clone());
        let mut body = json!({
            "id": message_id,
            "to": crate::domain::customer_address(&request.to),
            "from": scope.number,
            "at": now.to_rfc3339(),
            "session_id": entry.session_id,
            "type": request.message.kind(),
        });
        match &request.message {
            Outgoing::Text { body: text } => body["text"] = json!(text),
            Outgoing::Buttons {
                body: text,
                buttons,
            } => {
                body["text"] = json!(text);
                body["buttons"] = buttons
                    .iter()
                    .map(|b| json!({"id": b.id, "title": b.title}))
                    .collect();
            }
            Outgoing::List {
                body: text,
                button,
                sections,
            } => {
                body["text"] = json!(text);
                body["button"] = json!(button);
                body["rows"] = sections
                    .iter()
                    .flat_map(|s| &s.rows)
                    .map(|r| json!({"id": r.id, "title": r.title, "description": r.description}))
                    .collect();
            }
            Outgoing::Template {
                name,
                language,
                body_parameters,
                quick_replies,
            } => {
                // The parameters as WhatsApp would receive them.
                let parameters: Vec<String> = body_parameters
                    .iter()
                    .map(|p| crate::whatsapp::limits::template_text(p))
                    .collect();
                body["template"] =
                    json!({"name": name, "language": language, "parameters": parameters});
                if !quick_replies.is_empty() {
                    body["template"]["quick_replies"] = json!(quick_replies);
                }
                if let Some(text) = template_text {
                    body["template"]["text"] = json!(text);
                }
                // What the flow would say in the chat, for a developer reading along.
                if let OutboxPayload::Message { message } = &entry.payload {
                    body["text"] = json!(message.body.text());
                    if let crate::flow::engine::MessageBody::Buttons { buttons, .. } = &message.body
                    {
                        body["buttons"] = buttons
                            .iter()
                            .map(|b| json!({"id": b.id, "title": b.title}))
                            .collect();
                    }
                }
            }
            Outgoing::AuthenticationCode {
                name,
                language,
                code,
            } => {
                body["template"] = json!({"name": name, "language": language});
                if let Some(text) = template_text {
                    body["template"]["text"] = json!(text);
                }
                if let Some(code) = normalize_attempt(code) {
                    body["sealed_code"] =
                        serde_json::to_value(self.sealer.seal(&seal_key, &code, &mut OsRng))
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                }
            }
        }
        self.sessions
            .record_sandbox(&recorded_as, now, &entry.id, &body)
            .await?;
        if let Some(notify) = self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&recorded_as)
        {
            notify.notify_waiters();
        }
        Ok(message_id)
    }

    /// Recorded messages from `scope`'s number to `customer` (digits), oldest first, codes
    /// opened.
    pub async fn messages(&self, scope: &Scope, customer: &str) -> Result<Vec<Value>, StoreError> {
        let mut out = self
            .sessions
            .sandbox_messages(&scope.customer_key(customer.trim_start_matches('+')))
            .await?;
        for m in &mut out {
            let Some(sealed) = m.get("sealed_code").cloned() else {
                continue;
            };
            let key = m["session_id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_default();
            if let Ok(sealed) = serde_json::from_value::<SealedCode>(sealed) {
                if let Ok(code) = self.sealer.open(&key, &sealed) {
                    m["code"] = json!(code.expose());
                }
            }
            if let Some(obj) = m.as_object_mut() {
                obj.remove("sealed_code");
            }
        }
        Ok(out)
    }
}
