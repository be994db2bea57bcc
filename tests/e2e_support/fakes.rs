//! Local fakes of the parties waotp calls, real HTTP servers in the test process: the Graph API
//! (accepting, refusing or down; with a WhatsApp Business Account's message templates, paged
//! with cursors as Meta pages them) and the merchant (hooks and callbacks, signatures checked).

use super::http_fake::{Answer, HttpFake, Recorded};
use super::merchant_signature;
use super::{wait_for, CALLBACK_SECRET, KNOWN_ACCOUNT, RECOVERY_URL, WABA_ID};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The fake Graph API: accepts messages with ids `wamid.e2e.N` unless told otherwise.
pub struct Graph {
    pub http: HttpFake,
    down: Arc<AtomicBool>,
    /// Milliseconds every answer waits (a slow Graph API); 0 answers at once.
    delay_ms: Arc<AtomicU64>,
    accepted: Arc<Mutex<Vec<(Value, String)>>>,
    undeliverable: Arc<Mutex<Vec<String>>>,
    /// The business account's message templates.
    pub account: Arc<Mutex<TemplateAccount>>,
}

/// A WhatsApp Business Account's templates as the Graph API serves them:
/// `GET /{WABA-ID}/message_templates` in pages of `page_size` with `paging.cursors` and
/// `paging.next` (absent on the last page), `POST /{WABA-ID}/message_templates` to create
/// (Meta's error 100 / subcode 2388023 when the name and language exist), `POST /{id}` to edit.
#[derive(Debug, Default)]
pub struct TemplateAccount {
    pub templates: Vec<Value>,
    pub page_size: usize,
    /// Names whose creation Meta refuses (error 100, a variable at the end of the body).
    pub refuse: Vec<String>,
    next_id: u64,
}

impl TemplateAccount {
    /// Adds a template as the account would hold it; returns its id.
    pub fn add(&mut self, name: &str, language: &str, status: &str, body: Value) -> String {
        self.next_id += 1;
        let id = format!("{}", 9_000_000 + self.next_id);
        let mut t = body;
        t["id"] = json!(id);
        t["name"] = json!(name);
        t["language"] = json!(language);
        t["status"] = json!(status);
        self.templates.push(t);
        id
    }

    pub fn find(&self, name: &str, language: &str) -> Option<&Value> {
        self.templates
            .iter()
            .find(|t| t["name"] == name && t["language"] == language)
    }

    pub fn find_mut(&mut self, name: &str, language: &str) -> Option<&mut Value> {
        self.templates
            .iter_mut()
            .find(|t| t["name"] == name && t["language"] == language)
    }

