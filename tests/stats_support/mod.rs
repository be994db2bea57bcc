//! A real `waotp serve` process in sandbox mode, driven like a merchant and a customer would:
//! sessions through the API, customer replies through the sandbox, delivery statuses through
//! signed webhooks. Shared by the stats and dashboard tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "stats-test-key-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// A running server process and a client for it.
pub struct Server {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `waotp serve` on port 0 over `dir` and reads the bound address from its JSON log.
pub fn start(dir: &std::path::Path) -> Server {
    let mut vars = crate::common::test_vars(dir);
    vars.insert("WAOTP_API_KEYS".into(), API_KEY.into());
    vars.insert(
        "WAOTP_FLOWS_DIR".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/flows").into(),
    );
    let (child, address) = crate::common::spawn_serve(vars);
    Server {
        child,
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
    }
}

/// A webhook body with one delivery status.
pub fn status_body(message_id: &str, to: &str, status: &str, error: Option<i64>) -> String {
    let mut s = json!({"id": message_id, "status": status,
        "timestamp": chrono::Utc::now().timestamp().to_string(), "recipient_id": to});
    if let Some(code) = error {
        s["errors"] = json!([{"code": code, "title": "error"}]);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                  "statuses": [s]}}]}]})
    .to_string()
}

impl Server {
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(API_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.expect("json answer")
    }

    /// Starts `flow` for `to` (E.164) and returns the session id.
    pub async fn start_session(&self, flow: &str, to: &str) -> String {
        let s = self
            .api(
                reqwest::Method::POST,
                "/v1/sessions",
                Some(json!({"flow": flow, "to": to})),
            )
            .await;
        s["id"].as_str().expect("session id").to_owned()
    }

    /// Waits until the sandbox recorded the `n`th code (1-based) to `to`: its message id and code.
    pub async fn code(&self, to: &str, n: usize) -> (String, String) {
        let deadline = Instant::now() + WAIT;
        let path = format!("/v1/sandbox/messages?to={}", to.replace('+', "%2B"));
        loop {
            let all = self.api(reqwest::Method::GET, &path, None).await;
            let codes: Vec<&Value> = all["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .filter(|m| m["code"].is_string())
                .collect();
            if let Some(m) = codes.get(n - 1) {
                return (
                    m["id"].as_str().expect("id").to_owned(),
                    m["code"].as_str().expect("code").to_owned(),
                );
            }
            assert!(Instant::now() < deadline, "no code {n} for {to}: {all}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `flow` counts `n` codes sent. A code is counted once its message is linked
    /// to the session, so statuses posted after this find it (a status for an unknown message
    /// is dropped, and its redelivery deduplicated).
    pub async fn sent(&self, flow: &str, n: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.stats(Some(flow)).await;
            if s["codes_sent"].as_u64() == Some(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "codes sent never reached {n}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Posts a signed status webhook and waits until it was handled.
    pub async fn status(&self, message_id: &str, to: &str, status: &str, error: Option<i64>) {
        let body = status_body(message_id, to.trim_start_matches('+'), status, error);
        let res = self
            .client
            .post(format!("{}/webhook", self.base))
            .header("x-hub-signature-256", crate::common::sign(body.as_bytes()))
            .body(body)
            .send()
            .await
            .expect("webhook sent");
        assert_eq!(res.status(), 200);
        self.settle().await;
    }

    /// The customer `from` writes `text`; waits until it was handled.
    pub async fn say(&self, from: &str, text: &str) {
        self.api(
            reqwest::Method::POST,
            "/v1/sandbox/inbound",
            Some(json!({"from": from, "text": text})),
        )
        .await;
        self.settle().await;
    }

    /// Waits until every recorded inbound event was handled.
    pub async fn settle(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let metrics = crate::common::metrics(&self.client, &self.base).await;
            if metrics.contains("waotp_inbound_pending 0") {
                return;
            }
            assert!(Instant::now() < deadline, "events still pending");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the session completed and returns its outcome.
    pub async fn outcome(&self, id: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self
                .api(reqwest::Method::GET, &format!("/v1/sessions/{id}"), None)
                .await;
            if s["status"] == "completed" {
                return s["outcome"].as_str().unwrap_or_default().to_owned();
            }
            assert!(Instant::now() < deadline, "session never completed: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/v1/stats` over the hours around now (wide enough for any test run).
    pub async fn stats(&self, flow: Option<&str>) -> Value {
        let now = chrono::Utc::now();
        let mut path = format!(
            "/v1/stats?from={}&to={}",
            (now - chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%SZ"),
            (now + chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%SZ")
        );
        if let Some(f) = flow {
            path.push_str(&format!("&flow={f}"));
        }
        self.api(reqwest::Method::GET, &path, None).await
    }

    /// Stops the process gracefully (SIGTERM: finish, flush) and waits for it.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        let exit = self.child.wait().expect("exit");
        assert!(exit.success(), "graceful shutdown exited with {exit}");
    }
}
