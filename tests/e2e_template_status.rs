//! The server's watch on its templates, with the real binary as a child process and a fake
//! Graph API holding the WhatsApp Business Account's templates: the check at start (a warning
//! per flow, or a refusal with `WAOTP_REQUIRE_APPROVED_TEMPLATES`), and
//! `message_template_status_update` / `message_template_quality_update` webhooks shaped as Meta
//! documents them — stored across a restart, exported as metrics, called back to the merchant,
//! and ending a session whose template is paused instead of sending it.

mod e2e_support;

use e2e_support::*;
use serde_json::{json, Value};
use std::collections::HashMap;

const SUMMARY_ID: u64 = 1689556908129832;

/// The account holds every template of the bundled flows, approved, as `waotp templates push`
/// would have created them.
fn approve_all(graph: &Graph) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waotp"))
        .args(["templates", "list", "flows"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("waotp runs");
    let bodies: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    let mut account = graph.account.lock().expect("account");
    account.page_size = 100;
    for b in bodies {
        let (name, language) = (
            b["name"].as_str().unwrap_or_default().to_owned(),
            b["language"].as_str().unwrap_or_default().to_owned(),
        );
        let id = account.add(&name, &language, "APPROVED", b);
        // As Meta lists it: `quality_score.score`.
        let t = account
            .templates
            .iter_mut()
            .find(|t| t["id"] == id.as_str());
        t.expect("added")["quality_score"] = json!({"score": "GREEN", "date": 1751247548});
    }
}

fn vars(data: &std::path::Path, graph: &Graph, merchant: &Merchant) -> HashMap<String, String> {
    let mut v = server_vars(data, &bundled_flows(), graph, merchant);
    v.insert("WAOTP_WABA_ID".into(), WABA_ID.into());
    v
}

/// A template change as Meta posts it: one entry for the business account, one change.
fn template_change(field: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": WABA_ID,
            "time": 1751247548,
            "changes": [{ "value": value, "field": field }],
        }],
    })
}

fn status_update(event: &str, reason: &str) -> Value {
    template_change(
        "message_template_status_update",
        json!({
            "event": event,
            "message_template_id": SUMMARY_ID,
            "message_template_name": "cod_order_summary",
            "message_template_language": "en",
            "reason": reason,
            "message_template_category": "UTILITY",
        }),
    )
}

