//! Hostile input against the real server: bodies built to hurt a parser, floods of wrong codes,
//! slow clients and wrong API keys. Each case checks the answer *and* the store: a refusal must
//! leave no trace, and the OTP limits of SPEC §9 must hold however the guesses arrive.

mod common;

use chrono::Utc;
use common::{sign, APP_SECRET};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waotp::otp::{CodeStatus, CustomerNumber, OtpKey};
use waotp::store::otp::OtpLedger;
use waotp::store::Store;
use waotp::{Application, Settings};

const API_KEY: &str = "adversarial-key";
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
    vars.insert("WAOTP_API_KEYS".into(), API_KEY.into());
    let settings = Settings::from_vars(vars).expect("settings");
    let app = Application::build(settings).await.expect("server builds");
    let address = app.address();
    let store = app.store();
    // A second handle on the same trees, to read OTP state the way the server wrote it.
    let key = OtpKey::load_or_create(&dir.path().join("data"), None).expect("otp key");
    let ledger = OtpLedger::open(store.db(), key).expect("ledger");
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

    fn session(&self, id: &str) -> waotp::store::sessions::SessionRecord {
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

fn outcome(record: &waotp::store::sessions::SessionRecord) -> Option<String> {
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
        .active_for("15551230000")
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
            guesses.push(async move { (i, app.check(session, &guess).await) });
        }
    }
    let answers = join_all(guesses).await;
    for (i, to) in customers.iter().enumerate() {
        let mine: Vec<&Value> = answers
            .iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, a)| a)
            .collect();
        assert!(mine.iter().all(|a| a["valid"] == false));
        // The five counted guesses saw 4, 3, 2, 1, 0 attempts left, each exactly once; the four
        // that came too late were refused with 0 left.
        let mut left: Vec<u64> = mine
            .iter()
            .filter_map(|a| a["attempts_left"].as_u64())
            .collect();
        left.sort_unstable();
        assert_eq!(left, [0, 0, 0, 0, 0, 1, 2, 3, 4], "{mine:?}");
        let record = app.session(&sessions[i]);
        assert_eq!(outcome(&record).as_deref(), Some("locked"));
        assert_eq!(app.wrong_today(to), 5, "{to}");
        let otp = app.ledger.record(&sessions[i]).expect("read").expect("otp");
        assert_eq!(otp.status(), CodeStatus::Locked);
        assert_eq!(otp.attempts_left(), 0);
        // The right code is worthless now.
        let late = app.check(&sessions[i], &codes[i]).await;
        assert_eq!(late["valid"], false);
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
    // And no new code is issued to them while blocked.
    let again = app.start("signup_verification", to, json!({})).await;
    app.quiesce().await;
    assert!(
        app.ledger.record(&again).expect("read").is_none(),
        "a code was issued to a blocked customer"
    );
    assert_eq!(outcome(&app.session(&again)).as_deref(), Some("locked"));
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
