//! WhatsApp may report a message's status before our send call has returned. Here the fake
//! Graph API posts a signed `delivered` status webhook for the message it is about to accept and
//! waits until waotp has handled it, and only then answers the send: the status must still be
//! applied once the message's link exists (it is parked, not dropped as an unknown message).

mod e2e_support;

use actix_web::{web, App, HttpResponse, HttpServer};
use e2e_support::{Merchant, API_KEY, APP_SECRET};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use waotp::webhook::signature::SignatureVerifier;
use waotp::{Application, Settings};

const WAMID: &str = "wamid.early-status";

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_that_overtakes_the_send_answer_is_applied() {
    // Where waotp listens, known only after it started; the fake reads it on each request.
    let waotp: Arc<Mutex<String>> = Arc::default();
    let target = waotp.clone();
    let graph = HttpServer::new(move || {
        let target = target.clone();
        App::new().default_service(web::post().to(move |body: web::Json<serde_json::Value>| {
            let target = target.lock().expect("lock").clone();
            async move {
                let to = body["to"].as_str().unwrap_or_default().to_owned();
                let status = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
                    "field": "messages", "value": {
                        "metadata": {"display_phone_number": "15550783881",
                                     "phone_number_id": e2e_support::PHONE_NUMBER_ID},
                        "statuses": [{
                        "id": WAMID, "status": "delivered", "timestamp": "1700000000",
                        "recipient_id": to}]}}]}]})
                .to_string();
                let sig = SignatureVerifier::new(APP_SECRET.as_bytes()).sign(status.as_bytes());
                let client = reqwest::Client::new();
                let res = client
                    .post(format!("{target}/webhook"))
                    .header("x-hub-signature-256", sig)
                    .body(status)
                    .send()
                    .await
                    .expect("status posted");
                assert_eq!(res.status(), 200);
                // Wait until waotp has handled (parked) the status before accepting the send.
                let deadline = Instant::now() + Duration::from_secs(20);
                while !metrics(&target).await.contains("waotp_inbound_pending 0") {
                    assert!(Instant::now() < deadline, "status never handled");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                HttpResponse::Ok().json(json!({"messaging_product": "whatsapp",
                    "contacts": [{"input": to, "wa_id": to}], "messages": [{"id": WAMID}]}))
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind fake");
    let graph_url = format!("http://{}", graph.addrs()[0]);
    tokio::spawn(graph.run());

    let merchant = Merchant::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars = e2e_support::server_vars(
        dir.path(),
        &e2e_support::bundled_flows(),
        &e2e_support::Graph::start().await,
        &merchant,
    );
    vars.insert("WAOTP_GRAPH_URL".into(), graph_url);
    let app = Application::build(Settings::from_vars(vars).expect("settings"))
        .await
        .expect("build");
    let base = format!("http://{}", app.address());
    *waotp.lock().expect("lock") = base.clone();
    tokio::spawn(app.run_until_stopped());

    let res = reqwest::Client::new()
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(API_KEY)
        .json(&json!({"flow": "signup_verification", "to": "+14155550111"}))
        .send()
        .await
        .expect("start");
    assert_eq!(res.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics(&base).await;
        if m.contains("waotp_outbound_messages_total{status=\"delivered\",code=\"\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the early status was lost:\n{m}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