async fn template_callback(merchant: &Merchant, kind: &str) -> Value {
    let r = wait_for(&format!("a {kind} callback"), || {
        merchant
            .callbacks()
            .into_iter()
            .find(|r| r.json()["type"] == kind)
    })
    .await;
    verify_callback(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_template_is_stored_exported_called_back_and_ends_sessions_after_a_restart() {
    let graph = Graph::start().await;
    let merchant = Merchant::start().await;
    approve_all(&graph);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = ChildServer::start(&vars(&data, &graph, &merchant), "info");
    assert!(
        !server.log_text().contains("is not approved"),
        "every template approved: no warning"
    );
    // The start-up check reads each template's quality score too.
    let metrics = server.api.metrics().await;
    assert!(
        metrics.contains(
            r#"waotp_template_quality{template="cod_order_summary",language="en",state="green"} 1"#
        ),
        "{metrics}"
    );

    server.api.webhook(status_update("PAUSED", "NONE")).await;
    let cb = template_callback(&merchant, "template.status_updated").await;
    assert_eq!(cb["template"]["name"], "cod_order_summary");
    assert_eq!(cb["template"]["language"], "en");
    assert_eq!(cb["template"]["id"], SUMMARY_ID.to_string());
    assert_eq!(cb["template"]["status"], "paused");
    assert_eq!(cb["template"]["previous_status"], "approved");
    let metrics = server.api.metrics().await;
    assert!(
        metrics.contains(
            r#"waotp_template_status{template="cod_order_summary",language="en",state="paused"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"waotp_template_status{template="cod_order_summary",language="en",state="approved"} 0"#
    ));
    let dashboard = server
        .api
        .http
        .get(format!("{}/dashboard", server.api.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("dashboard")
        .text()
        .await
        .expect("page");
    assert!(
        dashboard
            .contains("<tr class=\"bad\"><td>cod_order_summary</td><td>en</td><td>paused</td>"),
        "{dashboard}"
    );

    // The status survives a crash: the next start does not ask Meta (no account id), yet knows.
    server.kill9();
    let mut restart = vars(&data, &graph, &merchant);
    restart.remove("WAOTP_WABA_ID");
    let server = ChildServer::start(&restart, "info");
    let customer = "14155550777";
    let session = server
        .api
        .start(
            "cod_confirmation",
            &format!("+{customer}"),
            json!({"customer_name": "Asha", "order_id": "A-1", "total": "₹10"}),
        )
        .await;
    let id = session["id"].as_str().expect("id").to_owned();
    let done = server.api.wait_completed(&id).await;
    assert_eq!(done["outcome"], "undeliverable", "{done}");
    assert_eq!(done["delivery_failure"], "template_paused", "{done}");
    assert!(
        graph.sends_to(customer).is_empty(),
        "a paused template is not sent"
    );

    // Approved again: sends go out.
    server.api.webhook(status_update("APPROVED", "NONE")).await;
    let again = server
        .api
        .start(
            "cod_confirmation",
            "+14155550778",
            json!({"customer_name": "Asha", "order_id": "A-2", "total": "₹10"}),
        )
        .await;
    let sent = graph.wait_accepted("14155550778", 1).await;
    assert_eq!(sent[0].0["template"]["name"], "cod_order_summary");
    assert!(again["id"].is_string());
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_and_quality_changes_are_called_back_as_meta_reports_them() {
    let graph = Graph::start().await;
    let merchant = Merchant::start().await;
    approve_all(&graph);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::start(&vars(&dir.path().join("data"), &graph, &merchant), "info");

    let mut rejected = status_update("REJECTED", "INVALID_FORMAT");
    rejected["entry"][0]["changes"][0]["value"]["rejection_info"] = json!({
        "reason": "Your template has parameters placed next to each other (like {{1}}{{2}}) without text or punctuation between them.",
        "recommendation": "Separate parameters with descriptive text.",
    });
    server.api.webhook(rejected.clone()).await;
    let cb = template_callback(&merchant, "template.status_updated").await;
    assert_eq!(cb["template"]["status"], "rejected");
    assert_eq!(cb["template"]["reason"], "INVALID_FORMAT");
    assert!(cb["template"]["rejection_detail"]
        .as_str()
        .unwrap_or_default()
        .contains("next to each other"));
    // WhatsApp delivering the same change again gives the merchant the same event id.
    server.api.webhook(rejected).await;

    server
        .api
        .webhook(template_change(
            "message_template_quality_update",
            json!({
                "previous_quality_score": "GREEN",
                "new_quality_score": "YELLOW",
                "message_template_id": SUMMARY_ID,
                "message_template_name": "cod_order_summary",
                "message_template_language": "en",
            }),
        ))
        .await;
    let q = template_callback(&merchant, "template.quality_updated").await;
    assert_eq!(q["template"]["new_quality_score"], "yellow");
    assert_eq!(q["template"]["previous_quality_score"], "green");
    let metrics = server.api.metrics().await;
    assert!(
        metrics.contains(
            r#"waotp_template_quality{template="cod_order_summary",language="en",state="yellow"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"waotp_template_status{template="cod_order_summary",language="en",state="rejected"} 1"#
    ));
    let ids: std::collections::BTreeSet<String> = merchant
        .callbacks()
        .iter()
        .filter(|r| r.json()["type"] == "template.status_updated")
        .map(|r| r.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one event id for one change: {ids:?}");
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_warns_of_unapproved_templates_or_refuses_when_required() {
    let graph = Graph::start().await;
    let merchant = Merchant::start().await;
    approve_all(&graph);
    {
        let mut account = graph.account.lock().expect("account");
        account
            .templates
            .retain(|t| t["name"] != "cod_order_reminder");
        let t = account
            .find_mut("transaction_summary", "en")
            .expect("listed");
        t["status"] = json!("REJECTED");
        t["rejected_reason"] = json!("TAG_CONTENT_MISMATCH");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = ChildServer::start(&vars(&data, &graph, &merchant), "info");
    let line = server
        .wait_log(&["cod_confirmation", "cod_order_reminder [en]: missing"])
        .await;
    assert!(line.contains("WARN"), "{line}");
    server
        .wait_log(&[
            "transaction_authorization",
            "transaction_summary [en]: rejected (TAG_CONTENT_MISMATCH)",
        ])
        .await;
    assert!(
        !server.log_text().contains("\"flow\":\"password_reset\""),
        "flows whose templates are approved are not named"
    );
    server.kill9();

    let mut strict = vars(&data, &graph, &merchant);
    strict.insert("WAOTP_REQUIRE_APPROVED_TEMPLATES".into(), "true".into());
    let (code, stderr) = serve_until_exit(&strict).expect("the server refuses to start");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("WAOTP_REQUIRE_APPROVED_TEMPLATES is set and templates are not approved"),
        "{stderr}"
    );
    assert!(
        stderr.contains("flow `cod_confirmation`: cod_order_reminder [en]: missing"),
        "{stderr}"
    );
}

/// The status callback for Meta's event `event` (its event id names the event).
async fn status_callback(merchant: &Merchant, event: &str) -> Value {
    let needle = format!("_status_updated_{event}_");
    let r = wait_for(&format!("the {event} status callback"), || {
        merchant.callbacks().into_iter().find(|r| {
            r.json()["id"]
                .as_str()
                .is_some_and(|id| id.contains(&needle))
        })
    })
    .await;
    verify_callback(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagged_and_reinstated_are_events_not_statuses_as_meta_documents_them() {
    let graph = Graph::start().await;
    let merchant = Merchant::start().await;
    approve_all(&graph);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::start(&vars(&dir.path().join("data"), &graph, &merchant), "info");

    // FLAGGED: negative feedback, at risk of being disabled on `disable_info.disable_date`; the
    // template stays approved and can still be sent.
    let mut flagged = status_update("FLAGGED", "NONE");
    flagged["entry"][0]["changes"][0]["value"]["disable_info"] =
        json!({ "disable_date": 1751234563 });
    server.api.webhook(flagged).await;
    let cb = status_callback(&merchant, "flagged").await;
    assert_eq!(cb["template"]["event"], "flagged", "{cb}");
    assert_eq!(cb["template"]["status"], "approved", "{cb}");
    assert_eq!(cb["template"]["previous_status"], "approved", "{cb}");
    assert_eq!(cb["template"]["disable_date"], 1751234563, "{cb}");
    let metrics = server.api.metrics().await;
    assert!(
        metrics.contains(
            r#"waotp_template_status{template="cod_order_summary",language="en",state="approved"} 1"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"state="flagged""#), "{metrics}");
    server
        .api
        .start(
            "cod_confirmation",
            "+14155550781",
            json!({"customer_name": "Asha", "order_id": "A-3", "total": "₹10"}),
        )
        .await;
    let sent = graph.wait_accepted("14155550781", 1).await;
    assert_eq!(sent[0].0["template"]["name"], "cod_order_summary");

    // PAUSED, with the pause Meta explains in `other_info`.
    let mut paused = status_update("PAUSED", "NONE");
    paused["entry"][0]["changes"][0]["value"]["other_info"] = json!({
        "title": "FIRST_PAUSE",
        "description": "Your WhatsApp message template has been paused for 3 hours.",
    });
    server.api.webhook(paused).await;
    let cb = status_callback(&merchant, "paused").await;
    assert_eq!(cb["template"]["status"], "paused", "{cb}");
    assert_eq!(cb["template"]["pause"]["title"], "FIRST_PAUSE", "{cb}");
    assert!(cb["template"]["pause"]["description"]
        .as_str()
        .unwrap_or_default()
        .contains("3 hours"));

    // REINSTATED: sendable again, so approved.
    server
        .api
        .webhook(status_update("REINSTATED", "NONE"))
        .await;
    let cb = status_callback(&merchant, "reinstated").await;
    assert_eq!(cb["template"]["status"], "approved", "{cb}");
    assert_eq!(cb["template"]["previous_status"], "paused", "{cb}");
    server
        .api
        .start(
            "cod_confirmation",
            "+14155550782",
            json!({"customer_name": "Asha", "order_id": "A-4", "total": "₹10"}),
        )
        .await;
    graph.wait_accepted("14155550782", 1).await;
    let metrics = server.api.metrics().await;
    assert!(!metrics.contains(r#"state="reinstated""#), "{metrics}");
    server.kill9();
}
