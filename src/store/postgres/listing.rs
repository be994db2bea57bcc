//! Listing sessions for the merchant API: newest first by (creation time, id), filtered in
//! the query, a page at a time. The cursor is the (creation time, id) of the last session a page
//! held, so sessions started later never shift the pages after it; a merchant's listing only
//! ever reads (and so only ever names) that merchant's sessions.

use super::sessions::from_json;
use super::{query_error, PgEngine};
use crate::store::Liveness;
use crate::store::{Cursor, SessionPage, SessionQuery, StoreError};
use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;

/// A cursor's engine part: microseconds since the epoch, `.`, the session id in hex.
fn cursor_at(created: DateTime<Utc>, id: &str) -> Cursor {
    Cursor::new(&format!(
        "{}.{}",
        created.timestamp_micros(),
        hex::encode(id)
    ))
}

fn position_of(cursor: &Cursor) -> Option<(DateTime<Utc>, String)> {
    let (micros, id) = cursor.engine_part().split_once('.')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    let id = String::from_utf8(hex::decode(id).ok()?).ok()?;
    Some((at, id))
}

impl PgEngine {
    pub async fn list_sessions(&self, query: &SessionQuery) -> Result<SessionPage, StoreError> {
        let mut conditions: Vec<String> = Vec::new();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let bind = |value: Box<dyn ToSql + Sync + Send>, params: &mut Vec<_>| {
            params.push(value);
            format!("${}", params.len())
        };
        if let Some(m) = &query.merchant {
            let p = bind(Box::new(m.id.clone()), &mut params);
            conditions.push(if m.owns_unscoped {
                format!("(merchant = {p} OR merchant = '')")
            } else {
                format!("merchant = {p}")
            });
        }
        if let Some(flow) = &query.flow {
            let p = bind(Box::new(flow.clone()), &mut params);
            conditions.push(format!("flow = {p}"));
        }
        if let Some(status) = query.status {
            conditions.push(match status {
                Liveness::Active => "active".into(),
                Liveness::Completed => "NOT active".into(),
            });
        }
        if let Some(outcome) = &query.outcome {
            let p = bind(Box::new(outcome.clone()), &mut params);
            conditions.push(format!("outcome = {p}"));
        }
        if let Some(customer) = &query.customer {
            let p = bind(Box::new(customer.clone()), &mut params);
            conditions.push(format!("customer = {p}"));
        }
        // Millisecond precision, as the listing promises: strictly after / before.
        if let Some(after) = query.created_after {
            let end =
                DateTime::from_timestamp_millis(after.timestamp_millis() + 1).unwrap_or(after);
            let p = bind(Box::new(end), &mut params);
            conditions.push(format!("created_at >= {p}"));
        }
        if let Some(before) = query.created_before {
            let start =
                DateTime::from_timestamp_millis(before.timestamp_millis()).unwrap_or(before);
            let p = bind(Box::new(start), &mut params);
            conditions.push(format!("created_at < {p}"));
        }
        if let Some(cursor) = &query.starting_after {
            let (at, id) = position_of(cursor)
                .ok_or_else(|| StoreError::Invalid("not a cursor of this listing".into()))?;
            let a = bind(Box::new(at), &mut params);
            let i = bind(Box::new(id), &mut params);
            conditions.push(format!("(created_at, id) < ({a}, {i})"));
        }
        let limit = query.limit.max(1);
        // One more than asked, to know whether another page follows.
        let l = bind(Box::new((limit + 1) as i64), &mut params);
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT record, created_at, id FROM waotp_sessions {filter}
             ORDER BY created_at DESC, id DESC LIMIT {l}"
        );
        let c = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = c
            .query(&sql, &refs)
            .await
            .map_err(|e| query_error("cannot list sessions", e))?;
        let more = rows.len() > limit;
        let mut sessions = Vec::with_capacity(limit);
        let mut last = None;
        for r in rows.into_iter().take(limit) {
            last = Some((r.get::<_, DateTime<Utc>>(1), r.get::<_, String>(2)));
            sessions.push(from_json(r.get::<_, &[u8]>(0))?);
        }
        Ok(SessionPage {
            sessions,
            next_cursor: if more {
                last.map(|(at, id)| cursor_at(at, &id))
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let c = cursor_at(at, "ses_x");
        let back = Cursor::decode(&c.encode()).expect("decodes");
        assert_eq!(position_of(&back), Some((at, "ses_x".to_owned())));
        assert_eq!(position_of(&Cursor::new("43c0ffee")), None);
    }
}
