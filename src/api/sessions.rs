//! The merchant API: start, read, cancel a session and check a code (described in
//! docs/http-api.md; the sandbox routes are in [`super::sandbox`]). Handlers translate HTTP to
//! runtime calls and back, nothing more.
//!
//! Every handler acts for the merchant of the request's key: a session of another merchant is
//! answered exactly like an id that does not exist (the same `404 not_found`, reached by the
//! same single read), so no answer tells that a session exists elsewhere. A start talks from
//! one of the merchant's numbers: the one named by `from` (its phone number id or business
//! number), else the merchant's first.

use super::auth::{bearer, require_key, ApiKeys};
use super::error::{parse_json, read_body, ApiError};
use super::idempotency::{replay, Idempotent, InFlight};
use crate::flow::engine::ApiCheckRefusal;
use crate::metrics::Metrics;
use crate::otp::IssueRefusal;
use crate::outbox::SandboxRecorder;
use crate::runtime::commands::{CheckError, StartError};
use crate::runtime::session_object::SessionObject;
use crate::runtime::{session_json, Inbox, Runtime};
use crate::store::MerchantFilter;
use crate::store::SessionRecord;
use crate::store::{IdempotentStart, StoredAnswer};
use crate::tenants::{Merchant, Number, Scope, Tenants};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// `POST /v1/sessions`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartRequest {
    /// The flow's id (its file name without `.toml`).
    flow: String,
    /// The customer's number, E.164 with `+`.
    to: String,
    /// The flow's API variables: at most 32, each at most 1,024 bytes as JSON, 8 KiB in all.
    #[serde(default)]
    vars: BTreeMap<String, Value>,
    /// A language the flow's templates have; the flow's default otherwise.
    lang: Option<String>,
    /// The merchant's number the session talks from: its phone number id or its business
    /// number (E.164 with `+`). The merchant's first number when absent.
    from: Option<String>,
}

/// The answer to a start: the session, and for a reverse-OTP flow the code to show.
#[derive(Serialize, JsonSchema)]
pub(super) struct StartAnswer {
    #[serde(flatten)]
    session: SessionObject,
    #[serde(skip_serializing_if = "Option::is_none")]
    otp: Option<ReverseOtp>,
}

/// A reverse-OTP code: the customer sends it to the business number from their WhatsApp.
#[derive(Serialize, JsonSchema)]
pub(super) struct ReverseOtp {
    code: String,
    /// `https://wa.me/<business number>?text=<code>`.
    wa_link: String,
}

/// The answer to a `/check`.
#[derive(Serialize, JsonSchema)]
pub(super) struct CheckAnswer {
    valid: bool,
    /// Wrong codes the session's code still takes (0 once valid or locked).
    attempts_left: u32,
    session: SessionObject,
}

/// A page of `GET /v1/sessions`.
#[derive(Serialize, JsonSchema)]
pub(super) struct SessionList {
    /// Newest first.
    pub(super) sessions: Vec<SessionObject>,
    /// Pass as `starting_after` for the next page; `null` when no session follows.
    pub(super) next_cursor: Option<String>,
}

/// Whose sessions `merchant`'s key sees: its own, and, for the default scope's merchant, those
/// written before merchants existed.
pub(super) fn sessions_of(merchant: &Merchant, tenants: &Tenants) -> MerchantFilter {
    MerchantFilter {
        id: merchant.id.clone(),
        owns_unscoped: tenants.default_scope().merchant == merchant.id,
    }
}

/// Session `id` if it is `merchant`'s. An unknown id and another merchant's session both give
/// `None` after the same one read, so the caller answers both with the same 404.
async fn own_session(
    state: &ApiState,
    merchant: &Merchant,
    id: &str,
) -> Result<Option<SessionRecord>, ApiError> {
    let record = state
        .runtime
        .storage()
        .sessions
        .get(id)
        .await
        .map_err(ApiError::internal)?;
    let mine = sessions_of(merchant, &state.runtime.tenants().current());
    Ok(record.filter(|r| mine.admits(r)))
}

