//! Hot reload on the real binary: a flow file changed mid-session leaves the running session on
//! the version it started with and starts new sessions on the new one; a broken edit is refused
//! with `file:line:col` errors in the log while the service keeps serving.

mod e2e_support;

use e2e_support::*;
use serde_json::json;
use std::path::Path;

const OLD_TEXT: &str = "✅ Your number is verified. Welcome aboard!";
const NEW_TEXT: &str = "✅ Verified by version two.";

/// Replaces the file in one step, so the 2-second poll never sees half a file.
fn rewrite(path: &Path, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(path).expect("read flow");
    for (from, to) in edits {
        assert!(text.contains(from), "no `{from}` in {}", path.display());
        text = text.replace(from, to);
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Runs a signup session to `verified` by typing its code in the chat; returns the last text.
async fn finish(server: &ChildServer, graph: &Graph, id: &str, customer: &str) -> String {
    let accepted = graph.wait_accepted(customer, 1).await;
    let code = auth_code(&accepted[0].0).expect("code");
    server.api.text(customer, &code).await;
    assert_eq!(server.api.wait_completed(id).await["outcome"], "verified");
    let accepted = graph.wait_accepted(customer, 2).await;
    text_of(&accepted[1].0).expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_running_sessions_on_their_version_and_refuses_broken_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = flows_copy(dir.path(), &[]);
    let graph = Graph::start().await;
    let merchant = Merchant::start().await;
    let vars = server_vars(&dir.path().join("data"), &flows, &graph, &merchant);
    let server = ChildServer::start(&vars, "info");
    let file = flows.join("signup_verification.toml");

    let old = server
        .api
        .start("signup_verification", "+14155550401", json!({}))
        .await;
    assert_eq!(old["flow_version"], "1");
    let old_id = old["id"].as_str().expect("id").to_owned();

    rewrite(
        &file,
        &[("version = \"1\"", "version = \"2\""), (OLD_TEXT, NEW_TEXT)],
    );
    server.signal("HUP");
    server.wait_log(&["flows reloaded"]).await;

    let new = server
        .api
        .start("signup_verification", "+14155550402", json!({}))
        .await;
    assert_eq!(new["flow_version"], "2");
    let new_id = new["id"].as_str().expect("id").to_owned();
    assert_eq!(server.api.session(&old_id).await["flow_version"], "1");

    assert_eq!(
        finish(&server, &graph, &old_id, "14155550401").await,
        OLD_TEXT
    );
    assert_eq!(
        finish(&server, &graph, &new_id, "14155550402").await,
        NEW_TEXT
    );

    // A broken edit: an unknown key. The whole set is refused and the old one kept.
    rewrite(
        &file,
        &[(
            "kind = \"end\"\nmessage = \"verified\"",
            "kind = \"end\"\nmesage = \"verified\"",
        )],
    );
    server.signal("HUP");
    let line = server
        .wait_log(&["flow reload refused", "signup_verification.toml:"])
        .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    let text = v["fields"]["line"]
        .as_str()
        .or(v["line"].as_str())
        .expect("the error text")
        .to_owned();
    let position = text
        .split("signup_verification.toml:")
        .nth(1)
        .expect("file name");
    let mut parts = position.splitn(3, ':');
    let (row, col) = (parts.next().expect("line"), parts.next().expect("col"));
    assert!(
        row.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
        "file:line:col in `{text}`"
    );
    assert!(text.contains("mesage"), "{text}");

    let health = server
        .api
        .http
        .get(format!("{}/healthz", server.api.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let after = server
        .api
        .start("signup_verification", "+14155550403", json!({}))
        .await;
    assert_eq!(after["flow_version"], "2", "the last valid set still runs");
    let after_id = after["id"].as_str().expect("id").to_owned();
    assert_eq!(
        finish(&server, &graph, &after_id, "14155550403").await,
        NEW_TEXT
    );
}
