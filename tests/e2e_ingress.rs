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
        .last_customer_message(customer)
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
