//! `GET /v1/stats?flow=<id>&from=<RFC 3339>&to=<RFC 3339>`: the verification funnel of one flow
//! (or all) over a time range, from the aggregates the runtime keeps as sessions progress.
//!
//! Aggregates are hourly, so the range is widened to whole hours: `from` is rounded down to its
//! hour and `to` up (exclusive). Without `to` the range ends now; without `from` it starts 24
//! hours before `to`. The answer echoes the hours actually covered.
//!
//! The figures are the key's merchant's only, all its numbers together, with the same funnel
//! per number under `numbers`: every number the merchant has, then any number it no longer has
//! that still has counts in the range.

use super::auth::require_key;
use super::error::ApiError;
use super::sessions::ApiState;
use crate::store::{Histogram, MerchantTotals, Totals, BUCKETS};
use crate::tenants::Merchant;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// Outcomes that mean the person proved they hold the number.
pub const SUCCESS_OUTCOMES: [&str; 3] = ["verified", "confirmed", "approved"];

#[derive(Deserialize)]
struct StatsQuery {
    flow: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// A validated report range in whole hours: `from_hour` ≤ h < `to_hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRange {
    pub from_hour: i64,
    pub to_hour: i64,
}

impl HourRange {
    /// The hours covering `from`..`to`.
    pub fn covering(from: DateTime<Utc>, to: DateTime<Utc>) -> HourRange {
        let from_hour = from.timestamp().div_euclid(3600);
        // Rounded up: an instant inside an hour includes that hour.
        let to_hour = to.timestamp().div_euclid(3600) + i64::from(to.timestamp() % 3600 != 0);
        HourRange {
            from_hour,
            to_hour: to_hour.max(from_hour + 1),
        }
    }

    /// The last `hours` hours up to and including the current one.
    pub fn last_hours(now: DateTime<Utc>, hours: i64) -> HourRange {
        let to_hour = now.timestamp().div_euclid(3600) + 1;
        HourRange {
            from_hour: to_hour - hours,
            to_hour,
        }
    }

    pub fn start(&self, hour: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(hour.saturating_mul(3600), 0).unwrap_or_default()
    }
}

fn parse_instant(name: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_instant_as("invalid_date", name, raw)
}

/// `raw` as an RFC 3339 time, else a 400 with `code` naming the parameter `name`.
pub(super) fn parse_instant_as(
    code: &'static str,
    name: &str,
    raw: &str,
) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::bad_request(
                code,
                format!(
                    "`{name}` must be an RFC 3339 time such as 2026-01-31T09:00:00Z ({e}; write + as %2B in a URL)"
                ),
            )
            .with_param(name)
        })
}

/// A share as a fraction, or `None` when nothing was there to share.
pub fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn histogram_json(h: &Histogram) -> Value {
    json!({
        "count": h.total(),
        "p50": h.quantile(0.5),
        "p90": h.quantile(0.9),
        "buckets": BUCKETS.iter().zip(h.counts.iter())
            .map(|(le, count)| json!({"le": le, "count": count}))
            .collect::<Vec<_>>(),
    })
}

