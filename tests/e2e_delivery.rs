//! Issue 6 end to end: how each class of Graph API error is handled, status webhooks out of
//! order and repeated, the Graph API down for a while, a failing merchant callback endpoint, and
//! no plaintext code left in the data directory once WhatsApp accepted it.

mod e2e_support;

use e2e_support::*;
use serde_json::json;
use waotp::store::{Delivery, OutboxState};

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
        waotp::store::OutboxState::InFlight,
        "the status was handled before the Graph API answered"
    );
    // The answer arrives later; the message stays failed.
    wait_for("the send's answer", || {
        let entry = e.store.sessions().outbox_entry(&tracker).expect("store")?;
        (entry.state == waotp::store::OutboxState::Done).then_some(())
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

/// Waits until `/metrics` contains `needle`.
async fn metric(e: &E2e, needle: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let metrics = e.api.metrics().await;
        if metrics.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{needle}` in {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn cod_vars() -> serde_json::Value {
    json!({"customer_name": "Asha", "order_id": "A-7", "total": "₹9"})
}

/// The customer writes first (the 24-hour window is open) and gets the default reply.
async fn open_window(e: &E2e, customer: &str) {
    e.api.text(customer, "hi").await;
    e.graph.wait_accepted(customer, 1).await;
}

/// A 2xx without a message id: Meta may have taken the message.
const NO_MESSAGE_ID: &str =
    r#"{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_answered_without_a_message_id_is_settled_by_its_echoed_status() {
    let e = E2e::start().await;
    let customer = "14155550212";
    e.graph
        .http
        .push(http_fake::Answer::raw(200, NO_MESSAGE_ID));
    let id = start(&e, "signup_verification", &format!("+{customer}")).await;
    let sent = e.graph.wait_sends(customer, 1).await;
    let tracker = sent[0]["biz_opaque_callback_data"]
        .as_str()
        .expect("every send carries its entry id")
        .to_owned();
    let entry = wait_for("the entry in doubt", || {
        let entry = e.store.sessions().outbox_entry(&tracker).expect("store")?;
        (entry.state == OutboxState::InDoubt).then_some(entry)
    })
    .await;
    assert!(!entry.resent);
    // Meta did take it: its status webhook echoes the entry id.
    e.api
        .status_echo("wamid.doubt.1", customer, "sent", &tracker)
        .await;
    wait_for("the entry settled as sent", || {
        let entry = e.store.sessions().outbox_entry(&tracker).expect("store")?;
        (entry.state == OutboxState::Done).then_some(())
    })
    .await;
    let link = e
        .store
        .sessions()
        .link("wamid.doubt.1")
        .expect("store")
        .expect("the message id of the status is linked to the session");
    assert_eq!(link.session_id.as_deref(), Some(id.as_str()));
    assert_eq!(link.delivery, Delivery::Sent);
    // Status tracking continues on that message id.
    e.api
        .status("wamid.doubt.1", customer, "delivered", None)
        .await;
    settled(&e).await;
    assert_eq!(
        e.store
            .sessions()
            .link("wamid.doubt.1")
            .expect("store")
            .expect("link")
            .delivery,
        Delivery::Delivered
    );
    assert_eq!(e.store.sessions().outbox_depth(), 0, "nothing left to send");
    assert_eq!(e.graph.sends_to(customer).len(), 1, "sent once, not twice");
    let code = auth_code(&sent[0]).expect("code");
    assert_eq!(e.api.check(&id, &code).await["valid"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_doubt_without_any_status_is_sent_once_more_after_the_wait() {
    let e = E2e::with_settings(&[], &[("WAOTP_IN_DOUBT_SECONDS", "1")]).await;
    let customer = "14155550213";
    e.graph
        .http
        .push(http_fake::Answer::raw(200, NO_MESSAGE_ID));
    let id = start(&e, "signup_verification", &format!("+{customer}")).await;
    let accepted = e.graph.wait_accepted(customer, 1).await;
    wait_for("an empty outbox", || {
        (e.store.sessions().outbox_depth() == 0).then_some(())
    })
    .await;
    let sends = e.graph.sends_to(customer);
    assert_eq!(sends.len(), 2, "sent once more, and only once");
    assert_eq!(
        sends[0]["biz_opaque_callback_data"], sends[1]["biz_opaque_callback_data"],
        "the same entry"
    );
    assert_eq!(sends[0], sends[1], "the same message, the same code");
    let tracker = sends[0]["biz_opaque_callback_data"]
        .as_str()
        .expect("tracker");
    // The queue empties when the resend starts (an entry in flight is off it): its result is
    // recorded right after the fake's answer.
    let entry = wait_for("the resent entry settled", || {
        e.store
            .sessions()
            .outbox_entry(tracker)
            .expect("store")
            .filter(|entry| entry.state != OutboxState::InFlight)
    })
    .await;
    assert_eq!(entry.state, OutboxState::Done);
    assert!(entry.resent);
    metric(
        &e,
        r#"waotp_outbound_messages_total{status="resent",code=""} 1"#,
    )
    .await;
    let code = auth_code(&accepted[0].0).expect("code");
    assert_eq!(e.api.check(&id, &code).await["valid"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pair_rate_limit_holds_that_customer_for_six_seconds() {
    let e = E2e::start().await;
    let customer = "14155550214";
    let before = chrono::Utc::now().timestamp_millis();
    e.graph.fail_next(400, 131056);
    start(&e, "signup_verification", &format!("+{customer}")).await;
    let until = wait_for("the pause of this customer", || {
        e.store
            .sessions()
            .recipient_paused_until(&default_scope().customer_key(customer))
            .expect("store")
    })
    .await;
    assert!(
        until >= before + 6_000,
        "the next send waits at least 6 s: paused {} ms",
        until - before
    );
    // Another customer is not held.
    start(&e, "signup_verification", "+14155550215").await;
    e.graph.wait_accepted("14155550215", 1).await;
    // The refused message goes once the pause is over.
    e.graph.wait_accepted(customer, 1).await;
    assert_eq!(e.graph.sends_to(customer).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_problems_alert_the_operator_and_tell_the_merchant() {
    let e = E2e::start().await;
    e.graph.fail_next(400, 132001);
    let id = start(&e, "signup_verification", "+14155550216").await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "undeliverable");
    metric(&e, "waotp_operator_alerts_total 1").await;
    metric(
        &e,
        r#"waotp_template_errors_total{template="otp_code",code="132001"} 1"#,
    )
    .await;
    let notice = wait_for("the merchant's template notice", || {
        e.merchant
            .callbacks()
            .into_iter()
            .find(|r| r.json()["type"] == "session.template_failed")
    })
    .await;
    let body = verify_callback(&notice);
    assert_eq!(body["session"]["id"], id.as_str());
    assert_eq!(body["message"]["template"], "otp_code");
    assert_eq!(body["message"]["error"]["code"], 132001);
    assert_eq!(e.graph.sends_to("14155550216").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_error_on_the_code_template_ends_undeliverable_with_the_reason() {
    let e = E2e::start().await;
    e.graph.fail_next(400, 131047);
    let id = start(&e, "signup_verification", "+14155550217").await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "undeliverable");
    let cb = e.merchant.completed(&id).await;
    assert_eq!(cb["session"]["outcome"], "undeliverable");
    let reason = cb["session"]["delivery_failure"]
        .as_str()
        .expect("the reason is in the callback");
    assert!(reason.contains("131047"), "{reason}");
    // The code already went as a template: no second attempt.
    assert_eq!(e.graph.sends_to("14155550217").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_window_error_resends_the_prompt_as_its_template() {
    let e = E2e::start().await;
    let customer = "919800000218";
    open_window(&e, customer).await;
    let id = e
        .api
        .start("cod_confirmation", &format!("+{customer}"), cod_vars())
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let accepted = e.graph.wait_accepted(customer, 2).await;
    assert_eq!(accepted[1].0["type"], "interactive");
    // Meta took the buttons, then found the window closed.
    e.api
        .status(&accepted[1].1, customer, "failed", Some(131047))
        .await;
    let accepted = e.graph.wait_accepted(customer, 3).await;
    assert_eq!(accepted[2].0["template"]["name"], "cod_order_summary");
    settled(&e).await;
    let session = e.api.session(&id).await;
    assert_eq!(session["status"], "active", "{session}");
    assert_eq!(session["state"], "summary");
    metric(
        &e,
        r#"waotp_outbound_messages_total{status="outside_window",code="131047"} 1"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_window_error_without_a_template_keeps_the_session_waiting() {
    let e = E2e::start().await;
    let customer = "919800000219";
    open_window(&e, customer).await;
    let id = e
        .api
        .start("cod_confirmation", &format!("+{customer}"), cod_vars())
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let accepted = e.graph.wait_accepted(customer, 2).await;
    e.api
        .tap(customer, &accepted[1].1, "confirm", "Confirm")
        .await;
    let accepted = e.graph.wait_accepted(customer, 4).await;
    let (prompt, prompt_id) = accepted
        .iter()
        .find(|(b, _)| text_of(b).is_some_and(|t| t.contains("We sent you")))
        .expect("the code prompt");
    assert!(prompt.get("template").is_none());
    e.api
        .status(prompt_id, customer, "failed", Some(131047))
        .await;
    let notice = wait_for("the merchant's window notice", || {
        e.merchant
            .callbacks()
            .into_iter()
            .find(|r| r.json()["type"] == "session.outside_window")
    })
    .await;
    let body = verify_callback(&notice);
    assert_eq!(body["session"]["id"], id.as_str());
    assert!(body["message"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("131047")));
    settled(&e).await;
    let session = e.api.session(&id).await;
    assert_eq!(session["status"], "active", "not undeliverable: {session}");
    assert_eq!(session["state"], "send_code");
    metric(
        &e,
        r#"waotp_outbound_messages_total{status="outside_window",code="131047"} 1"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_window_error_for_the_code_template_ends_undeliverable_with_the_reason() {
    let e = E2e::start().await;
    let customer = "14155550220";
    let id = start(&e, "signup_verification", &format!("+{customer}")).await;
    let accepted = e.graph.wait_accepted(customer, 1).await;
    e.api
        .status(&accepted[0].1, customer, "failed", Some(131047))
        .await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "undeliverable");
    let cb = e.merchant.completed(&id).await;
    let reason = cb["session"]["delivery_failure"]
        .as_str()
        .expect("the reason is in the callback");
    assert!(reason.contains("131047"), "{reason}");
    assert_eq!(e.graph.sends_to(customer).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_problem_is_logged_naming_the_template() {
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = Graph::start().await;
    let merchant = Merchant::start().await;
    let vars = server_vars(
        &dir.path().join("data"),
        &bundled_flows(),
        &graph,
        &merchant,
    );
    let server = ChildServer::start(&vars, "info");
    graph.fail_next(400, 132015);
    server
        .api
        .start("signup_verification", "+14155550221", json!({}))
        .await;
    let line = server
        .wait_log(&["OPERATOR ALERT", "otp_code", "132015"])
        .await;
    assert!(line.contains("ERROR"), "{line}");
}