    fn answer(&mut self, r: &Recorded) -> Option<Answer> {
        let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
        let list = format!("/v23.0/{WABA_ID}/message_templates");
        if path == list && r.method == "GET" {
            let after: usize = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("after=cursor"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            // Like Meta, only the fields asked for (and the id) are answered.
            let fields: Option<Vec<String>> = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("fields="))
                .map(|f| {
                    f.replace("%2C", ",")
                        .split(',')
                        .map(str::to_owned)
                        .collect()
                });
            let size = self.page_size.max(1);
            let page: Vec<Value> = self
                .templates
                .iter()
                .skip(after)
                .take(size)
                .map(|t| match (&fields, t.as_object()) {
                    (Some(fields), Some(object)) => Value::Object(
                        object
                            .iter()
                            .filter(|(k, _)| *k == "id" || fields.contains(k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    _ => t.clone(),
                })
                .collect();
            let end = after + page.len();
            let mut paging = json!({"cursors": {"before": format!("cursor{after}"), "after": format!("cursor{end}")}});
            if end < self.templates.len() {
                paging["next"] = json!(format!("https://graph.facebook.com/v23.0/{WABA_ID}/message_templates?limit={size}&after=cursor{end}"));
            }
            return Some(Answer::json(200, json!({"data": page, "paging": paging})));
        }
        if path == list && r.method == "POST" {
            let body = r.json();
            let (name, language) = (
                body["name"].as_str().unwrap_or_default().to_owned(),
                body["language"].as_str().unwrap_or_default().to_owned(),
            );
            if self.refuse.contains(&name) {
                return Some(Answer::json(
                    400,
                    json!({"error": {
                    "message": "Invalid parameter", "type": "OAuthException", "code": 100,
                    "error_subcode": 2388299, "is_transient": false,
                    "error_user_title": "Variables can't be at the start or end of the template",
                    "error_user_msg": "Variables can't be at the start or end of the template.",
                    "fbtrace_id": "E2E"}}),
                ));
            }
            if self.find(&name, &language).is_some() {
                return Some(Answer::json(
                    400,
                    json!({"error": {
                    "message": "Invalid parameter", "type": "OAuthException", "code": 100,
                    "error_subcode": 2388023, "is_transient": false,
                    "error_user_title": "Message template already exists",
                    "error_user_msg": "There is already English (US) content for this template.",
                    "fbtrace_id": "E2E"}}),
                ));
            }
            let category = body["category"].clone();
            let id = self.add(&name, &language, "PENDING", body);
            return Some(Answer::json(
                200,
                json!({"id": id, "status": "PENDING", "category": category}),
            ));
        }
        let id = path.strip_prefix("/v23.0/")?;
        if r.method == "POST" && !id.contains('/') {
            let body = r.json();
            let t = self.templates.iter_mut().find(|t| t["id"] == id)?;
            t["components"] = body["components"].clone();
            return Some(Answer::json(200, json!({"success": true})));
        }
        None
    }
}

impl Graph {
    pub async fn start() -> Graph {
        let down = Arc::new(AtomicBool::new(false));
        let is_down = down.clone();
        let n = Arc::new(AtomicU64::new(0));
        let accepted: Arc<Mutex<Vec<(Value, String)>>> = Arc::default();
        let log = accepted.clone();
        let undeliverable: Arc<Mutex<Vec<String>>> = Arc::default();
        let dead = undeliverable.clone();
        let account: Arc<Mutex<TemplateAccount>> = Arc::default();
        let templates = account.clone();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let answer = move |r: &Recorded| {
            if is_down.load(Ordering::SeqCst) {
                return graph_error(503, 2);
            }
            if !r.path.ends_with("/messages") {
                if let Some(answer) = templates.lock().expect("account").answer(r) {
                    return answer;
                }
                // Another business account (another merchant's): it holds no templates.
                let path = r.path.split_once('?').map_or(r.path.as_str(), |(p, _)| p);
                if r.method == "GET" && path.ends_with("/message_templates") {
                    return Answer::json(200, json!({"data": [], "paging": {}}));
                }
            }
            if r.json().get("status").is_some() {
                return Answer::json(200, json!({"success": true}));
            }
            let to = r.json()["to"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('+')
                .to_owned();
            if dead.lock().expect("numbers").contains(&to) {
                return graph_error(400, 131026);
            }
            let id = format!("wamid.e2e.{}", n.fetch_add(1, Ordering::SeqCst) + 1);
            log.lock().expect("log").push((r.json(), id.clone()));
            Answer::json(
                200,
                json!({"messaging_product": "whatsapp",
                       "contacts": [{"input": "x", "wa_id": "x"}],
                       "messages": [{"id": id}]}),
            )
        };
        let http = HttpFake::start(move |r: &Recorded| {
            let answer = answer(r);
            match delay.load(Ordering::SeqCst) {
                0 => answer,
                ms => Answer::Delay {
                    after: std::time::Duration::from_millis(ms),
                    answer: Box::new(answer),
                },
            }
        })
        .await;
        Graph {
            http,
            down,
            delay_ms,
            accepted,
            undeliverable,
            account,
        }
    }

    /// From now on every message to `number` is refused at once with Meta's 131026
    /// (message undeliverable), as for a number that is not on WhatsApp.
    pub fn set_undeliverable(&self, number: &str) {
        let digits = number.trim_start_matches('+').to_owned();
        self.undeliverable.lock().expect("numbers").push(digits);
    }

    pub fn url(&self) -> String {
        self.http.url("/v23.0")
    }

    /// While down, every request gets a 503 with Meta's transient error.
    /// Makes every later answer wait `delay` (a slow Graph API); zero answers at once again.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next request gets Meta's error `code` with HTTP `status`.
    pub fn fail_next(&self, status: u16, code: i64) {
        self.http.push(graph_error(status, code));
    }

    /// Every message send (read receipts left out), oldest first, with the id it was given.
    pub fn sends(&self) -> Vec<Value> {
        self.http
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/messages"))
            .map(Recorded::json)
            .filter(|b| b.get("status").is_none())
            .collect()
    }

    /// Every call of the messages endpoint (sends and read receipts), oldest first.
    pub fn calls(&self) -> Vec<Value> {
        self.http
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/messages"))
            .map(Recorded::json)
            .collect()
    }

    /// Message sends to a customer (digits, with or without `+`, or a business-scoped user id).
    pub fn sends_to(&self, customer: &str) -> Vec<Value> {
        self.sends()
            .into_iter()
            .filter(|b| addressed_to(b, customer))
            .collect()
    }

    /// Waits until `customer` has been sent at least `n` messages; returns them all.
    pub async fn wait_sends(&self, customer: &str, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} message(s) to {customer}"), || {
            let s = self.sends_to(customer);
            (s.len() >= n).then_some(s)
        })
        .await
    }

    /// Messages the fake accepted for `customer`, with the id it gave each, oldest first.
    pub fn accepted_to(&self, customer: &str) -> Vec<(Value, String)> {
        self.accepted
            .lock()
            .expect("log")
            .iter()
            .filter(|(b, _)| addressed_to(b, customer))
            .cloned()
            .collect()
    }

    /// Waits until `customer` has had at least `n` messages accepted; returns them all.
    pub async fn wait_accepted(&self, customer: &str, n: usize) -> Vec<(Value, String)> {
        wait_for(&format!("{n} accepted message(s) to {customer}"), || {
            let s = self.accepted_to(customer);
            (s.len() >= n).then_some(s)
        })
        .await
    }
}

/// Whether a send body is addressed to `customer`: a phone number in `to` (digits, with or
/// without `+`), or a business-scoped user id in `recipient` (Meta: `to` wins when both are set).
pub fn addressed_to(body: &Value, customer: &str) -> bool {
    match body["to"].as_str() {
        Some(to) => to.trim_start_matches('+') == customer.trim_start_matches('+'),
        None => body["recipient"].as_str() == Some(customer),
    }
}

pub fn graph_error(status: u16, code: i64) -> Answer {
    Answer::json(
        status,
        json!({"error": {"message": format!("(#{code}) e2e"), "type": "OAuthException",
               "code": code, "error_data": {"messaging_product": "whatsapp", "details": "e2e"},
               "fbtrace_id": "E2E"}}),
    )
}

/// The code carried by an authentication template, checking it is both the body parameter and
/// the copy-code button's parameter.
pub fn auth_code(body: &Value) -> Option<String> {
    let components = body["template"]["components"].as_array()?;
    let text_of = |kind: &str| {
        components
            .iter()
            .find(|c| c["type"] == kind)
            .and_then(|c| c["parameters"][0]["text"].as_str())
            .map(str::to_owned)
    };
    let (code, button) = (text_of("body")?, text_of("button")?);
    assert_eq!(code, button, "the copy-code button carries the code");
    Some(code)
}

/// The text a customer sees in a free-form message (text or interactive body).
pub fn text_of(body: &Value) -> Option<String> {
    body["text"]["body"]
        .as_str()
        .or_else(|| body["interactive"]["body"]["text"].as_str())
        .map(str::to_owned)
}

/// The fake merchant: answers the bundled flows' hooks and accepts callbacks.
pub struct Merchant {
    pub http: HttpFake,
}

impl Merchant {
    pub async fn start() -> Merchant {
        let http = HttpFake::start(|r: &Recorded| {
            if r.path.ends_with("/lookup_account") {
                let account = r.json()["vars"]["account"].as_str().map(str::to_owned);
                if account.as_deref() == Some(KNOWN_ACCOUNT) {
                    return Answer::json(
                        200,
                        json!({"found": true, "account_id": "acc_42", "phone": "+447700900123"}),
                    );
                }
                return Answer::json(200, json!({"found": false}));
            }
            if r.path.ends_with("/recovery_link") {
                return Answer::json(200, json!({"url": RECOVERY_URL}));
            }
            Answer::json(200, json!({}))
        })
        .await;
        Merchant { http }
    }

