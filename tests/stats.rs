//! The funnel aggregates against a scripted set of sessions run through the real server (sandbox
//! mode, a separate process), with a graceful restart in the middle; the `/v1/stats` parameter
//! checks; and the dashboard's access rules.

mod common;
mod stats_support;

use reqwest::Method;
use serde_json::{json, Value};
use stats_support::{start, API_KEY};

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_match_scripted_sessions_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let empty = server.stats(None).await;
    assert_eq!(n(&empty["sessions_started"]), 0);
    assert_eq!(empty["conversion_rate"], Value::Null);

    // A: code delivered (reported twice: counted once) and read, typed correctly in the chat.
    let a = server
        .start_session("signup_verification", "+15550000001")
        .await;
    let (a_msg, a_code) = server.code("+15550000001", 1).await;
    server.sent("signup_verification", 1).await;
    server
        .status(&a_msg, "+15550000001", "delivered", None)
        .await;
    server
        .status(&a_msg, "+15550000001", "delivered", None)
        .await;
    server.status(&a_msg, "+15550000001", "read", None).await;
    server.say("+15550000001", &a_code).await;
    assert_eq!(server.outcome(&a).await, "verified");

    // B: delivered; asks for a new code too soon (a limit breach); cancelled by the merchant.
    let b = server
        .start_session("signup_verification", "+15550000002")
        .await;
    let (b_msg, _) = server.code("+15550000002", 1).await;
    server.sent("signup_verification", 2).await;
    server
        .status(&b_msg, "+15550000002", "delivered", None)
        .await;
    server.say("+15550000002", "resend").await;
    server
        .api(Method::POST, &format!("/v1/sessions/{b}/cancel"), None)
        .await;
    assert_eq!(server.outcome(&b).await, "cancelled");

    // C: WhatsApp reports the code undeliverable.
    let c = server
        .start_session("signup_verification", "+15550000003")
        .await;
    let (c_msg, _) = server.code("+15550000003", 1).await;
    server.sent("signup_verification", 3).await;
    server
        .status(&c_msg, "+15550000003", "failed", Some(131026))
        .await;
    assert_eq!(server.outcome(&c).await, "undeliverable");

    let before = server.stats(Some("signup_verification")).await;
    server.stop();

    let server = start(dir.path());
    assert_eq!(
        server.stats(Some("signup_verification")).await,
        before,
        "a restart changed the aggregates"
    );

    // D: `read` arrives without `delivered` (counts as both); code checked on the merchant's site.
    let d = server
        .start_session("signup_verification", "+15550000004")
        .await;
    let (d_msg, d_code) = server.code("+15550000004", 1).await;
    server.sent("signup_verification", 4).await;
    server.status(&d_msg, "+15550000004", "read", None).await;
    let checked = server
        .api(
            Method::POST,
            &format!("/v1/sessions/{d}/check"),
            Some(json!({"code": d_code})),
        )
        .await;
    assert_eq!(checked["valid"], true);
    assert_eq!(server.outcome(&d).await, "verified");

    // E: another flow, cancelled before anything was delivered.
    let e = server.start_session("password_reset", "+15550000005").await;
    server.code("+15550000005", 1).await;
    server.sent("password_reset", 1).await;
    server
        .api(Method::POST, &format!("/v1/sessions/{e}/cancel"), None)
        .await;
    assert_eq!(server.outcome(&e).await, "cancelled");

    let s = server.stats(Some("signup_verification")).await;
    assert_eq!(s["flow"], "signup_verification");
    assert_eq!(n(&s["sessions_started"]), 4);
    assert_eq!(n(&s["codes_sent"]), 4);
    assert_eq!(n(&s["codes_delivered"]), 3, "A, B and D");
    assert_eq!(n(&s["codes_read"]), 2, "A and D");
    assert_eq!(n(&s["verified"]), 2);
    assert_eq!(
        s["outcomes"],
        json!({"verified": 2, "cancelled": 1, "undeliverable": 1})
    );
    assert_eq!(n(&s["delivery_failures"][0]["code"]), 131026);
    assert_eq!(n(&s["delivery_failures"][0]["count"]), 1);
    assert!(s["delivery_failures"][0]["explanation"]
        .as_str()
        .is_some_and(|t| t.contains("undeliverable")));
    assert_eq!(s["delivery_failures"].as_array().map(Vec::len), Some(1));
    assert_eq!(s["limit_breaches"], json!({"cooldown": 1}));
    assert_eq!(s["conversion_rate"], json!(0.5));
    assert_eq!(s["delivery_rate"], json!(0.75));
    assert_eq!(n(&s["sent_to_verified_seconds"]["count"]), 2);
    assert_eq!(n(&s["sent_to_delivered_seconds"]["count"]), 3);
    assert!(s["sent_to_verified_seconds"]["p50"].is_number());
    let hourly: u64 = s["sessions_by_hour"]
        .as_array()
        .expect("hours")
        .iter()
        .map(|h| n(&h["started"]))
        .sum();
    assert_eq!(hourly, 4);

    let reset = server.stats(Some("password_reset")).await;
    assert_eq!(n(&reset["sessions_started"]), 1);
    assert_eq!(n(&reset["codes_sent"]), 1);
    assert_eq!(n(&reset["codes_delivered"]), 0);
    assert_eq!(reset["delivery_rate"], json!(0.0));
    assert_eq!(reset["outcomes"], json!({"cancelled": 1}));

    let all = server.stats(None).await;
    assert_eq!(all["flow"], Value::Null);
    assert_eq!(n(&all["sessions_started"]), 5);
    assert_eq!(n(&all["codes_sent"]), 5);
    assert_eq!(
        all["outcomes"],
        json!({"verified": 2, "cancelled": 2, "undeliverable": 1})
    );

    // A range that ended before any of this holds nothing.
    let old = server
        .api(
            Method::GET,
            "/v1/stats?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(n(&old["sessions_started"]), 0);
    assert_eq!(old["from"], "2020-01-01T00:00:00+00:00");
    assert_eq!(old["to"], "2020-01-02T00:00:00+00:00");

    // `waotp stats` prints the same figures from the running server; the key comes from the
    // environment as an operator would have it.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_waotp"))
        .args(["stats", "--flow", "signup_verification", "--since", "2h"])
        .args(["--url", &server.base])
        .env("WAOTP_API_KEYS", format!("{API_KEY},another-key"))
        .output()
        .expect("run waotp stats");
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{table}");
    for line in [
        "sessions started                       4",
        "codes delivered                        3  delivery rate 75.0%",
        "verified                               2  conversion 50.0%",
        "131026                 1  Message undeliverable",
    ] {
        assert!(table.contains(line), "missing {line:?} in\n{table}");
    }
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_waotp"))
        .args([
            "stats",
            "--flow",
            "nope",
            "--url",
            &server.base,
            "--key",
            API_KEY,
        ])
        .output()
        .expect("run waotp stats");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no flow `nope`"));
    server.stop();
}

