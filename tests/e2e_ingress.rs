//! What enters through the webhook, end to end on the real server: events addressed to another
//! business number of the same account, and customers WhatsApp identifies only by a
//! business-scoped user id. Webhooks are shaped as Meta documents them; the fake Graph API
//! records what was sent.

mod e2e_support;

use e2e_support::*;
use serde_json::json;

/// Another phone number of the same WhatsApp Business Account: its events reach our webhook.
const OTHER_NUMBER_ID: &str = "209876543210987";
const OTHER_DISPLAY: &str = "15550001234";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_another_number_are_acknowledged_counted_and_ignored() {
    let e = E2e::start().await;
    let customer = "14155550110";
    let s = e
        .api
        .start("signup_verification", &format!("+{customer}"), json!({}))
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let sent = e.graph.wait_accepted(customer, 1).await;
    let code = auth_code(&sent[0].0).expect("the first message carries the code");
    let wrong = if code == "123456" { "654321" } else { "123456" };
    let calls_before = e.graph.calls().len();

    // The customer types codes in the chat of the account's other number, and WhatsApp reports
    // our code message failed on that number: all of it acknowledged (`webhook` expects 200)…
    for body in [wrong, code.as_str()] {
        e.api
            .webhook(envelope_for(
                OTHER_NUMBER_ID,
                OTHER_DISPLAY,
                json!({
                    "contacts": [{"profile": {"name": "Kerry"}, "wa_id": customer}],
                    "messages": [{"from": customer, "id": new_wamid(), "timestamp": now_secs(),
                                  "type": "text", "text": {"body": body}}]
                }),
            ))
            .await;
    }
    e.api
        .webhook(envelope_for(
            OTHER_NUMBER_ID,
            OTHER_DISPLAY,
            json!({"statuses": [{"id": sent[0].1, "status": "failed", "timestamp": now_secs(),
                                 "recipient_id": customer,
                                 "errors": [{"code": 131026, "title": "Message undeliverable",
                                             "message": "Message undeliverable",
                                             "error_data": {"details": "Message could not be delivered"}}]}]}),
        ))
        .await;
    wait_for("recorded events handled", || {
        (e.store.inbound().pending_len() == 0).then_some(())
    })
    .await;

    // …counted…
    let metrics = e.api.metrics().await;
    assert!(
        metrics.contains("waotp_events_other_number_total 3"),
        "{metrics}"
    );
    // …and otherwise ignored: nothing recorded, no attempt spent, no session change, no window
    // opened, nothing sent (not even a read receipt).
    assert_eq!(
        e.store.inbound().len(),
        0,
        "nothing of another number is recorded"
    );
    let session = e.api.session(&id).await;
    assert_eq!(session["status"], "active", "{session}");
    assert!(e
        .store
        .sessions()
        .last_customer_message(&scoped(customer))
        .expect("window")
        .is_none());
    assert_eq!(e.graph.calls().len(), calls_before, "{:?}", e.graph.calls());
    let checked = e.api.check(&id, wrong).await;
    assert_eq!(
        checked["attempts_left"], 4,
        "only this check counted: {checked}"
    );

    // The same code typed in our own chat is taken.
    e.api.text(customer, &code).await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "verified");
}

/// A business-scoped user id as Meta shows them: country code, period, digits.
const USER_ID: &str = "US.13491208655302741918";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_known_only_by_user_id_is_answered_and_recovers_an_account() {
    let e = E2e::start().await;
    e.api.text_from_user(USER_ID, "I forgot my password").await;
    let id = wait_for("the keyword's session", || {
        e.store
            .sessions()
            .active(&scoped(USER_ID), "account_recovery")
            .expect("store")
    })
    .await;
    // Answered the way Meta documents for such a customer: `recipient`, no `to`.
    let sent = e.graph.wait_accepted(USER_ID, 1).await;
    assert_eq!(sent[0].0["recipient"], USER_ID, "{}", sent[0].0);
    assert!(sent[0].0.get("to").is_none(), "{}", sent[0].0);
    assert!(e
        .graph
        .calls()
        .iter()
        .filter(|b| b.get("status").is_some())
        .all(|b| b.get("to").is_none()));

    e.api.text_from_user(USER_ID, KNOWN_ACCOUNT).await;
    let sent = e.graph.wait_accepted(USER_ID, 2).await;
    assert!(text_of(&sent[1].0)
        .expect("text")
        .starts_with("If that account exists"));
    // The code goes to the account's phone number (the merchant knows it), and is typed here.
    let code_message = e.graph.wait_accepted("447700900123", 1).await;
    let code = auth_code(&code_message[0].0).expect("code");
    let lookup = e.merchant.hook_calls("lookup_account")[0].json();
    assert_eq!(lookup["customer"], USER_ID);
    e.api.text_from_user(USER_ID, &code).await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "verified", "{done}");
    assert_eq!(done["to"], USER_ID, "{done}");
    let sent = e.graph.wait_accepted(USER_ID, 3).await;
    assert!(text_of(&sent[2].0).expect("text").contains(RECOVERY_URL));

    // Statuses of messages sent to the user id name only `recipient_user_id`.
    e.api
        .webhook(envelope(json!({
            "contacts": [{"profile": {"name": "Kerry", "username": "@kerry"}, "user_id": USER_ID}],
            "statuses": [{"id": sent[2].1, "status": "read", "timestamp": now_secs(),
                          "recipient_user_id": USER_ID}]})))
        .await;
    let metrics = e.api.metrics().await;
    assert!(
        metrics.contains("waotp_events_skipped_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("waotp_events_recorded_total{kind=\"status\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_for_a_user_id_only_chat_takes_the_delivery_failure_path() {
    // Sign-up verification started by a keyword: the code would go to the chat's own number,
    // which WhatsApp did not share.
    let e = E2e::with_flows(&[
        (
            "signup_verification.toml",
            "api = true",
            "api = true\nkeywords = [\"verify me\"]",
        ),
        (
            "signup_verification.toml",
            "outcome = \"undeliverable\"",
            "outcome = \"undeliverable\"\nmessage = \"no_number\"\ntemplate = \"no_number\"",
        ),
        (
            // The flow may also be started over the API, so the notice needs a template for
            // when the customer has not written within 24 hours.
            "signup_verification.toml",
            "[templates.signup_verified]",
            "[templates.no_number]\nname = \"signup_no_number\"\nlanguage = \"en\"\ncategory = \"utility\"\n\n[templates.signup_verified]",
        ),
        (
            "signup_verification.toml",
            "[messages.cancelled]",
            "[messages.no_number]\nen = \"We cannot send a code to a WhatsApp username. Please verify with your phone number.\"\n\n[messages.cancelled]",
        ),
    ])
    .await;
    e.api.text_from_user(USER_ID, "verify me").await;
    let sent = e.graph.wait_accepted(USER_ID, 1).await;
    assert!(
        text_of(&sent[0].0)
            .expect("a text")
            .contains("cannot send a code to a WhatsApp username"),
        "{}",
        sent[0].0
    );
    let done = wait_for("the completion callback", || {
        e.merchant
            .callbacks()
            .iter()
            .map(verify_callback)
            .find(|b| b["type"] == "session.completed")
    })
    .await;
    assert_eq!(done["session"]["outcome"], "undeliverable", "{done}");
    assert_eq!(done["session"]["to"], USER_ID, "{done}");
    // No authentication template was attempted for the user id.
    assert!(
        e.graph.sends().iter().all(|b| b["type"] != "template"),
        "{:?}",
        e.graph.sends()
    );
}
