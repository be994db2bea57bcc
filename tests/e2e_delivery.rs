//! Issue 6 end to end: how each class of Graph API error is handled, status webhooks out of
//! order and repeated, the Graph API down for a while, a failing merchant callback endpoint, and
//! no plaintext code left in the data directory once WhatsApp accepted it.

mod e2e_support;

use e2e_support::*;
use serde_json::json;
use waotp::store::sessions::Delivery;

/// Starts `flow` for `to` with no vars and returns the session id.
async fn start(e: &E2e, flow: &str, to: &str) -> String {
    let s = e.api.start(flow, to, json!({})).await;
    s["id"].as_str().expect("id").to_owned()
}

/// Waits until the server has handled every inbound event it recorded.
async fn settled(e: &E2e) {
    wait_for("inbound events handled", || {
        (e.store.inbound().pending_len() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_send_is_retried_and_succeeds() {
    let e = E2e::start().await;
    e.graph.fail_next(400, 130429);
    let id = start(&e, "signup_verification", "+14155550201").await;
    let accepted = e.graph.wait_accepted("14155550201", 1).await;
    let code = auth_code(&accepted[0].0).expect("code");
    // One refused attempt, then the same message again.
    let attempts = e.graph.sends_to("14155550201");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0], attempts[1]);
    assert_eq!(e.api.check(&id, &code).await["valid"], true);
    let metrics = e.api.metrics().await;
    assert!(
        metrics.contains(r#"waotp_outbound_messages_total{status="error",code="130429"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_engagement_error_switches_to_the_template() {
    let e = E2e::start().await;
    let customer = "919800000201";
    e.api.text(customer, "hi").await;
    e.graph.wait_accepted(customer, 1).await;
    // Our clock says the window is open; WhatsApp disagrees.
    e.graph.fail_next(400, 131047);
    e.api
        .start(
            "cod_confirmation",
            "+919800000201",
            json!({"customer_name": "Asha", "order_id": "A-7", "total": "₹9"}),
        )
        .await;
    let accepted = e.graph.wait_accepted(customer, 2).await;
    assert_eq!(accepted[1].0["template"]["name"], "cod_order_summary");
    let attempts = e.graph.sends_to(customer);
    assert_eq!(
        attempts.len(),
        3,
        "default reply, refused buttons, template"
    );
    assert_eq!(attempts[1]["type"], "interactive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_send_ends_the_flow_undeliverable() {
    let e = E2e::start().await;
    e.graph.fail_next(400, 131026);
    let id = start(&e, "signup_verification", "+14155550202").await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "undeliverable");
    let cb = e.merchant.completed(&id).await;
    assert_eq!(cb["session"]["outcome"], "undeliverable");
    assert!(e.graph.accepted_to("14155550202").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_status_webhook_ends_the_flow_undeliverable() {
    let e = E2e::start().await;
    let id = start(&e, "password_reset", "+14155550203").await;
    let accepted = e.graph.wait_accepted("14155550203", 1).await;
    let message_id = &accepted[0].1;
    e.api.status(message_id, "14155550203", "sent", None).await;
    e.api
        .status(message_id, "14155550203", "failed", Some(131026))
        .await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "undeliverable");
    assert_eq!(
        e.merchant.completed(&id).await["session"]["outcome"],
        "undeliverable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_error_raises_an_operator_alert_and_keeps_the_message() {
    let e = E2e::start().await;
    e.graph.fail_next(401, 190);
    let id = start(&e, "signup_verification", "+14155550204").await;
    wait_for("the operator alert", || {
        (e.graph.sends_to("14155550204").len() == 1).then_some(())
    })
    .await;
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let metrics = e.api.metrics().await;
        if metrics.contains("waotp_operator_alerts_total 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The entry waits for the operator; the session goes on.
    assert_eq!(e.store.sessions().outbox_depth(), 1);
    assert_eq!(e.api.session(&id).await["status"], "active");
    assert!(e.graph.accepted_to("14155550204").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_out_of_order_and_repeated_only_move_forward() {
    let e = E2e::start().await;
    let id = start(&e, "signup_verification", "+14155550205").await;
    let accepted = e.graph.wait_accepted("14155550205", 1).await;
    let message_id = accepted[0].1.clone();
    let link = |e: &E2e| {
        e.store
            .sessions()
            .link(&message_id)
            .expect("store")
            .expect("the sent message is linked to its session")
    };
    wait_for("the link", || {
        e.store.sessions().link(&message_id).expect("store")
    })
    .await;
    assert_eq!(link(&e).session_id.as_deref(), Some(id.as_str()));
    for status in ["read", "delivered", "delivered", "sent", "read"] {
        e.api.status(&message_id, "14155550205", status, None).await;
    }
    settled(&e).await;
    assert_eq!(link(&e).delivery, Delivery::Read);
    let metrics = e.api.metrics().await;
    assert!(
        metrics.contains(r#"waotp_outbound_messages_total{status="read",code=""} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"waotp_outbound_messages_total{status="delivered""#),
        "a delivered after read is ignored: {metrics}"
    );
    assert_eq!(e.api.session(&id).await["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_api_down_then_back_sends_each_message_once() {
    let e = E2e::start().await;
    e.graph.set_down(true);
    let customers = ["14155550206", "14155550207", "14155550208"];
    let mut ids = Vec::new();
    for c in customers {
        ids.push(start(&e, "signup_verification", &format!("+{c}")).await);
    }
    for c in customers {
        wait_for("a refused attempt", || {
            (!e.graph.sends_to(c).is_empty()).then_some(())
        })
        .await;
    }
    assert!(customers.iter().all(|c| e.graph.accepted_to(c).is_empty()));
    e.graph.set_down(false);
    for c in customers {
        e.graph.wait_accepted(c, 1).await;
    }
    wait_for("an empty outbox", || {
        (e.store.sessions().outbox_depth() == 0).then_some(())
    })
    .await;
    for (c, id) in customers.iter().zip(&ids) {
        let accepted = e.graph.accepted_to(c);
        assert_eq!(accepted.len(), 1, "exactly once to {c}");
        let code = auth_code(&accepted[0].0).expect("code");
        assert_eq!(e.api.check(id, &code).await["valid"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_retried_with_the_same_event_id_until_accepted() {
    let e = E2e::start().await;
    e.merchant.http.push(http_fake::Answer::raw(500, "down"));
    e.merchant
        .http
        .push(http_fake::Answer::raw(503, "still down"));
    let id = start(&e, "password_reset", "+14155550209").await;
    e.graph.wait_accepted("14155550209", 1).await;
    let cancelled = e.api.cancel(&id).await;
    let attempts = wait_for("three callback attempts", || {
        let c = e.merchant.callbacks();
        (c.len() >= 3).then_some(c)
    })
    .await;
    let first = verify_callback(&attempts[0]);
    assert_eq!(first["type"], "session.completed");
    assert_eq!(first["session"]["outcome"], "cancelled");
    for a in &attempts[1..] {
        let body = verify_callback(a);
        assert_eq!(
            a.header("x-waotp-event-id"),
            attempts[0].header("x-waotp-event-id")
        );
        assert_eq!(body, first, "every attempt carries the same event");
    }
    wait_for("an empty outbox", || {
        (e.store.sessions().outbox_depth() == 0).then_some(())
    })
    .await;
    assert_eq!(
        e.merchant.callbacks().len(),
        3,
        "no delivery after the success"
    );
    assert_eq!(
        e.api.session(&id).await,
        cancelled,
        "retries leave the session alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_code_in_the_data_directory_after_sending() {
    let e = E2e::start().await;
    // Eight digits: a chance match among the database's other digits is negligible.
    let id = start(&e, "password_reset", "+14155550210").await;
    let accepted = e.graph.wait_accepted("14155550210", 1).await;
    let code = auth_code(&accepted[0].0).expect("code");
    wait_for("the outbox to settle", || {
        (e.store.sessions().outbox_depth() == 0).then_some(())
    })
    .await;
    e.store.flush().expect("flush");
    let found = files_containing(&e.data_dir(), code.as_bytes());
    assert!(found.is_empty(), "code {code} found in {found:?}");
    // Checked on the merchant's site, the flow ends; still nothing on disk.
    assert_eq!(e.api.check(&id, &code).await["valid"], true);
    e.merchant.completed(&id).await;
    e.store.flush().expect("flush");
    let found = files_containing(&e.data_dir(), code.as_bytes());
    assert!(found.is_empty(), "code {code} found in {found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_before_the_send_is_answered_still_ends_the_flow() {
    let e = E2e::start().await;
    // WhatsApp's status webhook can beat its own answer to the send.
    e.graph.http.push(http_fake::Answer::Delay {
        after: std::time::Duration::from_secs(2),
        answer: Box::new(http_fake::Answer::json(
            200,
            json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.early.1"}]}),
        )),
    });
    let id = start(&e, "signup_verification", "+14155550211").await;
    let sent = wait_for("the send", || e.graph.sends_to("14155550211").pop()).await;
    let tracker = sent["biz_opaque_callback_data"]
        .as_str()
        .expect("the send carries a tracker")
        .to_owned();
    e.api
        .webhook(envelope(json!({"statuses": [{
            "id": "wamid.early.1", "status": "failed", "timestamp": now_secs(),
            "recipient_id": "14155550211", "biz_opaque_callback_data": tracker,
            "errors": [{"code": 131026, "title": "Message undeliverable",
                        "message": "Message undeliverable",
                        "error_data": {"details": "Message could not be delivered"}}]}]})))
        .await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "undeliverable");
    let entry = e
        .store
        .sessions()
        .outbox_entry(&tracker)
        .expect("store")
        .expect("entry");
    assert_eq!(
        entry.state,
        waotp::store::sessions::OutboxState::InFlight,
        "the status was handled before the Graph API answered"
    );
    // The answer arrives later; the message stays failed.
    wait_for("the send's answer", || {
        let entry = e.store.sessions().outbox_entry(&tracker).expect("store")?;
        (entry.state == waotp::store::sessions::OutboxState::Done).then_some(())
    })
    .await;
    let link = e
        .store
        .sessions()
        .link("wamid.early.1")
        .expect("store")
        .expect("link");
    assert_eq!(link.delivery, Delivery::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_message_keeps_its_place_before_the_next_one() {
    let e = E2e::start().await;
    // The payment summary is throttled; the code after it must not overtake it.
    e.graph.fail_next(400, 130429);
    e.api
        .start(
            "transaction_authorization",
            "+4915112345604",
            json!({"amount": "5", "currency": "EUR", "payee": "Acme"}),
        )
        .await;
    let accepted = e.graph.wait_accepted("4915112345604", 2).await;
    assert_eq!(accepted[0].0["template"]["name"], "transaction_summary");
    assert!(auth_code(&accepted[1].0).is_some());
    assert_eq!(e.graph.sends_to("4915112345604").len(), 3);
}
