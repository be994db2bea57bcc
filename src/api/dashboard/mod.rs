//! `GET /dashboard`: the verification funnel of the last 24 hours and 7 days, and what WhatsApp
//! last said about each message template, as one server-rendered page, behind the merchant API key (see [`access`] for how a browser logs in).
//!
//! Routes: `GET /dashboard`, `POST /dashboard/login` (form field `key`), `POST
//! /dashboard/logout`, `POST /dashboard/link` (Bearer key → a one-time path) and
//! `GET /dashboard/once/{token}`. Pages are sent with `no-store` and a CSP that allows no
//! script, so the figures are never cached and injected markup could not run.
//!
//! The page shows the merchant of the key that logged in (or of the Bearer key): its funnel,
//! all its numbers together and per number, its own flows, and the templates of its WhatsApp
//! Business Account. A session whose key a tenants reload removed (rotated out, or with its
//! merchant) is logged out.

pub mod access;
pub mod page;
pub mod svg;

use super::auth::{bearer, require_key, retry_after_secs, KeyCheck};
use super::error::ApiError;
use super::sessions::ApiState;
use crate::api::stats::HourRange;
use crate::tenants::{KeyDigest, Merchant};
use access::{cleared_cookie, cookie_value, session_cookie, DashboardAccess, COOKIE, LINK_TTL};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use chrono::Utc;
use page::Window;
use serde::Deserialize;
use std::sync::Arc;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(show))
        .route("/dashboard/login", web::post().to(login))
        .route("/dashboard/logout", web::post().to(logout))
        .route("/dashboard/link", web::post().to(link))
        .route("/dashboard/once/{token}", web::get().to(once));
}

/// Headers every dashboard answer carries.
fn html(mut builder: HttpResponseBuilder) -> HttpResponseBuilder {
    builder
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    builder
}

fn login_form(status: actix_web::http::StatusCode, message: Option<&str>) -> HttpResponse {
    html(HttpResponse::build(status)).body(page::login_page(message))
}

fn session_token(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get(header::COOKIE)?.to_str().ok()?;
    cookie_value(header, COOKIE).map(str::to_owned)
}

/// The merchant of the request's live session or key (`None`: neither); a client made to wait
/// for its wrong keys gets its 429.
fn authorized(
    req: &HttpRequest,
    state: &ApiState,
    access: &DashboardAccess,
) -> Result<Option<Arc<Merchant>>, ApiError> {
    if let Some(key) = session_token(req).and_then(|t| access.session_key(&t)) {
        // A key removed since the login (or its merchant) sees nothing.
        return Ok(state
            .api_keys
            .tenants()
            .current()
            .merchant_for_digest(&key)
            .cloned());
    }
    match require_key(req, &state.api_keys) {
        Ok(merchant) => Ok(Some(merchant)),
        Err(e) if e.status == actix_web::http::StatusCode::TOO_MANY_REQUESTS => Err(e),
        Err(_) => Ok(None),
    }
}

/// A new session cookie of the key of digest `key` and a redirect to the page.
fn enter(req: &HttpRequest, access: &DashboardAccess, key: KeyDigest) -> HttpResponse {
    let secure = req.connection_info().scheme() == "https";
    html(HttpResponse::SeeOther())
        .insert_header((
            header::SET_COOKIE,
            session_cookie(&access.open_session(key), secure),
        ))
        .insert_header((header::LOCATION, "/dashboard"))
        .finish()
}

