//! One deployment, two merchants, three numbers (sandbox mode): every API key sees its own
//! merchant only. Another merchant's session is the very same 404 as an id that never existed;
//! listings, stats, the sandbox and the dashboard show the key's merchant; `from` chooses the
//! number a session talks from and refuses a number that is not the merchant's.

mod common;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use waotp::tenants::{FlowSource, KeyDigest, Merchant, Number, Scope, Tenants};
use waotp::{Application, Settings};

const KEY_A: &str = "key-alpha-0123456789";
const KEY_B: &str = "key-beta-0123456789";
const DEADLINE: Duration = Duration::from_secs(20);

fn number(id: &str, business: &str) -> Number {
    Number {
        business_number: Some(business.into()),
        ..Number::new(id)
    }
}

fn merchant(id: &str, key: &str, numbers: Vec<Number>) -> Merchant {
    Merchant {
        api_keys: vec![KeyDigest::of(key.as_bytes())],
        ..Merchant::new(
            id,
            FlowSource::Dir(concat!(env!("CARGO_MANIFEST_DIR"), "/flows").into()),
            numbers,
        )
    }
}

struct Deployment {
    base: String,
    tenants: waotp::app::TenantsReload,
    store: std::sync::Arc<waotp::store::Store>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// `alpha` with numbers 1001 and 1002, `beta` with 2001; no tokens, so sandbox mode.
async fn deployment() -> Deployment {
    deployment_of(
        Tenants::new(vec![
            merchant(
                "alpha",
                KEY_A,
                vec![
                    number("1001", "+15550001001"),
                    number("1002", "+15550001002"),
                ],
            ),
            merchant("beta", KEY_B, vec![number("2001", "+15550002001")]),
        ])
        .expect("tenants"),
    )
    .await
}

/// `merchant` with the flow files `files` of the repository's flows directory instead of all.
fn with_flow_files(mut m: Merchant, files: &[&str]) -> Merchant {
    m.flows = FlowSource::Files(
        files
            .iter()
            .map(|f| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("flows")
                    .join(f)
            })
            .collect(),
    );
    m
}

async fn deployment_of(tenants: Tenants) -> Deployment {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars = common::test_vars(dir.path());
    vars.insert(
        "WAOTP_FLOWS_DIR".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/flows").into(),
    );
    let settings = Settings::from_vars(vars).expect("settings");
    let app = Application::build_with_tenants(settings, tenants)
        .await
        .expect("server builds");
    let base = format!("http://{}", app.address());
    let store = app.store().expect("the embedded engine");
    let reload = app.tenants();
    tokio::spawn(app.run_until_stopped());
    Deployment {
        base,
        tenants: reload,
        store,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        _dir: dir,
    }
}

impl Deployment {
    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("sent");
        let status = res.status().as_u16();
        (status, res.json().await.expect("json"))
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = res.status().as_u16();
        (status, res.json().await.expect("json"))
    }

    /// Starts `signup_verification` for `to`, from `from` when given; the session object.
    async fn start(&self, key: &str, to: &str, from: Option<&str>) -> Value {
        let mut body = json!({"flow": "signup_verification", "to": to});
        if let Some(from) = from {
            body["from"] = json!(from);
        }
        let (status, session) = self.post(key, "/v1/sessions", body).await;
        assert_eq!(status, 201, "{session}");
        session
    }

    async fn stats(&self, key: &str) -> Value {
        let (status, body) = self.get(key, "/v1/stats").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn dashboard(&self, cookie_or_key: Result<&str, &str>) -> (u16, String) {
        let mut req = self.http.get(format!("{}/dashboard", self.base));
        req = match cookie_or_key {
            Ok(cookie) => req.header("cookie", cookie),
            Err(key) => req.bearer_auth(key),
        };
        let res = req.send().await.expect("sent");
        (res.status().as_u16(), res.text().await.expect("text"))
    }

    async fn login(&self, key: &str) -> String {
        let res = self
            .http
            .post(format!("{}/dashboard/login", self.base))
            .form(&[("key", key)])
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 303);
        res.headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned()
    }
}

