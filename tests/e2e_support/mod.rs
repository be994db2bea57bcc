//! End-to-end harness: the real server (in this process, or as a child process) wired to a local
//! fake Graph API and a local fake merchant, both real HTTP servers in the test process so that
//! they outlive a killed child and count every request it made.
//!
//! Webhooks are built the way WhatsApp sends them and signed with the app secret; every wait is
//! a poll with a deadline.
#![allow(dead_code)]

#[path = "../support/http_fake.rs"]
pub mod http_fake;

use http_fake::{Answer, HttpFake, Recorded};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use waotp::store::Store;
use waotp::webhook::signature::SignatureVerifier;
use waotp::{Application, Settings};

pub const APP_SECRET: &str = "e2e-app-secret";
pub const VERIFY_TOKEN: &str = "e2e-verify-token";
pub const ACCESS_TOKEN: &str = "EAAG-e2e-token";
pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const API_KEY: &str = "e2e-api-key";
pub const CALLBACK_SECRET: &str = "e2e-callback-secret";
pub const BUSINESS_NUMBER: &str = "+15550783881";
/// The account the fake merchant knows; any other is unknown.
pub const KNOWN_ACCOUNT: &str = "alice@example.com";
pub const RECOVERY_URL: &str = "https://shop.example/recover/tok123";

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, failing with `what` after [`DEADLINE`].
pub async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fake Graph API: accepts messages with ids `wamid.e2e.N` unless told otherwise.
pub struct Graph {
    pub http: HttpFake,
    down: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<(Value, String)>>>,
}

impl Graph {
    pub async fn start() -> Graph {
        let down = Arc::new(AtomicBool::new(false));
        let is_down = down.clone();
        let n = Arc::new(AtomicU64::new(0));
        let accepted: Arc<Mutex<Vec<(Value, String)>>> = Arc::default();
        let log = accepted.clone();
        let http = HttpFake::start(move |r: &Recorded| {
            if is_down.load(Ordering::SeqCst) {
                return graph_error(503, 2);
            }
            if r.json().get("status").is_some() {
                return Answer::json(200, json!({"success": true}));
            }
            let id = format!("wamid.e2e.{}", n.fetch_add(1, Ordering::SeqCst) + 1);
            log.lock().expect("log").push((r.json(), id.clone()));
            Answer::json(
                200,
                json!({"messaging_product": "whatsapp",
                       "contacts": [{"input": "x", "wa_id": "x"}],
                       "messages": [{"id": id}]}),
            )
        })
        .await;
        Graph {
            http,
            down,
            accepted,
        }
    }

    pub fn url(&self) -> String {
        self.http.url("/v23.0")
    }

    /// While down, every request gets a 503 with Meta's transient error.
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
        self.http.requests().iter().map(Recorded::json).collect()
    }

    /// Message sends to a customer (digits, with or without `+`).
    pub fn sends_to(&self, customer: &str) -> Vec<Value> {
        let digits = customer.trim_start_matches('+');
        self.sends()
            .into_iter()
            .filter(|b| b["to"].as_str().map(|t| t.trim_start_matches('+')) == Some(digits))
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
        let digits = customer.trim_start_matches('+');
        self.accepted
            .lock()
            .expect("log")
            .iter()
            .filter(|(b, _)| b["to"].as_str().map(|t| t.trim_start_matches('+')) == Some(digits))
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

/// Checks `X-Waotp-Signature` against the raw body and `X-Waotp-Event-Id` against the body's id.
pub fn verify_callback(r: &Recorded) -> Value {
    let expected = SignatureVerifier::new(CALLBACK_SECRET.as_bytes()).sign(&r.body);
    assert_eq!(
        r.header("x-waotp-signature"),
        Some(expected.as_str()),
        "callback signature"
    );
    let body = r.json();
    assert_eq!(
        r.header("x-waotp-event-id"),
        body["id"].as_str(),
        "event id header matches the body"
    );
    body
}

/// A flows directory: the bundled files, optionally with text replaced (short durations).
pub fn flows_copy(dir: &Path, edits: &[(&str, &str, &str)]) -> PathBuf {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let target = dir.join("flows");
    std::fs::create_dir_all(&target).expect("flows dir");
    for entry in std::fs::read_dir(&bundled).expect("bundled flows") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let mut text = std::fs::read_to_string(&path).expect("read flow");
            for (file, from, to) in edits {
                if *file == name {
                    assert!(text.contains(from), "{name} has no `{from}`");
                    text = text.replace(from, to);
                }
            }
            std::fs::write(target.join(&name), text).expect("write flow");
        }
    }
    target
}

