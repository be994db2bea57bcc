//! Timer claims: like the outbox's, `FOR UPDATE SKIP LOCKED` and a lease, so each due timer
//! is fired by one instance; the step that fires it removes it in its own transaction, and a
//! timer whose instance died before that fires again after the lease.

use super::outbox::lease_ms;
use super::{query_error, PgEngine};
use crate::store::{DueTimer, StoreError, TimerRef};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_postgres::types::ToSql;

impl PgEngine {
    /// Claims up to `limit` timers due at `now`, earliest first, for `lease`.
    pub async fn claim_timers(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let fail = |e| query_error("cannot claim timers", e);
        let c = self.client().await?;
        let s = c
            .prepare_cached(
                "WITH chosen AS (
                     SELECT session_id, timer_id, due_ms FROM waotp_timers
                     WHERE due_ms <= $1 AND (claimed_until IS NULL OR claimed_until <= now())
                     ORDER BY due_ms, session_id, timer_id
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE waotp_timers t
                 SET claimed_until = now() + $3::float8 * interval '1 millisecond', claimed_by = $4
                 FROM chosen
                 WHERE t.session_id = chosen.session_id AND t.timer_id = chosen.timer_id
                   AND t.due_ms = chosen.due_ms
                   AND (t.claimed_until IS NULL OR t.claimed_until <= now())
                 RETURNING t.due_ms, t.session_id, t.timer_id, t.seq",
            )
            .await
            .map_err(fail)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 4] = [
            &now.timestamp_millis(),
            &limit,
            &lease_ms(lease),
            &&*self.instance,
        ];
        let mut timers: Vec<DueTimer> = c
            .query(&s, &params)
            .await
            .map_err(fail)?
            .into_iter()
            .map(|r| DueTimer {
                timer: TimerRef {
                    due_ms: r.get(0),
                    session_id: r.get(1),
                    timer_id: r.get(2),
                },
                seq: r.get::<_, i64>(3) as u64,
            })
            .collect();
        timers.sort_by(|a, b| a.timer.cmp(&b.timer));
        Ok(timers)
    }

    /// Ends a claim without firing.
    pub async fn release_timer(&self, t: &TimerRef) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE waotp_timers SET claimed_until = NULL, claimed_by = NULL
             WHERE session_id = $1 AND timer_id = $2 AND due_ms = $3",
            &[&t.session_id, &t.timer_id, &t.due_ms],
        )
        .await
        .map_err(|e| query_error("cannot release a timer", e))?;
        Ok(())
    }

    pub async fn drop_timer(&self, t: &TimerRef) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM waotp_timers WHERE session_id = $1 AND timer_id = $2 AND due_ms = $3",
            &[&t.session_id, &t.timer_id, &t.due_ms],
        )
        .await
        .map_err(|e| query_error("cannot drop a timer", e))?;
        Ok(())
    }

    /// Timers due at `now` and not yet fired (claimed or not), counting at most `limit`.
    pub async fn due_timer_count(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let row = c
            .query_one(
                "SELECT count(*) FROM (
                     SELECT 1 FROM waotp_timers WHERE due_ms <= $1 LIMIT $2) due",
                &[&now.timestamp_millis(), &limit],
            )
            .await
            .map_err(|e| query_error("cannot count timers", e))?;
        Ok(row.get::<_, i64>(0).max(0) as usize)
    }
}
