//! No code on disk in plaintext (docs/durability.md) — including the copy a customer sends back
//! when they type the code into the chat, which arrives as an ordinary WhatsApp message and is
//! kept in the inbound log before anyone knows it is a code.

mod e2e_support;

use e2e_support::{auth_code, files_containing, E2e};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_typed_in_the_chat_is_not_on_disk_in_plaintext() {
    // Ten digits, so that a chance match in the database's bytes is out of the question.
    let e2e = E2e::with_flows(&[("signup_verification.toml", "length = 6", "length = 10")]).await;
    let session = e2e
        .api
        .start("signup_verification", "+14155550144", json!({}))
        .await;
    let id = session["id"].as_str().expect("id").to_owned();
    let sent = e2e.graph.wait_sends("14155550144", 1).await;
    let code = sent.iter().find_map(auth_code).expect("the code was sent");
    assert_eq!(code.len(), 10);
    // The customer types it back, with a space, as people do.
    e2e.api
        .text("14155550144", &format!("{} {}", &code[..5], &code[5..]))
        .await;
    let done = e2e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "verified");
    e2e.store.flush().expect("flush");
    for needle in [code.clone(), format!("{} {}", &code[..5], &code[5..])] {
        let found = files_containing(&e2e.data_dir(), needle.as_bytes());
        assert!(
            found.is_empty(),
            "the code is on disk in plaintext in {found:?}"
        );
    }
    // The search can find things: the session id is stored in plain text.
    assert!(!files_containing(&e2e.data_dir(), id.as_bytes()).is_empty());
}
