//! Reloading the tenants file on the real binary (sandbox mode, the bundled flows): a number
//! added to the file starts receiving without a restart; a number removed again stops (its
//! events are acknowledged, counted and ignored); an invalid file is logged with its
//! `file:line:col` error while the last good merchants and numbers stay in force; `SIGHUP`
//! reloads an unchanged file.

mod e2e_support;

use e2e_support::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use waotp::tenants::KeyDigest;

const KEY: &str = "reload-merchant-key";
/// The number the file declares from the start, and the one added and removed again.
const FIRST: &str = "3001";
const SECOND: &str = "3002";

/// The tenants file: merchant `shop` with `numbers`, the bundled flows, no tokens (sandbox).
fn tenants_text(numbers: &[&str]) -> String {
    let mut text = format!(
        "[[merchant]]\nid = \"shop\"\napi_keys = [\"sha256:{}\"]\nflows = {:?}\n",
        KeyDigest::of(KEY.as_bytes()).hex(),
        bundled_flows().display().to_string(),
    );
    for n in numbers {
        text.push_str(&format!(
            "\n[[merchant.number]]\nphone_number_id = \"{n}\"\nbusiness_number = \"+1555000{n}\"\n"
        ));
    }
    text
}

/// Replaces the file in one step, so the 2-second poll never sees half a file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The keyword `recover` (the bundled account-recovery flow) from `customer` to `number`.
async fn keyword(server: &ChildServer, number: &str, customer: &str) {
    server
        .api
        .webhook(envelope_for(
            number,
            &format!("1555000{number}"),
            json!({
                "contacts": [{"profile": {"name": "Kerry"}, "wa_id": customer}],
                "messages": [{"from": customer, "id": new_wamid(), "timestamp": now_secs(),
                              "type": "text", "text": {"body": "recover"}}]
            }),
        ))
        .await;
}

/// The merchant's sessions (of `customer` only, when given), through its own key.
async fn sessions(server: &ChildServer, customer: Option<&str>) -> Vec<Value> {
    let mut url = format!("{}/v1/sessions?limit=200", server.api.base);
    if let Some(c) = customer {
        url.push_str(&format!("&customer=%2B{c}"));
    }
    let res = server
        .api
        .http
        .get(url)
        .bearer_auth(KEY)
        .send()
        .await
        .expect("list");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    body["sessions"].as_array().cloned().expect("sessions")
}

fn count_lines(server: &ChildServer, needle: &str) -> usize {
    server
        .log
        .lock()
        .expect("log")
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

async fn wait_reloads(server: &ChildServer, more_than: usize) {
    wait_for("the tenants file to be reloaded", || {
        (count_lines(server, "tenants file reloaded") > more_than).then_some(())
    })
    .await;
}

fn unknown_number_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("waotp_events_other_number_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `check` (an async read of the server) until it holds, for up to [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_file_is_reloaded_when_it_changes_and_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tenants.toml");
    write(&file, &tenants_text(&[FIRST]));
    let vars: HashMap<String, String> = [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "WAOTP_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("WAOTP_TENANTS", file.display().to_string()),
        ("WAOTP_APP_SECRET", APP_SECRET.to_owned()),
        ("WAOTP_VERIFY_TOKEN", VERIFY_TOKEN.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let server = ChildServer::start(&vars, "info");

    // (a) A second number added to the file receives, without a restart: its customer's
    // keyword is posted until a session exists for it.
    let reloads = count_lines(&server, "tenants file reloaded");
    write(&file, &tenants_text(&[FIRST, SECOND]));
    eventually("a session at the added number", || async {
        keyword(&server, SECOND, "919800000002").await;
        !sessions(&server, Some("919800000002")).await.is_empty()
    })
    .await;
    assert!(count_lines(&server, "tenants file reloaded") > reloads);

    // (b) Removed again: an event for it is acknowledged, counted as an unknown number's and
    // stored nowhere.
    let reloads = count_lines(&server, "tenants file reloaded");
    write(&file, &tenants_text(&[FIRST]));
    wait_reloads(&server, reloads).await;
    // The log line comes just before the new registry is put in place: wait for the API to
    // refuse the number too (a read that stores nothing).
    eventually("the removed number to be refused", || async {
        let res = server
            .api
            .http
            .get(format!(
                "{}/v1/sandbox/messages?to=%2B919800000003&from={SECOND}",
                server.api.base
            ))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("listing");
        res.status() == 400
            && res.json::<Value>().await.expect("json")["error"]["code"] == "unknown_number"
    })
    .await;
    let unknown_before = unknown_number_total(&server.api.metrics().await);
    let stored_before = sessions(&server, None).await.len();
    keyword(&server, SECOND, "919800000003").await;
    assert_eq!(
        unknown_number_total(&server.api.metrics().await),
        unknown_before + 1
    );
    // An event for the configured number, posted after, is handled: by then the one before it
    // would have been too.
    keyword(&server, FIRST, "919800000004").await;
    eventually("a session at the first number", || async {
        !sessions(&server, Some("919800000004")).await.is_empty()
    })
    .await;
    assert!(sessions(&server, Some("919800000003")).await.is_empty());
    assert_eq!(sessions(&server, None).await.len(), stored_before + 1);

    // (c) An invalid file is logged at its position and the last good registry stays.
    let mut broken = tenants_text(&[FIRST]);
    broken.push_str("\n[[merchant.number]]\nphone_number_id = \"30x1\"\n");
    let line = broken.lines().count();
    write(&file, &broken);
    let logged = server
        .wait_log(&[&format!("tenants.toml:{line}:19"), "30x1"])
        .await;
    assert!(logged.contains("previous merchants and numbers stay in force"));
    keyword(&server, FIRST, "919800000005").await;
    eventually("a session at the first number", || async {
        !sessions(&server, Some("919800000005")).await.is_empty()
    })
    .await;

    // A valid file again, then SIGHUP reloads it although it did not change.
    let reloads = count_lines(&server, "tenants file reloaded");
    write(&file, &tenants_text(&[FIRST]));
    wait_reloads(&server, reloads).await;
    let reloads = count_lines(&server, "tenants file reloaded");
    server.signal("HUP");
    wait_reloads(&server, reloads).await;
}
