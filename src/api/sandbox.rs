//! The sandbox routes (sandbox mode only): what the bot sent a customer, and a customer message
//! played in (described in docs/http-api.md). Both act on one of the key's merchant's numbers:
//! the one named by `from` (the listing) or `to` (the message), else the merchant's first.

use super::auth::require_key;
use super::error::{parse_json, read_body, ApiError};
use super::sessions::{number_of, ApiState};
use crate::domain::{InboundEvent, InboundMessage, MessageContent, MessageId, PhoneNumber, WaId};
use crate::outbox::SandboxRecorder;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What `GET /v1/sandbox/messages` answers.
#[derive(Serialize, JsonSchema)]
pub(super) struct SandboxMessages {
    /// What the bot sent the number, oldest first, as recorded in sandbox mode.
    messages: Vec<Value>,
}

/// What `POST /v1/sandbox/inbound` answers: the id the message was recorded under.
#[derive(Serialize, JsonSchema)]
pub(super) struct SandboxInbound {
    id: String,
}

fn sandbox_of(state: &ApiState) -> Result<&SandboxRecorder, ApiError> {
    state.sandbox.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_sandbox",
            "sandbox routes exist only in sandbox mode",
        )
    })
}

#[derive(Deserialize)]
struct MessagesQuery {
    to: String,
    /// The merchant's number the messages went out from; its first number when absent.
    from: Option<String>,
    /// Wait until at least this many messages are recorded …
    #[serde(default)]
    min: usize,
    /// … for up to this many seconds (at most 30).
    #[serde(default)]
    wait: u64,
}

/// Longest wait a listing may ask for.
const MAX_LISTING_WAIT_SECS: u64 = 30;

pub(super) async fn sandbox_messages(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = require_key(&req, &state.api_keys)?;
    let recorder = sandbox_of(&state)?;
    let query = web::Query::<MessagesQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", format!("query string: {e}")))?;
    let scope = merchant.scope(number_of(&merchant, query.from.as_deref(), "from")?);
    let customer = PhoneNumber::parse(&query.to).map_err(|why| {
        ApiError::bad_request(
            "invalid_phone",
            format!("`to` must be E.164, e.g. +919876543210 (write + as %2B in a URL): {why}"),
        )
        .with_param("to")
    })?;
    let customer = customer.digits();
    let wait = std::time::Duration::from_secs(query.wait.min(MAX_LISTING_WAIT_SECS));
    // Messages are filed per (merchant, number, customer); a store of an older version had
    // its customers' messages moved into the default scope at start.
    let messages = recorder
        .messages_when(&scope, customer, query.min, wait)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(SandboxMessages { messages }))
}

/// `POST /v1/sandbox/inbound`: a customer message; exactly one of `text` and `button`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InboundRequest {
    /// The customer's number, E.164 with `+`.
    from: String,
    /// The merchant's number the customer writes to (phone number id or business number);
    /// the merchant's first number when absent.
    to: Option<String>,
    text: Option<String>,
    /// The id of a reply button the customer tapped.
    button: Option<String>,
}

pub(super) async fn sandbox_inbound(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = require_key(&req, &state.api_keys)?;
    let body = read_body(payload).await?;
    sandbox_of(&state)?;
    let request: InboundRequest = parse_json(&body)?;
    let number = number_of(&merchant, request.to.as_deref(), "to")?;
    let customer = PhoneNumber::parse(&request.from).map_err(|why| {
        ApiError::bad_request(
            "invalid_phone",
            format!("`from` must be E.164, e.g. +919876543210: {why}"),
        )
        .with_param("from")
    })?;
    let content = match (request.text, request.button) {
        (Some(body), None) => MessageContent::Text { body },
        (None, Some(id)) => MessageContent::ButtonReply {
            title: id.clone(),
            id,
        },
        _ => {
            return Err(ApiError::bad_request(
                "invalid_message",
                "give exactly one of `text` or `button`",
            ))
        }
    };
    let now = chrono::Utc::now();
    let mut nonce = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let id = format!("wamid.sandbox.in.{}", hex::encode(nonce));
    let event = InboundEvent::Message(InboundMessage {
        id: MessageId::parse(id.clone()).map_err(ApiError::internal)?,
        from: WaId::parse(customer.digits()).map_err(ApiError::internal)?,
        user_id: None,
        profile_name: None,
        timestamp: now.timestamp(),
        // Routed like a webhook naming this number.
        phone_number_id: Some(number.phone_number_id.clone()),
        context: None,
        content,
        errors: vec![],
    });
    // Exactly the webhook's path: recorded once, made durable, handled in customer order.
    state
        .inbox
        .accept(event, now.timestamp())
        .await
        .map_err(ApiError::internal)?;
    state.inbox.durable().await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(SandboxInbound { id }))
}
