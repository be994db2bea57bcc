//! Signed calls from waotp to the merchant: session callbacks and flow hooks (see
//! docs/callbacks-and-hooks.md).
//!
//! Owns the HTTP side only: the raw JSON body, its `X-Waotp-Signature` (`t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "t.body">`, keyed with the merchant's callback secret — `WAOTP_CALLBACK_SECRET`
//! or the merchant's own in a tenants file, see [`MerchantClient::with_secret`] — signed anew at
//! every attempt: see [`signing`]), the timeout, and turning every answer into
//! success or a typed error. It makes one attempt per call; retrying callbacks for a day is the
//! outbox's job (see [`CallbackError::retryable`] and `whatsapp::backoff`). It never logs bodies
//! or URLs, which may carry customer data or a merchant's token.

pub mod signing;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use signing::CallbackSigner;

/// Header carrying `t=<unix seconds>,v1=<hex HMAC>` of the attempt's time and the body.
pub const SIGNATURE_HEADER: &str = "X-Waotp-Signature";
/// Header carrying the callback's event id, so merchants can drop repeated deliveries.
pub const EVENT_ID_HEADER: &str = "X-Waotp-Event-Id";
/// A hook answers a handful of fields; more than this is not an answer we should hold.
const MAX_HOOK_ANSWER: usize = 256 * 1024;

/// Why a callback was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("callback URL is not a valid http(s) URL")]
    InvalidUrl,
    #[error("merchant answered HTTP {0}")]
    Status(u16),
    #[error("merchant did not answer in time")]
    Timeout,
    #[error("merchant unreachable: {0}")]
    Network(String),
    /// The merchant was removed from the configuration: there is no secret to sign with.
    #[error("merchant_removed")]
    MerchantRemoved,
}

impl CallbackError {
    /// Whether trying again later may succeed. Every non-2xx answer is retried (see
    /// docs/callbacks-and-hooks.md, "Retries"): a merchant mid-deploy answers 404 or 502 as
    /// readily as it times out.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            CallbackError::InvalidUrl | CallbackError::MerchantRemoved
        )
    }
}

/// Why a hook gave the flow no fields; the text becomes the flow's `error` event reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("hook URL is not a valid http(s) URL")]
    InvalidUrl,
    #[error("hook answered HTTP {0}")]
    Status(u16),
    #[error("hook did not answer in time")]
    Timeout,
    #[error("hook unreachable: {0}")]
    Network(String),
    #[error("hook answer is not JSON")]
    NotJson,
    #[error("hook answer is JSON but not an object")]
    NotObject,
    #[error("hook answer is larger than {MAX_HOOK_ANSWER} bytes")]
    TooLarge,
    /// The merchant was removed from the configuration: there is no secret to sign with.
    #[error("merchant_removed")]
    MerchantRemoved,
}

impl HookError {
    /// A short reason for the flow and the logs.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct MerchantSetupError(#[from] reqwest::Error);

/// Client for the merchant's callback and hook URLs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MerchantClient {
    http: reqwest::Client,
    /// `None` when `WAOTP_CALLBACK_SECRET` is unset (sandbox mode): calls go out unsigned.
    signer: Option<CallbackSigner>,
}

/// A transport failure in neutral terms, before it becomes a callback or hook error.
enum Failure {
    InvalidUrl,
    Status(u16),
    Timeout,
    Network(String),
}

impl MerchantClient {
    /// `timeout` bounds each whole call, connecting included.
    pub fn new(
        secret: Option<SecretString>,
        timeout: Duration,
    ) -> Result<MerchantClient, MerchantSetupError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirected POST turns into a GET and may leave the merchant's domain.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("waotp/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let signer = secret.map(|s| CallbackSigner::new(s.expose_secret().as_bytes()));
        Ok(MerchantClient { http, signer })
    }

    /// A client on the same connection pool that signs with `secret` instead: each merchant's
    /// calls are signed with its own secret (`None`: unsigned, like a setup without
    /// `WAOTP_CALLBACK_SECRET`).
    pub fn with_secret(&self, secret: Option<&SecretString>) -> MerchantClient {
        MerchantClient {
            http: self.http.clone(),
            signer: secret.map(|s| CallbackSigner::new(s.expose_secret().as_bytes())),
        }
    }

    /// Posts a callback body exactly as given, signed as sent at `now` (the attempt's time),
    /// with its event id.
    pub async fn deliver_callback(
        &self,
        url: &str,
        event_id: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), CallbackError> {
        let response = self
            .post(url, body, Some(event_id), now)
            .await
            .map_err(|f| match f {
                Failure::InvalidUrl => CallbackError::InvalidUrl,
                Failure::Status(s) => CallbackError::Status(s),
                Failure::Timeout => CallbackError::Timeout,
                Failure::Network(e) => CallbackError::Network(e),
            })?;
        // Drain the answer so the connection can be reused; its content does not matter.
        let _ = response.bytes().await;
        Ok(())
    }

    /// Calls a hook with `payload`, signed as sent at `now`; a 2xx JSON object answer gives
    /// its fields.
    pub async fn call_hook(
        &self,
        url: &str,
        payload: &Value,
        now: DateTime<Utc>,
    ) -> Result<Map<String, Value>, HookError> {
        // Serialising a Value cannot fail: its keys are strings.
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let mut response = self
            .post(url, &body, None, now)
            .await
            .map_err(|f| match f {
                Failure::InvalidUrl => HookError::InvalidUrl,
                Failure::Status(s) => HookError::Status(s),
                Failure::Timeout => HookError::Timeout,
                Failure::Network(e) => HookError::Network(e),
            })?;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                HookError::Timeout
            } else {
                HookError::Network(e.without_url().to_string())
            }
        })? {
            if bytes.len() + chunk.len() > MAX_HOOK_ANSWER {
                return Err(HookError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(_) => Err(HookError::NotObject),
            Err(_) => Err(HookError::NotJson),
        }
    }

    /// One signed POST; the response when it is 2xx.
    async fn post(
        &self,
        url: &str,
        body: &[u8],
        event_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<reqwest::Response, Failure> {
        let url = reqwest::Url::parse(url).map_err(|_| Failure::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::InvalidUrl);
        }
        let mut request = self
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(signer) = &self.signer {
            request = request.header(SIGNATURE_HEADER, signer.sign(now.timestamp(), body));
        }
        if let Some(event_id) = event_id {
            request = request.header(EVENT_ID_HEADER, event_id);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::Network(e.without_url().to_string())
            }
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else {
            tracing::debug!(status = status.as_u16(), "merchant refused a call");
            Err(Failure::Status(status.as_u16()))
        }
    }
}
