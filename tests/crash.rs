//! Durability across a real crash: the server process is killed with SIGKILL right after it
//! answered 200, and the acknowledged events are still there when the database is reopened —
//! and are handled by the next run. And a message whose send was in flight at the kill is
//! neither lost nor silently sent twice: the next run holds it in doubt, settles it as sent when
//! WhatsApp's status webhook echoes its entry id, and else sends it once more after the wait.

mod common;
mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};
use waotp::store::Store;

/// Starts `waotp serve` on port 0 with the test settings.
fn start_server(dir: &std::path::Path) -> (Child, String) {
    common::spawn_serve(common::test_vars(dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, address) = start_server(dir.path());
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let id = format!("wamid.crash-{i}");
        let body = common::text_message(&id, &format!("1555000{:04}", i % 3), "before the crash");
        let res = common::post_signed(&client, &format!("http://{address}"), body).await;
        assert_eq!(res.status(), 200);
        acknowledged.push(id);
    }
    // SIGKILL: no shutdown hook, no final flush.
    child.kill().expect("kill");
    child.wait().expect("reaped");

    {
        let store = Store::open(&dir.path().join("data"), |_| {}).expect("reopen after crash");
        for id in &acknowledged {
            assert!(
                store
                    .inbound()
                    .seen(&format!("m\u{0}{id}"))
                    .expect("lookup"),
                "{id} was acknowledged but lost"
            );
        }
        assert_eq!(store.inbound().len(), acknowledged.len());
    }

    // The next run handles whatever the killed one had not, and redeliveries stay deduplicated.
    let (mut child, address) = start_server(dir.path());
    let body = common::text_message(&acknowledged[0], "15550000000", "before the crash");
    let res = common::post_signed(&client, &format!("http://{address}"), body).await;
    assert_eq!(res.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = common::metrics(&client, &format!("http://{address}")).await;
        if metrics.contains("waotp_inbound_pending 0") {
            assert!(
                metrics.contains("waotp_events_deduplicated_total 1"),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replayed events not handled: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A graceful stop (SIGTERM) exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = child.wait().expect("exit");
    assert!(exit.success(), "graceful shutdown exited with {exit}");
}

const API_KEY: &str = "crash-key";

/// A production-mode server talking to `graph`, with a short in-doubt wait.
fn graph_vars(
    dir: &std::path::Path,
    graph: &support::graph_fake::GraphFake,
    in_doubt_secs: u64,
) -> std::collections::HashMap<String, String> {
    let mut vars = common::test_vars(dir);
    for (k, v) in [
        ("WAOTP_ACCESS_TOKEN", support::graph_fake::TOKEN.to_owned()),
        (
            "WAOTP_PHONE_NUMBER_ID",
            support::graph_fake::PHONE_NUMBER_ID.to_owned(),
        ),
        ("WAOTP_GRAPH_URL", graph.base_url()),
        ("WAOTP_API_KEYS", API_KEY.to_owned()),
        ("WAOTP_CALLBACK_SECRET", "crash-callback-secret".to_owned()),
        ("WAOTP_IN_DOUBT_SECONDS", in_doubt_secs.to_string()),
        // The bundled identity flows name it; these runs drive no hook.
        ("WAOTP_HOOK_BASE_URL", "http://127.0.0.1:9/hooks".to_owned()),
    ] {
        vars.insert(k.to_owned(), v);
    }
    vars
}

/// The message sends (not read receipts) the fake Graph API received.
fn graph_sends(graph: &support::graph_fake::GraphFake) -> Vec<serde_json::Value> {
    graph
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|b| b.get("status").is_none())
        .collect()
}

/// Starts a sign-up verification whose code send never gets an answer, and kills the server
/// with SIGKILL while that send is in flight. Returns the session id and the send's body.
async fn killed_mid_send(
    dir: &std::path::Path,
    graph: &support::graph_fake::GraphFake,
    client: &reqwest::Client,
) -> (String, serde_json::Value) {
    graph.hang();
    let (mut child, address) = common::spawn_serve(graph_vars(dir, graph, 1));
    let started: serde_json::Value = client
        .post(format!("http://{address}/v1/sessions"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"flow": "signup_verification", "to": "+14155550301"}))
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("session");
    let id = started["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let sent = loop {
        if let Some(sent) = graph_sends(graph).pop() {
            break sent;
        }
        assert!(Instant::now() < deadline, "the code was never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().expect("kill");
    child.wait().expect("reaped");
    (id, sent)
}

/// Waits until the server at `address` has nothing left in its outbox.
/// Waits until the outbox is empty. The depth gauge is recounted twice a second and reads 0
/// before its first count, so it must read 0 on two looks more than a count apart.
async fn outbox_empty(client: &reqwest::Client, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut empty_since: Option<Instant> = None;
    loop {
        let metrics = common::metrics(client, &format!("http://{address}")).await;
        if metrics.contains("waotp_outbox_depth 0\n") {
            let since = *empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(1200) {
                return;
            }
        } else {
            empty_since = None;
        }
        assert!(Instant::now() < deadline, "outbox never emptied: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the Graph fake has taken `n` sends.
async fn sends_reach(graph: &support::graph_fake::GraphFake, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while graph_sends(graph).len() < n {
        assert!(Instant::now() < deadline, "only {:?}", graph_sends(graph));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check_code(client: &reqwest::Client, address: &str, id: &str, code: &str) -> bool {
    let answer: serde_json::Value = client
        .post(format!("http://{address}/v1/sessions/{id}/check"))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .expect("check")
        .json()
        .await
        .expect("answer");
    answer["valid"] == true
}

fn code_of(body: &serde_json::Value) -> String {
    body["template"]["components"][0]["parameters"][0]["text"]
        .as_str()
        .expect("the code")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_flight_at_sigkill_is_sent_once_more_when_no_status_comes() {
    let graph = support::graph_fake::GraphFake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let (id, first) = killed_mid_send(dir.path(), &graph, &client).await;

    // WhatsApp never reports a status for it: after the wait it goes once more, the same code.
    let (mut child, address) = common::spawn_serve(graph_vars(dir.path(), &graph, 1));
    sends_reach(&graph, 2).await;
    outbox_empty(&client, &address).await;
    let sends = graph_sends(&graph);
    assert_eq!(sends.len(), 2, "sent once more, and only once: {sends:?}");
    assert_eq!(sends[1], first);
    assert!(check_code(&client, &address, &id, &code_of(&first)).await);
    child.kill().expect("kill");
    child.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_flight_at_sigkill_is_not_sent_again_once_its_status_came() {
    let graph = support::graph_fake::GraphFake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    let (id, first) = killed_mid_send(dir.path(), &graph, &client).await;
    let tracker = first["biz_opaque_callback_data"]
        .as_str()
        .expect("the send carries its entry id")
        .to_owned();

    // Meta had taken it: its status webhook, echoing the entry id, reaches the next run well
    // within the (here generous) wait.
    let (mut child, address) = common::spawn_serve(graph_vars(dir.path(), &graph, 20));
    let status = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1",
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881",
                         "phone_number_id": support::graph_fake::PHONE_NUMBER_ID},
            "statuses": [{"id": "wamid.meta.1", "status": "sent",
                          "timestamp": chrono::Utc::now().timestamp().to_string(),
                          "recipient_id": "14155550301",
                          "biz_opaque_callback_data": tracker}]}}]}]})
    .to_string();
    let res = common::post_signed(&client, &format!("http://{address}"), status).await;
    assert_eq!(res.status(), 200);
    outbox_empty(&client, &address).await;
    assert_eq!(graph_sends(&graph).len(), 1, "not sent a second time");
    assert!(check_code(&client, &address, &id, &code_of(&first)).await);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("SIGTERM");
    assert!(status.success());
    assert!(child.wait().expect("exit").success());
    let store = Store::open(&dir.path().join("data"), |_| {}).expect("reopen");
    let link = store
        .sessions()
        .link("wamid.meta.1")
        .expect("read")
        .expect("the reported message id is linked");
    assert_eq!(link.entry_id, tracker);
}
