//! Crashes in the middle of a flow: the real binary is killed with SIGKILL at several points and
//! started again on the same data directory. The fake Graph API and the fake merchant live in
//! this test process, so they see every request of both runs.

mod e2e_support;

use e2e_support::http_fake::Answer;
use e2e_support::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use waotp::store::OutboxState;
use waotp::store::Store;

struct Rig {
    graph: Graph,
    merchant: Merchant,
    dir: tempfile::TempDir,
    flows: PathBuf,
    /// `WAOTP_IN_DOUBT_SECONDS` of the servers.
    in_doubt_secs: u64,
}

impl Rig {
    async fn new(edits: &[(&str, &str, &str)]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let flows = flows_copy(dir.path(), edits);
        Rig {
            graph: Graph::start().await,
            merchant: Merchant::start().await,
            dir,
            flows,
            in_doubt_secs: 1,
        }
    }

    /// A send in flight at a kill waits this long for its status before it is sent once more.
    fn with_in_doubt_secs(mut self, secs: u64) -> Rig {
        self.in_doubt_secs = secs;
        self
    }

    /// What Meta does and the fake does not: a `sent` status webhook, echoing the entry id, for
    /// every message the fake accepted for `customer`.
    async fn report_statuses(&self, api: &Api, customer: &str) {
        for (body, id) in self.graph.accepted_to(customer) {
            let tracker = body["biz_opaque_callback_data"].as_str().expect("tracker");
            api.status_echo(&id, customer, "sent", tracker).await;
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn vars(&self) -> std::collections::HashMap<String, String> {
        let mut vars = server_vars(&self.data(), &self.flows, &self.graph, &self.merchant);
        // A send in flight at a kill is in doubt at the restart: settled by its status webhook,
        // or sent once more after this wait.
        vars.insert(
            "WAOTP_IN_DOUBT_SECONDS".into(),
            self.in_doubt_secs.to_string(),
        );
        vars
    }

    fn serve(&self) -> ChildServer {
        ChildServer::start(&self.vars(), "info")
    }
}

/// Waits until the server's outbox is empty (read from `/metrics`).
async fn outbox_empty(api: &Api) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let m = api.metrics().await;
        if m.lines().any(|l| l == "waotp_outbox_depth 0") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "outbox never emptied");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn cod_vars() -> Value {
    json!({"customer_name": "Asha", "order_id": "A-55", "total": "₹500"})
}

/// Every message send with this template name (refused or accepted).
fn template_sends(graph: &Graph, customer: &str, name: &str) -> usize {
    graph
        .sends_to(customer)
        .iter()
        .filter(|b| b["template"]["name"] == name)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_start_request() {
    let rig = Rig::new(&[]).await;
    let customer = "919800000301";
    // The first send never gets an answer: the process dies while it is in flight.
    rig.graph.http.push(Answer::Hang);
    let server = rig.serve();
    let (status, first) = server
        .api
        .start_raw(
            "cod_confirmation",
            "+919800000301",
            cod_vars(),
            Some("order-A-55"),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    wait_for("the summary on its way", || {
        (!rig.graph.sends_to(customer).is_empty()).then_some(())
    })
    .await;
    server.kill9();

    let server = rig.serve();
    // The merchant's retry finds the same session; no second one is started.
    let (status, again) = server
        .api
        .start_raw(
            "cod_confirmation",
            "+919800000301",
            cod_vars(),
            Some("order-A-55"),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(again["id"], first["id"]);
    let (status, other) = server
        .api
        .start_raw(
            "cod_confirmation",
            "+919800000301",
            cod_vars(),
            Some("order-A-56"),
        )
        .await;
    assert_eq!(
        status, 409,
        "one active session per customer and flow: {other}"
    );
    let id = first["id"].as_str().expect("id");

    // The session continues where it was.
    server.api.text(customer, "yes").await;
    let accepted = rig.graph.wait_accepted(customer, 2).await;
    let code = accepted
        .iter()
        .find_map(|(b, _)| auth_code(b))
        .expect("the code");
    server.api.text(customer, &code).await;
    assert_eq!(server.api.wait_completed(id).await["outcome"], "confirmed");
    rig.merchant.completed(id).await;
    outbox_empty(&server.api).await;
    // Sent in the first run with no answer and, no status ever coming for it, sent once more
    // (free-form by then: the customer has written since).
    assert_eq!(template_sends(&rig.graph, customer, "cod_order_summary"), 1);
    let summaries = rig
        .graph
        .sends_to(customer)
        .iter()
        .filter(|b| {
            text_of(b).is_some_and(|t| t.contains("Please confirm"))
                || b["template"]["name"] == "cod_order_summary"
        })
        .count();
    assert_eq!(
        summaries, 2,
        "the summary in doubt was sent once more, and only once"
    );
    assert_eq!(template_sends(&rig.graph, customer, "otp_code"), 1);
}

/// A reverse-OTP start retried after a crash gets its first answer back, code included: the
/// answer is on disk before the merchant sees it, sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_reverse_start_replays_its_code_after_a_kill() {
    let rig = Rig::new(&[]).await;
    let server = rig.serve();
    let (status, replayed, first) = server
        .api
        .start_keyed("reverse_verification", "+14155550420", json!({}), "rev-1")
        .await;
    assert_eq!((status, replayed), (201, None), "{first}");
    let code = first["otp"]["code"].as_str().expect("code").to_owned();
    server.kill9();
    for needle in [format!("\"{code}\""), format!("text={code}")] {
        let found = files_containing(&rig.data(), needle.as_bytes());
        assert!(found.is_empty(), "{needle} on disk in {found:?}");
    }

    let server = rig.serve();
    let (status, replayed, again) = server
        .api
        .start_keyed("reverse_verification", "+14155550420", json!({}), "rev-1")
        .await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again, first);
    let (status, _, other) = server
        .api
        .start_keyed("reverse_verification", "+14155550421", json!({}), "rev-1")
        .await;
    assert_eq!(
        (status, other["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_code_was_sent() {
    let rig = Rig::new(&[]).await;
    let customer = "14155550301";
    let server = rig.serve();
    let (status, first) = server
        .api
        .start_raw(
            "signup_verification",
            "+14155550301",
            json!({}),
            Some("signup-1"),
        )
        .await;
    assert_eq!(status, 201);
    let id = first["id"].as_str().expect("id").to_owned();
    let accepted = rig.graph.wait_accepted(customer, 1).await;
    let code = auth_code(&accepted[0].0).expect("code");
    server.kill9();

    let server = rig.serve();
    let (_, again) = server
        .api
        .start_raw(
            "signup_verification",
            "+14155550301",
            json!({}),
            Some("signup-1"),
        )
        .await;
    assert_eq!(again["id"], first["id"]);
    server.api.text(customer, &code).await;
    assert_eq!(server.api.wait_completed(&id).await["outcome"], "verified");
    rig.merchant.completed(&id).await;
    outbox_empty(&server.api).await;
    assert_eq!(template_sends(&rig.graph, customer, "otp_code"), 1);
    let texts: Vec<String> = rig
        .graph
        .accepted_to(customer)
        .iter()
        .filter_map(|(b, _)| text_of(b))
        .collect();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("verified"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_a_timer_is_pending() {
    let rig = Rig::new(&[(
        "cod_confirmation.toml",
        "timeout = \"24h\"",
        "timeout = \"3s\"",
    )])
    .await
    .with_in_doubt_secs(20);
    let customer = "919800000302";
    let server = rig.serve();
    server.api.text(customer, "hi").await;
    rig.graph.wait_accepted(customer, 1).await;
    let s = server
        .api
        .start("cod_confirmation", "+919800000302", cod_vars())
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    rig.graph.wait_accepted(customer, 2).await;
    assert_eq!(server.api.session(&id).await["status"], "active");
    server.kill9();

    let server = rig.serve();
    // The summary may have been accepted just before the kill, before its result was on disk:
    // its status settles it.
    rig.report_statuses(&server.api, customer).await;
    let done = server.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "expired");
    assert_eq!(
        rig.merchant.completed(&id).await["session"]["outcome"],
        "expired"
    );
    outbox_empty(&server.api).await;
    let texts: Vec<String> = rig
        .graph
        .accepted_to(customer)
        .iter()
        .filter_map(|(b, _)| text_of(b))
        .collect();
    assert_eq!(texts.len(), 3, "default reply, summary, expiry: {texts:?}");
    assert!(texts[2].contains("has expired"));
    let completions = rig
        .merchant
        .callbacks()
        .iter()
        .map(verify_callback)
        .filter(|b| b["session"]["id"] == id.as_str())
        .count();
    assert_eq!(completions, 1);
}

/// The session deadline and its reminder are stored with the session: a process that never
/// saw the session start still sends the reminder and ends the session at the deadline,
/// counted from the start in the first process (the waiting state has no timer of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_a_session_deadline_is_pending() {
    let rig = Rig::new(&[(
        "account_recovery.toml",
        "deadline = \"45m\"",
        "deadline = \"4s\"\ndeadline_reminders = [\"-2s\"]\ndeadline_reminder = \"ask_reminder\"",
    )])
    .await
    .with_in_doubt_secs(20);
    let customer = "919800000303";
    let server = rig.serve();
    server.api.text(customer, "recover").await;
    rig.graph.wait_accepted(customer, 1).await;
    server.kill9();
    let id = Store::open(&rig.data(), |_| {})
        .expect("reopen")
        .sessions()
        .active(&scoped(customer), "account_recovery")
        .expect("store")
        .expect("the keyword started a session");

    let server = rig.serve();
    rig.report_statuses(&server.api, customer).await;
    let done = server.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "expired");
    assert_eq!(
        rig.merchant.completed(&id).await["session"]["outcome"],
        "expired"
    );
    outbox_empty(&server.api).await;
    let texts: Vec<String> = rig
        .graph
        .accepted_to(customer)
        .iter()
        .filter_map(|(b, _)| text_of(b))
        .collect();
    assert_eq!(texts.len(), 3, "prompt, deadline reminder, end: {texts:?}");
    assert!(texts[1].starts_with("Still there?"), "{texts:?}");
    assert!(texts[2].contains("has expired"), "{texts:?}");
}

/// Entry states of the outbox as the killed process left them.
fn outbox_states(data: &Path) -> Vec<(String, OutboxState)> {
    let store = Store::open(data, |_| {}).expect("reopen after the crash");
    let due = store
        .sessions()
        .due_outbox(chrono::Utc::now() + chrono::Duration::days(1), 1000)
        .expect("outbox");
    let mut out: Vec<(String, OutboxState)> = due.into_iter().map(|e| (e.to, e.state)).collect();
    for e in store.sessions().in_flight().expect("in flight") {
        if !out.iter().any(|(to, _)| *to == e.to) {
            out.push((e.to, e.state));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_api_down_and_a_kill_in_between_each_message_once() {
    let rig = Rig::new(&[]).await;
    rig.graph.set_down(true);
    let customers = ["14155550302", "14155550303", "14155550304"];
    let server = rig.serve();
    let mut ids = Vec::new();
    for c in customers {
        let s = server
            .api
            .start("password_reset", &format!("+{c}"), json!({}))
            .await;
        ids.push(s["id"].as_str().expect("id").to_owned());
    }
    for c in customers {
        wait_for("a refused attempt", || {
            (!rig.graph.sends_to(c).is_empty()).then_some(())
        })
        .await;
    }
    server.kill9();

    // What the dead process left: queued entries must go exactly once; one caught in flight
    // (sent, answer unknown) must not go again.
    let left = outbox_states(&rig.data());
    rig.graph.set_down(false);
    let server = rig.serve();
    for c in customers {
        let state = left
            .iter()
            .find(|(to, _)| to == c)
            .map(|(_, s)| s.clone())
            .expect("every code entry is still in the outbox");
        if state == OutboxState::Pending {
            rig.graph.wait_accepted(c, 1).await;
        }
    }
    outbox_empty(&server.api).await;
    for (c, id) in customers.iter().zip(&ids) {
        let accepted = rig.graph.accepted_to(c);
        assert!(accepted.len() <= 1, "never twice to {c}");
        if let Some((body, _)) = accepted.first() {
            let code = auth_code(body).expect("code");
            assert_eq!(server.api.check(id, &code).await["valid"], true);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_code_on_disk_or_in_trace_logs() {
    let rig = Rig::new(&[]).await;
    let server = ChildServer::start(&rig.vars(), "trace");
    // A one-time dashboard link is a login: its token must not reach the log with the path.
    let link: Value = server
        .api
        .http
        .post(format!("{}/dashboard/link", server.api.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let path = link["path"].as_str().expect("path").to_owned();
    let token = path.rsplit('/').next().expect("token").to_owned();
    let used = server
        .api
        .http
        .get(format!("{}{path}", server.api.base))
        .send()
        .await
        .expect("sent");
    // It logged in: the answer redirected to the dashboard (which, without the cookie, asks again).
    assert_eq!(used.url().path(), "/dashboard", "the link was not taken");
    server.wait_log(&["/dashboard/once/"]).await;
    // Eight digits: a chance match among the other digits on disk or in the log is negligible.
    let s = server
        .api
        .start("password_reset", "+14155550305", json!({}))
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    let accepted = rig.graph.wait_accepted("14155550305", 1).await;
    let code = auth_code(&accepted[0].0).expect("code");
    assert_eq!(code.len(), 8);
    let checked = server.api.check(&id, &code).await;
    assert_eq!(checked["valid"], true);
    rig.merchant.completed(&id).await;
    outbox_empty(&server.api).await;

    // A second code, typed by the customer in the chat.
    let s = server
        .api
        .start("password_reset", "+14155550306", json!({}))
        .await;
    let chat_id = s["id"].as_str().expect("id").to_owned();
    let accepted = rig.graph.wait_accepted("14155550306", 1).await;
    let chat_code = auth_code(&accepted[0].0).expect("code");
    server.api.text("14155550306", &chat_code).await;
    assert_eq!(
        server.api.wait_completed(&chat_id).await["outcome"],
        "verified"
    );
    rig.graph.wait_accepted("14155550306", 2).await;
    outbox_empty(&server.api).await;

    let log = server.log_text();
    assert!(log.lines().count() > 50, "trace logging is on");
    for c in [&code, &chat_code] {
        assert!(!log.contains(c.as_str()), "code {c} in the log");
    }
    assert!(!log.contains(ACCESS_TOKEN), "the access token in the log");
    assert!(
        !log.contains(&token),
        "a one-time dashboard link in the log"
    );
    server.kill9();
    let found = files_containing(&rig.data(), code.as_bytes());
    assert!(found.is_empty(), "code {code} found on disk in {found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_keyword_is_not_taken_as_the_first_answer() {
    let rig = Rig::new(&[]).await.with_in_doubt_secs(20);
    let customer = "14155550307";
    let server = rig.serve();
    server.api.text(customer, "recover").await;
    rig.graph.wait_accepted(customer, 1).await;
    server.kill9();

    // Make it look as if the process died after the keyword's step but before the event was
    // marked handled: the next run replays it.
    let id = {
        let store = Store::open(&rig.data(), |_| {}).expect("reopen");
        let events = store.inbound().all().expect("events");
        assert_eq!(events.len(), 1);
        let mut pending = vec![b'p'];
        pending.extend_from_slice(&events[0].0.to_be_bytes());
        store
            .db()
            .open_tree("inbound")
            .expect("tree")
            .insert(pending, &[])
            .expect("mark pending");
        store.flush().expect("flush");
        store
            .sessions()
            .active(&scoped(customer), "account_recovery")
            .expect("store")
            .expect("the keyword started a session")
    };

    let server = rig.serve();
    rig.report_statuses(&server.api, customer).await;
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let m = server.api.metrics().await;
        if m.lines().any(|l| l == "waotp_inbound_pending 0") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "replay never handled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let s = server.api.session(&id).await;
    assert_eq!(s["state"], "ask_account", "{s}");
    assert!(s["vars"].get("account").is_none(), "{s}");
    outbox_empty(&server.api).await;
    assert!(rig.merchant.hook_calls("lookup_account").is_empty());
    assert_eq!(rig.graph.accepted_to(customer).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_its_turn_at_a_kill_is_still_sent() {
    let rig = Rig::new(&[]).await;
    let customer = "4915112345605";
    // The summary's send never gets an answer; the code waits behind it.
    rig.graph.http.push(Answer::Hang);
    let server = rig.serve();
    let s = server
        .api
        .start(
            "transaction_authorization",
            "+4915112345605",
            json!({"amount": "5", "currency": "EUR", "payee": "Acme"}),
        )
        .await;
    let id = s["id"].as_str().expect("id").to_owned();
    wait_for("the summary on its way", || {
        (!rig.graph.sends_to(customer).is_empty()).then_some(())
    })
    .await;
    server.kill9();

    let server = rig.serve();
    let accepted = rig.graph.wait_accepted(customer, 1).await;
    let code = auth_code(&accepted[0].0).expect("the code is sent after the restart");
    assert_eq!(server.api.check(&id, &code).await["valid"], true);
    outbox_empty(&server.api).await;
    // The summary, in doubt with no status ever coming, went once more — and only once.
    assert_eq!(
        template_sends(&rig.graph, customer, "transaction_summary"),
        2
    );
}
