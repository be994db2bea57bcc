//! The merchant API's contract on the real server (sandbox mode, port 0, temporary sled): every
//! answer carries `X-Request-Id`, every refusal has the one error shape with a code the OpenAPI
//! description lists for its route, live answers validate against the description's schemas,
//! starts refused by an OTP limit say which limit and when to come back, and `GET /v1/sessions`
//! lists, filters and pages.

mod common;

use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "contract-key";

async fn app_with(extra: &[(&str, &str)]) -> common::TestApp {
    let mut vars = vec![("WAOTP_API_KEYS", KEY)];
    vars.extend_from_slice(extra);
    common::spawn_app_with(&vars).await
}

/// An answer: status, headers, JSON body (`null` when not JSON).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(app: &common::TestApp, method: &str, path: &str, body: Option<Value>) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("sent");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

fn document() -> Value {
    waotp::api::openapi::document()
}

/// Validates `instance` against `schema`, resolving `$ref`s into the document's components.
fn assert_schema(schema: &Value, instance: &Value, what: &str) {
    let mut schema = schema.clone();
    if let Some(map) = schema.as_object_mut() {
        map.insert("components".into(), document()["components"].clone());
        map.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
    }
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{instance:#}");
}

/// Validates an answer against what the description says `method path` answers with its
/// status: the success schema, or the refusal schema listing that route's codes.
fn assert_described(method: &str, path: &str, answer: &Answer) {
    let doc = document();
    let response = &doc["paths"][path][method]["responses"][answer.status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {} which the description does not list: {}",
        answer.status,
        answer.body
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert_schema(
        schema,
        &answer.body,
        &format!("{method} {path} {}", answer.status),
    );
    if answer.status >= 400 {
        let code = answer.body["error"]["code"].as_str().expect("code");
        assert_eq!(
            answer.body["error"]["doc_url"],
            format!("docs/http-api.md#{code}")
        );
    }
    assert!(answer.headers.contains_key("x-request-id"));
}

fn signup(to: &str) -> Value {
    json!({"flow": "signup_verification", "to": to})
}

fn cod(to: &str) -> Value {
    json!({"flow": "cod_confirmation", "to": to,
           "vars": {"customer_name": "Asha", "order_id": "A-1", "total": "₹10"}})
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_usable_one_is_the_callers() {
    let app = app_with(&[]).await;
    let get = |path: &'static str, id: Option<&'static str>| {
        let mut req = app.client.get(format!("{}{path}", app.base));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let mut seen = std::collections::BTreeSet::new();
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/dashboard",
        "/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "/v1/sessions",
        "/v1/openapi.json",
        "/no/such/route",
    ] {
        let res = get(path, None).await.expect("sent");
        let id = res
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{path}: no X-Request-Id ({})", res.status()))
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(id.starts_with("req_") && id.len() == 28, "{path}: {id}");
        assert!(seen.insert(id), "{path}: an id given twice");
    }
    // A signed-webhook refusal and a POST carry one too.
    let res = app
        .client
        .post(format!("{}/webhook", app.base))
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("x-request-id"));
    // So do a signed webhook's acknowledgement and its refusal of a body that is not JSON, and
    // a method a path does not take.
    let ok = common::text_message("wamid.request-id", "919876543210", "hello");
    for (body, status) in [(ok, 200), ("not json".to_owned(), 400)] {
        let res = common::post_signed(&app.client, &app.base, body).await;
        assert_eq!(res.status(), status);
        assert!(res.headers().contains_key("x-request-id"), "{status}");
    }
    for (method, path) in [("PUT", "/webhook"), ("DELETE", "/v1/sessions")] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let res = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 405, "{method} {path}");
        assert!(
            res.headers().contains_key("x-request-id"),
            "{method} {path}"
        );
    }
    // The caller's own id comes back when usable, and is replaced when not.
    let mine = "0b6e3c1a-7f1e-4c55-9a51-2b8f0f3c9d10";
    let res = get("/v1/sessions/ses_none", Some(mine))
        .await
        .expect("sent");
    assert_eq!(res.headers()["x-request-id"], mine);
    let res = get("/healthz", Some("has spaces")).await.expect("sent");
    assert_ne!(res.headers()["x-request-id"], "has spaces");
    // A /v1 path asked with a method it does not take is a 405 naming the methods it takes.
    let res = app
        .client
        .delete(format!("{}/v1/sessions/ses_none", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert_eq!(
        body["error"]["doc_url"],
        "docs/http-api.md#method_not_allowed"
    );
    let res = app
        .client
        .put(format!("{}/v1/sessions", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST, GET");
    // An unknown route is refused in the same shape as everything else.
    let res = get("/no/such/route", None).await.expect("sent");
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "route_not_found");
    assert_eq!(body["error"]["doc_url"], "docs/http-api.md#route_not_found");
}

#[tokio::test]
async fn live_answers_and_refusals_match_the_description() {
    let app = app_with(&[]).await;
    let to = "+447700900123";
    let started = call(&app, "POST", "/v1/sessions", Some(signup(to))).await;
    assert_eq!(started.status, 201, "{}", started.body);
    assert_described("post", "/v1/sessions", &started);
    let id = started.body["id"].as_str().expect("id").to_owned();

    let again = call(&app, "POST", "/v1/sessions", Some(signup(to))).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"]["code"], "session_active");
    assert_eq!(again.body["error"]["session_id"], id.as_str());
    assert_described("post", "/v1/sessions", &again);

    for (body, code, param) in [
        (
            json!({"flow": "nope", "to": to}),
            "unknown_flow",
            json!("flow"),
        ),
        (
            json!({"flow": "signup_verification", "to": "12"}),
            "invalid_phone",
            json!("to"),
        ),
        (
            json!({"flow": "signup_verification"}),
            "invalid_json",
            Value::Null,
        ),
        (
            cod("+447700900124")
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("vars".into(), json!({}));
                    Value::Object(o)
                })
                .expect("object"),
            "missing_var",
            json!("vars.order_id"),
        ),
    ] {
        let refused = call(&app, "POST", "/v1/sessions", Some(body)).await;
        assert_eq!(refused.body["error"]["code"], code, "{}", refused.body);
        assert_eq!(refused.body["error"]["param"], param, "{}", refused.body);
        assert_described("post", "/v1/sessions", &refused);
    }

    let huge =
        json!({"flow": "signup_verification", "to": to, "vars": {"x": "y".repeat(70 * 1024)}});
    let too_large = call(&app, "POST", "/v1/sessions", Some(huge)).await;
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.body["error"]["code"], "payload_too_large");
    assert_described("post", "/v1/sessions", &too_large);

    let read = call(&app, "GET", &format!("/v1/sessions/{id}"), None).await;
    assert_eq!(read.status, 200);
    assert_described("get", "/v1/sessions/{id}", &read);
    let missing = call(&app, "GET", "/v1/sessions/ses_none", None).await;
    assert_eq!(missing.status, 404);
    assert_described("get", "/v1/sessions/{id}", &missing);

    let checked = call(
        &app,
        "POST",
        &format!("/v1/sessions/{id}/check"),
        Some(json!({"code": "not a code"})),
    )
    .await;
    assert_eq!(checked.body["error"]["code"], "invalid_code");
    assert_eq!(checked.body["error"]["param"], "code");
    assert_described("post", "/v1/sessions/{id}/check", &checked);
    let wrong = call(
        &app,
        "POST",
        &format!("/v1/sessions/{id}/check"),
        Some(json!({"code": "00000000"})),
    )
    .await;
    assert_eq!(wrong.status, 200, "{}", wrong.body);
    assert_eq!(wrong.body["valid"], false);
    assert_described("post", "/v1/sessions/{id}/check", &wrong);

    let cancelled = call(&app, "POST", &format!("/v1/sessions/{id}/cancel"), None).await;
    assert_eq!(cancelled.status, 200);
    assert_described("post", "/v1/sessions/{id}/cancel", &cancelled);
    let late = call(
        &app,
        "POST",
        &format!("/v1/sessions/{id}/check"),
        Some(json!({"code": "123456"})),
    )
    .await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert_eq!(late.body["error"]["code"], "session_completed");
    assert_eq!(late.body["error"]["session_id"], id.as_str());
    assert_described("post", "/v1/sessions/{id}/check", &late);

    // A session that is not waiting for a code (the order summary's buttons) refuses a check
    // and counts nothing, instead of answering a `valid: false` that reads like a wrong guess.
    let summary = call(&app, "POST", "/v1/sessions", Some(cod("+447700900125"))).await;
    assert_eq!(summary.status, 201, "{}", summary.body);
    let cod_id = summary.body["id"].as_str().expect("id");
    let early = call(
        &app,
        "POST",
        &format!("/v1/sessions/{cod_id}/check"),
        Some(json!({"code": "123456"})),
    )
    .await;
    assert_eq!(early.status, 409, "{}", early.body);
    assert_eq!(early.body["error"]["code"], "no_code_pending");
    assert_eq!(early.body["error"]["session_id"], cod_id);
    assert_described("post", "/v1/sessions/{id}/check", &early);
    let after = call(&app, "GET", &format!("/v1/sessions/{cod_id}"), None).await;
    assert_eq!(after.body, summary.body, "the check changed the session");

    let page = call(&app, "GET", "/v1/sessions?limit=1", None).await;
    assert_eq!(page.status, 200);
    assert_described("get", "/v1/sessions", &page);
    let bad = call(&app, "GET", "/v1/sessions?status=finished", None).await;
    assert_described("get", "/v1/sessions", &bad);

    let unauthorized = app
        .client
        .get(format!("{}/v1/sessions", app.base))
        .send()
        .await
        .expect("sent");
    let answer = Answer {
        status: unauthorized.status().as_u16(),
        headers: unauthorized.headers().clone(),
        body: unauthorized.json().await.expect("json"),
    };
    assert_eq!(answer.status, 401);
    assert_described("get", "/v1/sessions", &answer);

    let messages = call(&app, "GET", "/v1/sandbox/messages?to=%2B447700900123", None).await;
    assert_described("get", "/v1/sandbox/messages", &messages);
    let no_to = call(&app, "GET", "/v1/sandbox/messages", None).await;
    assert_eq!(
        no_to.body["error"]["code"], "invalid_query",
        "{}",
        no_to.body
    );
    assert_described("get", "/v1/sandbox/messages", &no_to);
    let inbound = call(
        &app,
        "POST",
        "/v1/sandbox/inbound",
        Some(json!({"from": to, "text": "hello"})),
    )
    .await;
    assert_described("post", "/v1/sandbox/inbound", &inbound);
}

