//! Every bundled flow end to end on the real server: signed webhooks exactly as WhatsApp sends
//! them and the merchant API in; the fake Graph API's requests, the session object and the signed
//! merchant callback out. Short durations come from copies of the bundled flows, never from
//! test-only code paths.

mod e2e_support;

use e2e_support::*;
use serde_json::{json, Value};

const COD_VARS: fn() -> Value =
    || json!({"customer_name": "Asha", "order_id": "A-1001", "total": "₹1,499"});

/// Texts the customer saw, in order (templates shown by name).
fn seen(graph: &Graph, customer: &str) -> Vec<String> {
    graph
        .accepted_to(customer)
        .iter()
        .map(|(b, _)| match text_of(b) {
            Some(t) => t,
            None => format!("template:{}", b["template"]["name"].as_str().unwrap_or("?")),
        })
        .collect()
}

/// The customer writes first, so the 24-hour window is open; returns after the default reply.
async fn open_window(e: &E2e, customer: &str) {
    let before = e.graph.accepted_to(customer).len();
    e.api.text(customer, "hi").await;
    let sent = e.graph.wait_accepted(customer, before + 1).await;
    assert!(text_of(&sent[before].0)
        .expect("default reply is text")
        .contains("nothing waiting"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cod_confirmation_buttons_code_in_chat_confirmed() {
    let e = E2e::start().await;
    let customer = "919876543210";
    open_window(&e, customer).await;
    let session = e
        .api
        .start("cod_confirmation", "+919876543210", COD_VARS())
        .await;
    let id = session["id"].as_str().expect("id").to_owned();
    assert_eq!(session["status"], "active");
    assert_eq!(session["state"], "summary");

    // Inside the window: an interactive message with Confirm / Cancel.
    let sent = e.graph.wait_accepted(customer, 2).await;
    let (summary, summary_id) = &sent[1];
    assert_eq!(summary["type"], "interactive", "{summary}");
    assert!(text_of(summary).expect("body").contains("A-1001"));
    let buttons: Vec<&str> = summary["interactive"]["action"]["buttons"]
        .as_array()
        .expect("buttons")
        .iter()
        .map(|b| b["reply"]["id"].as_str().expect("button id"))
        .collect();
    assert_eq!(buttons, ["confirm", "cancel"]);

    let tap = e.api.tap(customer, summary_id, "confirm", "Confirm").await;
    let sent = e.graph.wait_accepted(customer, 4).await;
    // The tap is marked read, with "typing…", before the answer goes out.
    let calls = e.graph.calls();
    let receipt = calls
        .iter()
        .position(|b| b["status"] == "read" && b["message_id"] == tap.as_str())
        .expect("a read receipt for the tap");
    assert_eq!(calls[receipt]["typing_indicator"]["type"], "text");
    let code_call = calls
        .iter()
        .position(|b| auth_code(b).is_some())
        .expect("the code");
    assert!(receipt < code_call);
    let code = sent[2..]
        .iter()
        .find_map(|(b, _)| auth_code(b))
        .expect("an authentication template with the code");
    assert_eq!(code.len(), 6);
    assert!(sent[2..]
        .iter()
        .any(|(b, _)| b["template"]["name"] == "otp_code"
            && b["template"]["language"]["code"] == "en"));
    assert!(sent[2..]
        .iter()
        .any(|(b, _)| text_of(b).is_some_and(|t| t.contains("6-digit code"))));

    e.api.text(customer, &code).await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "confirmed");
    assert_eq!(done["state"], "confirmed");
    let sent = e.graph.wait_accepted(customer, 5).await;
    assert!(text_of(&sent[4].0).expect("text").contains("is confirmed"));

    // Every call went to the configured number's endpoint with the bearer token.
    for r in e.graph.http.requests() {
        assert_eq!(r.path, format!("/v23.0/{PHONE_NUMBER_ID}/messages"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {ACCESS_TOKEN}").as_str())
        );
    }

    let callback = e.merchant.completed(&id).await;
    assert_eq!(callback["session"]["outcome"], "confirmed");
    assert_eq!(callback["session"]["status"], "completed");
    assert_eq!(callback["session"]["vars"]["order_id"], "A-1001");
    assert_eq!(callback["session"]["to"], "+919876543210");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cod_confirmation_outside_window_uses_templates_and_locks_after_wrong_codes() {
    let e = E2e::start().await;
    let customer = "919800000001";
    let session = e
        .api
        .start("cod_confirmation", "+919800000001", COD_VARS())
        .await;
    let id = session["id"].as_str().expect("id").to_owned();

    // No message from the customer yet: only the step's template may go.
    let sent = e.graph.wait_accepted(customer, 1).await;
    let t = &sent[0].0["template"];
    assert_eq!(t["name"], "cod_order_summary", "{}", sent[0].0);
    let params: Vec<&str> = t["components"][0]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["text"].as_str().expect("text"))
        .collect();
    assert_eq!(params, ["Asha", "A-1001", "₹1,499"]);

    // A typed synonym instead of a tap.
    e.api.text(customer, "yes").await;
    let sent = e.graph.wait_accepted(customer, 3).await;
    let code = sent[1..]
        .iter()
        .find_map(|(b, _)| auth_code(b))
        .expect("code");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for i in 1..=4 {
        e.api.text(customer, wrong).await;
        let sent = e.graph.wait_accepted(customer, 3 + i).await;
        let left = 5 - i;
        assert_eq!(
            text_of(&sent[2 + i].0).expect("text"),
            format!("That code is not right. {left} attempt(s) left.")
        );
    }
    e.api.text(customer, wrong).await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "locked");
    let callback = e.merchant.completed(&id).await;
    assert_eq!(callback["session"]["outcome"], "locked");
    // The right code after the lock does nothing.
    e.api.text(customer, &code).await;
    assert_eq!(e.api.session(&id).await["outcome"], "locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cod_confirmation_reminder_then_expiry_by_timers() {
    let e = E2e::with_flows(&[
        (
            "cod_confirmation.toml",
            "reminders = [\"6h\"]",
            "reminders = [\"1s\"]",
        ),
        (
            "cod_confirmation.toml",
            "timeout = \"24h\"",
            "timeout = \"2s\"",
        ),
    ])
    .await;
    let customer = "919800000002";
    open_window(&e, customer).await;
    let session = e
        .api
        .start("cod_confirmation", "+919800000002", COD_VARS())
        .await;
    let id = session["id"].as_str().expect("id").to_owned();
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "expired");
    let sent = e.graph.wait_accepted(customer, 4).await;
    let texts: Vec<String> = sent.iter().filter_map(|(b, _)| text_of(b)).collect();
    assert!(
        texts[2].contains("Reminder: your order A-1001"),
        "{texts:?}"
    );
    assert!(texts[3].contains("has expired"), "{texts:?}");
    assert_eq!(
        e.merchant.completed(&id).await["session"]["outcome"],
        "expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cod_confirmation_cancel_button() {
    let e = E2e::start().await;
    let customer = "919800000003";
    open_window(&e, customer).await;
    let session = e
        .api
        .start("cod_confirmation", "+919800000003", COD_VARS())
        .await;
    let id = session["id"].as_str().expect("id").to_owned();
    let sent = e.graph.wait_accepted(customer, 2).await;
    e.api.tap(customer, &sent[1].1, "cancel", "Cancel").await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "cancelled");
    assert_eq!(
        e.merchant.completed(&id).await["session"]["outcome"],
        "cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_verification_check_api_and_chat_lock() {
    let e = E2e::start().await;
    // Happy path: the code arrives as a template and is typed on the merchant's site.
    let s = e
        .api
        .start("signup_verification", "+14155550101", json!({}))
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let sent = e.graph.wait_accepted("14155550101", 1).await;
    let code = auth_code(&sent[0].0).expect("the first message carries the code");
    assert_eq!(code.len(), 6);
    let wrong = if code == "123456" { "654321" } else { "123456" };
    let checked = e.api.check(&id, wrong).await;
    assert_eq!(checked["valid"], false);
    assert_eq!(checked["attempts_left"], 4);
    let checked = e.api.check(&id, &code).await;
    assert_eq!(checked["valid"], true, "{checked}");
    assert_eq!(checked["session"]["outcome"], "verified");
    assert_eq!(
        e.merchant.completed(&id).await["session"]["outcome"],
        "verified"
    );

    // Failure path: wrong codes typed in the chat until locked.
    let s = e
        .api
        .start("signup_verification", "+14155550102", json!({}))
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let sent = e.graph.wait_accepted("14155550102", 1).await;
    let code = auth_code(&sent[0].0).expect("code");
    let wrong = if code == "123456" { "654321" } else { "123456" };
    for _ in 0..5 {
        e.api.text("14155550102", wrong).await;
    }
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "locked");
    e.graph.wait_accepted("14155550102", 6).await;
    let texts = seen(&e.graph, "14155550102");
    assert!(
        texts.iter().any(|t| t.contains("1 attempt(s) left")),
        "{texts:?}"
    );
    assert!(texts.last().expect("sent").contains("Too many wrong codes"));
    let (status, checked) = e.api.check_raw(&id, &code).await;
    assert_eq!(status, 409, "a locked session accepts no code: {checked}");
    assert_eq!(checked["error"]["code"], "session_completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_eight_digits_in_chat_and_cancel() {
    let e = E2e::start().await;
    let s = e
        .api
        .start("password_reset", "+14155550103", json!({}))
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let sent = e.graph.wait_accepted("14155550103", 1).await;
    let code = auth_code(&sent[0].0).expect("code");
    assert_eq!(code.len(), 8);
    e.api.text("14155550103", &code).await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "verified");
    let sent = e.graph.wait_accepted("14155550103", 2).await;
    assert!(text_of(&sent[1].0)
        .expect("text")
        .contains("choose a new password"));
    assert_eq!(
        e.merchant.completed(&id).await["session"]["outcome"],
        "verified"
    );

    // Cancelled by the merchant; cancelling again is a no-op.
    let s = e
        .api
        .start("password_reset", "+14155550104", json!({}))
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    e.graph.wait_accepted("14155550104", 1).await;
    let cancelled = e.api.cancel(&id).await;
    assert_eq!(cancelled["status"], "completed");
    assert_eq!(cancelled["outcome"], "cancelled");
    let again = e.api.cancel(&id).await;
    assert_eq!(again["updated_at"], cancelled["updated_at"]);
    assert_eq!(
        e.merchant.completed(&id).await["session"]["outcome"],
        "cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_authorization_approve_lock_and_decline() {
    let e = E2e::start().await;
    let vars = || json!({"amount": "49.90", "currency": "EUR", "payee": "Acme GmbH"});
    let s = e
        .api
        .start("transaction_authorization", "+4915112345601", vars())
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let sent = e.graph.wait_accepted("4915112345601", 2).await;
    assert_eq!(sent[0].0["template"]["name"], "transaction_summary");
    let code = auth_code(&sent[1].0).expect("code");
    let checked = e.api.check(&id, &code).await;
    assert_eq!(checked["valid"], true);
    assert_eq!(checked["session"]["outcome"], "approved");
    let cb = e.merchant.completed(&id).await;
    assert_eq!(cb["session"]["outcome"], "approved");
    assert_eq!(cb["session"]["vars"]["payee"], "Acme GmbH");

    // Three wrong codes lock a transaction.
    let s = e
        .api
        .start("transaction_authorization", "+4915112345602", vars())
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let sent = e.graph.wait_accepted("4915112345602", 2).await;
    let code = auth_code(&sent[1].0).expect("code");
    let wrong = if code == "123456" { "654321" } else { "123456" };
    assert_eq!(e.api.check(&id, wrong).await["attempts_left"], 2);
    assert_eq!(e.api.check(&id, wrong).await["attempts_left"], 1);
    let last = e.api.check(&id, wrong).await;
    assert_eq!(last["valid"], false);
    assert_eq!(last["session"]["outcome"], "locked");

    // The customer declines in the chat.
    let s = e
        .api
        .start("transaction_authorization", "+4915112345603", vars())
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    e.graph.wait_accepted("4915112345603", 2).await;
    e.api.text("4915112345603", "DECLINE").await;
    assert_eq!(e.api.wait_completed(&id).await["outcome"], "declined");
    assert_eq!(
        e.merchant.completed(&id).await["session"]["outcome"],
        "declined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_verification_code_from_the_customer() {
    let e = E2e::start().await;
    let s = e
        .api
        .start("reverse_verification", "+14155550105", json!({}))
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let code = s["otp"]["code"].as_str().expect("code").to_owned();
    assert_eq!(
        s["otp"]["wa_link"],
        format!("https://wa.me/15550783881?text={code}")
    );
    // The session object read later never shows the code.
    assert!(e.api.session(&id).await.get("otp").is_none());
    // Another number sending the code does not verify this session.
    e.api.text("14155550199", &code).await;
    e.graph.wait_accepted("14155550199", 1).await;
    assert_eq!(e.api.session(&id).await["status"], "active");
    e.api.text("14155550105", &code).await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "verified");
    let sent = e.graph.wait_accepted("14155550105", 1).await;
    assert!(text_of(&sent[0].0).expect("text").contains("verified"));
    assert_eq!(
        e.merchant.completed(&id).await["session"]["outcome"],
        "verified"
    );

    // Wrong codes until locked.
    let s = e
        .api
        .start("reverse_verification", "+14155550106", json!({}))
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let code = s["otp"]["code"].as_str().expect("code").to_owned();
    let wrong = if code == "123456" { "654321" } else { "123456" };
    for _ in 0..5 {
        e.api.text("14155550106", wrong).await;
    }
    assert_eq!(e.api.wait_completed(&id).await["outcome"], "locked");
}

/// Runs an identity check (`recover` or `support`) for `account`, typing `attempts` (the real
/// code when `None`). Returns the session id and what the customer saw.
async fn identity_check(
    e: &E2e,
    customer: &str,
    keyword: &str,
    flow: &str,
    account: &str,
    wrong_tries: usize,
    use_code: bool,
) -> (String, Vec<String>) {
    e.api.text(customer, keyword).await;
    let id = wait_for("the keyword's session", || {
        e.store
            .sessions()
            .active(&scoped(customer), flow)
            .expect("store")
    })
    .await;
    e.graph.wait_accepted(customer, 1).await;
    e.api.text(customer, account).await;
    let sent = e.graph.wait_accepted(customer, 2).await;
    assert!(text_of(&sent[1].0)
        .expect("text")
        .starts_with("If that account exists"));
    for i in 0..wrong_tries {
        e.api.text(customer, "000000").await;
        e.graph.wait_accepted(customer, 3 + i).await;
    }
    if use_code {
        let sent = e.graph.wait_accepted("447700900123", 1).await;
        let code = auth_code(&sent.last().expect("sent").0).expect("code");
        e.api.text(customer, &code).await;
    }
    e.api.wait_completed(&id).await;
    // The last answer (link, hand-off or lock notice) follows the completion.
    e.graph
        .wait_accepted(customer, 2 + wrong_tries + usize::from(use_code))
        .await;
    (id, seen(&e.graph, customer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_recovery_verifies_and_never_reveals_whether_an_account_exists() {
    let e = E2e::start().await;
    // Happy path: the code goes to the account's number, is typed here, a link comes back.
    let (id, texts) = identity_check(
        &e,
        "14155550107",
        "I forgot my password",
        "account_recovery",
        KNOWN_ACCOUNT,
        0,
        true,
    )
    .await;
    let s = e.api.session(&id).await;
    assert_eq!(s["outcome"], "verified");
    assert!(
        texts.last().expect("sent").contains(RECOVERY_URL),
        "{texts:?}"
    );
    let lookups = e.merchant.hook_calls("lookup_account");
    let lookup = verify_hook(&lookups[0]);
    assert_eq!(lookup["hook"], "lookup_account");
    assert_eq!(lookup["customer"], "+14155550107");
    assert_eq!(lookup["vars"]["account"], KNOWN_ACCOUNT);
    let link = verify_hook(&e.merchant.hook_calls("recovery_link")[0]);
    assert_eq!(link["vars"]["account_id"], "acc_42");
    assert_eq!(
        e.merchant.completed(&id).await["session"]["outcome"],
        "verified"
    );

    // Known and unknown accounts with five wrong codes look the same to the customer.
    let (_, known) = identity_check(
        &e,
        "14155550108",
        "recover",
        "account_recovery",
        KNOWN_ACCOUNT,
        5,
        false,
    )
    .await;
    let (unknown_id, unknown) = identity_check(
        &e,
        "14155550109",
        "recover",
        "account_recovery",
        "nobody@example.com",
        5,
        false,
    )
    .await;
    assert_eq!(known, unknown);
    assert!(known.last().expect("sent").contains("Too many wrong codes"));
    // Only the merchant learns the difference.
    assert_eq!(e.api.session(&unknown_id).await["outcome"], "not_verified");
    // The decoy code went nowhere: the account's number got exactly two codes (two known runs).
    assert_eq!(e.graph.accepted_to("447700900123").len(), 2);
}

fn verify_hook(r: &http_fake::Recorded) -> Value {
    verify_signature(r);
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_recovery_reminder_and_expiry_at_the_deadline_by_timers() {
    let e = E2e::with_flows(&[
        (
            "account_recovery.toml",
            "reminders = [\"5m\"]",
            "reminders = [\"1s\"]",
        ),
        (
            "account_recovery.toml",
            "deadline = \"45m\"",
            "deadline = \"2s\"",
        ),
    ])
    .await;
    let customer = "14155550110";
    e.api.text(customer, "recover").await;
    let id = wait_for("the recovery session", || {
        e.store
            .sessions()
            .active(&scoped(customer), "account_recovery")
            .expect("store")
    })
    .await;
    let done = e.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "expired");
    e.graph.wait_accepted(customer, 3).await;
    let texts = seen(&e.graph, customer);
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts[1].starts_with("Still there?"));
    assert!(texts[2].contains("has expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_identity_hands_off_and_never_reveals_whether_an_account_exists() {
    let e = E2e::start().await;
    let (id, texts) = identity_check(
        &e,
        "14155550111",
        "support",
        "support_identity",
        KNOWN_ACCOUNT,
        1,
        true,
    )
    .await;
    assert!(
        texts
            .last()
            .expect("sent")
            .contains("An agent will take over"),
        "{texts:?}"
    );
    let cb = e.merchant.completed(&id).await;
    assert_eq!(cb["session"]["outcome"], "verified");
    assert_eq!(cb["session"]["vars"]["account_id"], "acc_42");

    // A known account with a wrong code, and an unknown one: the same chat.
    let (_, known) = identity_check(
        &e,
        "14155550112",
        "help",
        "support_identity",
        KNOWN_ACCOUNT,
        5,
        false,
    )
    .await;
    let (unknown_id, unknown) = identity_check(
        &e,
        "14155550113",
        "help",
        "support_identity",
        "mallory",
        5,
        false,
    )
    .await;
    assert_eq!(known, unknown);
    assert_eq!(e.api.session(&unknown_id).await["outcome"], "not_verified");
    let cancelled = e.merchant.completed(&unknown_id).await;
    assert_eq!(cancelled["session"]["outcome"], "not_verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_on_an_ended_sessions_message_does_not_answer_another_session() {
    let e = E2e::start().await;
    let customer = "919800000004";
    open_window(&e, customer).await;
    let old = e
        .api
        .start("cod_confirmation", "+919800000004", COD_VARS())
        .await;
    let old_id = old["id"].as_str().expect("id").to_owned();
    let sent = e.graph.wait_accepted(customer, 2).await;
    let old_buttons = sent[1].1.clone();
    e.api.cancel(&old_id).await;
    e.merchant.completed(&old_id).await;

    let new = e
        .api
        .start(
            "cod_confirmation",
            "+919800000004",
            json!({"customer_name": "Asha", "order_id": "B-2002", "total": "₹10"}),
        )
        .await;
    let new_id = new["id"].as_str().expect("id").to_owned();
    e.graph.wait_accepted(customer, 3).await;
    // "Confirm" on order A's message must not confirm order B.
    e.api
        .tap(customer, &old_buttons, "confirm", "Confirm")
        .await;
    wait_for("the tap handled", || {
        (e.store.inbound().pending_len() == 0).then_some(())
    })
    .await;
    let s = e.api.session(&new_id).await;
    assert_eq!(s["state"], "summary", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_during_the_cooldown_answers_only_the_wait_notice() {
    let e = E2e::start().await;
    let customer = "919876543220";
    open_window(&e, customer).await;
    e.api
        .start("cod_confirmation", "+919876543220", COD_VARS())
        .await;
    let sent = e.graph.wait_accepted(customer, 2).await;
    e.api.tap(customer, &sent[1].1, "confirm", "Confirm").await;
    e.graph.wait_accepted(customer, 4).await;
    // Right after the code: the resend cooldown refuses a new one.
    e.api.text(customer, "RESEND").await;
    let sent = e.graph.wait_accepted(customer, 5).await;
    let notice = text_of(&sent[4].0).expect("text");
    assert!(notice.contains("Please wait"), "{notice}");
    let prompts = e
        .graph
        .accepted_to(customer)
        .iter()
        .filter(|(b, _)| text_of(b).is_some_and(|t| t.contains("We sent you")))
        .count();
    assert_eq!(prompts, 1, "no \"we sent you a code\" without a code");
    let codes = e
        .graph
        .accepted_to(customer)
        .iter()
        .filter(|(b, _)| auth_code(b).is_some())
        .count();
    assert_eq!(codes, 1);
}

/// A session started with `lang = "hi"` hears everything in Hindi on the wire: the buttons, the
/// built-in re-prompt (with the Hindi buttons again) and the resend wait notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hindi_session_gets_hindi_buttons_reprompt_and_resend_wait_notice() {
    let e = E2e::start().await;
    let customer = "919876543230";
    open_window(&e, customer).await;
    e.api
        .start_in("cod_confirmation", "+919876543230", COD_VARS(), "hi")
        .await;
    let titles = |b: &Value| -> Vec<String> {
        b["interactive"]["action"]["buttons"]
            .as_array()
            .expect("buttons")
            .iter()
            .map(|b| b["reply"]["title"].as_str().expect("title").to_owned())
            .collect()
    };
    let sent = e.graph.wait_accepted(customer, 2).await;
    let summary = &sent[1].0;
    assert!(text_of(summary).expect("body").starts_with("नमस्ते Asha"));
    assert_eq!(titles(summary), ["पुष्टि करें", "रद्द करें"]);

    e.api.text(customer, "क्या?").await;
    let sent = e.graph.wait_accepted(customer, 3).await;
    let reprompt = &sent[2].0;
    assert_eq!(
        text_of(reprompt).expect("body"),
        "माफ़ कीजिए, मैं समझ नहीं पाया। कृपया दिए गए विकल्पों में से एक चुनें।"
    );
    assert_eq!(titles(reprompt), ["पुष्टि करें", "रद्द करें"]);

    e.api.tap(customer, &sent[1].1, "confirm", "पुष्टि करें").await;
    e.graph.wait_accepted(customer, 5).await;
    e.api.text(customer, "दोबारा भेजें").await;
    let sent = e.graph.wait_accepted(customer, 6).await;
    let notice = text_of(&sent[5].0).expect("text");
    assert!(
        notice.starts_with("नया कोड माँगने से पहले कृपया ") && notice.ends_with(" सेकंड प्रतीक्षा करें।"),
        "{notice}"
    );
}

/// A `notify` is a signed `session.<notify>` callback sent where the flow's outcome goes: the
/// flow's own `callback_url` when it has one, not `WAOTP_CALLBACK_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_goes_to_the_flows_own_callback_url() {
    let e = E2e::with_flows(&[(
        "account_recovery.toml",
        "on_retries_exhausted = \"cancelled\"\n",
        "on_retries_exhausted = \"cancelled\"\ncallback_url = \"{WAOTP_CALLBACK_URL}/recovery\"\n",
    )])
    .await;
    let customer = "14155550131";
    e.api.text(customer, "I forgot my password").await;
    let id = wait_for("the keyword's session", || {
        e.store
            .sessions()
            .active(&scoped(customer), "account_recovery")
            .expect("store")
    })
    .await;
    e.graph.wait_accepted(customer, 1).await;
    e.api.text(customer, "human").await;
    let r = wait_for("the agent_requested callback", || {
        e.merchant
            .callbacks()
            .into_iter()
            .find(|r| r.json()["type"] == "session.agent_requested")
    })
    .await;
    assert_eq!(r.path, "/callbacks/recovery");
    let body = verify_callback(&r);
    assert_eq!(body["session"]["id"], id.as_str());
    assert_eq!(body["session"]["status"], "active");
}
