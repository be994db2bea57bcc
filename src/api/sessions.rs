//! The merchant API: start, read, cancel a session and check a code; plus the sandbox routes
//! (both described in docs/http-api.md). Handlers translate HTTP to runtime calls and back,
//! nothing more.

use super::auth::{bearer, require_key, ApiKeys};
use super::error::{parse_json, ApiError};
use super::idempotency::{replay, Idempotent, InFlight};
use crate::domain::{InboundEvent, InboundMessage, MessageContent, MessageId, PhoneNumber, WaId};
use crate::metrics::Metrics;
use crate::outbox::SandboxRecorder;
use crate::runtime::commands::{CheckError, StartError};
use crate::runtime::{session_json, Inbox, Runtime};
use crate::store::idempotency::{IdempotentStart, StoredAnswer};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the API routes need.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub runtime: Arc<Runtime>,
    pub inbox: Arc<Inbox>,
    pub metrics: Arc<Metrics>,
    /// The merchant keys, with the count of wrong ones (shared by every worker).
    pub api_keys: Arc<ApiKeys>,
    /// Present in sandbox mode only.
    pub sandbox: Option<Arc<SandboxRecorder>>,
    /// Idempotency keys of requests being answered.
    pub in_flight: Arc<InFlight>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/sessions", web::post().to(start))
        .route("/v1/sessions/{id}", web::get().to(get))
        .route("/v1/sessions/{id}/cancel", web::post().to(cancel))
        .route("/v1/sessions/{id}/check", web::post().to(check))
        .route("/v1/sandbox/messages", web::get().to(sandbox_messages))
        .route("/v1/sandbox/inbound", web::post().to(sandbox_inbound));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    flow: String,
    to: String,
    #[serde(default)]
    vars: BTreeMap<String, Value>,
    lang: Option<String>,
}

async fn start(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state.api_keys)?;
    let request: StartRequest = parse_json(&body)?;
    super::vars::check_vars(&request.vars)?;
    let idempotent = if req.headers().contains_key(super::idempotency::HEADER) {
        Idempotent::of(&req, bearer(&req), &parse_json(&body)?)?
    } else {
        None
    };
    let Some(idempotent) = idempotent else {
        let body = start_session(&state, request, None).await?;
        return Ok(HttpResponse::Created().json(body));
    };
    let claim = state.in_flight.claim(&idempotent.key)?;
    let state = state.into_inner();
    // Carried to the end even if the client goes away: a session whose answer was never kept
    // would leave a retry only the session as it is, not the first answer (a reverse-OTP code).
    let (answer, replayed) = tokio::spawn(async move {
        let _claim = claim;
        start_once(&state, request, idempotent).await
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(if replayed {
        replay(answer)
    } else {
        HttpResponse::Created().json(answer.body)
    })
}

/// The first answer under the key (`true`: a replay), or a new session and its answer kept.
async fn start_once(
    state: &ApiState,
    request: StartRequest,
    idempotent: Idempotent,
) -> Result<(StoredAnswer, bool), ApiError> {
    let now = chrono::Utc::now();
    let sessions = state.runtime.sessions();
    if let Some(first) = sessions
        .idempotent(&idempotent.key, now)
        .map_err(ApiError::internal)?
    {
        if first.request != idempotent.request {
            return Err(Idempotent::reused());
        }
        if let Some(answer) = sessions
            .answer(&idempotent.key, &first)
            .map_err(ApiError::internal)?
        {
            return Ok((answer, true));
        }
        // The process stopped after the session's step, before its answer was kept: the
        // session as it is now is the best answer left (a reverse-OTP code is not in it).
        if let Some(record) = sessions
            .get(&first.session_id)
            .map_err(ApiError::internal)?
        {
            let answer = StoredAnswer {
                status: StatusCode::CREATED.as_u16(),
                body: session_json(&record),
            };
            return Ok((answer, true));
        }
    }
    let body = start_session(state, request, Some(idempotent.start(now))).await?;
    let answer = StoredAnswer {
        status: StatusCode::CREATED.as_u16(),
        body,
    };
    sessions
        .keep_answer(&idempotent.key, &answer)
        .map_err(ApiError::internal)?;
    state
        .runtime
        .store_durable()
        .await
        .map_err(ApiError::internal)?;
    Ok((answer, false))
}

/// Starts the session and returns the `201` body.
async fn start_session(
    state: &ApiState,
    request: StartRequest,
    idempotency: Option<IdempotentStart>,
) -> Result<Value, ApiError> {
    let started = state
        .runtime
        .start(
            &request.flow,
            &request.to,
            request.vars,
            request.lang.as_deref(),
            idempotency,
        )
        .await
        .map_err(|e| match e {
            StartError::UnknownFlow(_) | StartError::NotApiStarted(_) => {
                ApiError::bad_request("unknown_flow", e.to_string())
            }
            StartError::MissingVar(ref name) => ApiError::bad_request("missing_var", e.to_string())
                .with_param(format!("vars.{name}")),
            StartError::InvalidVar { ref name, .. } => {
                ApiError::bad_request("invalid_vars", e.to_string())
                    .with_param(format!("vars.{name}"))
            }
            StartError::InvalidPhone { .. } => {
                ApiError::bad_request("invalid_phone", e.to_string()).with_param("to")
            }
            StartError::SessionActive { .. } => {
                ApiError::new(StatusCode::CONFLICT, "session_active", e.to_string())
            }
            StartError::BusinessNumberUnset => {
                ApiError::bad_request("business_number_unset", e.to_string())
            }
            StartError::Runtime(e) => ApiError::internal(e),
        })?;
    let mut body = session_json(&started.record);
    if let Some((code, link)) = started.reverse {
        body["otp"] = json!({"code": code, "wa_link": link});
    }
    Ok(body)
}

async fn get(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state.api_keys)?;
    let record = state
        .runtime
        .sessions()
        .get(&id)
        .map_err(ApiError::internal)?;
    record
        .map(|r| HttpResponse::Ok().json(session_json(&r)))
        .ok_or_else(ApiError::not_found)
}