/// Failure reasons, most frequent first, with Meta's code and what it means.
pub fn failures(t: &Totals) -> Vec<(Option<i64>, u64, &'static str)> {
    let mut out: Vec<_> = t
        .failures
        .iter()
        .map(|(code, n)| {
            let text = match code {
                Some(c) => crate::whatsapp::explain::explain(*c).unwrap_or("Other WhatsApp error"),
                None => "WhatsApp reported a failure without an error code",
            };
            (*code, *n, text)
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// The body of `/v1/stats` (the dashboard shows the same figures).
pub fn report(flow: Option<&str>, range: HourRange, t: &Totals) -> Value {
    let succeeded = succeeded(t);
    json!({
        "flow": flow,
        "from": range.start(range.from_hour).to_rfc3339(),
        "to": range.start(range.to_hour).to_rfc3339(),
        "sessions_started": t.started,
        "codes_sent": t.code_sent,
        "codes_delivered": t.code_delivered,
        "codes_read": t.code_read,
        "verified": t.verified,
        "succeeded": succeeded,
        "outcomes": t.outcomes,
        "delivery_failures": failures(t).into_iter()
            .map(|(code, count, explanation)| json!({"code": code, "count": count, "explanation": explanation}))
            .collect::<Vec<_>>(),
        "limit_breaches": t.limit_breaches,
        "conversion_rate": rate(t.verified, t.started),
        "delivery_rate": rate(t.code_delivered, t.code_sent),
        "read_rate": rate(t.code_read, t.code_sent),
        "sent_to_verified_seconds": histogram_json(&t.verify_latency),
        "sent_to_delivered_seconds": histogram_json(&t.delivery_latency),
        "sessions_by_hour": t.started_by_hour.iter()
            .map(|(h, n)| json!({"hour": range.start(*h).to_rfc3339(), "started": n}))
            .collect::<Vec<_>>(),
    })
}

/// One number's funnel in a merchant's report.
fn number_json(phone_number_id: &str, business_number: Option<&str>, t: &Totals) -> Value {
    json!({
        "phone_number_id": phone_number_id,
        "business_number": business_number,
        "sessions_started": t.started,
        "codes_sent": t.code_sent,
        "codes_delivered": t.code_delivered,
        "codes_read": t.code_read,
        "verified": t.verified,
        "succeeded": succeeded(t),
        "conversion_rate": rate(t.verified, t.started),
        "delivery_rate": rate(t.code_delivered, t.code_sent),
    })
}

/// Sessions that ended in an outcome of [`SUCCESS_OUTCOMES`].
fn succeeded(t: &Totals) -> u64 {
    SUCCESS_OUTCOMES
        .iter()
        .filter_map(|o| t.outcomes.get(*o))
        .fold(0u64, |a, n| a.saturating_add(*n))
}

/// A merchant's numbers with their figures: the configured ones in order (zeros when quiet),
/// then those with counts that the merchant no longer has.
pub fn numbers_of<'a>(
    merchant: &'a Merchant,
    t: &'a MerchantTotals,
) -> Vec<(&'a str, Option<&'a str>, std::borrow::Cow<'a, Totals>)> {
    let mut out: Vec<_> = merchant
        .numbers
        .iter()
        .map(|n| {
            let totals = t.numbers.get(&n.phone_number_id).map_or_else(
                || std::borrow::Cow::Owned(Totals::default()),
                std::borrow::Cow::Borrowed,
            );
            (
                n.phone_number_id.as_str(),
                n.business_number.as_deref(),
                totals,
            )
        })
        .collect();
    for (id, totals) in &t.numbers {
        if merchant.numbers.iter().all(|n| &n.phone_number_id != id) {
            out.push((id.as_str(), None, std::borrow::Cow::Borrowed(totals)));
        }
    }
    out
}

/// The body of `/v1/stats` for a merchant: [`report`] of all its numbers, its id, and each
/// number's funnel.
pub fn merchant_report(
    merchant: &Merchant,
    flow: Option<&str>,
    range: HourRange,
    t: &MerchantTotals,
) -> Value {
    let mut body = report(flow, range, &t.all);
    body["merchant"] = json!(merchant.id);
    body["numbers"] = numbers_of(merchant, t)
        .iter()
        .map(|(id, business, totals)| number_json(id, *business, totals))
        .collect();
    body
}

pub(super) async fn stats(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = require_key(&req, &state.api_keys)?;
    let query = web::Query::<StatsQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", format!("query string: {e}")))?
        .into_inner();
    let flow = query
        .flow
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    // Only the merchant's own flows: another merchant's flow is as unknown as one nowhere.
    if let Some(f) = flow {
        if state.runtime.flows_of(&merchant.id).get(f).is_none() {
            return Err(ApiError::bad_request(
                "unknown_flow",
                format!("no flow `{f}`; leave `flow` out for all flows"),
            )
            .with_param("flow"));
        }
    }
    let to = match &query.to {
        Some(raw) => parse_instant("to", raw)?,
        None => Utc::now(),
    };
    let from = match &query.from {
        Some(raw) => parse_instant("from", raw)?,
        None => to - Duration::hours(24),
    };
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!(
                "`from` ({}) is after `to` ({})",
                from.to_rfc3339(),
                to.to_rfc3339()
            ),
        ));
    }
    let range = HourRange::covering(from, to);
    let default = state.runtime.tenants().current().default_scope();
    let totals = state
        .runtime
        .storage()
        .stats
        .query_merchant(&merchant.id, &default, flow, range.from_hour, range.to_hour)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(merchant_report(&merchant, flow, range, &totals)))
}
