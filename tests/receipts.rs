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