/// Polls the session until `done` holds for it.
async fn session_when(app: &common::TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = call(app, "GET", &format!("/v1/sessions/{id}"), None).await;
        if done(&read.body) {
            return read.body;
        }
        assert!(
            Instant::now() < deadline,
            "session never got there: {}",
            read.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn retry_after(answer: &Answer) -> u64 {
    let header: u64 = answer.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert_eq!(
        answer.body["error"]["retry_after"], header,
        "{}",
        answer.body
    );
    header
}

#[tokio::test]
async fn a_start_refused_by_the_prefix_list_or_a_customers_rate_says_which() {
    let app = app_with(&[("WAOTP_OTP_ALLOWED_PREFIXES", "+44")]).await;
    let refused = call(&app, "POST", "/v1/sessions", Some(signup("+919876543210"))).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "country_not_allowed");
    assert_eq!(refused.body["error"]["param"], "to");
    assert_described("post", "/v1/sessions", &refused);
    assert!(
        app.store
            .sessions()
            .active(&common::sandbox_key("919876543210"), "signup_verification")
            .expect("read")
            .is_none(),
        "a refused start left a session"
    );
    // Nor did the flow run on to its end for a session that never was.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        !metrics.contains("waotp_sessions_completed_total{flow=\"signup_verification\""),
        "a refused start counted a completed session: {metrics}"
    );

    // Five codes in ten minutes are allowed; the sixth start is refused, not started.
    let to = "+447700900200";
    for _ in 0..5 {
        let started = call(&app, "POST", "/v1/sessions", Some(signup(to))).await;
        assert_eq!(started.status, 201, "{}", started.body);
        let id = started.body["id"].as_str().expect("id");
        call(&app, "POST", &format!("/v1/sessions/{id}/cancel"), None).await;
    }
    let limited = call(&app, "POST", "/v1/sessions", Some(signup(to))).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.body["error"]["code"], "customer_rate_limited");
    let wait = retry_after(&limited);
    assert!((1..=600).contains(&wait), "{wait}");
    // The message tells people the same wait as `retry_after` tells programs.
    let message = limited.body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(&format!("in {wait} s")),
        "{message} vs {wait}"
    );
    assert_described("post", "/v1/sessions", &limited);
    let page = call(&app, "GET", "/v1/sessions?customer=%2B447700900200", None).await;
    assert_eq!(page.body["sessions"].as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn the_spend_breaker_refuses_starts_and_names_itself_in_sessions_it_stops() {
    let app = app_with(&[("WAOTP_OTP_SENDS_PER_HOUR", "1")]).await;
    // The COD flow asks first and sends its code after the customer confirms.
    let cod_to = "+447700900301";
    let order = call(&app, "POST", "/v1/sessions", Some(cod(cod_to))).await;
    assert_eq!(order.status, 201, "{}", order.body);
    let order_id = order.body["id"].as_str().expect("id").to_owned();

    let first = call(&app, "POST", "/v1/sessions", Some(signup("+447700900300"))).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let refused = call(&app, "POST", "/v1/sessions", Some(signup("+447700900302"))).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "global_ceiling");
    let wait = retry_after(&refused);
    assert!((1..=3600).contains(&wait), "{wait}");
    assert_described("post", "/v1/sessions", &refused);

    // A code refused later in the chat ends the session as the flow says, and says why.
    let inbound = call(
        &app,
        "POST",
        "/v1/sandbox/inbound",
        Some(json!({"from": cod_to, "button": "confirm"})),
    )
    .await;
    assert_eq!(inbound.status, 200, "{}", inbound.body);
    let stopped = session_when(&app, &order_id, |s| s["otp_refused"].is_string()).await;
    assert_eq!(stopped["otp_refused"], "global_ceiling", "{stopped}");
}