/// The merchant's number named by `from` (phone number id or business number), or its first;
/// another merchant's number or an unknown one is refused with `unknown_number`.
pub(super) fn number_of<'m>(
    merchant: &'m Merchant,
    from: Option<&str>,
    param: &str,
) -> Result<&'m Number, ApiError> {
    match from.map(str::trim) {
        None => Ok(merchant.first_number()),
        Some(f) => merchant.number(f).ok_or_else(|| {
            ApiError::bad_request(
                "unknown_number",
                format!("`{param}` is not one of your numbers (give its phone number id or business number)"),
            )
            .with_param(param)
        }),
    }
}

pub(super) async fn start(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = require_key(&req, &state.api_keys)?;
    let body = read_body(payload).await?;
    let request: StartRequest = parse_json(&body)?;
    super::vars::check_vars(&request.vars)?;
    let scope = merchant.scope(number_of(&merchant, request.from.as_deref(), "from")?);
    let idempotent = if req.headers().contains_key(super::idempotency::HEADER) {
        Idempotent::of(&req, bearer(&req), &parse_json(&body)?)?
    } else {
        None
    };
    let Some(idempotent) = idempotent else {
        let body = start_session(&state, &scope, request, None).await?;
        return Ok(HttpResponse::Created().json(body));
    };
    let claim = state.in_flight.claim(&idempotent.key)?;
    let state = state.into_inner();
    // Carried to the end even if the client goes away: a session whose answer was never kept
    // would leave a retry only the session as it is, not the first answer (a reverse-OTP code).
    let (answer, replayed) = tokio::spawn(async move {
        let _claim = claim;
        start_once(&state, &scope, request, idempotent).await
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
    scope: &Scope,
    request: StartRequest,
    idempotent: Idempotent,
) -> Result<(StoredAnswer, bool), ApiError> {
    let now = chrono::Utc::now();
    let idempotency = &state.runtime.storage().idempotency;
    if let Some(first) = idempotency
        .idempotent(&idempotent.key, now)
        .await
        .map_err(ApiError::internal)?
    {
        if first.request != idempotent.request {
            return Err(Idempotent::reused());
        }
        if let Some(answer) = idempotency
            .answer(&idempotent.key, &first)
            .await
            .map_err(ApiError::internal)?
        {
            return Ok((answer, true));
        }
        // The process stopped after the session's step, before its answer was kept: the
        // session as it is now is the best answer left (a reverse-OTP code is not in it).
        if let Some(record) = state
            .runtime
            .storage()
            .sessions
            .get(&first.session_id)
            .await
            .map_err(ApiError::internal)?
        {
            let answer = StoredAnswer {
                status: StatusCode::CREATED.as_u16(),
                body: session_json(&record),
            };
            return Ok((answer, true));
        }
    }
    let body = start_session(state, scope, request, Some(idempotent.start(now))).await?;
    let answer = StoredAnswer {
        status: StatusCode::CREATED.as_u16(),
        body,
    };
    idempotency
        .keep_answer(&idempotent.key, &answer)
        .await
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
    scope: &Scope,
    request: StartRequest,
    idempotency: Option<IdempotentStart>,
) -> Result<Value, ApiError> {
    let started = state
        .runtime
        .start(
            scope,
            &request.flow,
            &request.to,
            request.vars,
            request.lang.as_deref(),
            idempotency,
        )
        .await
        .map_err(|e| match e {
            StartError::UnknownFlow(_) | StartError::NotApiStarted(_) => {
                ApiError::bad_request("unknown_flow", e.to_string()).with_param("flow")
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
            StartError::SessionActive { ref id, .. } => {
                ApiError::new(StatusCode::CONFLICT, "session_active", e.to_string())
                    .with_session(id.clone())
            }
            StartError::OtpRefused(refusal) => otp_refused(refusal, e.to_string()),
            StartError::BusinessNumberUnset => {
                ApiError::bad_request("business_number_unset", e.to_string())
            }
            StartError::Runtime(e) => ApiError::internal(e),
        })?;
    let answer = StartAnswer {
        session: SessionObject::from(&started.record),
        otp: started
            .reverse
            .map(|(code, wa_link)| ReverseOtp { code, wa_link }),
    };
    serde_json::to_value(answer).map_err(ApiError::internal)
}

/// The refusal of a start whose first code an anti-abuse limit refused: the limit's own code,
/// `429` with `retry_after` for the limits that lift with time.
fn otp_refused(refusal: IssueRefusal, message: String) -> ApiError {
    let wait = match refusal {
        IssueRefusal::CustomerRateLimited { retry_after }
        | IssueRefusal::CustomerBlocked { retry_after }
        | IssueRefusal::GlobalCeiling { retry_after } => retry_after,
        IssueRefusal::CountryNotAllowed => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "country_not_allowed",
                message,
            )
            .with_param("to")
        }
        // Not limits: a session's first code never meets them.
        other => {
            return ApiError::internal(format!("unexpected refusal at start: {}", other.as_str()))
        }
    };
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, refusal.as_str(), message)
        .retry_after(super::auth::retry_after_secs(wait))
}

