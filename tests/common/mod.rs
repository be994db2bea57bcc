//! Shared test helpers: the real server on port 0 with a temporary sled directory.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use waotp::store::Store;
use waotp::webhook::signature::SignatureVerifier;
use waotp::{Application, Settings};

pub const APP_SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";

pub struct TestApp {
    pub base: String,
    pub store: Arc<Store>,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn test_vars(dir: &std::path::Path) -> HashMap<String, String> {
    [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("WAOTP_DATA_DIR", dir.join("data").display().to_string()),
        ("WAOTP_APP_SECRET", APP_SECRET.to_owned()),
        ("WAOTP_VERIFY_TOKEN", VERIFY_TOKEN.to_owned()),
        ("WAOTP_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The server with extra settings (e.g. `WAOTP_API_KEYS`).
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars = test_vars(dir.path());
    vars.insert(
        "WAOTP_FLOWS_DIR".to_owned(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/flows").to_owned(),
    );
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let settings = Settings::from_vars(vars).expect("test settings");
    let app = Application::build(settings).await.expect("server builds");
    let base = format!("http://{}", app.address());
    let store = app.store().expect("the embedded engine");
    tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        store,
        client: reqwest::Client::new(),
        dir,
    }
}

/// The store key of `customer` in the single-merchant sandbox setup (no phone number id): its
/// sessions, window and replies are kept under the default merchant's sandbox number.
pub fn sandbox_key(customer: &str) -> String {
    waotp::tenants::Scope::new(
        waotp::tenants::DEFAULT_MERCHANT,
        waotp::tenants::SANDBOX_NUMBER,
    )
    .customer_key(customer)
}

pub fn sign(body: &[u8]) -> String {
    SignatureVerifier::new(APP_SECRET.as_bytes()).sign(body)
}

impl TestApp {
    pub async fn post_webhook(&self, body: impl Into<Vec<u8>>) -> reqwest::Response {
        let body = body.into();
        let signature = sign(&body);
        self.post_webhook_with(body, Some(&signature)).await
    }

    pub async fn post_webhook_with(
        &self,
        body: impl Into<Vec<u8>>,
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/webhook", self.base))
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(sig) = signature {
            req = req.header("x-hub-signature-256", sig);
        }
        req.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("request sent")
    }

    /// Waits (polling, with a deadline) until every recorded event has been handled.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.store.inbound().pending_len() > 0 {
            assert!(Instant::now() < deadline, "events still pending after 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A webhook body with one text message.
pub fn text_message(message_id: &str, from: &str, body: &str) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": from}],
            "messages": [{"from": from, "id": message_id, "timestamp": "1700000000",
                          "type": "text", "text": {"body": body}}]
        }}]}]
    })
    .to_string()
}

/// Where the shared WhatsApp fixtures live, if present.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("WAOTP_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/webhooks-pywa")
        });
    dir.is_dir().then_some(dir)
}

/// Starts `waotp serve` as a child process with exactly `vars` (logging JSON at info, where the
/// bound address is reported) and returns it with that address.
pub fn spawn_serve(vars: HashMap<String, String>) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_waotp"))
        .arg("serve")
        .env_clear()
        .envs(vars)
        .env("WAOTP_LOG", "info")
        .env("WAOTP_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start waotp");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "listening" {
                    let _ = tx.send(v["address"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logged its address");
    (child, address)
}

/// POSTs `body` to the webhook of a server at `base` (`http://host:port`), signed with
/// [`APP_SECRET`] as Meta signs it.
pub async fn post_signed(client: &reqwest::Client, base: &str, body: String) -> reqwest::Response {
    client
        .post(format!("{base}/webhook"))
        .header("x-hub-signature-256", sign(body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("sent")
}

/// The `/metrics` text of a server at `base` (`http://host:port`).
pub async fn metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}