    pub fn callback_url(&self) -> String {
        self.http.url("/callbacks")
    }

    pub fn hook_base(&self) -> String {
        self.http.url("/hooks")
    }

    /// Callback deliveries (every attempt), oldest first.
    pub fn callbacks(&self) -> Vec<Recorded> {
        self.http
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/callbacks"))
            .collect()
    }

    pub fn hook_calls(&self, hook: &str) -> Vec<Recorded> {
        self.http
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with(&format!("/{hook}")))
            .collect()
    }

    /// Waits for the `session.completed` callback of `session_id`; checks its signature and
    /// event id header and returns its JSON body.
    pub async fn completed(&self, session_id: &str) -> Value {
        let r = wait_for(&format!("the completion callback of {session_id}"), || {
            self.callbacks().into_iter().find(|r| {
                let b = r.json();
                b["type"] == "session.completed" && b["session"]["id"] == session_id
            })
        })
        .await;
        verify_callback(&r)
    }
}

/// Checks `X-Waotp-Signature` against the raw body and the time it arrived (as a merchant does:
/// a wrong MAC or a timestamp five minutes off is refused), and `X-Waotp-Event-Id` against the
/// body's id.
pub fn verify_callback(r: &Recorded) -> Value {
    verify_signature(r);
    let body = r.json();
    assert_eq!(
        r.header("x-waotp-event-id"),
        body["id"].as_str(),
        "event id header matches the body"
    );
    body
}

/// Checks a callback's or hook call's `X-Waotp-Signature` as the merchant would when it arrived.
pub fn verify_signature(r: &Recorded) {
    assert_eq!(
        merchant_signature::check(
            CALLBACK_SECRET,
            r.header("x-waotp-signature"),
            &r.body,
            r.received_at
        ),
        Ok(()),
        "signature of the call to {}",
        r.path
    );
}
