//! Callbacks and hooks against a local fake merchant: signatures a merchant can verify with the
//! shared secret, event ids, and every way a call can fail.

mod support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::json;
use sha2::Sha256;
use support::http_fake::{refused_address, Answer, HttpFake, Recorded};
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

/// What a merchant would do: HMAC-SHA256 of the raw body with the shared secret, compared in
/// constant time. Written against `hmac` directly so it does not trust waotp's own signer.
fn merchant_accepts(request: &Recorded) -> bool {
    let Some(hex_sig) = request
        .header("x-waotp-signature")
        .and_then(|h| h.strip_prefix("sha256="))
    else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(&request.body);
    mac.verify_slice(&sig).is_ok()
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
        .deliver_callback(&merchant.url("/callbacks"), EVENT_ID, &callback_body())
        .await
        .expect("delivered");
    let request = merchant.last_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/callbacks");
    assert_eq!(request.body, callback_body());
    assert_eq!(request.header("x-waotp-event-id"), Some(EVENT_ID));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(merchant_accepts(&request));

    let mut tampered = request.clone();
    tampered.body[10] ^= 1;
    assert!(!merchant_accepts(&tampered));
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
    let deliver = || client.deliver_callback(&url, EVENT_ID, b"{\"n\":1}");
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
    for request in &requests {
        assert_eq!(request.header("x-waotp-event-id"), Some(EVENT_ID));
        assert_eq!(
            request.header("x-waotp-signature"),
            requests[0].header("x-waotp-signature")
        );
        assert!(merchant_accepts(request));
    }
}

#[tokio::test]
async fn unreachable_merchant_is_retryable_and_a_bad_url_is_not() {
    let error = client()
        .deliver_callback(&refused_address(), EVENT_ID, b"{}")
        .await
        .expect_err("refused");
    assert!(matches!(error, CallbackError::Network(_)), "{error:?}");
    assert!(error.retryable());

    let error = client()
        .deliver_callback("not a url", EVENT_ID, b"{}")
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
        .deliver_callback(&merchant.url("/cb"), EVENT_ID, b"{}")
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
        .call_hook(&merchant.url("/hooks/lookup_account"), &payload)
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
            .call_hook(&url, &json!({ "hook": "h" }))
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
