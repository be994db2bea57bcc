//! A client of a running server: the merchant API, and webhooks built and signed the way
//! WhatsApp sends them.

use super::{API_KEY, APP_SECRET, DEADLINE, PHONE_NUMBER_ID};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use waotp::webhook::signature::SignatureVerifier;

/// A client of a running server (in-process or child).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Api {
        Api {
            base,
            http: reqwest::Client::new(),
        }
    }

    /// `POST /v1/sessions`; returns status and body.
    pub async fn start_raw(
        &self,
        flow: &str,
        to: &str,
        vars: Value,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .bearer_auth(API_KEY)
            .json(&json!({"flow": flow, "to": to, "vars": vars}));
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let res = req.send().await.expect("start request");
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON answer"))
    }

    /// `POST /v1/sessions` with an `Idempotency-Key`; returns status, the `Idempotent-Replayed`
    /// header and body.
    pub async fn start_keyed(
        &self,
        flow: &str,
        to: &str,
        vars: Value,
        idempotency_key: &str,
    ) -> (u16, Option<String>, Value) {
        let res = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", idempotency_key)
            .json(&json!({"flow": flow, "to": to, "vars": vars}))
            .send()
            .await
            .expect("start request");
        let status = res.status().as_u16();
        let replayed = res
            .headers()
            .get("Idempotent-Replayed")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, replayed, res.json().await.expect("JSON answer"))
    }

    /// Starts a session in language `lang` and returns its object (expects 201).
    pub async fn start_in(&self, flow: &str, to: &str, vars: Value, lang: &str) -> Value {
        let res = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .bearer_auth(API_KEY)
            .json(&json!({"flow": flow, "to": to, "vars": vars, "lang": lang}))
            .send()
            .await
            .expect("start request");
        assert_eq!(res.status().as_u16(), 201);
        res.json().await.expect("JSON answer")
    }

    /// Starts a session and returns its object (expects 201).
    pub async fn start(&self, flow: &str, to: &str, vars: Value) -> Value {
        let (status, body) = self.start_raw(flow, to, vars, None).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn session(&self, id: &str) -> Value {
        let res = self
            .http
            .get(format!("{}/v1/sessions/{id}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("get session");
        assert_eq!(res.status(), 200);
        res.json().await.expect("JSON")
    }

    /// Polls the session until it is completed; returns it.
    pub async fn wait_completed(&self, id: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.session(id).await;
            if s["status"] == "completed" {
                return s;
            }
            assert!(Instant::now() < deadline, "session never completed: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the session until it is in `state`.
    pub async fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.session(id).await;
            if s["state"] == state {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "session never reached {state}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn check(&self, id: &str, code: &str) -> Value {
        let (status, body) = self.check_raw(id, code).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `POST /v1/sessions/{id}/check`; returns status and body.
    pub async fn check_raw(&self, id: &str, code: &str) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}/v1/sessions/{id}/check", self.base))
            .bearer_auth(API_KEY)
            .json(&json!({"code": code}))
            .send()
            .await
            .expect("check");
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON"))
    }

    pub async fn cancel(&self, id: &str) -> Value {
        let res = self
            .http
            .post(format!("{}/v1/sessions/{id}/cancel", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("cancel");
        assert_eq!(res.status(), 200);
        res.json().await.expect("JSON")
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Posts a webhook body signed with the app secret; expects 200.
    pub async fn webhook(&self, value: Value) {
        let body = value.to_string().into_bytes();
        let signature = SignatureVerifier::new(APP_SECRET.as_bytes()).sign(&body);
        let res = self
            .http
            .post(format!("{}/webhook", self.base))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .expect("webhook");
        assert_eq!(res.status(), 200);
    }

    /// A text message from the customer; returns its WhatsApp message id.
    pub async fn text(&self, from: &str, body: &str) -> String {
        let id = new_wamid();
        self.webhook(envelope(json!({
            "contacts": [{"profile": {"name": "Kerry"}, "wa_id": from}],
            "messages": [{"from": from, "id": id, "timestamp": now_secs(),
                          "type": "text", "text": {"body": body}}]
        })))
        .await;
        id
    }

    /// A text message from a customer WhatsApp identifies only by their business-scoped user id
    /// (they chose a username and did not share their number): `from_user_id` and no `from`,
    /// `user_id` and the username in the contact card and no `wa_id`. Returns its message id.
    pub async fn text_from_user(&self, user_id: &str, body: &str) -> String {
        let id = new_wamid();
        self.webhook(envelope(json!({
            "contacts": [{"profile": {"name": "Kerry", "username": "@kerry"},
                          "user_id": user_id}],
            "messages": [{"from_user_id": user_id, "id": id, "timestamp": now_secs(),
                          "type": "text", "text": {"body": body}}]
        })))
        .await;
        id
    }

    /// A reply-button tap answering the message WhatsApp knows as `context_id`.
    pub async fn tap(&self, from: &str, context_id: &str, id: &str, title: &str) -> String {
        let message_id = new_wamid();
        self.webhook(envelope(json!({
            "contacts": [{"profile": {"name": "Kerry"}, "wa_id": from}],
            "messages": [{"context": {"from": "15550783881", "id": context_id},
                          "from": from, "id": message_id, "timestamp": now_secs(),
                          "type": "interactive",
                          "interactive": {"type": "button_reply",
                                          "button_reply": {"id": id, "title": title}}}]
        })))
        .await;
        message_id
    }

    /// A tap on a template's quick-reply button, as WhatsApp reports it: a message of type
    /// `button` carrying the payload the send set (or, when it set none, the button's label)
    /// and the label.
    pub async fn template_tap(
        &self,
        from: &str,
        context_id: &str,
        payload: &str,
        text: &str,
    ) -> String {
        let message_id = new_wamid();
        self.webhook(envelope(json!({
            "contacts": [{"profile": {"name": "Kerry"}, "wa_id": from}],
            "messages": [{"context": {"from": "15550783881", "id": context_id},
                          "from": from, "id": message_id, "timestamp": now_secs(),
                          "type": "button",
                          "button": {"payload": payload, "text": text}}]
        })))
        .await;
        message_id
    }

    /// A status webhook for a message we sent; `error` makes it a `failed` with that code.
    pub async fn status(&self, message_id: &str, to: &str, status: &str, error: Option<i64>) {
        let mut s = json!({"id": message_id, "status": status, "timestamp": now_secs(),
                           "recipient_id": to,
                           "conversation": {"id": "c1", "origin": {"type": "authentication"}},
                           "pricing": {"billable": true, "pricing_model": "CBP",
                                       "category": "authentication"}});
        if let Some(code) = error {
            s["errors"] = json!([{"code": code, "title": "Message undeliverable",
                                  "message": "Message undeliverable",
                                  "error_data": {"details": "Message could not be delivered"}}]);
        }
        self.webhook(envelope(json!({"statuses": [s]}))).await;
    }
}

impl Api {
    /// A status webhook echoing the `biz_opaque_callback_data` we sent, as Meta does.
    pub async fn status_echo(&self, message_id: &str, to: &str, status: &str, tracker: &str) {
        self.webhook(envelope(json!({"statuses": [{
            "id": message_id, "status": status, "timestamp": now_secs(),
            "recipient_id": to, "biz_opaque_callback_data": tracker}]})))
            .await;
    }
}

/// A `messages` change as WhatsApp wraps it, addressed to our number.
pub fn envelope(value: Value) -> Value {
    envelope_for(PHONE_NUMBER_ID, "15550783881", value)
}

/// A `messages` change addressed to the business number `phone_number_id` (another number of
/// the same WhatsApp Business Account posts to the same webhook).
pub fn envelope_for(phone_number_id: &str, display_number: &str, value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] = json!({"display_phone_number": display_number,
                               "phone_number_id": phone_number_id});
    json!({"object": "whatsapp_business_account",
           "entry": [{"id": "102290129340398",
                      "changes": [{"field": "messages", "value": value}]}]})
}

pub fn now_secs() -> String {
    chrono::Utc::now().timestamp().to_string()
}

pub fn new_wamid() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "wamid.in.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}
