//! The server's watch on its templates, with the real binary as a child process and a fake
//! Graph API holding the WhatsApp Business Account's templates: the check at start (a warning
//! per flow, or a refusal with `WAOTP_REQUIRE_APPROVED_TEMPLATES`), and
//! `message_template_status_update` / `message_template_quality_update` webhooks shaped as Meta
//! documents them — stored across a restart, exported as metrics, called back to the merchant,
//! and ending a session whose template is paused instead of sending it; with two merchants of
//! two WhatsApp Business Accounts, a pause at one account is the business of its merchant only.

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
            r#"waotp_template_quality{template="cod_order_summary",language="en",state="green",waba="102290129340398"} 1"#
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
            r#"waotp_template_status{template="cod_order_summary",language="en",state="paused",waba="102290129340398"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"waotp_template_status{template="cod_order_summary",language="en",state="approved",waba="102290129340398"} 0"#
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
            r#"waotp_template_quality{template="cod_order_summary",language="en",state="yellow",waba="102290129340398"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"waotp_template_status{template="cod_order_summary",language="en",state="rejected",waba="102290129340398"} 1"#
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
            r#"waotp_template_status{template="cod_order_summary",language="en",state="approved",waba="102290129340398"} 1"#
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

/// Two sending merchants with an account each: `alpha` (the fake's account, every bundled
/// flow) and `beta` (the cash-on-delivery flow only).
const BETA_WABA: &str = "202290129340399";
const ALPHA_KEY: &str = "alpha-api-key";
const BETA_KEY: &str = "beta-api-key";