fn id_of(session: &Value) -> String {
    session["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn another_merchants_session_is_the_same_404_as_an_unknown_id() {
    let d = deployment().await;
    let session = d.start(KEY_A, "+447700900101", None).await;
    let id = id_of(&session);
    let unknown = "ses_000000000000000000000000";

    for (path, body) in [
        ("", None),
        ("/cancel", Some(json!({}))),
        ("/check", Some(json!({"code": "123456"}))),
        ("/check", Some(json!({"code": "x"}))),
    ] {
        let ask = |session: String| {
            let body = body.clone();
            let path = format!("/v1/sessions/{session}{path}");
            let d = &d;
            async move {
                match body {
                    None => d.get(KEY_B, &path).await,
                    Some(b) => d.post(KEY_B, &path, b).await,
                }
            }
        };
        let foreign = ask(id.clone()).await;
        let never = ask(unknown.to_owned()).await;
        assert_eq!(
            foreign, never,
            "{path} {body:?}: another merchant's session shows"
        );
        let expected = if body == Some(json!({"code": "x"})) {
            400
        } else {
            404
        };
        assert_eq!(foreign.0, expected, "{path}: {}", foreign.1);
    }

    // Beta's cancel and check did nothing: alpha's session runs, its code untouched.
    let (status, mine) = d.get(KEY_A, &format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(mine["status"], "active", "{mine}");
    let (status, checked) = d
        .post(
            KEY_A,
            &format!("/v1/sessions/{id}/check"),
            json!({"code": "000000"}),
        )
        .await;
    assert_eq!(status, 200, "{checked}");
    let (_, again) = d
        .post(
            KEY_A,
            &format!("/v1/sessions/{id}/check"),
            json!({"code": "000001"}),
        )
        .await;
    assert_eq!(
        again["attempts_left"].as_u64().expect("attempts") + 1,
        checked["attempts_left"].as_u64().expect("attempts"),
        "only alpha's own checks counted: {checked} {again}"
    );
}

#[tokio::test]
async fn from_picks_the_number_and_a_foreign_or_unknown_one_is_refused() {
    let d = deployment().await;
    let first = d.start(KEY_A, "+447700900201", None).await;
    assert_eq!(
        first["from"], "1001",
        "the first number by default: {first}"
    );
    let by_business = d.start(KEY_A, "+447700900202", Some("+15550001002")).await;
    assert_eq!(by_business["from"], "1002", "{by_business}");
    let by_id = d.start(KEY_A, "+447700900203", Some("1002")).await;
    assert_eq!(by_id["from"], "1002", "{by_id}");
    let beta = d.start(KEY_B, "+447700900204", None).await;
    assert_eq!(beta["from"], "2001", "{beta}");

    for from in ["2001", "+15550002001", "9999", ""] {
        let (status, body) = d
            .post(
                KEY_A,
                "/v1/sessions",
                json!({"flow": "signup_verification", "to": "+447700900205", "from": from}),
            )
            .await;
        assert_eq!(status, 400, "{from}: {body}");
        assert_eq!(body["error"]["code"], "unknown_number", "{from}: {body}");
        assert_eq!(body["error"]["param"], "from", "{from}: {body}");
    }
    // Nothing was started by the refusals.
    let (_, page) = d.get(KEY_A, "/v1/sessions?customer=%2B447700900205").await;
    assert_eq!(page["sessions"], json!([]), "{page}");
}

#[tokio::test]
async fn listing_and_stats_show_only_own_sessions_with_a_per_number_breakdown() {
    let d = deployment().await;
    let a1 = id_of(&d.start(KEY_A, "+447700900301", None).await);
    let a2 = id_of(&d.start(KEY_A, "+447700900302", Some("1002")).await);
    let a3 = id_of(&d.start(KEY_A, "+447700900303", Some("1002")).await);
    let b1 = id_of(&d.start(KEY_B, "+447700900304", None).await);

    let listed = |page: &Value| -> Vec<String> {
        page["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(id_of)
            .collect()
    };
    let (status, page) = d.get(KEY_A, "/v1/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(listed(&page), [a3.clone(), a2.clone(), a1.clone()]);
    let (_, page) = d.get(KEY_B, "/v1/sessions").await;
    assert_eq!(listed(&page), std::slice::from_ref(&b1));
    // Paging through alpha's listing one at a time never reaches beta's session, and no cursor
    // names it.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sessions?limit=1&starting_after={c}"),
            None => "/v1/sessions?limit=1".to_owned(),
        };
        let (status, page) = d.get(KEY_A, &path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(listed(&page));
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert!(!c.contains(&hex(&b1)), "a cursor names beta's session");
                cursor = Some(c.to_owned());
            }
            None => break,
        }
        assert!(seen.len() <= 3, "{seen:?}");
    }
    assert_eq!(seen, [a3, a2, a1]);

    // Counts are written with the start; poll in case a count lands after the answer.
    let deadline = Instant::now() + DEADLINE;
    let (a, b) = loop {
        let (a, b) = (d.stats(KEY_A).await, d.stats(KEY_B).await);
        if a["sessions_started"] == 3 && b["sessions_started"] == 1 || Instant::now() > deadline {
            break (a, b);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(a["merchant"], "alpha");
    assert_eq!(a["sessions_started"], 3, "{a}");
    let numbers = |report: &Value| -> Vec<(String, u64)> {
        report["numbers"]
            .as_array()
            .expect("numbers")
            .iter()
            .map(|n| {
                (
                    n["phone_number_id"].as_str().expect("id").to_owned(),
                    n["sessions_started"].as_u64().expect("count"),
                )
            })
            .collect()
    };
    assert_eq!(
        numbers(&a),
        [("1001".to_owned(), 1), ("1002".to_owned(), 2)],
        "{a}"
    );
    assert_eq!(a["numbers"][1]["business_number"], "+15550001002");
    assert_eq!(b["merchant"], "beta");
    assert_eq!(b["sessions_started"], 1, "{b}");
    assert_eq!(numbers(&b), [("2001".to_owned(), 1)], "{b}");
}

/// The hex form a cursor would carry a session id in.
fn hex(id: &str) -> String {
    id.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_dashboard_shows_the_merchant_of_the_key_that_logged_in() {
    let d = deployment().await;
    d.start(KEY_A, "+447700900401", Some("1002")).await;

    let alpha = d.login(KEY_A).await;
    let beta = d.login(KEY_B).await;
    let (status, page_a) = d.dashboard(Ok(&alpha)).await;
    assert_eq!(status, 200);
    let (status, page_b) = d.dashboard(Ok(&beta)).await;
    assert_eq!(status, 200);
    assert!(page_a.contains("<b data-merchant>alpha</b>"), "{page_a}");
    assert!(page_a.contains("+15550001002 (1002)"));
    assert!(page_b.contains("<b data-merchant>beta</b>"));
    assert!(page_b.contains("+15550002001 (2001)"));
    // Each sees the templates of its own account (none known here).
    assert!(page_a.contains(r#"data-window="templates""#));
    assert!(page_b.contains(r#"data-window="templates""#));
    for alphas in ["alpha", "+15550001001", "+15550001002", "(1002)"] {
        assert!(!page_b.contains(alphas), "beta's page shows {alphas}");
    }
    // The Bearer key and a one-time link open the key's own merchant too.
    let (status, bearer) = d.dashboard(Err(KEY_B)).await;
    assert_eq!(status, 200);
    assert!(bearer.contains("<b data-merchant>beta</b>") && !bearer.contains("alpha"));
    let (status, link) = d.post(KEY_B, "/dashboard/link", json!({})).await;
    assert_eq!(status, 201, "{link}");
    let res = d
        .http
        .get(format!(
            "{}{}",
            d.base,
            link["path"].as_str().expect("path")
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 303);
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_owned();
    let (_, linked) = d.dashboard(Ok(&cookie)).await;
    assert!(linked.contains("<b data-merchant>beta</b>") && !linked.contains("alpha"));
    // A wrong key logs into nothing.
    let (status, _) = d.dashboard(Err("key-of-nobody")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_sandbox_shows_and_takes_messages_of_the_merchants_own_numbers() {
    let d = deployment().await;
    let customer = "%2B447700900501";
    d.start(KEY_A, "+447700900501", Some("1002")).await;
    let (status, mine) = d
        .get(
            KEY_A,
            &format!("/v1/sandbox/messages?to={customer}&from=1002&min=1&wait=20"),
        )
        .await;
    assert_eq!(status, 200, "{mine}");
    assert!(
        !mine["messages"].as_array().expect("messages").is_empty(),
        "{mine}"
    );
    // Alpha's other number and beta's only number sent this customer nothing.
    let (_, other_number) = d
        .get(KEY_A, &format!("/v1/sandbox/messages?to={customer}"))
        .await;
    assert_eq!(other_number["messages"], json!([]), "{other_number}");
    let (_, theirs) = d
        .get(KEY_B, &format!("/v1/sandbox/messages?to={customer}"))
        .await;
    assert_eq!(theirs["messages"], json!([]), "{theirs}");
    // Beta cannot read through alpha's number either.
    let (status, refused) = d
        .get(
            KEY_B,
            &format!("/v1/sandbox/messages?to={customer}&from=1002"),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["code"], "unknown_number");

    let (status, refused) = d
        .post(
            KEY_B,
            "/v1/sandbox/inbound",
            json!({"from": "+447700900501", "to": "1001", "text": "hi"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "unknown_number");
    assert_eq!(refused["error"]["param"], "to");
    let (status, taken) = d
        .post(
            KEY_A,
            "/v1/sandbox/inbound",
            json!({"from": "+447700900501", "to": "+15550001002", "text": "hi"}),
        )
        .await;
    assert_eq!(status, 200, "{taken}");
}

#[tokio::test]
async fn waotp_stats_lists_each_merchant_of_the_keys_and_merchant_keeps_one() {
    let d = deployment().await;
    d.start(KEY_A, "+447700900601", Some("1002")).await;
    d.start(KEY_B, "+447700900602", None).await;
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_waotp"))
                .arg("stats")
                .args(args)
                .env_remove("WAOTP_API_KEYS")
                .output()
                .expect("run waotp stats")
        })
    };
    let both = run(vec![
        "--url".into(),
        d.base.clone(),
        "--key".into(),
        format!("{KEY_A},{KEY_B},{KEY_A}"),
    ])
    .await
    .expect("joined");
    let table = String::from_utf8_lossy(&both.stdout);
    assert!(both.status.success(), "{table}");
    assert_eq!(table.matches("merchant alpha\n").count(), 1, "{table}");
    assert_eq!(table.matches("merchant beta\n").count(), 1, "{table}");
    assert!(table.contains("+15550001002 (1002)") && table.contains("+15550002001 (2001)"));

    let only_beta = run(vec![
        "--url".into(),
        d.base.clone(),
        "--key".into(),
        format!("{KEY_A},{KEY_B}"),
        "--merchant".into(),
        "beta".into(),
    ])
    .await
    .expect("joined");
    let table = String::from_utf8_lossy(&only_beta.stdout);
    assert!(only_beta.status.success(), "{table}");
    assert!(table.contains("+15550002001 (2001)"), "{table}");
    assert!(
        !table.contains("1002") && !table.contains("alpha"),
        "{table}"
    );

    let nobody = run(vec![
        "--url".into(),
        d.base.clone(),
        "--key".into(),
        KEY_A.into(),
        "--merchant".into(),
        "beta".into(),
    ])
    .await
    .expect("joined");
    assert_eq!(nobody.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("no key given belongs to merchant `beta`")
    );
}

#[tokio::test]
async fn sandbox_messages_filed_per_number_are_read_for_that_number_only() {
    let d = deployment().await;
    // A message filed under beta's number for this customer, as the outbox files a send.
    let at = chrono::Utc::now();
    d.store
        .sessions()
        .record_sandbox(
            &Scope::new("beta", "2001").customer_key("447700900701"),
            at,
            "out:1",
            &json!({"id": "wamid.sandbox.out.1", "to": "+447700900701", "at": at.to_rfc3339(),
                    "session_id": null, "type": "text", "text": "hello from beta"}),
        )
        .expect("recorded");
    let path = "/v1/sandbox/messages?to=%2B447700900701";
    let (status, beta) = d.get(KEY_B, path).await;
    assert_eq!(status, 200);
    assert_eq!(beta["messages"][0]["text"], "hello from beta", "{beta}");
    assert_eq!(beta["messages"].as_array().map(Vec::len), Some(1));
    for from in ["1001", "1002"] {
        let (_, alpha) = d.get(KEY_A, &format!("{path}&from={from}")).await;
        assert_eq!(alpha["messages"], json!([]), "{alpha}");
    }
}

#[tokio::test]
async fn a_session_from_before_merchants_belongs_to_the_default_scopes_merchant() {
    let d = deployment().await;
    let id = id_of(&d.start(KEY_A, "+447700900801", None).await);
    // As a version without merchants wrote it: no merchant, no number.
    let sessions = d.store.sessions();
    let mut record = sessions.get(&id).expect("read").expect("stored");
    record.merchant.clear();
    record.number.clear();
    sessions
        .apply(waotp::store::StepWrite {
            record: Some(record),
            ..Default::default()
        })
        .expect("written");
    // Without a merchant named `default`, the default scope is the first merchant's: alpha.
    let (status, old) = d.get(KEY_A, &format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{old}");
    assert!(old.get("from").is_none(), "{old}");
    let (status, _) = d.get(KEY_B, &format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 404);
    let (_, page) = d.get(KEY_B, "/v1/sessions").await;
    assert_eq!(page["sessions"], json!([]), "{page}");
    let (_, page) = d.get(KEY_A, "/v1/sessions").await;
    assert_eq!(page["sessions"][0]["id"], id.as_str(), "{page}");
}

#[tokio::test]
async fn stats_of_a_flow_answer_for_the_keys_merchants_flows_only() {
    // alpha (the default scope's merchant) runs signup_verification only, beta
    // cod_confirmation only.
    let d = deployment_of(
        Tenants::new(vec![
            with_flow_files(
                merchant("alpha", KEY_A, vec![number("1001", "+15550001001")]),
                &["signup_verification.toml"],
            ),
            with_flow_files(
                merchant("beta", KEY_B, vec![number("2001", "+15550002001")]),
                &["cod_confirmation.toml"],
            ),
        ])
        .expect("tenants"),
    )
    .await;
    // beta's own flow has figures for beta.
    let (status, body) = d.get(KEY_B, "/v1/stats?flow=cod_confirmation").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["merchant"], "beta");
    // alpha's flow is, for beta, the same unknown flow as one that exists nowhere.
    let (status, foreign) = d.get(KEY_B, "/v1/stats?flow=signup_verification").await;
    let (unknown_status, unknown) = d.get(KEY_B, "/v1/stats?flow=no_such_flow").await;
    assert_eq!((status, unknown_status), (400, 400), "{foreign} {unknown}");
    assert_eq!(foreign["error"]["code"], unknown["error"]["code"]);
    assert_eq!(foreign["error"]["code"], "unknown_flow");
    // And the other way round.
    let (status, body) = d.get(KEY_A, "/v1/stats?flow=signup_verification").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = d.get(KEY_A, "/v1/stats?flow=cod_confirmation").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn a_dashboard_login_ends_with_the_key_it_was_made_with() {
    let d = deployment().await;
    const KEY_A2: &str = "key-alpha-rotated-0123456789";
    let rotation = |keys: &[&str]| {
        let mut alpha = merchant(
            "alpha",
            KEY_A,
            vec![
                number("1001", "+15550001001"),
                number("1002", "+15550001002"),
            ],
        );
        alpha.api_keys = keys.iter().map(|k| KeyDigest::of(k.as_bytes())).collect();
        Tenants::new(vec![
            alpha,
            merchant("beta", KEY_B, vec![number("2001", "+15550002001")]),
        ])
        .expect("tenants")
    };
    // The new key beside the old one: a login with each.
    d.tenants.apply(rotation(&[KEY_A, KEY_A2])).expect("reload");
    let old = d.login(KEY_A).await;
    let new = d.login(KEY_A2).await;
    let (status, link) = d.post(KEY_A, "/dashboard/link", json!({})).await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(d.dashboard(Ok(&old)).await.0, 200);
    // The old key removed (it leaked, say): what it opened is closed with it.
    d.tenants.apply(rotation(&[KEY_A2])).expect("reload");
    let (status, page) = d.dashboard(Ok(&old)).await;
    assert_eq!(
        status, 401,
        "a login with a removed key still shows the page"
    );
    assert!(!page.contains("data-merchant"));
    let res = d
        .http
        .get(format!(
            "{}{}",
            d.base,
            link["path"].as_str().expect("path")
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.status(),
        401,
        "a link made with a removed key still opens"
    );
    // The key kept still works.
    let (status, page) = d.dashboard(Ok(&new)).await;
    assert_eq!(status, 200);
    assert!(page.contains("<b data-merchant>alpha</b>"));
}
