//! Hostile input against the real server: bodies built to hurt a parser, floods of wrong codes,
//! slow clients and wrong API keys, and customers who use the identity flows against someone
//! else. Each case checks the answer *and* the store: a refusal must leave no trace, the OTP
//! limits must hold however the guesses arrive, nobody can lock another customer out or flood
//! them with codes, and the identity flows never reveal whether an account exists.

mod common;
mod e2e_support;

use chrono::Utc;
use common::{sign, APP_SECRET};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waotp::otp::{CodeStatus, CustomerNumber, OtpKey};
use waotp::store::embedded::otp::OtpLedger;
use waotp::store::Store;
use waotp::{Application, Settings};

const API_KEY: &str = "adversarial-key";
/// A second merchant's key: idempotency keys are scoped to the API key.
const OTHER_KEY: &str = "adversarial-other-merchant-key";
const DAY: Duration = Duration::from_secs(24 * 3600);

struct App {
    base: String,
    address: std::net::SocketAddr,
    store: Arc<Store>,
    ledger: OtpLedger,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn spawn() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars = common::test_vars(dir.path());
    vars.insert("WAOTP_API_KEYS".into(), format!("{API_KEY},{OTHER_KEY}"));
    vars.insert("WAOTP_BUSINESS_NUMBER".into(), "+15550783881".into());
    let settings = Settings::from_vars(vars).expect("settings");
    let app = Application::build(settings).await.expect("server builds");
    let address = app.address();
    let store = app.store().expect("the embedded engine");
    // A second handle on the same trees, to read OTP state the way the server wrote it.
    let key = OtpKey::load_or_create(&dir.path().join("data"), None).expect("otp key");
    let ledger = OtpLedger::open(store.db(), key)
        .expect("ledger")
        .logged(store.redo());
    tokio::spawn(app.run_until_stopped());
    App {
        base: format!("http://{address}"),
        address,
        store,
        ledger,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

impl App {
    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn start(&self, flow: &str, to: &str, vars: Value) -> String {
        let (status, body) = self
            .post(
                "/v1/sessions",
                Some(API_KEY),
                json!({"flow": flow, "to": to, "vars": vars}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("session id").to_owned()
    }

    async fn check(&self, session: &str, code: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/v1/sessions/{session}/check"),
                Some(API_KEY),
                json!({ "code": code }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn inbound(&self, from: &str, content: Value) {
        let mut body = content;
        body["from"] = json!(from);
        let (status, answer) = self.post("/v1/sandbox/inbound", Some(API_KEY), body).await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Waits until every recorded inbound event is handled and every queued send went out.
    async fn quiesce(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.store.inbound().pending_len() > 0 || self.store.sessions().outbox_depth() > 0 {
            assert!(Instant::now() < deadline, "server still busy after 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The latest code the sandbox recorded for `to` (E.164) in `session`.
    async fn sandbox_code(&self, to: &str, session: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let res = self
                .client
                .get(format!("{}/v1/sandbox/messages", self.base))
                .query(&[("to", to)])
                .bearer_auth(API_KEY)
                .send()
                .await
                .expect("sent");
            let body: Value = res.json().await.expect("json");
            let code = body["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["session_id"] == session)
                .filter_map(|m| m["code"].as_str())
                .next_back();
            if let Some(code) = code {
                return code.to_owned();
            }
            assert!(Instant::now() < deadline, "no code recorded for {to}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn session(&self, id: &str) -> waotp::store::SessionRecord {
        self.store
            .sessions()
            .get(id)
            .expect("read")
            .expect("session exists")
    }

    fn wrong_today(&self, to: &str) -> usize {
        let customer = CustomerNumber::parse(to).expect("number");
        self.ledger
            .customer_activity(&customer)
            .expect("activity")
            .wrong_within(DAY, Utc::now())
    }

    /// Every key and value of every tree: the whole observable state of the server.
    fn snapshot(&self) -> BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>> {
        // Writes still held in memory go to sled first.
        self.store.flush().expect("flush");
        let db = self.store.db();
        let mut out = BTreeMap::new();
        for name in db.tree_names() {
            let tree = db.open_tree(&name).expect("tree");
            for item in tree.iter() {
                let (k, v) = item.expect("item");
                out.insert((name.to_vec(), k.to_vec()), v.to_vec());
            }
        }
        out
    }
}

/// A code guaranteed to differ from `real` in every digit (`shift` in 1..=9).
fn wrong(real: &str, shift: u32) -> String {
    real.chars()
        .map(|c| {
            let d = c.to_digit(10).expect("digit");
            char::from_digit((d + shift) % 10, 10).expect("digit")
        })
        .collect()
}

fn outcome(record: &waotp::store::SessionRecord) -> Option<String> {
    waotp::runtime::session_json(record)["outcome"]
        .as_str()
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// Bodies built to hurt a parser
// ---------------------------------------------------------------------------------------------

async fn post_signed(app: &App, body: Vec<u8>) -> reqwest::Response {
    let signature = sign(&body);
    app.client
        .post(format!("{}/webhook", app.base))
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let app = spawn().await;
    let depth = 1024 * 1024;
    let envelope_head = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":"#;
    // The envelope is strict (400); inside it, one unreadable change is skipped and the rest of
    // the delivery acknowledged (200), as for any malformed item, and unknown fields are
    // ignored however deep they go. None of it records anything.
    let cases: Vec<(&str, u16, Vec<u8>)> = vec![
        (
            "bare arrays",
            400,
            ["[".repeat(depth), "]".repeat(depth)].concat().into_bytes(),
        ),
        (
            "bare objects",
            400,
            [r#"{"a":"#.repeat(depth / 5), "}".repeat(depth / 5)]
                .concat()
                .into_bytes(),
        ),
        (
            "inside the entry list",
            400,
            [
                r#"{"object":"whatsapp_business_account","entry":"#.to_owned(),
                "[".repeat(depth),
                "]".repeat(depth),
                "}".to_owned(),
            ]
            .concat()
            .into_bytes(),
        ),
        (
            "inside a change value read later",
            200,
            [
                envelope_head.to_owned(),
                "[".repeat(depth),
                "]".repeat(depth),
                "}]}]}".to_owned(),
            ]
            .concat()
            .into_bytes(),
        ),
        (
            "inside an unknown field",
            200,
            [
                r#"{"object":"whatsapp_business_account","entry":[],"extra":"#.to_owned(),
                "[".repeat(depth),
                "]".repeat(depth),
                "}".to_owned(),
            ]
            .concat()
            .into_bytes(),
        ),
        (
            "unterminated",
            400,
            "[".repeat(3 * 1024 * 1024 - 16).into_bytes(),
        ),
    ];
    for (name, status, body) in cases {
        assert!(body.len() <= waotp::webhook::MAX_BODY_BYTES, "{name}");
        let res = post_signed(&app, body).await;
        assert_eq!(res.status(), status, "{name}");
    }
    assert_eq!(app.store.inbound().len(), 0, "nothing may be recorded");

    // The server is still alive and still takes normal deliveries.
    let res = post_signed(
        &app,
        common::text_message("wamid.after-nesting", "15551230000", "hi").into_bytes(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.store.inbound().len(), 1);
}

#[tokio::test]
async fn invalid_utf8_is_refused_wherever_it_hides() {
    let app = spawn().await;
    let valid = common::text_message("wamid.utf8", "15551230000", "PLACEHOLDER");
    let (head, tail) = valid.split_once("PLACEHOLDER").expect("placeholder");
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, bad) in [
        ("lone continuation byte", &b"\x80"[..]),
        ("truncated sequence", &b"\xe2\x82"[..]),
        ("overlong encoding", &b"\xc0\xaf"[..]),
        ("surrogate half", &b"\xed\xa0\x80"[..]),
        ("beyond U+10FFFF", &b"\xf4\x90\x80\x80"[..]),
    ] {
        // In a message text, which is read only after the envelope.
        cases.push((name, [head.as_bytes(), bad, tail.as_bytes()].concat()));
    }
    // Outside any string, and in the envelope's own fields.
    cases.push((
        "outside strings",
        [b"\xff".as_slice(), valid.as_bytes()].concat(),
    ));
    cases.push((
        "in the object name",
        [
            br#"{"object":"whatsapp_business_account"#.as_slice(),
            b"\xff",
            br#"","entry":[]}"#.as_slice(),
        ]
        .concat(),
    ));
    for (name, body) in cases {
        assert!(std::str::from_utf8(&body).is_err(), "{name}");
        let res = post_signed(&app, body).await;
        assert_eq!(res.status(), 400, "{name}");
    }
    assert_eq!(app.store.inbound().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_thousands_of_entries_is_recorded_and_handled_in_full() {
    let app = spawn().await;
    let customers = 20;
    let messages = 1000;
    let statuses = 9000;
    let mut entries = Vec::new();
    for i in 0..messages {
        let from = format!("1555100{:04}", i % customers);
        entries.push(
            json!({"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "contacts": [{"wa_id": from}],
                "messages": [{"from": from, "id": format!("wamid.bulk.m{i}"),
                              "timestamp": "1700000000", "type": "text", "text": {"body": "x"}}]
            }}]}),
        );
    }
    // Statuses ride in few changes with many items each, the other extreme.
    for chunk in 0..90 {
        let items: Vec<Value> = (0..statuses / 90)
            .map(|j| {
                json!({"id": format!("wamid.bulk.s{chunk}.{j}"), "status": "delivered",
                       "timestamp": "1700000000", "recipient_id": "15551000000"})
            })
            .collect();
        entries.push(
            json!({"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "statuses": items}}]}),
        );
    }
    let body =
        serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": entries}))
            .expect("json");
    assert!(
        body.len() <= waotp::webhook::MAX_BODY_BYTES,
        "{} bytes",
        body.len()
    );
    let res = post_signed(&app, body.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.store.inbound().len(), messages + statuses);
    // Redelivered as a whole: all of it is a duplicate.
    let res = post_signed(&app, body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.store.inbound().len(), messages + statuses);
    app.quiesce().await;
    assert_eq!(app.store.inbound().pending_len(), 0);
}

// ---------------------------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------------------------

/// Reads until the server closes the connection, which it must do before `deadline`.
async fn read_to_close(
    stream: &mut tokio::net::TcpStream,
    deadline: tokio::time::Instant,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the server answered but kept the half-read connection open"),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Trickles `total` bytes one at a time until the server answers or hangs up. Returns what the
/// server said, or panics if it still holds the connection at the deadline.
async fn trickle(app: &App, head: String, total: usize) -> String {
    let mut stream = tokio::net::TcpStream::connect(app.address)
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                // The server hung up or answered: either way the slow client is bounded.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    break;
                }
            },
            _ = tick.tick() => {
                if sent < total && stream.write_all(b" ").await.is_ok() {
                    sent += 1;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("the server still holds a slow connection after 60 s ({sent} bytes sent)");
            }
        }
    }
    assert!(
        sent < total,
        "the whole body went through: nothing was slow"
    );
    got.extend_from_slice(&read_to_close(&mut stream, deadline).await);
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn slow_bodies_and_slow_headers_do_not_hold_a_connection_forever() {
    let app = spawn().await;
    let body_len = 100_000;
    // Under the API's 64 KiB body limit, so the length alone does not get it refused.
    let api_len = 60_000;
    let webhook_head = format!(
        "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-hub-signature-256: {}\r\ncontent-length: {body_len}\r\n\r\n",
        sign(b"irrelevant")
    );
    let api_head = format!(
        "POST /v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         authorization: Bearer {API_KEY}\r\ncontent-length: {api_len}\r\n\r\n"
    );

    // Many slow clients at once, on both routes and slow in the head too.
    let slow = join_all(vec![
        trickle(&app, webhook_head.clone(), body_len),
        trickle(&app, webhook_head, body_len),
        trickle(&app, api_head, api_len),
        trickle(
            &app,
            "POST /webhook HTTP/1.1\r\nhost: x\r\n".into(),
            body_len,
        ),
    ]);
    // Meanwhile, normal traffic is served.
    let normal = async {
        for i in 0..5 {
            let res = post_signed(
                &app,
                common::text_message(&format!("wamid.during-slow-{i}"), "15551230000", "hi")
                    .into_bytes(),
            )
            .await;
            assert_eq!(res.status(), 200);
        }
    };
    let (answers, ()) = tokio::join!(slow, normal);
    for answer in &answers {
        // Either a clean refusal or a hang-up; never a request that got processed.
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 408")
                || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    assert_eq!(app.store.inbound().len(), 5);
    assert!(app
        .store
        .sessions()
        .active_for(&common::sandbox_key("15551230000"))
        .expect("read")
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// Floods of wrong codes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_wrong_codes_take_each_attempt_once_then_lock() {
    let app = spawn().await;
    let customers: Vec<String> = (0..12).map(|i| format!("+1555200{i:04}")).collect();
    let sessions: Vec<String> = join_all(
        customers
            .iter()
            .map(|to| app.start("signup_verification", to, json!({}))),
    )
    .await;
    let mut codes = Vec::new();
    for (to, session) in customers.iter().zip(&sessions) {
        codes.push(app.sandbox_code(to, session).await);
    }
    // Every customer fires 9 wrong guesses at once: only 5 may count.
    let app = &app;
    let mut guesses = Vec::new();
    for i in 0..customers.len() {
        for shift in 1..=9 {
            let guess = wrong(&codes[i], shift);
            let session = &sessions[i];
            guesses.push(async move {
                let path = format!("/v1/sessions/{session}/check");
                (
                    i,
                    app.post(&path, Some(API_KEY), json!({ "code": guess }))
                        .await,
                )
            });
        }
    }
    let answers = join_all(guesses).await;
    for (i, to) in customers.iter().enumerate() {
        let mine: Vec<&(u16, Value)> = answers
            .iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, a)| a)
            .collect();
        // The five counted guesses saw 4, 3, 2, 1, 0 attempts left, each exactly once; the four
        // that came too late found the session ended.
        let counted: Vec<&Value> = mine
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, a)| a)
            .collect();
        assert!(counted.iter().all(|a| a["valid"] == false));
        let mut left: Vec<u64> = counted
            .iter()
            .filter_map(|a| a["attempts_left"].as_u64())
            .collect();
        left.sort_unstable();
        assert_eq!(left, [0, 1, 2, 3, 4], "{mine:?}");
        let late = mine
            .iter()
            .filter(|(status, a)| *status == 409 && a["error"]["code"] == "session_completed")
            .count();
        assert_eq!(late, 4, "{mine:?}");
        let record = app.session(&sessions[i]);
        assert_eq!(outcome(&record).as_deref(), Some("locked"));
        assert_eq!(app.wrong_today(to), 5, "{to}");
        let otp = app.ledger.record(&sessions[i]).expect("read").expect("otp");
        assert_eq!(otp.status(), CodeStatus::Locked);
        assert_eq!(otp.attempts_left(), 0);
        // The right code is worthless now: the session has ended.
        let (status, late) = app
            .post(
                &format!("/v1/sessions/{}/check", sessions[i]),
                Some(API_KEY),
                json!({ "code": codes[i] }),
            )
            .await;
        assert_eq!(status, 409, "{late}");
        assert_eq!(late["error"]["code"], "session_completed");
        assert_eq!(app.wrong_today(to), 5);
    }

    // A customer outside the flood is untouched by it.
    let bystander = "+15552999999";
    let session = app.start("signup_verification", bystander, json!({})).await;
    let code = app.sandbox_code(bystander, &session).await;
    let answer = app.check(&session, &code).await;
    assert_eq!(answer["valid"], true, "{answer}");
    assert_eq!(answer["session"]["outcome"], "verified");
}

#[tokio::test]
async fn one_customer_is_blocked_after_ten_wrong_codes_across_sessions() {
    let app = spawn().await;
    let to = "+15553000001";
    let signup = app.start("signup_verification", to, json!({})).await;
    let signup_code = app.sandbox_code(to, &signup).await;
    let reset = app.start("password_reset", to, json!({})).await;
    let reset_code = app.sandbox_code(to, &reset).await;
    let transaction = app
        .start(
            "transaction_authorization",
            to,
            json!({"amount": "125.00", "currency": "EUR", "payee": "ACME"}),
        )
        .await;
    let transaction_code = app.sandbox_code(to, &transaction).await;
    app.quiesce().await;
    // 4 + 4 wrong codes leave both sessions one attempt short of locking...
    for (session, real) in [(&signup, &signup_code), (&reset, &reset_code)] {
        for shift in 1..=4 {
            let answer = app.check(session, &wrong(real, shift)).await;
            assert_eq!(answer["valid"], false);
            assert_eq!(answer["attempts_left"], 5 - u64::from(shift), "{answer}");
        }
    }
    // ...and the transaction's two reach the customer's daily limit of 10.
    for shift in 1..=2 {
        let answer = app
            .check(&transaction, &wrong(&transaction_code, shift))
            .await;
        assert_eq!(answer["valid"], false, "{answer}");
        assert_eq!(answer["attempts_left"], 3 - u64::from(shift), "{answer}");
    }
    assert_eq!(app.wrong_today(to), 10);

    // Now even the right code is refused: the customer is blocked, not the session.
    let answer = app.check(&signup, &signup_code).await;
    assert_eq!(answer["valid"], false, "{answer}");
    let record = app.session(&signup);
    assert_eq!(outcome(&record).as_deref(), Some("locked"));
    assert_eq!(app.wrong_today(to), 10, "a blocked guess is not counted");
    // And no new code is issued to them while blocked: a start that would send one is
    // refused with the limit's own code and when to come back, and creates nothing.
    let (status, refused) = app
        .post(
            "/v1/sessions",
            Some(API_KEY),
            json!({"flow": "signup_verification", "to": to, "vars": {}}),
        )
        .await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "customer_blocked");
    assert!(refused["error"]["retry_after"]
        .as_u64()
        .is_some_and(|s| s > 0));
    assert!(
        app.store
            .sessions()
            .active(&common::sandbox_key(&to[1..]), "signup_verification")
            .expect("read")
            .is_none(),
        "the refused start left a session"
    );
}

#[tokio::test]
async fn wrong_codes_in_chat_lock_the_session_for_one_and_many_customers() {
    let app = spawn().await;
    let customers: Vec<String> = (0..8).map(|i| format!("+1555400{i:04}")).collect();
    let vars = json!({"customer_name": "Asha", "order_id": "A-1", "total": "₹499"});
    let mut sessions = Vec::new();
    for to in &customers {
        sessions.push(app.start("cod_confirmation", to, vars.clone()).await);
    }
    join_all(
        customers
            .iter()
            .map(|to| app.inbound(to, json!({"button": "confirm"}))),
    )
    .await;
    let mut codes = Vec::new();
    for (to, session) in customers.iter().zip(&sessions) {
        codes.push(app.sandbox_code(to, session).await);
    }
    // All customers at once, each typing 9 wrong codes.
    let app = &app;
    let mut typed = Vec::new();
    for (to, real) in customers.iter().zip(&codes) {
        for shift in 1..=9 {
            typed.push(app.inbound(to, json!({"text": wrong(real, shift)})));
        }
    }
    join_all(typed).await;
    app.quiesce().await;
    for (i, to) in customers.iter().enumerate() {
        let record = app.session(&sessions[i]);
        assert_eq!(outcome(&record).as_deref(), Some("locked"), "{to}");
        assert_eq!(app.wrong_today(to), 5, "{to}");
        // After locking, the right code in chat starts nothing and verifies nothing.
        app.inbound(to, json!({"text": codes[i]})).await;
    }
    app.quiesce().await;
    for (i, to) in customers.iter().enumerate() {
        assert_eq!(
            outcome(&app.session(&sessions[i])).as_deref(),
            Some("locked")
        );
        assert_eq!(app.wrong_today(to), 5);
    }
}

// ---------------------------------------------------------------------------------------------
// Wrong API keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_api_keys_get_401_and_change_nothing() {
    let app = spawn().await;
    let to = "+15555000001";
    let session = app.start("signup_verification", to, json!({})).await;
    let code = app.sandbox_code(to, &session).await;
    app.quiesce().await;
    let before = app.snapshot();

    let near_misses = [
        None,
        Some(String::new()),
        Some(API_KEY[..API_KEY.len() - 1].to_owned()),
        Some(format!("{API_KEY}x")),
        Some(API_KEY.to_uppercase()),
        Some(APP_SECRET.to_owned()),
    ];
    let routes: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/v1/sessions".into(),
            json!({"flow": "signup_verification", "to": "+15555000002"}),
        ),
        (
            "POST",
            format!("/v1/sessions/{session}/check"),
            json!({"code": code}),
        ),
        ("POST", format!("/v1/sessions/{session}/cancel"), json!({})),
        ("GET", format!("/v1/sessions/{session}"), Value::Null),
        (
            "POST",
            "/v1/sandbox/inbound".into(),
            json!({"from": to, "text": code}),
        ),
        (
            "GET",
            format!("/v1/sandbox/messages?to=%2B{}", &to[1..]),
            Value::Null,
        ),
    ];
    // Each near miss comes from its own address (127.0.0.0/8 is all this machine): a client
    // that keeps presenting wrong keys is made to wait, and this test is about the 401s.
    let from = |n: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, n]))
            .build()
            .expect("client")
    };
    for (n, key) in near_misses.iter().enumerate() {
        let client = from(10 + n as u8);
        for (method, path, body) in &routes {
            let url = format!("{}{path}", app.base);
            let mut req = match *method {
                "GET" => client.get(&url),
                _ => client.post(&url).json(body),
            };
            if let Some(key) = key {
                req = req.header("authorization", format!("Bearer {key}"));
            }
            let res = req.send().await.expect("sent");
            assert_eq!(res.status(), 401, "{method} {path} with {key:?}");
            let json: Value = res.json().await.expect("json error");
            assert_eq!(json["error"]["code"], "unauthorized");
        }
    }
    // Other ways of presenting the right key are not accepted either.
    for header in [
        format!("bearer {API_KEY}"),
        format!("Basic {API_KEY}"),
        API_KEY.to_owned(),
        format!("Bearer  {API_KEY}"),
    ] {
        let res = from(20)
            .post(format!("{}/v1/sessions/{session}/check", app.base))
            .header("authorization", header.clone())
            .json(&json!({"code": code}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 401, "{header}");
    }
    app.quiesce().await;
    assert!(
        before == app.snapshot(),
        "a refused request changed the store"
    );

    // The right key still works, and the code was never used up by the refused checks.
    let answer = app.check(&session, &code).await;
    assert_eq!(answer["valid"], true);
}

// ---------------------------------------------------------------------------------------------
// A careless merchant: retried starts, reused keys, numbers that cannot exist, oversized vars
// ---------------------------------------------------------------------------------------------

impl App {
    /// `POST /v1/sessions` with an `Idempotency-Key` and a raw JSON body; returns status, the
    /// `Idempotent-Replayed` header and the body.
    async fn start_keyed(
        &self,
        api_key: &str,
        idempotency_key: &str,
        body: &str,
    ) -> (u16, Option<String>, Value) {
        let res = self
            .client
            .post(format!("{}/v1/sessions", self.base))
            .bearer_auth(api_key)
            .header("idempotency-key", idempotency_key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        let replayed = res
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().expect("ascii").to_owned());
        (status, replayed, res.json().await.expect("JSON answer"))
    }
}

#[tokio::test]
async fn idempotency_keys_are_scoped_compared_and_replay_the_first_answer_with_its_code_sealed() {
    let app = spawn().await;
    let body = r#"{"flow": "reverse_verification", "to": "+14155550190"}"#;
    let (status, replayed, first) = app.start_keyed(API_KEY, "signup-42", body).await;
    assert_eq!((status, replayed.as_deref()), (201, None), "{first}");
    let code = first["otp"]["code"]
        .as_str()
        .expect("a reverse-OTP code")
        .to_owned();

    // The same request, written differently: the first answer again, code included, marked.
    let same = r#"{ "to" : "+14155550190",
      "flow" : "reverse_verification" }"#;
    let (status, replayed, again) = app.start_keyed(API_KEY, "signup-42", same).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, first, "a replay is the first answer, byte for byte");

    // Retries racing each other: one starts the session, the others wait their turn or replay.
    let racer = r#"{"flow": "reverse_verification", "to": "+14155550196"}"#;
    let racing = join_all((0..8).map(|_| app.start_keyed(API_KEY, "signup-43", racer))).await;
    let fresh: Vec<&Value> = racing
        .iter()
        .filter(|(s, r, _)| *s == 201 && r.is_none())
        .map(|(_, _, body)| body)
        .collect();
    assert_eq!(
        fresh.len(),
        1,
        "exactly one answer is not a replay: {racing:?}"
    );
    for (status, replayed, answer) in &racing {
        match (status, replayed.as_deref()) {
            (201, _) => assert_eq!(answer, fresh[0]),
            (409, None) => assert_eq!(answer["error"]["code"], "idempotency_key_in_use"),
            _ => panic!("{status} {replayed:?}: {answer}"),
        }
    }

    // The same key with another request: refused, and nothing changes.
    app.quiesce().await;
    let before = app.snapshot();
    let other = r#"{"flow": "reverse_verification", "to": "+14155550191"}"#;
    let (status, replayed, refused) = app.start_keyed(API_KEY, "signup-42", other).await;
    assert_eq!(
        (status, replayed, refused["error"]["code"].as_str()),
        (422, None, Some("idempotency_key_reused"))
    );
    let (status, _, refused) = app.start_keyed(API_KEY, "", other).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
    app.quiesce().await;
    assert!(
        before == app.snapshot(),
        "a refused request changed the store"
    );

    // Another merchant's `signup-42` is another key.
    let (status, replayed, theirs) = app.start_keyed(OTHER_KEY, "signup-42", other).await;
    assert_eq!((status, replayed), (201, None), "{theirs}");
    assert_ne!(theirs["id"], first["id"]);

    // The code the replay gave back is kept sealed, never in plaintext.
    for ((tree, key), value) in app.snapshot() {
        for needle in [format!("\"{code}\""), format!("text={code}")] {
            let found = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(
                !found(&key) && !found(&value),
                "the code in tree {}",
                String::from_utf8_lossy(&tree)
            );
        }
    }
}

#[tokio::test]
async fn numbers_that_cannot_exist_and_oversized_vars_are_refused_at_the_door() {
    let app = spawn().await;
    app.quiesce().await;
    let before = app.snapshot();
    let start = |to: &str, vars: Value| {
        app.post(
            "/v1/sessions",
            Some(API_KEY),
            json!({"flow": "signup_verification", "to": to, "vars": vars}),
        )
    };
    // Unassigned country codes, and lengths no number of that country code has.
    for to in [
        "+99912345678",
        "+2801234567",
        "+8011234567",
        "+1415555010",
        "+79161234567890",
        "+91987",
    ] {
        let (status, body) = start(to, json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_phone")),
            "{to}: {body}"
        );
    }
    let (status, body) = app
        .post(
            "/v1/sandbox/inbound",
            Some(API_KEY),
            json!({"from": "+99912345678", "text": "hi"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_phone"))
    );
    let res = app
        .client
        .get(format!(
            "{}/v1/sandbox/messages?to=%2B99912345678",
            app.base
        ))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 400);

    // Vars: 32 at most, names up to 64 bytes, values up to 1 KiB and 8 KiB in all (as JSON).
    let many = |n: usize| Value::Object((0..n).map(|i| (format!("v{i}"), json!("x"))).collect());
    let sized = |n: usize, len: usize| {
        Value::Object(
            (0..n)
                .map(|i| (format!("v{i}"), json!("x".repeat(len))))
                .collect(),
        )
    };
    let one = |name: String, value: Value| Value::Object([(name, value)].into_iter().collect());
    for vars in [
        many(33),
        one("n".repeat(65), json!(1)),
        one("v".into(), json!("x".repeat(1023))),
        one("v".into(), json!({"nested": ["x".repeat(1020)]})),
        sized(9, 998),
    ] {
        let (status, body) = start("+14155550192", vars).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_vars")),
            "{body}"
        );
    }
    app.quiesce().await;
    assert!(
        before == app.snapshot(),
        "a refused request changed the store"
    );

    // Right at the limits, a session starts.
    for (to, vars) in [
        ("+14155550193", many(32)),
        ("+14155550194", sized(8, 998)),
        ("+14155550195", one("n".repeat(64), json!("x".repeat(1022)))),
    ] {
        let (status, body) = start(to, vars).await;
        assert_eq!(status, 201, "{to}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Identity checks asked from someone else's chat: no oracle, no lockout, no flood
// ---------------------------------------------------------------------------------------------

use e2e_support::{auth_code, scoped, wait_for, E2e, KNOWN_ACCOUNT};

/// The number the fake merchant registers on the known account.
const ALICE: &str = "447700900123";

/// Waits until every recorded event is handled and every queued send went out.
async fn settle(e: &E2e) {
    wait_for("the server to go idle", || {
        let sessions = e.store.sessions();
        let idle = e.store.inbound().pending_len() == 0
            && sessions.outbox_depth() == 0
            && sessions.in_flight().expect("store").is_empty();
        idle.then_some(())
    })
    .await;
}

/// Exactly what a customer was shown: each accepted message's type and content (texts,
/// buttons, lists, templates), without the recipient and tracking ids.
fn chat_of(e: &E2e, customer: &str) -> Vec<String> {
    e.graph
        .accepted_to(customer)
        .iter()
        .map(|(body, _)| {
            let kind = body["type"].as_str().unwrap_or("?");
            format!("{kind}: {}", body[kind])
        })
        .collect()
}

/// Codes (authentication templates) sent to `number`.
fn codes_to(e: &E2e, number: &str) -> usize {
    e.graph
        .accepted_to(number)
        .iter()
        .filter(|(b, _)| b["type"] == "template" && auth_code(b).is_some())
        .count()
}

/// `customer` starts `flow` by `keyword` and names `account`; returns the session and how many
/// messages the customer had been sent before.
async fn ask_for_code(
    e: &E2e,
    customer: &str,
    keyword: &str,
    flow: &str,
    account: &str,
) -> (String, usize) {
    settle(e).await;
    let before = e.graph.accepted_to(customer).len();
    e.api.text(customer, keyword).await;
    let id = wait_for("the keyword's session", || {
        e.store
            .sessions()
            .active(&scoped(customer), flow)
            .expect("store")
    })
    .await;
    e.api.text(customer, account).await;
    settle(e).await;
    (id, before)
}

/// `customer` types `guesses` wrong codes; returns the chat from `before` on once the session
/// has ended and everything was sent.
async fn guess_until_done(
    e: &E2e,
    customer: &str,
    id: &str,
    before: usize,
    guesses: usize,
) -> Vec<String> {
    for _ in 0..guesses {
        e.api.text(customer, "000000").await;
    }
    e.api.wait_completed(id).await;
    settle(e).await;
    chat_of(e, customer)[before..].to_vec()
}

const IDENTITY_FLOWS: [(&str, &str); 2] = [
    ("account_recovery", "recover"),
    ("support_identity", "support"),
];

/// The requester used up its own limits before asking: 5 codes in 10 minutes, or 10 wrong
/// guesses today, all in its own sign-ups.
async fn exhaust(e: &E2e, number: &str, wrong_guesses: bool) {
    let to = format!("+{number}");
    for round in 0..if wrong_guesses { 2 } else { 5 } {
        let id = e.api.start("signup_verification", &to, json!({})).await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        e.graph.wait_accepted(number, round + 1).await;
        if wrong_guesses {
            for guess in ["0000000", "1111111", "2222222", "3333333", "4444444"] {
                e.api.check(&id, guess).await;
            }
        } else {
            e.api.cancel(&id).await;
        }
        settle(e).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_checks_read_the_same_when_the_requester_is_at_its_limits() {
    let e = E2e::start().await;
    let mut n = 0;
    for wrong_guesses in [false, true] {
        for (flow, keyword) in IDENTITY_FLOWS {
            let mut chats = Vec::new();
            for account in [KNOWN_ACCOUNT, "nobody@example.com"] {
                n += 1;
                let requester = format!("1415555{n:04}");
                exhaust(&e, &requester, wrong_guesses).await;
                let (id, before) = ask_for_code(&e, &requester, keyword, flow, account).await;
                chats.push(guess_until_done(&e, &requester, &id, before, 0).await);
            }
            assert_eq!(
                chats[0], chats[1],
                "{flow}: known and unknown accounts differ (wrong guesses used up: {wrong_guesses})"
            );
            assert!(
                chats[0].iter().any(|m| m.contains("No code can be sent")),
                "{flow}: {:?}",
                chats[0]
            );
        }
    }
    // The account's number was never sent a code for these refused requests.
    assert_eq!(codes_to(&e, ALICE), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_checks_read_the_same_when_the_accounts_number_is_undeliverable() {
    // account_recovery: WhatsApp refuses the code at once (131026 from the send call).
    // support_identity: WhatsApp accepts it, then reports it failed (a 131026 status).
    for (i, (flow, keyword)) in IDENTITY_FLOWS.into_iter().enumerate() {
        let e = E2e::start().await;
        let synchronous = i == 0;
        let mut chats = Vec::new();
        for (j, account) in [KNOWN_ACCOUNT, "nobody@example.com"]
            .into_iter()
            .enumerate()
        {
            let requester = format!("1415556{i}{j}00");
            if synchronous {
                e.graph.set_undeliverable(ALICE);
            }
            let (id, before) = ask_for_code(&e, &requester, keyword, flow, account).await;
            // One guess before the failure is known, four after it.
            e.api.text(&requester, "000000").await;
            settle(&e).await;
            if !synchronous && account == KNOWN_ACCOUNT {
                let sent = e.graph.wait_accepted(ALICE, 1).await;
                let (_, message_id) = sent.last().expect("the code's message");
                e.api
                    .status(message_id, ALICE, "failed", Some(131026))
                    .await;
                settle(&e).await;
            }
            chats.push(guess_until_done(&e, &requester, &id, before, 4).await);
        }
        assert_eq!(
            chats[0], chats[1],
            "{flow}: known and unknown accounts differ"
        );
        assert!(
            chats[0]
                .last()
                .expect("an answer")
                .contains("Too many wrong codes"),
            "{flow}: {:?}",
            chats[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_can_neither_lock_out_nor_flood_the_accounts_owner() {
    let e = E2e::start().await;
    // Mallory runs two recoveries of Alice's account and guesses wrong five times in each.
    let mallory = "14155557001";
    for _ in 0..2 {
        let (id, before) =
            ask_for_code(&e, mallory, "recover", "account_recovery", KNOWN_ACCOUNT).await;
        let chat = guess_until_done(&e, mallory, &id, before, 5).await;
        assert!(chat
            .last()
            .expect("answer")
            .contains("Too many wrong codes"));
    }
    assert_eq!(codes_to(&e, ALICE), 2);

    // Alice's own password reset starts normally, and her code works.
    let reset = e
        .api
        .start("password_reset", &format!("+{ALICE}"), json!({}))
        .await;
    assert_eq!(reset["status"], "active", "{reset}");
    let id = reset["id"].as_str().expect("id");
    let sent = e.graph.wait_accepted(ALICE, 3).await;
    let code = sent
        .iter()
        .rev()
        .find_map(|(b, _)| auth_code(b))
        .expect("Alice's code");
    let checked = e.api.check(id, &code).await;
    assert_eq!(checked["valid"], true, "{checked}");
    assert_eq!(checked["session"]["outcome"], "verified");

    // Mallory, not Alice, is the one blocked now.
    let (id, before) =
        ask_for_code(&e, mallory, "recover", "account_recovery", KNOWN_ACCOUNT).await;
    let chat = guess_until_done(&e, mallory, &id, before, 0).await;
    assert!(
        chat.iter().any(|m| m.contains("No code can be sent")),
        "{chat:?}"
    );
    assert_eq!(codes_to(&e, ALICE), 3);

    // Other strangers: codes that others trigger stop reaching Alice at the per-target cap (5
    // a day), without their chats showing any difference from an unknown account's.
    let mut chats = Vec::new();
    for k in 0..5 {
        let stranger = format!("1415557{k:04}");
        let (_, before) =
            ask_for_code(&e, &stranger, "recover", "account_recovery", KNOWN_ACCOUNT).await;
        chats.push(chat_of(&e, &stranger)[before..].to_vec());
    }
    let nobody = "14155579999";
    let (_, before) = ask_for_code(
        &e,
        nobody,
        "recover",
        "account_recovery",
        "nobody@example.com",
    )
    .await;
    let unknown = chat_of(&e, nobody)[before..].to_vec();
    assert!(
        chats.iter().all(|c| *c == unknown),
        "{chats:?} vs {unknown:?}"
    );
    assert_eq!(
        codes_to(&e, ALICE),
        3 + 3,
        "2 + 3 codes asked by others, 1 by Alice"
    );

    // Alice still gets the codes she asks for herself.
    e.api
        .start("signup_verification", &format!("+{ALICE}"), json!({}))
        .await;
    settle(&e).await;
    assert_eq!(codes_to(&e, ALICE), 7, "{:?}", chat_of(&e, ALICE));
}

// ---------------------------------------------------------------------------------------------
// Codes typed as people type them; `check` modes and reverse OTP
// ---------------------------------------------------------------------------------------------

/// `code` written in the digit block starting at `zero`, with `sep` after the third digit.
fn in_script(code: &str, zero: u32, sep: &str) -> String {
    let mut out = String::new();
    for (i, b) in code.bytes().enumerate() {
        if i == 3 {
            out.push_str(sep);
        }
        out.push(char::from_u32(zero + u32::from(b - b'0')).expect("digit"));
    }
    out
}

#[tokio::test]
async fn codes_typed_in_other_digit_scripts_verify_in_the_chat() {
    let app = spawn().await;
    let vars = json!({"customer_name": "Asha", "order_id": "A-1", "total": "₹499"});
    // Full-width with a full-width dash, Arabic-Indic between right-to-left marks, Persian with a
    // space, Devanagari with a dot, Bengali, Thai.
    let scripts: [(u32, &str, &str); 6] = [
        (0xFF10, "－", ""),
        (0x660, "", "\u{200F}"),
        (0x6F0, " ", ""),
        (0x966, ".", ""),
        (0x9E6, "-", ""),
        (0xE50, "", ""),
    ];
    for (i, (zero, sep, mark)) in scripts.into_iter().enumerate() {
        let to = format!("+1555600{i:04}");
        let session = app.start("cod_confirmation", &to, vars.clone()).await;
        app.inbound(&to, json!({"button": "confirm"})).await;
        let code = app.sandbox_code(&to, &session).await;
        let typed = format!("{mark}{}{mark}", in_script(&code, zero, sep));
        app.inbound(&to, json!({ "text": typed })).await;
        app.quiesce().await;
        assert_eq!(
            outcome(&app.session(&session)).as_deref(),
            Some("confirmed"),
            "{typed:?}"
        );
        assert_eq!(app.wrong_today(&to), 0);
    }
}

#[tokio::test]
async fn check_follows_the_flows_check_mode_and_refuses_non_codes_silently() {
    let app = spawn().await;
    // `check = "chat"`: the merchant's /check is refused with a reason, nothing is counted.
    let to = "+15556100001";
    let vars = json!({"customer_name": "Asha", "order_id": "A-1", "total": "₹499"});
    let session = app.start("cod_confirmation", to, vars).await;
    app.inbound(to, json!({"button": "confirm"})).await;
    let code = app.sandbox_code(to, &session).await;
    app.quiesce().await;
    let before = app.snapshot();
    let check = format!("/v1/sessions/{session}/check");
    let (status, body) = app
        .post(&check, Some(API_KEY), json!({ "code": code }))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "check_in_chat");
    app.quiesce().await;
    assert!(
        before == app.snapshot(),
        "a refused /check changed the store"
    );
    // The customer's own code still works in the chat.
    app.inbound(to, json!({ "text": code })).await;
    app.quiesce().await;
    assert_eq!(
        outcome(&app.session(&session)).as_deref(),
        Some("confirmed")
    );

    // A string that is not a code is a 400 and the customer is sent nothing.
    let to = "+15556100002";
    let session = app.start("signup_verification", to, json!({})).await;
    app.sandbox_code(to, &session).await;
    app.quiesce().await;
    let before = app.snapshot();
    let check = format!("/v1/sessions/{session}/check");
    for junk in ["hello", "12ab34", "123", "", "12345678901", "１２"] {
        let (status, body) = app
            .post(&check, Some(API_KEY), json!({ "code": junk }))
            .await;
        assert_eq!(status, 400, "{junk:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_code");
    }
    app.quiesce().await;
    assert!(
        before == app.snapshot(),
        "a non-code /check changed the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_code_verifies_only_from_the_customers_own_number() {
    let e = E2e::start().await;
    let customer = "14155558101";
    let started = e
        .api
        .start("reverse_verification", &format!("+{customer}"), json!({}))
        .await;
    let id = started["id"].as_str().expect("id").to_owned();
    let code = started["otp"]["code"].as_str().expect("code").to_owned();
    // The merchant cannot verify it itself...
    let (status, body) = e.api.check_raw(&id, &code).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "reverse_otp");
    // ...nor can anyone who learnt the code, from another number...
    e.api.text("14155558102", &code).await;
    settle(&e).await;
    assert_eq!(e.api.session(&id).await["status"], "active");
    // ...only the customer's own message.
    e.api.text(customer, &format!("Verify {code}")).await;
    assert_eq!(e.api.wait_completed(&id).await["outcome"], "verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_api_codes_typed_in_the_chat_get_a_hint_not_a_verdict() {
    let e = E2e::with_flows(&[(
        "signup_verification.toml",
        "check = \"both\"",
        "check = \"api\"",
    )])
    .await;
    let customer = "14155558001";
    e.api.text(customer, "hi").await;
    let started = e
        .api
        .start("signup_verification", &format!("+{customer}"), json!({}))
        .await;
    let id = started["id"].as_str().expect("id").to_owned();
    settle(&e).await;
    let code = e
        .graph
        .accepted_to(customer)
        .iter()
        .find_map(|(b, _)| auth_code(b))
        .expect("code sent");
    let before = e.graph.accepted_to(customer).len();
    e.api.text(customer, &code).await;
    settle(&e).await;
    let chat = chat_of(&e, customer)[before..].to_vec();
    assert_eq!(chat.len(), 1, "{chat:?}");
    assert!(
        chat[0].contains("enter the code on the website"),
        "{chat:?}"
    );
    assert_eq!(e.api.session(&id).await["status"], "active");
    let checked = e.api.check(&id, &code).await;
    assert_eq!(checked["valid"], true, "{checked}");
}