fn two_accounts(
    dir: &std::path::Path,
    graph: &Graph,
    alpha: &Merchant,
    beta: &Merchant,
) -> HashMap<String, String> {
    let digest = |k: &str| waotp::tenants::KeyDigest::of(k.as_bytes()).hex();
    let flows = bundled_flows().display().to_string();
    let cod = bundled_flows()
        .join("cod_confirmation.toml")
        .display()
        .to_string();
    let file = dir.join("tenants.toml");
    let text = format!(
        r#"[[merchant]]
id = "alpha"
api_keys = ["sha256:{}"]
callback_url = "{}"
callback_secret_env = "ALPHA_SECRET"
hook_base_url = "{}"
flows = {flows:?}
waba_id = "{WABA_ID}"

[[merchant.number]]
phone_number_id = "{PHONE_NUMBER_ID}"
business_number = "{BUSINESS_NUMBER}"
access_token_env = "ALPHA_TOKEN"

[[merchant]]
id = "beta"
api_keys = ["sha256:{}"]
callback_url = "{}"
callback_secret_env = "BETA_SECRET"
hook_base_url = "{}"
flow_files = [{cod:?}]
waba_id = "{BETA_WABA}"

[[merchant.number]]
phone_number_id = "106540352242999"
business_number = "+15550783999"
access_token_env = "BETA_TOKEN"
"#,
        digest(ALPHA_KEY),
        alpha.callback_url(),
        alpha.hook_base(),
        digest(BETA_KEY),
        beta.callback_url(),
        beta.hook_base(),
    );
    std::fs::write(&file, text).expect("tenants file");
    [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("WAOTP_DATA_DIR", dir.join("data").display().to_string()),
        ("WAOTP_TENANTS", file.display().to_string()),
        ("WAOTP_APP_SECRET", APP_SECRET.to_owned()),
        ("WAOTP_VERIFY_TOKEN", VERIFY_TOKEN.to_owned()),
        ("WAOTP_GRAPH_URL", graph.url()),
        ("ALPHA_TOKEN", ACCESS_TOKEN.to_owned()),
        ("BETA_TOKEN", "EAAG-beta-token".to_owned()),
        ("ALPHA_SECRET", CALLBACK_SECRET.to_owned()),
        ("BETA_SECRET", "beta-callback-secret".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Starts `cod_confirmation` (its first message is the `cod_order_summary` template) with
/// `key`; returns the session id.
async fn start_cod(api: &Api, key: &str, customer: &str) -> String {
    let res = api
        .http
        .post(format!("{}/v1/sessions", api.base))
        .bearer_auth(key)
        .json(
            &json!({"flow": "cod_confirmation", "to": format!("+{customer}"),
                      "vars": {"customer_name": "Asha", "order_id": "A-9", "total": "₹10"}}),
        )
        .send()
        .await
        .expect("start");
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

/// The session `id` once completed, read with the merchant's `key`.
async fn wait_completed_as(api: &Api, key: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let res = api
            .http
            .get(format!("{}/v1/sessions/{id}", api.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("session");
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.expect("json");
        if body["status"] == "completed" {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not completed: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn dashboard(api: &Api, key: &str) -> String {
    api.http
        .get(format!("{}/dashboard", api.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("dashboard")
        .text()
        .await
        .expect("page")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_paused_in_one_merchants_account_blocks_only_that_merchant() {
    let graph = Graph::start().await;
    let alpha = Merchant::start().await;
    let beta = Merchant::start().await;
    approve_all(&graph);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::start(&two_accounts(dir.path(), &graph, &alpha, &beta), "info");

    // The check at start read alpha's account.
    let metrics = server.api.metrics().await;
    assert!(
        metrics.contains(r#"waotp_template_status{template="cod_order_summary",language="en",state="approved",waba="102290129340398"} 1"#),
        "{metrics}"
    );

    // Meta pauses the template in alpha's account (the entry's id is the account).
    server.api.webhook(status_update("PAUSED", "NONE")).await;
    // Called back to alpha, signed with alpha's secret.
    let cb = template_callback(&alpha, "template.status_updated").await;
    assert_eq!(cb["template"]["status"], "paused");
    assert_eq!(cb["template"]["waba_id"], WABA_ID);

    // Alpha's send of it ends the session undelivered; beta's goes out.
    let paused = start_cod(&server.api, ALPHA_KEY, "14155550901").await;
    let done = wait_completed_as(&server.api, ALPHA_KEY, &paused).await;
    assert_eq!(done["delivery_failure"], "template_paused", "{done}");
    assert!(graph.sends_to("14155550901").is_empty());
    start_cod(&server.api, BETA_KEY, "14155550902").await;
    let sent = graph.wait_accepted("14155550902", 1).await;
    assert_eq!(sent[0].0["template"]["name"], "cod_order_summary");
    assert!(
        beta.callbacks().iter().all(|r| !r.json()["type"]
            .as_str()
            .unwrap_or_default()
            .starts_with("template.")),
        "beta hears nothing of alpha's account"
    );

    // Each dashboard shows its merchant's account and flows only.
    let paused_row = "<tr class=\"bad\"><td>cod_order_summary</td><td>en</td><td>paused</td>";
    let page = dashboard(&server.api, ALPHA_KEY).await;
    assert!(page.contains(paused_row), "{page}");
    assert!(
        page.contains(r#"data-flow="signup_verification""#),
        "{page}"
    );
    let page = dashboard(&server.api, BETA_KEY).await;
    assert!(page.contains("WhatsApp templates"), "{page}");
    assert!(!page.contains(paused_row), "{page}");
    assert!(page.contains(r#"data-flow="cod_confirmation""#), "{page}");
    assert!(
        !page.contains(r#"data-flow="signup_verification""#),
        "{page}"
    );
    server.kill9();

    // Requiring approved templates refuses the start for beta, whose account lacks them, and
    // says so of beta only.
    let mut strict = two_accounts(dir.path(), &graph, &alpha, &beta);
    strict.insert("WAOTP_REQUIRE_APPROVED_TEMPLATES".into(), "true".into());
    let (code, stderr) = serve_until_exit(&strict).expect("the server refuses to start");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("merchant `beta`: WAOTP_REQUIRE_APPROVED_TEMPLATES is set and templates are not approved"),
        "{stderr}"
    );
    assert!(!stderr.contains("merchant `alpha`"), "{stderr}");
}