pub(super) async fn get(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = require_key(&req, &state.api_keys)?;
    own_session(&state, &merchant, &id)
        .await?
        .map(|r| HttpResponse::Ok().json(session_json(&r)))
        .ok_or_else(ApiError::not_found)
}

pub(super) async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = require_key(&req, &state.api_keys)?;
    // A session never changes merchant, so the check holds for the cancel that follows.
    if own_session(&state, &merchant, &id).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let record = state
        .runtime
        .cancel(&id)
        .await
        .map_err(ApiError::internal)?;
    record
        .map(|r| HttpResponse::Ok().json(session_json(&r)))
        .ok_or_else(ApiError::not_found)
}

/// `POST /v1/sessions/{id}/check`.
#[derive(Deserialize, JsonSchema)]
pub(super) struct CheckRequest {
    /// What the customer typed: 4 to 10 digits; spaces, dashes and dots are ignored.
    #[schemars(length(max = 64))]
    code: String,
}

pub(super) async fn check(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = require_key(&req, &state.api_keys)?;
    let body = read_body(payload).await?;
    let request: CheckRequest = parse_json(&body)?;
    if request.code.len() > 64 {
        return Err(
            ApiError::bad_request("invalid_code", "a code is at most 64 characters")
                .with_param("code"),
        );
    }
    // What is not a code is refused before any session is looked at, whoever's id it names.
    if crate::otp::normalize_attempt(&request.code).is_none() {
        return Err(not_a_code());
    }
    if own_session(&state, &merchant, &id).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let checked = state
        .runtime
        .check(&id, &request.code)
        .await
        .map_err(|e| match e {
            CheckError::NotACode => not_a_code(),
            CheckError::NotHere(refusal) => {
                let refused =
                    ApiError::new(StatusCode::CONFLICT, refusal.code(), refusal.to_string());
                match refusal {
                    ApiCheckRefusal::NoCode => refused.with_session(id.as_str()),
                    _ => refused,
                }
            }
            CheckError::Completed { ref id, .. } => {
                ApiError::new(StatusCode::CONFLICT, "session_completed", e.to_string())
                    .with_session(id.clone())
            }
            CheckError::Runtime(e) => ApiError::internal(e),
        })?;
    match checked {
        Some(c) => Ok(HttpResponse::Ok().json(CheckAnswer {
            valid: c.valid,
            attempts_left: c.attempts_left,
            session: SessionObject::from(&c.record),
        })),
        None => Err(ApiError::not_found()),
    }
}

fn not_a_code() -> ApiError {
    ApiError::bad_request(
        "invalid_code",
        "a code is 4 to 10 digits (spaces, dashes and dots are ignored)",
    )
    .with_param("code")
}
