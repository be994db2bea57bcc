//! `GET /v1/sessions`: the key's merchant's sessions (no other merchant's), newest first, filtered, a page at a time (the
//! store's listing, see [`crate::store::Listing`]). Every filter is checked here and a bad one
//! is refused with its name in `param`; nothing else happens in this handler.

use super::auth::require_key;
use super::error::ApiError;
use super::sessions::{ApiState, SessionList};
use crate::domain::{is_user_id, PhoneNumber};
use crate::runtime::session_object::SessionObject;
use crate::store::Cursor;
use crate::store::{Liveness, SessionQuery};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};

/// Sessions per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_filter", message).with_param(param)
}

fn instant(param: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    super::stats::parse_instant_as("invalid_filter", param, raw)
}

/// Reads the query string into a store query.
pub fn parse_query(query: &str) -> Result<SessionQuery, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("query string: {e}")))?
        .into_inner();
    let mut q = SessionQuery {
        limit: DEFAULT_LIMIT,
        ..SessionQuery::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in &pairs {
        if !seen.insert(name.as_str()) {
            return Err(invalid(name, format!("`{name}` is given twice")));
        }
        let value = value.trim();
        let text = || {
            (!value.is_empty())
                .then(|| value.to_owned())
                .ok_or_else(|| invalid(name, format!("`{name}` is empty")))
        };
        match name.as_str() {
            "flow" => q.flow = Some(text()?),
            "outcome" => q.outcome = Some(text()?),
            "status" => {
                q.status = Some(match value {
                    "active" => Liveness::Active,
                    "completed" => Liveness::Completed,
                    _ => return Err(invalid(name, "`status` is `active` or `completed`")),
                })
            }
            "customer" => {
                q.customer = Some(if is_user_id(value) {
                    value.to_owned()
                } else {
                    PhoneNumber::parse(value)
                        .map_err(|why| {
                            invalid(
                                name,
                                format!("`customer` is an E.164 number (write + as %2B in a URL) or a WhatsApp user id: {why}"),
                            )
                        })?
                        .digits()
                        .to_owned()
                })
            }
            "created_after" => q.created_after = Some(instant(name, value)?),
            "created_before" => q.created_before = Some(instant(name, value)?),
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        invalid(name, format!("`limit` is a whole number from 1 to {MAX_LIMIT}"))
                    })?
            }
            "starting_after" => {
                q.starting_after = Some(Cursor::decode(value).ok_or_else(bad_cursor)?)
            }
            _ => {
                return Err(invalid(
                    name,
                    format!("`{name}` is not a filter: use flow, status, outcome, customer, created_after, created_before, limit, starting_after"),
                ))
            }
        }
    }
    Ok(q)
}

/// A cursor no page gave out.
fn bad_cursor() -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        "`starting_after` takes the `next_cursor` of a previous page",
    )
    .with_param("starting_after")
}

pub async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let merchant = require_key(&req, &state.api_keys)?;
    let mut query = parse_query(req.query_string())?;
    query.merchant = Some(super::sessions::sessions_of(
        &merchant,
        &state.runtime.tenants().current(),
    ));
    let page = state
        .runtime
        .storage()
        .listing
        .list(&query)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Invalid(_) => bad_cursor(),
            other => ApiError::internal(other),
        })?;
    Ok(HttpResponse::Ok().json(SessionList {
        sessions: page.sessions.iter().map(SessionObject::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}
