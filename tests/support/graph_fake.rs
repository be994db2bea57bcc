//! A typed fake of the Graph API's `/{phone-number-id}/messages` endpoint.
//!
//! By default it accepts every message, numbering the ids it gives (`wamid.fake.1`, …), and every
//! read receipt (`{"success":true}`); `answer_*` queue other answers for the next requests, in
//! order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use waotp::whatsapp::{GraphClient, GraphTimeouts};

use super::http_fake::{Answer, HttpFake, Recorded};

pub const VERSION_PATH: &str = "/v23.0";
pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const TOKEN: &str = "EAAG-test-token-do-not-log";

pub struct GraphFake {
    http: HttpFake,
}

impl GraphFake {
    pub async fn start() -> GraphFake {
        let sent = Arc::new(AtomicU64::new(0));
        let http = HttpFake::start(move |request: &Recorded| {
            if request.json().get("status").is_some() {
                Answer::json(200, json!({ "success": true }))
            } else {
                let n = sent.fetch_add(1, Ordering::SeqCst) + 1;
                Answer::json(200, ok_body(&format!("wamid.fake.{n}")))
            }
        })
        .await;
        GraphFake { http }
    }

    /// What `WAOTP_GRAPH_URL` would be.
    pub fn base_url(&self) -> String {
        self.http.url(VERSION_PATH)
    }

    pub fn messages_path() -> String {
        format!("{VERSION_PATH}/{PHONE_NUMBER_ID}/messages")
    }

    /// A client of this fake with the test token and short timeouts.
    pub fn client(&self) -> GraphClient {
        GraphClient::with_timeouts(
            &self.base_url(),
            PHONE_NUMBER_ID,
            SecretString::from(TOKEN),
            GraphTimeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_millis(300),
            },
        )
        .expect("client builds")
    }

    /// The next send is accepted with this message id.
    pub fn answer_ok(&self, id: &str) -> &Self {
        self.http.push(Answer::json(200, ok_body(id)));
        self
    }

    /// The next call fails with Meta's error JSON for `code`.
    pub fn answer_error(&self, status: u16, code: i64) -> &Self {
        self.http.push(Answer::json(
            status,
            json!({ "error": {
                "message": format!("(#{code}) test error"),
                "type": "OAuthException",
                "code": code,
                "error_data": { "messaging_product": "whatsapp", "details": "test details" },
                "fbtrace_id": "AbCdEf123",
            }}),
        ));
        self
    }

    /// The next call gets this status and body verbatim.
    pub fn answer_raw(&self, status: u16, body: &str) -> &Self {
        self.http.push(Answer::raw(status, body));
        self
    }

    /// The next call never gets an answer.
    pub fn hang(&self) -> &Self {
        self.http.push(Answer::Hang);
        self
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.http.requests()
    }

    pub fn last_request(&self) -> Recorded {
        self.http.last_request()
    }
}

fn ok_body(id: &str) -> serde_json::Value {
    json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": "+16505551234", "wa_id": "16505551234" }],
        "messages": [{ "id": id }],
    })
}