async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state.api_keys)?;
    let record = state
        .runtime
        .cancel(&id)
        .await
        .map_err(ApiError::internal)?;
    record
        .map(|r| HttpResponse::Ok().json(session_json(&r)))
        .ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
struct CheckRequest {
    code: String,
}

async fn check(
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state.api_keys)?;
    let request: CheckRequest = parse_json(&body)?;
    if request.code.len() > 64 {
        return Err(ApiError::bad_request(
            "invalid_code",
            "a code is at most 64 characters",
        ));
    }
    let checked = state
        .runtime
        .check(&id, &request.code)
        .await
        .map_err(|e| match e {
            CheckError::NotACode => ApiError::bad_request(
                "invalid_code",
                "a code is 4 to 10 digits (spaces, dashes and dots are ignored)",
            ),
            CheckError::NotHere(refusal) => {
                ApiError::new(StatusCode::CONFLICT, refusal.code(), refusal.to_string())
            }
            CheckError::Runtime(e) => ApiError::internal(e),
        })?;
    match checked {
        Some(c) => Ok(HttpResponse::Ok().json(json!({
            "valid": c.valid,
            "attempts_left": c.attempts_left,
            "session": session_json(&c.record),
        }))),
        None => Err(ApiError::not_found()),
    }
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
    /// Wait until at least this many messages are recorded …
    #[serde(default)]
    min: usize,
    /// … for up to this many seconds (at most 30).
    #[serde(default)]
    wait: u64,
}

/// Longest wait a listing may ask for.
const MAX_LISTING_WAIT_SECS: u64 = 30;

async fn sandbox_messages(
    req: HttpRequest,
    query: web::Query<MessagesQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state.api_keys)?;
    let recorder = sandbox_of(&state)?;
    let customer = PhoneNumber::parse(&query.to).map_err(|why| {
        ApiError::bad_request(
            "invalid_phone",
            format!("`to` must be E.164, e.g. +919876543210 (write + as %2B in a URL): {why}"),
        )
    })?;
    let customer = customer.digits();
    let wait = std::time::Duration::from_secs(query.wait.min(MAX_LISTING_WAIT_SECS));
    let messages = recorder
        .messages_when(customer, query.min, wait)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(json!({ "messages": messages })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundRequest {
    from: String,
    text: Option<String>,
    button: Option<String>,
}

async fn sandbox_inbound(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state.api_keys)?;
    sandbox_of(&state)?;
    let request: InboundRequest = parse_json(&body)?;
    let customer = PhoneNumber::parse(&request.from).map_err(|why| {
        ApiError::bad_request(
            "invalid_phone",
            format!("`from` must be E.164, e.g. +919876543210: {why}"),
        )
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
        phone_number_id: None,
        context: None,
        content,
        errors: vec![],
    });
    // Exactly the webhook's path: recorded once, made durable, handled in customer order.
    state
        .inbox
        .accept(event, now.timestamp())
        .map_err(ApiError::internal)?;
    state.inbox.durable().await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(json!({ "id": id })))
}