/// The bundled flows directory.
pub fn bundled_flows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("flows")
}

/// Settings of a production-mode server talking to the fakes.
pub fn server_vars(
    data: &Path,
    flows: &Path,
    graph: &Graph,
    merchant: &Merchant,
) -> HashMap<String, String> {
    [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("WAOTP_DATA_DIR", data.display().to_string()),
        ("WAOTP_FLOWS_DIR", flows.display().to_string()),
        ("WAOTP_APP_SECRET", APP_SECRET.to_owned()),
        ("WAOTP_VERIFY_TOKEN", VERIFY_TOKEN.to_owned()),
        ("WAOTP_ACCESS_TOKEN", ACCESS_TOKEN.to_owned()),
        ("WAOTP_PHONE_NUMBER_ID", PHONE_NUMBER_ID.to_owned()),
        ("WAOTP_GRAPH_URL", graph.url()),
        ("WAOTP_API_KEYS", API_KEY.to_owned()),
        ("WAOTP_CALLBACK_URL", merchant.callback_url()),
        ("WAOTP_CALLBACK_SECRET", CALLBACK_SECRET.to_owned()),
        ("WAOTP_HOOK_BASE_URL", merchant.hook_base()),
        ("WAOTP_BUSINESS_NUMBER", BUSINESS_NUMBER.to_owned()),
        ("WAOTP_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

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
        let res = self
            .http
            .post(format!("{}/v1/sessions/{id}/check", self.base))
            .bearer_auth(API_KEY)
            .json(&json!({"code": code}))
            .send()
            .await
            .expect("check");
        assert_eq!(res.status(), 200);
        res.json().await.expect("JSON")
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

/// A `messages` change as WhatsApp wraps it.
pub fn envelope(value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] = json!({"display_phone_number": "15550783881",
                               "phone_number_id": PHONE_NUMBER_ID});
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

/// A server in this process, with its fakes and temp directory.
pub struct E2e {
    pub graph: Graph,
    pub merchant: Merchant,
    pub api: Api,
    pub store: Arc<Store>,
    pub dir: tempfile::TempDir,
    pub flows: PathBuf,
}

impl E2e {
    /// The bundled flows.
    pub async fn start() -> E2e {
        E2e::with_flows(&[]).await
    }

    /// A copy of the bundled flows with `(file, from, to)` text edits.
    pub async fn with_flows(edits: &[(&str, &str, &str)]) -> E2e {
        let dir = tempfile::tempdir().expect("tempdir");
        let flows = if edits.is_empty() {
            bundled_flows()
        } else {
            flows_copy(dir.path(), edits)
        };
        let graph = Graph::start().await;
        let merchant = Merchant::start().await;
        let vars = server_vars(&dir.path().join("data"), &flows, &graph, &merchant);
        let settings = Settings::from_vars(vars).expect("settings");
        let app = Application::build(settings).await.expect("server builds");
        let api = Api::new(format!("http://{}", app.address()));
        let store = app.store();
        tokio::spawn(app.run_until_stopped());
        E2e {
            graph,
            merchant,
            api,
            store,
            dir,
            flows,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

/// `waotp serve` as a child process, its stderr captured line by line.
pub struct ChildServer {
    pub child: std::process::Child,
    pub api: Api,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ChildServer {
    /// Starts the binary with `vars` (JSON logs at `log_level`) and waits for its address.
    pub fn start(vars: &HashMap<String, String>, log_level: &str) -> ChildServer {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_waotp"))
            .arg("serve")
            .env_clear()
            .envs(vars)
            .env("WAOTP_LOG", log_level)
            .env("WAOTP_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start waotp");
        let stderr = child.stderr.take().expect("stderr piped");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let lines = log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let message = v["message"].as_str().or(v["fields"]["message"].as_str());
                    if message == Some("listening") {
                        let address = v["address"]
                            .as_str()
                            .or(v["fields"]["address"].as_str())
                            .unwrap_or_default();
                        let _ = tx.send(address.to_owned());
                    }
                }
                lines.lock().expect("log").push(line);
            }
        });
        let address = rx
            .recv_timeout(DEADLINE)
            .expect("the server logged its address");
        ChildServer {
            child,
            api: Api::new(format!("http://{address}")),
            log,
        }
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for a log line containing every one of `needles`; returns it.
    pub async fn wait_log(&self, needles: &[&str]) -> String {
        wait_for(&format!("a log line with {needles:?}"), || {
            self.log
                .lock()
                .expect("log")
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned()
        })
        .await
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