async fn show(
    req: HttpRequest,
    state: web::Data<ApiState>,
    access: web::Data<DashboardAccess>,
) -> Result<HttpResponse, ApiError> {
    let Some(merchant) = authorized(&req, &state, &access)? else {
        return Ok(login_form(actix_web::http::StatusCode::UNAUTHORIZED, None));
    };
    let default = state.runtime.tenants().current().default_scope();
    let now = Utc::now();
    let mut flow_ids: Vec<String> = state
        .runtime
        .flows_of(&merchant.id)
        .current()
        .iter()
        .map(|f| f.id().as_str().to_owned())
        .collect();
    flow_ids.sort();
    let stats = &state.runtime.storage().stats;
    let mut windows = Vec::new();
    for (id, title, hours) in [("24h", "Last 24 hours", 24), ("7d", "Last 7 days", 24 * 7)] {
        let range = HourRange::last_hours(now, hours);
        let mine = stats
            .query_merchant(&merchant.id, &default, None, range.from_hour, range.to_hour)
            .await
            .map_err(ApiError::internal)?;
        let mut flows = Vec::with_capacity(flow_ids.len());
        for flow in &flow_ids {
            let t = stats
                .query_merchant(
                    &merchant.id,
                    &default,
                    Some(flow),
                    range.from_hour,
                    range.to_hour,
                )
                .await
                .map_err(ApiError::internal)?;
            flows.push((flow.clone(), t.all));
        }
        let numbers = crate::api::stats::numbers_of(&merchant, &mine)
            .into_iter()
            .map(|(id, business, t)| {
                (
                    business.map_or_else(|| id.to_owned(), |b| format!("{b} ({id})")),
                    t.into_owned(),
                )
            })
            .collect();
        windows.push(Window {
            id,
            title,
            range,
            all: mine.all,
            flows,
            numbers,
        });
    }
    let templates = templates_of(&state, &merchant).await;
    Ok(html(HttpResponse::Ok()).body(page::dashboard_page(
        &merchant.id,
        &windows,
        Some(&templates),
        now,
    )))
}

/// The template statuses of `merchant`'s WhatsApp Business Account. A merchant that names no
/// account sees every account's when it is the only merchant, else those of the accounts no
/// merchant names (whose changes are sent to it).
async fn templates_of(state: &ApiState, merchant: &Merchant) -> Vec<crate::store::TemplateStatus> {
    let store = &state.runtime.storage().templates;
    if merchant.waba_id.is_some() {
        return store.of_account(merchant.waba_id.as_deref()).await;
    }
    let registry = state.runtime.tenants().current();
    if registry.merchants().len() == 1 {
        return store.of_account(None).await;
    }
    let named: std::collections::HashSet<&str> = registry
        .merchants()
        .iter()
        .filter_map(|m| m.waba_id.as_deref())
        .collect();
    store
        .all()
        .await
        .into_iter()
        .filter(|t| t.waba.as_deref().map_or(true, |w| !named.contains(w)))
        .collect()
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(
    req: HttpRequest,
    form: web::Form<LoginForm>,
    state: web::Data<ApiState>,
    access: web::Data<DashboardAccess>,
) -> HttpResponse {
    let key = form.key.trim().as_bytes();
    match state.api_keys.check(&req, key) {
        KeyCheck::Accepted(_, digest) => enter(&req, &access, digest),
        KeyCheck::Refused => login_form(
            actix_web::http::StatusCode::UNAUTHORIZED,
            Some("That API key is not valid."),
        ),
        KeyCheck::Wait(wait) => {
            let secs = retry_after_secs(wait);
            let mut res = login_form(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many wrong keys from your address. Try again in {secs} seconds."
                )),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            res
        }
    }
}

async fn logout(req: HttpRequest, access: web::Data<DashboardAccess>) -> HttpResponse {
    if let Some(token) = session_token(&req) {
        access.close_session(&token);
    }
    html(HttpResponse::SeeOther())
        .insert_header((header::SET_COOKIE, cleared_cookie()))
        .insert_header((header::LOCATION, "/dashboard"))
        .finish()
}

/// Mints a one-time path for a client that holds the key but cannot send headers or fill a
/// form (a headless browser, a link handed to a colleague's browser).
async fn link(
    req: HttpRequest,
    state: web::Data<ApiState>,
    access: web::Data<DashboardAccess>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state.api_keys)?;
    let token = access.new_link(KeyDigest::of(bearer(&req)));
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "path": format!("/dashboard/once/{token}"),
            "expires_in_seconds": LINK_TTL.as_secs(),
        })))
}

async fn once(
    req: HttpRequest,
    token: web::Path<String>,
    state: web::Data<ApiState>,
    access: web::Data<DashboardAccess>,
) -> HttpResponse {
    // A link whose key was removed since it was made opens nothing.
    let key = access.redeem_link(&token).filter(|key| {
        let tenants = state.api_keys.tenants().current();
        tenants.merchant_for_digest(key).is_some()
    });
    if let Some(key) = key {
        enter(&req, &access, key)
    } else {
        login_form(
            actix_web::http::StatusCode::UNAUTHORIZED,
            Some("This link was already used or has expired. Log in with an API key."),
        )
    }
}
