//! Callbacks and hooks against a local fake merchant: signatures a merchant can verify with the
//! shared secret, event ids, and every way a call can fail.

mod support;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::SecretString;
use serde_json::json;
use support::http_fake::{refused_address, Answer, HttpFake, Recorded};
use support::merchant_signature::{self, Refused};
use waotp::merchant::{CallbackError, HookError, MerchantClient};

const SECRET: &str = "merchant-callback-secret";
const EVENT_ID: &str = "evt_01HZX3";

fn client() -> MerchantClient {
    MerchantClient::new(Some(SecretString::from(SECRET)), Duration::from_millis(300))
        .expect("client builds")
}

async fn merchant() -> HttpFake {
    HttpFake::start(|_| Answer::json(200, json!({ "ok": true }))).await
}

/// What a merchant would do: HMAC-SHA256 of `t.body` with the shared secret, compared in
/// constant time, the timestamp within five minutes of its clock when the call arrived. Written
/// against `hmac` directly (support/merchant_signature.rs) so it does not trust waotp's signer.
fn merchant_accepts(request: &Recorded) -> bool {
    merchant_check(request, request.received_at).is_ok()
}

fn merchant_check(request: &Recorded, now: i64) -> Result<(), Refused> {
    merchant_signature::check(
        SECRET,
        request.header("x-waotp-signature"),
        &request.body,
        now,
    )
}

fn callback_body() -> Vec<u8> {
    // Non-ASCII on purpose: the signature must cover these exact bytes.
    r#"{"id":"evt_01HZX3","type":"session.completed","created_at":"2026-11-26T01:00:00Z","session":{"outcome":"confirmed","vars":{"customer_name":"Zoë"}}}"#
        .as_bytes()
        .to_vec()
}

#[tokio::test]
async fn callback_arrives_signed_with_its_event_id_and_exact_body() {
    let merchant = merchant().await;
    client()
        .deliver_callback(
            &merchant.url("/callbacks"),
            EVENT_ID,
            &callback_body(),
            Utc::now(),
        )
        .await
        .expect("delivered");
    let request = merchant.last_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/callbacks");
    assert_eq!(request.body, callback_body());
    assert_eq!(request.header("x-waotp-event-id"), Some(EVENT_ID));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let header = request.header("x-waotp-signature").expect("signed");
    assert!(
        header.starts_with("t=") && header.contains(",v1="),
        "{header}"
    );
    assert!(merchant_accepts(&request));

    let mut tampered = request.clone();
    tampered.body[10] ^= 1;
    assert_eq!(
        merchant_check(&tampered, request.received_at),
        Err(Refused::Mismatch)
    );
    // The same call replayed more than five minutes later is refused, and so is a timestamp
    // moved to make it look fresh.
    assert_eq!(
        merchant_check(&request, request.received_at + 301),
        Err(Refused::Stale)
    );
    let t = merchant_signature::timestamp(header).expect("timestamp");
    let mut moved = request.clone();
    for (name, value) in &mut moved.headers {
        if name.eq_ignore_ascii_case("x-waotp-signature") {
            *value = value.replacen(&format!("t={t}"), &format!("t={}", t + 301), 1);
        }
    }
    assert_eq!(
        merchant_check(&moved, request.received_at + 301),
        Err(Refused::Mismatch)
    );
}

#[tokio::test]
async fn a_call_signed_long_ago_is_refused_as_stale() {
    let merchant = merchant().await;
    let long_ago = Utc::now() - TimeDelta::minutes(6);
    client()
        .deliver_callback(&merchant.url("/callbacks"), EVENT_ID, b"{}", long_ago)
        .await
        .expect("delivered");
    let request = merchant.last_request();
    assert_eq!(
        merchant_check(&request, request.received_at),
        Err(Refused::Stale)
    );
    client()
        .call_hook(&merchant.url("/hooks/h"), &json!({ "hook": "h" }), long_ago)
        .await
        .expect("answered");
    let request = merchant.last_request();
    assert_eq!(
        merchant_check(&request, request.received_at),
        Err(Refused::Stale)
    );
}

