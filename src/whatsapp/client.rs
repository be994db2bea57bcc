//! The HTTP client of the Graph API: posts [`SendRequest`]s and read receipts to
//! `{base}/{phone_number_id}/messages` with the bearer token of that number. One [`GraphApi`]
//! (base URL, connection pool) serves every number of the deployment; each number gets its own
//! [`GraphClient`] from it.
//!
//! Owns the connection pool (rustls, keep-alive, connect and request timeouts) and the mapping of
//! every way a call can fail into a [`GraphError`]. It makes exactly one attempt per call:
//! retrying, rate limiting and choosing the template are the outbox's job, guided by
//! [`GraphError::class`]. It never logs bodies (they may hold a code) or the token.

use std::time::Duration;

use reqwest::{header, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::errors::GraphError;
use super::messages::{read_receipt_body, SendRequest};
use crate::domain::MessageId;
use crate::telemetry::Masked;

/// Meta answers a send in well under a second; anything slower is an outage worth retrying.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Meta's answers are a few hundred bytes; a larger one is not from Meta.
const MAX_ANSWER: usize = 64 * 1024;

/// Timeouts of the client; the defaults suit Meta's production API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphTimeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for GraphTimeouts {
    fn default() -> Self {
        GraphTimeouts {
            connect: CONNECT_TIMEOUT,
            request: REQUEST_TIMEOUT,
        }
    }
}

/// Why a client could not be built; a configuration problem, reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum GraphSetupError {
    #[error("WAOTP_GRAPH_URL is not a valid http(s) URL")]
    BaseUrl,
    #[error("WAOTP_PHONE_NUMBER_ID must be letters and digits only")]
    PhoneNumberId,
    #[error("WAOTP_WABA_ID must be letters and digits only")]
    WabaId,
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The Graph API of the deployment: its base URL and one connection pool shared by the clients
/// of every number. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GraphApi {
    http: reqwest::Client,
    base_url: String,
}

impl GraphApi {
    pub fn new(base_url: &str, timeouts: GraphTimeouts) -> Result<GraphApi, GraphSetupError> {
        let base = Url::parse(base_url).map_err(|_| GraphSetupError::BaseUrl)?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(GraphSetupError::BaseUrl);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            // A redirect would turn the POST into a GET and could carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("waotp/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(GraphApi {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The client sending from `phone_number_id` with its token, on the shared pool.
    pub fn client(
        &self,
        phone_number_id: &str,
        access_token: SecretString,
    ) -> Result<GraphClient, GraphSetupError> {
        // The id becomes a path segment: anything but alphanumerics could reach another endpoint.
        if phone_number_id.is_empty() || !phone_number_id.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(GraphSetupError::PhoneNumberId);
        }
        let url = format!("{}/{phone_number_id}/messages", self.base_url);
        let messages_url = Url::parse(&url).map_err(|_| GraphSetupError::BaseUrl)?;
        Ok(GraphClient {
            http: self.http.clone(),
            messages_url,
            token: access_token,
        })
    }
}

/// A client of one business phone number. Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    messages_url: Url,
    token: SecretString,
}

impl GraphClient {
    pub fn new(
        base_url: &str,
        phone_number_id: &str,
        access_token: SecretString,
    ) -> Result<GraphClient, GraphSetupError> {
        Self::with_timeouts(
            base_url,
            phone_number_id,
            access_token,
            GraphTimeouts::default(),
        )
    }

    pub fn with_timeouts(
        base_url: &str,
        phone_number_id: &str,
        access_token: SecretString,
        timeouts: GraphTimeouts,
    ) -> Result<GraphClient, GraphSetupError> {
        GraphApi::new(base_url, timeouts)?.client(phone_number_id, access_token)
    }

    /// Sends one message and returns the id WhatsApp gave it. A message that breaks WhatsApp's
    /// limits fails with [`GraphError::Invalid`] without a network call.
    pub async fn send(&self, request: &SendRequest) -> Result<MessageId, GraphError> {
        let body = request.graph_body()?;
        let span = tracing::debug_span!(
            "graph.send",
            kind = request.message.kind(),
            to = %Masked(&request.to)
        );
        let bytes = self.post(&body).instrument(span).await?;
        let answer: SendAnswer =
            serde_json::from_slice(&bytes).map_err(|e| GraphError::BadResponse(e.to_string()))?;
        let id = answer
            .messages
            .into_iter()
            .next()
            .ok_or_else(|| GraphError::BadResponse("no message id in the answer".to_owned()))?
            .id;
        MessageId::parse(id).map_err(|e| GraphError::BadResponse(e.to_string()))
    }

    /// Marks a customer's message as read and shows the typing indicator.
    pub async fn mark_read(&self, message_id: &MessageId) -> Result<(), GraphError> {
        let span = tracing::debug_span!("graph.mark_read");
        let bytes = self
            .post(&read_receipt_body(message_id))
            .instrument(span)
            .await?;
        // Meta answers {"success": true}; an explicit false means it was not marked.
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(answer) if answer.get("success") == Some(&Value::Bool(false)) => Err(
                GraphError::BadResponse("read receipt answered success: false".to_owned()),
            ),
            _ => Ok(()),
        }
    }

    /// One POST; a 2xx answer's bytes, or the error it stands for.
    async fn post(&self, body: &Value) -> Result<Vec<u8>, GraphError> {
        let response = self
            .http
            .post(self.messages_url.clone())
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose_secret()),
            )
            .json(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let bytes = match read_capped(response).await {
            Ok(bytes) => bytes,
            // A refusal whose body broke off is still a refusal.
            Err(_) if !status.is_success() => {
                return Err(GraphError::Http {
                    status: status.as_u16(),
                })
            }
            Err(e) => return Err(e),
        };
        if status.is_success() {
            Ok(bytes)
        } else {
            let error = GraphError::from_response(status.as_u16(), &bytes);
            tracing::debug!(status = status.as_u16(), code = ?error.code(), "Graph API refused");
            Err(error)
        }
    }
}

#[derive(Deserialize)]
struct SendAnswer {
    #[serde(default)]
    messages: Vec<SentMessage>,
}

#[derive(Deserialize)]
struct SentMessage {
    id: String,
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, GraphError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if bytes.len() + chunk.len() > MAX_ANSWER {
            return Err(oversized(response.status()));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn oversized(status: StatusCode) -> GraphError {
    if status.is_success() {
        GraphError::BadResponse("answer too large".to_owned())
    } else {
        GraphError::Http {
            status: status.as_u16(),
        }
    }
}

/// A call that got no answer. Only a failure to connect proves the request never left; once
/// connected, a timeout or a broken connection may come after Meta took the message.
pub(super) fn transport_error(error: reqwest::Error) -> GraphError {
    // The URL holds no secret, but it is noise in every log line.
    let text = |e: reqwest::Error| e.without_url().to_string();
    if error.is_connect() {
        GraphError::Network(text(error))
    } else if error.is_timeout() {
        GraphError::Timeout
    } else {
        GraphError::Interrupted(text(error))
    }
}
