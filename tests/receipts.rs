//! Small courtesies with real costs attached: a message a flow answers is marked read with the
//! typing indicator, and a customer nobody waits for gets the default reply at most once an hour.

mod e2e_support;

use e2e_support::{wait_for, E2e};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_messages_are_marked_read_with_typing_indicator() {
    let e2e = E2e::start().await;
    let session = e2e
        .api
        .start("signup_verification", "+14155550123", json!({}))
        .await;
    assert_eq!(session["status"], "active");
    e2e.graph.wait_sends("14155550123", 1).await;
    e2e.api.text("14155550123", "hello?").await;
    let receipt = wait_for("a read receipt", || {
        e2e.graph
            .http
            .requests()
            .iter()
            .map(|r| r.json())
            .find(|b| b["status"] == "read")
    })
    .await;
    assert!(receipt["message_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("wamid.")));
    assert_eq!(receipt["typing_indicator"]["type"], "text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_reply_goes_at_most_once_an_hour() {
    let e2e = E2e::start().await;
    for text in ["hi", "hello", "anyone?"] {
        e2e.api.text("14155550999", text).await;
    }
    // Wait until all three were handled, then count what was sent.
    wait_for("the messages to be handled", || {
        (e2e.store.inbound().pending_len() == 0).then_some(())
    })
    .await;
    let first = e2e.graph.wait_sends("14155550999", 1).await;
    assert!(first[0]["text"]["body"]
        .as_str()
        .is_some_and(|b| b.contains("nothing waiting")));
    // Make sure no second reply is merely late: wait for the outbox to drain.
    wait_for("the outbox to drain", || {
        (e2e.store.sessions().outbox_depth() == 0).then_some(())
    })
    .await;
    assert_eq!(e2e.graph.sends_to("14155550999").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_that_starts_a_keyword_flow_is_marked_read_before_the_answer() {
    let e2e = E2e::start().await;
    let customer = "14155550777";
    let keyword = e2e.api.text(customer, "I forgot my password").await;
    e2e.graph.wait_sends(customer, 1).await;
    let calls = e2e.graph.calls();
    let receipt = calls
        .iter()
        .position(|b| b["status"] == "read" && b["message_id"] == keyword.as_str())
        .expect("a read receipt for the keyword message");
    assert_eq!(calls[receipt]["typing_indicator"]["type"], "text");
    let question = calls
        .iter()
        .position(|b| b["to"].as_str().map(|t| t.trim_start_matches('+')) == Some(customer))
        .expect("the flow's first question");
    assert!(receipt < question, "{calls:?}");
    // One receipt per answered message, however the flow got it.
    let answer = e2e.api.text(customer, "alice@example.com").await;
    wait_for("a read receipt for the answer", || {
        e2e.graph
            .calls()
            .iter()
            .any(|b| b["status"] == "read" && b["message_id"] == answer.as_str())
            .then_some(())
    })
    .await;
    let receipts = e2e
        .graph
        .calls()
        .iter()
        .filter(|b| b["status"] == "read" && b["message_id"] == keyword.as_str())
        .count();
    assert_eq!(receipts, 1);
}