async fn list(app: &common::TestApp, query: &str) -> Answer {
    let answer = call(app, "GET", &format!("/v1/sessions{query}"), None).await;
    assert_described("get", "/v1/sessions", &answer);
    answer
}

fn ids(page: &Answer) -> Vec<String> {
    page.body["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", page.body))
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn sessions_are_listed_newest_first_filtered_and_paged_with_stable_cursors() {
    let app = app_with(&[]).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut started = Vec::new();
    for i in 0..7 {
        let body = if i % 2 == 0 {
            signup(&format!("+4477009004{i:02}"))
        } else {
            cod(&format!("+4477009004{i:02}"))
        };
        let answer = call(&app, "POST", "/v1/sessions", Some(body)).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        started.push(answer.body["id"].as_str().expect("id").to_owned());
    }
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();
    let all = list(&app, "").await;
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all.body["next_cursor"], Value::Null);

    // Pages of three; sessions started in between never shift what a cursor continues with.
    let first = list(&app, "?limit=3").await;
    assert_eq!(ids(&first), newest_first[..3]);
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let later = call(&app, "POST", "/v1/sessions", Some(signup("+447700900499"))).await;
    assert_eq!(later.status, 201);
    let second = list(&app, &format!("?limit=3&starting_after={cursor}")).await;
    assert_eq!(ids(&second), newest_first[3..6]);
    let cursor = second.body["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let third = list(&app, &format!("?limit=3&starting_after={cursor}")).await;
    assert_eq!(ids(&third), newest_first[6..]);
    assert_eq!(third.body["next_cursor"], Value::Null);

    // Filters.
    let signups = list(&app, "?flow=signup_verification").await;
    assert_eq!(ids(&signups).len(), 5);
    assert!(signups.body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .all(|s| s["flow"] == "signup_verification"));
    call(
        &app,
        "POST",
        &format!("/v1/sessions/{}/cancel", started[1]),
        None,
    )
    .await;
    let cancelled = list(&app, "?status=completed&outcome=cancelled").await;
    assert_eq!(ids(&cancelled), [started[1].clone()]);
    assert_eq!(ids(&list(&app, "?status=active").await).len(), 7);
    let customer = list(&app, "?customer=%2B447700900402").await;
    assert_eq!(ids(&customer), [started[2].clone()]);
    let after = list(
        &app,
        &format!(
            "?created_after={}",
            (chrono::Utc::now() + chrono::Duration::seconds(5))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
    )
    .await;
    assert!(ids(&after).is_empty());
    let within = list(
        &app,
        &format!(
            "?created_after={}&created_before={}",
            before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            (chrono::Utc::now() + chrono::Duration::seconds(5))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
    )
    .await;
    assert_eq!(ids(&within).len(), 8);

    // Bad filters are refused with their name.
    for (query, code, param) in [
        ("?status=finished", "invalid_filter", "status"),
        ("?limit=0", "invalid_filter", "limit"),
        ("?limit=201", "invalid_filter", "limit"),
        (
            "?created_after=yesterday",
            "invalid_filter",
            "created_after",
        ),
        ("?customer=123", "invalid_filter", "customer"),
        ("?colour=blue", "invalid_filter", "colour"),
        ("?flow=a&flow=b", "invalid_filter", "flow"),
        (
            "?starting_after=ses_123",
            "invalid_cursor",
            "starting_after",
        ),
    ] {
        let refused = list(&app, query).await;
        assert_eq!(refused.status, 400, "{query}: {}", refused.body);
        assert_eq!(
            (
                refused.body["error"]["code"].as_str(),
                refused.body["error"]["param"].as_str()
            ),
            (Some(code), Some(param)),
            "{query}"
        );
    }
}
