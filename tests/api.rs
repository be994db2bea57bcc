//! The merchant API on the real server in sandbox mode: authentication, validation errors,
//! idempotency, one active session per customer and flow, cancel and check.

mod common;

use serde_json::{json, Value};

const KEY: &str = "test-api-key";

async fn app() -> common::TestApp {
    common::spawn_app_with(&[("WAOTP_API_KEYS", "other-key, test-api-key")]).await
}

async fn post(app: &common::TestApp, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = app.client.post(format!("{}{path}", app.base)).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let res = req.send().await.expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn cod(to: &str) -> Value {
    json!({"flow": "cod_confirmation", "to": to,
           "vars": {"customer_name": "Asha", "order_id": "A-1", "total": "₹10"}})
}

#[tokio::test]
async fn every_route_needs_a_known_key_and_wrong_keys_change_nothing() {
    let app = app().await;
    for key in [
        None,
        Some("wrong"),
        Some(""),
        Some("test-api-ke"),
        Some("test-api-key2"),
    ] {
        let (status, body) = post(&app, "/v1/sessions", key, cod("+919876543210")).await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let res = app
        .client
        .get(format!("{}/v1/sessions/ses_x", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 401);
    assert!(app
        .store
        .sessions()
        .active_for(&common::sandbox_key("919876543210"))
        .expect("read")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not() {
    let app = common::spawn_app_with(&[
        ("WAOTP_API_KEYS", "other-key, test-api-key"),
        ("WAOTP_API_RATE", "1"),
        ("WAOTP_API_BURST", "5"),
    ])
    .await;
    let get = |key: &'static str| {
        app.client
            .get(format!("{}/v1/sessions/ses_nope", app.base))
            .bearer_auth(key)
            .send()
    };
    // A burst of 20 at once: the first five pass (404: no such session); the bucket refills at
    // one a second, so most of the rest are refused however slowly the machine runs them.
    let tasks: Vec<_> = (0..20).map(|_| tokio::spawn(get(KEY))).collect();
    let mut limited = 0;
    let mut passed = 0;
    for task in tasks {
        let res = task.await.expect("task").expect("answered");
        match res.status().as_u16() {
            404 => passed += 1,
            429 => {
                limited += 1;
                let retry_after: u64 = res
                    .headers()
                    .get("retry-after")
                    .expect("429 with Retry-After")
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("whole seconds");
                assert!((1..=5).contains(&retry_after), "{retry_after}");
                let body: Value = res.json().await.expect("json");
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                assert!(!body.to_string().contains(KEY), "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(passed >= 5, "the burst passes: {passed}");
    assert!(limited >= 1, "beyond the burst, requests are refused");
    // Another key has its own bucket, untouched by the first key's burst.
    for _ in 0..5 {
        assert_eq!(get("other-key").await.expect("answered").status(), 404);
    }
}

#[tokio::test]
async fn bad_requests_are_named() {
    let app = app().await;
    let cases = [
        (
            json!({"flow": "nope", "to": "+919876543210"}),
            "unknown_flow",
        ),
        (
            json!({"flow": "account_recovery", "to": "+919876543210"}),
            "unknown_flow",
        ),
        (
            json!({"flow": "cod_confirmation", "to": "+919876543210", "vars": {}}),
            "missing_var",
        ),
        (
            json!({"flow": "cod_confirmation", "to": "919876543210", "vars": {}}),
            "invalid_phone",
        ),
        (
            json!({"flow": "signup_verification", "to": "+91 98765"}),
            "invalid_phone",
        ),
        (json!({"flow": "signup_verification"}), "invalid_json"),
        (
            json!({"flow": "signup_verification", "to": "+919876543210", "extra": 1}),
            "invalid_json",
        ),
    ];
    for (body, code) in cases {
        let (status, answer) = post(&app, "/v1/sessions", Some(KEY), body.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let (status, body) = post(
        &app,
        "/v1/sessions/ses_missing/cancel",
        Some(KEY),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = post(
        &app,
        "/v1/sessions/ses_missing/check",
        Some(KEY),
        json!({"code": "123456"}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn idempotency_and_one_active_session_per_customer_and_flow() {
    let app = app().await;
    let send = |key: &'static str| {
        app.client
            .post(format!("{}/v1/sessions", app.base))
            .bearer_auth(KEY)
            .header("idempotency-key", key)
            .json(&cod("+14155550100"))
            .send()
    };
    let first: Value = send("order-1")
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let again = send("order-1").await.expect("sent");
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(first, again);
    // A different key for the same customer and flow: refused while the first is active.
    let other = send("order-2").await.expect("sent");
    assert_eq!(other.status(), 409);
    let other: Value = other.json().await.expect("json");
    assert_eq!(other["error"]["code"], "session_active");
    assert_eq!(other["error"]["session_id"], first["id"], "{other}");

    let id = first["id"].as_str().expect("id");
    let (status, cancelled) = post(
        &app,
        &format!("/v1/sessions/{id}/cancel"),
        Some(KEY),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["outcome"].as_str()),
        (Some("completed"), Some("cancelled"))
    );
    // Cancelling again is a no-op; a new session may now start.
    let (status, again) = post(
        &app,
        &format!("/v1/sessions/{id}/cancel"),
        Some(KEY),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, again["outcome"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, _) = post(&app, "/v1/sessions", Some(KEY), cod("+14155550100")).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn check_counts_wrong_codes_and_accepts_the_right_one() {
    let app = app().await;
    let (status, session) = post(
        &app,
        "/v1/sessions",
        Some(KEY),
        json!({"flow": "signup_verification", "to": "+447700900123"}),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id").to_owned();
    // The code the customer received, from the sandbox recording.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let code = loop {
        let list: Value = app
            .client
            .get(format!(
                "{}/v1/sandbox/messages?to=%2B447700900123",
                app.base
            ))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if let Some(code) = list["messages"]
            .as_array()
            .and_then(|m| m.iter().find_map(|m| m["code"].as_str()))
        {
            break code.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no code was sent: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (_, first) = post(
        &app,
        &format!("/v1/sessions/{id}/check"),
        Some(KEY),
        json!({"code": wrong}),
    )
    .await;
    assert_eq!(
        (first["valid"].as_bool(), first["attempts_left"].as_u64()),
        (Some(false), Some(4)),
        "{first}"
    );
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let (_, right) = post(
        &app,
        &format!("/v1/sessions/{id}/check"),
        Some(KEY),
        json!({"code": spaced}),
    )
    .await;
    assert_eq!(right["valid"], true, "{right}");
    assert_eq!(right["session"]["outcome"], "verified");
    // Single use: the same code never verifies again.
    let (status, reuse) = post(
        &app,
        &format!("/v1/sessions/{id}/check"),
        Some(KEY),
        json!({"code": code}),
    )
    .await;
    assert_eq!(status, 409, "{reuse}");
    assert_eq!(reuse["error"]["code"], "session_completed");
    assert_eq!(reuse["error"]["session_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_starts_all_complete() {
    // Regression: a start once took two locks from one striped set and could deadlock on itself.
    // All 600 at once: the key's burst must hold them.
    let app = common::spawn_app_with(&[
        ("WAOTP_API_KEYS", "other-key, test-api-key"),
        ("WAOTP_API_BURST", "600"),
    ])
    .await;
    let mut tasks = Vec::new();
    for i in 0..600 {
        let req = app
            .client
            .post(format!("{}/v1/sessions", app.base))
            .bearer_auth(KEY)
            .timeout(std::time::Duration::from_secs(60))
            .json(&json!({"flow": "signup_verification", "to": format!("+1415555{i:04}")}));
        tasks.push(tokio::spawn(async move {
            req.send().await.map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("answered"), 201);
    }
}

#[tokio::test]
async fn finished_sessions_are_purged_after_the_retention_period() {
    let app = app().await;
    let (status, session) = post(&app, "/v1/sessions", Some(KEY), cod("+14155550177")).await;
    assert_eq!(status, 201);
    let id = session["id"].as_str().expect("id").to_owned();
    let (_, active) = post(&app, "/v1/sessions", Some(KEY), cod("+14155550178")).await;
    post(
        &app,
        &format!("/v1/sessions/{id}/cancel"),
        Some(KEY),
        json!({}),
    )
    .await;
    let sessions = app.store.sessions();
    // Within the retention period both stay.
    sessions
        .purge_completed_before(chrono::Utc::now() - chrono::Duration::days(1))
        .expect("purge");
    assert!(sessions.get(&id).expect("read").is_some());
    // Past it, the finished one goes and the active one stays.
    sessions
        .purge_completed_before(chrono::Utc::now() + chrono::Duration::seconds(1))
        .expect("purge");
    assert!(sessions.get(&id).expect("read").is_none());
    let active_id = active["id"].as_str().expect("id");
    assert!(sessions.get(active_id).expect("read").is_some());
}

#[tokio::test]
async fn idempotency_keys_are_forgotten_once_purged_after_a_day() {
    let app = app().await;
    let send = |to: &'static str| {
        app.client
            .post(format!("{}/v1/sessions", app.base))
            .bearer_auth(KEY)
            .header("idempotency-key", "order-7")
            .json(&cod(to))
            .send()
    };
    assert_eq!(send("+14155550179").await.expect("sent").status(), 201);
    let sessions = app.store.sessions();
    let now = chrono::Utc::now();
    // Within the day the key is kept, and another request with it is refused.
    sessions.purge_idempotency(now).expect("purge");
    assert_eq!(send("+14155550180").await.expect("sent").status(), 422);
    // A day later the purge removes it, and the key is free again.
    assert_eq!(
        sessions
            .purge_idempotency(now + chrono::Duration::hours(24))
            .expect("purge"),
        1
    );
    let again = send("+14155550180").await.expect("sent");
    assert_eq!(again.status(), 201);
    assert!(again.headers().get("idempotent-replayed").is_none());
}