async fn in_process_app() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars = common::test_vars(dir.path());
    vars.insert("WAOTP_API_KEYS".into(), API_KEY.into());
    let settings = waotp::Settings::from_vars(vars).expect("settings");
    let app = waotp::Application::build(settings)
        .await
        .expect("server builds");
    let base = format!("http://{}", app.address());
    tokio::spawn(app.run_until_stopped());
    (base, dir)
}

#[tokio::test]
async fn stats_parameters_are_checked() {
    let (base, _dir) = in_process_app().await;
    let client = reqwest::Client::new();
    let get = |query: &str| {
        client
            .get(format!("{base}/v1/stats{query}"))
            .bearer_auth(API_KEY)
            .send()
    };
    for (query, code, words) in [
        (
            "?from=yesterday",
            "invalid_date",
            "`from` must be an RFC 3339",
        ),
        ("?to=2026-13-01T00:00:00Z", "invalid_date", "`to` must be"),
        (
            "?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "invalid_range",
            "is after",
        ),
        (
            "?flow=no_such_flow",
            "unknown_flow",
            "no flow `no_such_flow`",
        ),
    ] {
        let res = get(query).await.expect("sent");
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{query}: {message}");
    }
    let ok =
        get("?flow=signup_verification&from=2026-01-01T10:30:00%2B02:00&to=2026-01-01T12:00:00Z")
            .await
            .expect("sent");
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.expect("json");
    assert_eq!(
        body["from"], "2026-01-01T08:00:00+00:00",
        "rounded down to the hour"
    );
    assert_eq!(body["to"], "2026-01-01T12:00:00+00:00");
    assert_eq!(get("").await.expect("sent").status(), 200);
    let anonymous = client
        .get(format!("{base}/v1/stats"))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn the_dashboard_needs_the_key() {
    let (base, _dir) = in_process_app().await;
    // Redirects are followed by hand, to see each answer.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = |cookie: Option<String>| {
        let mut req = client.get(format!("{base}/dashboard"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    let anonymous = page(None).await.expect("sent");
    assert_eq!(anonymous.status(), 401);
    let body = anonymous.text().await.expect("text");
    assert!(body.contains(r#"action="/dashboard/login""#));
    assert!(!body.contains("Funnel per flow"));
    let forged = page(Some("waotp_dashboard=00".into())).await.expect("sent");
    assert_eq!(forged.status(), 401);

    let wrong = client
        .post(format!("{base}/dashboard/login"))
        .form(&[("key", "not-the-key")])
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let login = client
        .post(format!("{base}/dashboard/login"))
        .form(&[("key", API_KEY)])
        .send()
        .await
        .expect("sent");
    assert_eq!(login.status(), 303);
    let set_cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert!(
        !set_cookie.contains(API_KEY),
        "the key itself is never the cookie"
    );
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    let shown = page(Some(cookie.clone())).await.expect("sent");
    assert_eq!(shown.status(), 200);
    assert_eq!(
        shown
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    assert!(shown
        .text()
        .await
        .expect("text")
        .contains("Funnel per flow"));

    let bearer = client
        .get(format!("{base}/dashboard"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(bearer.status(), 200);

    // Logging out ends the session on the server, not only in the browser.
    let out = client
        .post(format!("{base}/dashboard/logout"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(out.status(), 303);
    assert_eq!(page(Some(cookie)).await.expect("sent").status(), 401);

    // One-time links: only with the key, and only once.
    let refused = client
        .post(format!("{base}/dashboard/link"))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401);
    let link: Value = client
        .post(format!("{base}/dashboard/link"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let path = link["path"].as_str().expect("path").to_owned();
    let first = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(first.status(), 303);
    assert!(first.headers().get("set-cookie").is_some());
    let again = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 401);
}