#[tokio::test]
async fn failed_callbacks_are_retryable_and_repeat_identically() {
    let merchant = merchant().await;
    merchant
        .push(Answer::raw(500, "oops"))
        .push(Answer::raw(404, ""))
        .push(Answer::raw(302, ""))
        .push(Answer::Hang);
    let client = client();
    let url = merchant.url("/callbacks");
    // Each attempt a minute after the last: the outbox passes the time of each attempt.
    let first_attempt = Utc::now() - TimeDelta::minutes(4);
    let attempt = |n: i64| -> DateTime<Utc> { first_attempt + TimeDelta::minutes(n) };
    let mut n = 0;
    let mut deliver = || {
        n += 1;
        client.deliver_callback(&url, EVENT_ID, b"{\"n\":1}", attempt(n - 1))
    };
    for expected in [
        CallbackError::Status(500),
        CallbackError::Status(404),
        CallbackError::Status(302),
        CallbackError::Timeout,
    ] {
        let error = deliver().await.expect_err("not accepted");
        assert_eq!(error, expected);
        assert!(error.retryable(), "{error}");
    }
    deliver().await.expect("accepted at last");

    let requests = merchant.requests();
    assert_eq!(requests.len(), 5);
    for (n, request) in requests.iter().enumerate() {
        assert_eq!(request.header("x-waotp-event-id"), Some(EVENT_ID));
        assert_eq!(request.body, requests[0].body);
        // Every retry is signed anew with the time of its own attempt.
        let header = request.header("x-waotp-signature").expect("signed");
        let sent_at = attempt(n as i64).timestamp();
        assert_eq!(merchant_signature::timestamp(header), Some(sent_at));
        assert_eq!(merchant_check(request, sent_at), Ok(()));
    }
    // The first attempt, signed four minutes before the last, would now be refused as stale;
    // the last is accepted.
    let last = requests.last().expect("attempts");
    assert!(merchant_accepts(last));
    assert_eq!(
        merchant_check(&requests[0], attempt(4).timestamp() + 61),
        Err(Refused::Stale)
    );
}

#[tokio::test]
async fn unreachable_merchant_is_retryable_and_a_bad_url_is_not() {
    let error = client()
        .deliver_callback(&refused_address(), EVENT_ID, b"{}", Utc::now())
        .await
        .expect_err("refused");
    assert!(matches!(error, CallbackError::Network(_)), "{error:?}");
    assert!(error.retryable());

    let error = client()
        .deliver_callback("not a url", EVENT_ID, b"{}", Utc::now())
        .await
        .expect_err("invalid");
    assert_eq!(error, CallbackError::InvalidUrl);
    assert!(!error.retryable());
}

#[tokio::test]
async fn without_a_secret_calls_go_out_unsigned() {
    let merchant = merchant().await;
    let unsigned = MerchantClient::new(None, Duration::from_secs(1)).expect("client builds");
    unsigned
        .deliver_callback(&merchant.url("/cb"), EVENT_ID, b"{}", Utc::now())
        .await
        .expect("delivered");
    assert_eq!(merchant.last_request().header("x-waotp-signature"), None);
}

#[tokio::test]
async fn hook_answer_fields_reach_the_flow() {
    let merchant = merchant().await;
    merchant.push(Answer::json(
        200,
        json!({ "found": true, "account_id": "acc_42", "phone": "+919876543210" }),
    ));
    let payload = json!({
        "session_id": "s1", "flow": "account_recovery", "hook": "lookup_account",
        "customer": "+919876543210", "vars": { "account": "asha@example.com" },
    });
    let fields = client()
        .call_hook(&merchant.url("/hooks/lookup_account"), &payload, Utc::now())
        .await
        .expect("answered");
    assert_eq!(fields["found"], json!(true));
    assert_eq!(fields["account_id"], json!("acc_42"));

    let request = merchant.last_request();
    assert_eq!(request.json(), payload);
    assert!(merchant_accepts(&request));
    assert_eq!(request.header("x-waotp-event-id"), None);
}

#[tokio::test]
async fn hook_failures_become_hook_errors() {
    let merchant = merchant().await;
    merchant
        .push(Answer::raw(503, r#"{"found":true}"#))
        .push(Answer::raw(200, "<html>ok</html>"))
        .push(Answer::raw(200, "[1,2]"))
        .push(Answer::raw(200, ""))
        .push(Answer::Hang);
    let client = client();
    let url = merchant.url("/hooks/h");
    for expected in [
        HookError::Status(503),
        HookError::NotJson,
        HookError::NotObject,
        HookError::NotJson,
        HookError::Timeout,
    ] {
        let error = client
            .call_hook(&url, &json!({ "hook": "h" }), Utc::now())
            .await
            .expect_err("no fields");
        assert_eq!(error, expected);
        assert!(!error.reason().is_empty());
    }
}

#[test]
fn debug_output_hides_the_secret() {
    assert!(!format!("{:?}", client()).contains(SECRET));
}
