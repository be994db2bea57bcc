//! The webhook WhatsApp calls: `GET /webhook` (subscription handshake) and `POST /webhook`.
//!
//! The only HTTP code that sees Meta's inbound JSON. A POST is answered 200 only after every
//! event in it is recorded and flushed to disk; 401 for a bad signature (nothing stored), 413 for
//! a body over 3 MiB, 503 with `Retry-After` when the bytes allowed for bodies not yet verified
//! are in use ([`intake`]), 400 for a signed body that is not a WhatsApp envelope, 500 when the
//! database fails (WhatsApp then retries).
//!
//! Every phone number of every WhatsApp Business Account of the app posts to the one webhook.
//! Events are told apart by `metadata.phone_number_id`, looked up in the tenants registry
//! ([`crate::tenants::Tenants::number`], one hash lookup): an event addressed to a number no
//! merchant has is acknowledged with the rest, counted, and not recorded: it spends no attempt,
//! opens no 24-hour window, gets no reply. Which merchant and number an event is for is worked
//! out again when it is handled (the runtime), so nothing about it is stored here.
//!
//! Changes to the account's message templates (`message_template_status_update`,
//! `message_template_quality_update`) go to [`crate::templates::status::TemplateWatch`].

pub mod intake;
pub mod payload;
pub mod signature;

use crate::metrics::Metrics;
use crate::runtime::Inbox;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use signature::SignatureVerifier;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest body accepted (see docs/http-api.md, "The webhook").
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the webhook routes need.
#[derive(Debug, Clone)]
pub struct WebhookState {
    /// `None` when no App Secret is configured: every POST is then refused.
    pub verifier: Option<SignatureVerifier>,
    pub verify_token: Option<SecretString>,
    pub inbox: Arc<Inbox>,
    pub metrics: Arc<Metrics>,
    /// The merchants and numbers served: an event for any other number is ignored.
    pub tenants: crate::tenants::TenantsHandle,
    /// Bytes that bodies not yet verified may hold, shared by every worker.
    pub unverified: Arc<intake::UnverifiedBudget>,
    /// Where template status and quality changes go.
    pub templates: Arc<crate::templates::status::TemplateWatch>,
}

/// Mounts the webhook routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhook")
            .route(web::get().to(subscribe))
            .route(web::post().to(receive)),
    );
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .json(serde_json::json!({"error": {"code": code, "message": message}}))
}

#[derive(Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's subscription check: echo the challenge when the token is ours.
async fn subscribe(query: web::Query<Handshake>, state: web::Data<WebhookState>) -> HttpResponse {
    let Handshake {
        mode,
        verify_token,
        challenge,
    } = query.into_inner();
    let token_ok = match (&state.verify_token, &verify_token) {
        (Some(ours), Some(theirs)) => {
            bool::from(ours.expose_secret().as_bytes().ct_eq(theirs.as_bytes()))
        }
        _ => false,
    };
    match (mode.as_deref(), challenge) {
        (Some("subscribe"), Some(challenge)) if token_ok => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(challenge),
        _ => error(
            StatusCode::FORBIDDEN,
            "verification_failed",
            "hub.mode must be subscribe and hub.verify_token must match",
        ),
    }
}

/// The answer to a body that was not taken in.
fn refused(metrics: &Metrics, refusal: intake::Refusal) -> HttpResponse {
    use intake::Refusal;
    match refusal {
        Refusal::TooLarge => {
            metrics.webhook("too_large");
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "body over 3 MiB",
            )
        }
        Refusal::OverBudget => {
            metrics.webhook("overloaded");
            // By then every body held now has been verified, refused or cut off by its deadline.
            let mut res = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                &refusal.to_string(),
            );
            res.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from(
                    crate::request_deadline::BODY_DEADLINE.as_secs(),
                ),
            );
            res
        }
        Refusal::Timeout(message) => {
            metrics.webhook("timeout");
            error(StatusCode::REQUEST_TIMEOUT, "body_timeout", &message)
        }
        Refusal::Unreadable(message) => {
            metrics.webhook("bad_request");
            error(StatusCode::BAD_REQUEST, "unreadable_body", &message)
        }
        Refusal::Signature(e) => {
            metrics.webhook("unauthorized");
            tracing::warn!(reason = %e, "webhook signature refused");
            error(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                &e.to_string(),
            )
        }
    }
}

/// A WhatsApp delivery: verify, parse, record once, make durable, acknowledge.
async fn receive(
    req: HttpRequest,
    mut body: web::Payload,
    state: web::Data<WebhookState>,
) -> HttpResponse {
    let metrics = &state.metrics;
    let Some(verifier) = &state.verifier else {
        metrics.webhook("unauthorized");
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "no app secret is configured",
        );
    };
    let header = req
        .headers()
        .get("x-hub-signature-256")
        .map(|h| h.as_bytes());
    let check = match verifier.begin(header) {
        Ok(check) => check,
        Err(e) => {
            metrics.webhook("unauthorized");
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                &e.to_string(),
            );
        }
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        metrics.webhook("too_large");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "body over 3 MiB",
        );
    }
    let bytes = match intake::read_signed(&mut body, check, &state.unverified).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refused(metrics, refusal),
    };
    let parsed = match payload::parse(&bytes) {
        Ok(p) => p,
        Err(e) => {
            metrics.webhook("bad_request");
            return error(StatusCode::BAD_REQUEST, "invalid_payload", &e.to_string());
        }
    };
    for reason in &parsed.skipped {
        metrics.events_skipped.inc();
        tracing::warn!(%reason, "webhook item skipped");
    }
    let now = chrono::Utc::now().timestamp();
    // One registry for the whole body. An event goes to the number its
    // `metadata.phone_number_id` names; with numbers configured, one naming none is nobody's
    // (WhatsApp always names it); the single-merchant setup without a number takes every event.
    let tenants = state.tenants.current();
    for event in parsed.events {
        if tenants.number(event.phone_number_id()).is_none() {
            metrics.events_other_number.inc();
            continue;
        }
        if let Err(e) = state.inbox.accept(event, now).await {
            metrics.webhook("error");
            tracing::error!(error = %e, "recording inbound event failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                "try again",
            );
        }
    }
    // Template changes are rare and not a customer's: stored durably here, only
    // when a body carries one.
    if !parsed.templates.is_empty() {
        let now = chrono::Utc::now();
        let mut stored = Ok(());
        for u in &parsed.templates {
            stored = state.templates.apply(u, now).await;
            if stored.is_err() {
                break;
            }
        }
        if stored.is_ok() {
            stored = state.templates.durable().await;
        }
        if let Err(e) = stored {
            metrics.webhook("error");
            tracing::error!(error = %e, "recording a template change failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                "try again",
            );
        }
    }
    if let Err(e) = state.inbox.durable().await {
        metrics.webhook("error");
        tracing::error!(error = %e, "flushing inbound events failed");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            "try again",
        );
    }
    metrics.webhook("accepted");
    HttpResponse::Ok().finish()
}
