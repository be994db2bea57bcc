//! Sandbox mode end to end, as a new user meets it: no access token, a generated API key, and
//! the customer played through `/v1/sandbox/inbound` while `/v1/sandbox/messages` shows what the
//! bot sent — the README's `cod_confirmation` walk-through.

mod e2e_support;
mod pg_support;

use e2e_support::DEADLINE;
use serde_json::{json, Value};
use waotp::{Application, Settings};

struct Sandbox {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Sandbox {
    async fn get(&self, path: &str) -> Value {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        assert_eq!(res.status(), 200, "{path}");
        res.json().await.expect("JSON")
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("POST");
        (res.status().as_u16(), res.json().await.expect("JSON"))
    }

    async fn messages(&self, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let m = self.get("/v1/sandbox/messages?to=%2B919876543210").await;
            let list = m["messages"].as_array().expect("messages").clone();
            if list.len() >= n {
                return list;
            }
            assert!(std::time::Instant::now() < deadline, "{m}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cod_confirmation_in_sandbox_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let vars = [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "WAOTP_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("WAOTP_FLOWS_DIR", flows.display().to_string()),
        ("WAOTP_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = Settings::from_vars(vars).expect("sandbox settings");
    let app = Application::build(settings).await.expect("builds");
    let sandbox = Sandbox {
        base: format!("http://{}", app.address()),
        key: app.sandbox_key().expect("a generated key").to_owned(),
        http: reqwest::Client::new(),
    };
    tokio::spawn(app.run_until_stopped());

    let (status, session) = sandbox
        .post(
            "/v1/sessions",
            json!({"flow": "cod_confirmation", "to": "+919876543210",
                   "vars": {"customer_name": "Asha", "order_id": "A-1", "total": "₹1"}}),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id").to_owned();
    let first = sandbox.messages(1).await;
    let buttons: Vec<&str> = first[0]["buttons"]
        .as_array()
        .expect("the summary shows its buttons")
        .iter()
        .map(|b| b["id"].as_str().expect("id"))
        .collect();
    assert_eq!(buttons, ["confirm", "cancel"]);
    // The first message of an API-started session is the template: the sandbox shows its text
    // as the customer would read it, from the flow file's content.
    assert_eq!(
        first[0]["template"]["text"],
        "Hi Asha 👋 Please confirm your cash-on-delivery order A-1 of ₹1.\n[Confirm] [Cancel]",
        "{}",
        first[0]
    );

    let (status, _) = sandbox
        .post(
            "/v1/sandbox/inbound",
            json!({"from": "+919876543210", "button": "confirm"}),
        )
        .await;
    assert_eq!(status, 200);
    let messages = sandbox.messages(3).await;
    let code = messages
        .iter()
        .find_map(|m| m["code"].as_str())
        .expect("the sandbox shows the code")
        .to_owned();
    let auth = messages
        .iter()
        .find(|m| m["code"].is_string())
        .expect("the code message");
    assert!(
        auth["template"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("*······* is your verification code.")
                && t.contains("This code expires in 10 minutes.")),
        "{auth}"
    );
    let (status, _) = sandbox
        .post(
            "/v1/sandbox/inbound",
            json!({"from": "+919876543210", "text": code}),
        )
        .await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let s = sandbox.get(&format!("/v1/sessions/{id}")).await;
        if s["status"] == "completed" {
            assert_eq!(s["outcome"], "confirmed");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let last = sandbox.messages(4).await;
    assert!(last[3]["text"]
        .as_str()
        .expect("text")
        .contains("is confirmed"));
}

/// A customer message to a sandbox number queues no read receipt: the sandbox has none to show.
/// The PostgreSQL engine keeps settled outbox entries, so its outbox table shows everything the
/// steps queued. Skipped, with a notice, without `WAOTP_TEST_DATABASE_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_number_queues_no_read_receipts() {
    let Some(db) = pg_support::fresh_database("sandbox_receipts").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let vars = [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "WAOTP_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("WAOTP_FLOWS_DIR", flows.display().to_string()),
        ("WAOTP_DATABASE_URL", db.url.clone()),
        ("WAOTP_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let app = Application::build(Settings::from_vars(vars).expect("settings"))
        .await
        .expect("builds");
    let sandbox = Sandbox {
        base: format!("http://{}", app.address()),
        key: app.sandbox_key().expect("a generated key").to_owned(),
        http: reqwest::Client::new(),
    };
    tokio::spawn(app.run_until_stopped());
    let (status, session) = sandbox
        .post(
            "/v1/sessions",
            json!({"flow": "cod_confirmation", "to": "+919876543210",
                   "vars": {"customer_name": "Asha", "order_id": "A-1", "total": "₹1"}}),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id").to_owned();
    sandbox.messages(1).await;
    // Answered by a step that sends the code: with a token, that step's write would also
    // queue the tap's read receipt.
    let (status, _) = sandbox
        .post(
            "/v1/sandbox/inbound",
            json!({"from": "+919876543210", "button": "confirm"}),
        )
        .await;
    assert_eq!(status, 200);
    sandbox.messages(3).await;
    let client = pg_support::connect(&db.url).await;
    let ids: Vec<String> = client
        .query("SELECT id FROM waotp_outbox ORDER BY id", &[])
        .await
        .expect("outbox rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        ids.iter()
            .filter(|e| e.starts_with(&format!("{id}:")))
            .count()
            >= 3,
        "control: the session's messages are in the table: {ids:?}"
    );
    assert!(
        !ids.iter().any(|e| e.starts_with("read:")),
        "no read receipt queued: {ids:?}"
    );
}
