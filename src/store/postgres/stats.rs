//! Verification funnel aggregates in PostgreSQL, shared by every instance.
//!
//! Tables (migration `0002_otp.sql`): `stats_counters` — one row per hour, merchant, number,
//! flow and metric (histogram buckets are metrics too: `lat_verify:03`…), incremented in place
//! by an upsert, so concurrent counts from several instances are never lost — and
//! `stats_code_sent`, when each running session's latest code was accepted by WhatsApp.
//!
//! Counts and totals are the embedded engine's [`Metric`], [`Totals`] and [`MerchantTotals`];
//! a counter saturates at `i64::MAX` (PostgreSQL's `bigint`) instead of `u64::MAX`.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use crate::store::{hour_of, MerchantTotals, Metric, Stats, StoreError, Totals};
use crate::tenants::Scope;

fn database(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

fn count_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The stats tables.
#[derive(Clone)]
pub struct PgStatsStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStatsStore").finish_non_exhaustive()
    }
}

impl PgStatsStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Adds `n` to a counter of `flow` at `scope` in the hour of `at` (durable on return).
    pub async fn count(
        &self,
        scope: &Scope,
        flow: &str,
        metric: Metric<'_>,
        at: DateTime<Utc>,
        n: u64,
    ) -> Result<(), StoreError> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let client = self.pool.get().await.map_err(database)?;
        client
            .execute(
                "INSERT INTO stats_counters AS c (hour, merchant, number, flow, metric, n)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (hour, merchant, number, flow, metric)
                 DO UPDATE SET n = c.n + LEAST(EXCLUDED.n, 9223372036854775807 - c.n)",
                &[
                    &hour_of(at).max(0),
                    &scope.merchant,
                    &scope.number,
                    &flow,
                    &metric.name(),
                    &n,
                ],
            )
            .await
            .map_err(database)?;
        Ok(())
    }

    /// Remembers when the session's latest code was accepted by WhatsApp.
    pub async fn code_sent_at(
        &self,
        session_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(database)?;
        client
            .execute(
                "INSERT INTO stats_code_sent (session_id, sent_at) VALUES ($1, $2)
                 ON CONFLICT (session_id) DO UPDATE SET sent_at = EXCLUDED.sent_at",
                &[&session_id, &at],
            )
            .await
            .map_err(database)?;
        Ok(())
    }

    /// When the session's latest code was accepted, if one was.
    pub async fn sent_at(&self, session_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.pool.get().await.map_err(database)?;
        let row = client
            .query_opt(
                "SELECT sent_at FROM stats_code_sent WHERE session_id = $1",
                &[&session_id],
            )
            .await
            .map_err(database)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Forgets a finished session's code time.
    pub async fn session_done(&self, session_id: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(database)?;
        client
            .execute(
                "DELETE FROM stats_code_sent WHERE session_id = $1",
                &[&session_id],
            )
            .await
            .map_err(database)?;
        Ok(())
    }

    /// The counters of `flow` (every flow when `None`) and of `merchant` (every merchant when
    /// `None`) over the hours `from_hour` up to, not including, `to_hour`, summed per hour,
    /// number and metric.
    async fn scan(
        &self,
        merchant: Option<&str>,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<(i64, String, String, u64)>, StoreError> {
        if to_hour <= from_hour {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await.map_err(database)?;
        let rows = client
            .query(
                "SELECT hour, number, metric,
                        LEAST(sum(n), 9223372036854775807)::bigint
                 FROM stats_counters
                 WHERE hour >= $1 AND hour < $2
                   AND ($3::text IS NULL OR flow = $3)
                   AND ($4::text IS NULL OR merchant = $4)
                 GROUP BY hour, number, metric",
                &[&from_hour.max(0), &to_hour.max(0), &flow, &merchant],
            )
            .await
            .map_err(database)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), count_of(r.get(3))))
            .collect())
    }

    /// Sums the counters of `flow` (every flow when `None`) of every merchant over the hours
    /// `from_hour` up to, not including, `to_hour`.
    pub async fn query(
        &self,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Totals, StoreError> {
        let mut totals = Totals::default();
        for (hour, _, metric, n) in self.scan(None, flow, from_hour, to_hour).await? {
            totals.absorb(hour, &metric, n);
        }
        Ok(totals)
    }

    /// Sums `merchant`'s counters of `flow` (every flow when `None`) over the hours
    /// `from_hour` up to, not including, `to_hour`, in all and per number. (`_default` names
    /// the scope of counters written before merchants existed; a PostgreSQL database has
    /// none.)
    pub async fn query_merchant(
        &self,
        merchant: &str,
        _default: &Scope,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<MerchantTotals, StoreError> {
        let mut totals = MerchantTotals::default();
        for (hour, number, metric, n) in self.scan(Some(merchant), flow, from_hour, to_hour).await?
        {
            totals.all.absorb(hour, &metric, n);
            totals
                .numbers
                .entry(number)
                .or_default()
                .absorb(hour, &metric, n);
        }
        Ok(totals)
    }
}

#[async_trait::async_trait]
impl Stats for PgStatsStore {
    async fn count(
        &self,
        scope: &Scope,
        flow: &str,
        metric: Metric<'_>,
        at: DateTime<Utc>,
        n: u64,
    ) -> Result<(), StoreError> {
        PgStatsStore::count(self, scope, flow, metric, at, n).await
    }

    async fn code_sent_at(&self, session_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        PgStatsStore::code_sent_at(self, session_id, at).await
    }

    async fn sent_at(&self, session_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        PgStatsStore::sent_at(self, session_id).await
    }

    async fn session_done(&self, session_id: &str) -> Result<(), StoreError> {
        PgStatsStore::session_done(self, session_id).await
    }

    async fn query(
        &self,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Totals, StoreError> {
        PgStatsStore::query(self, flow, from_hour, to_hour).await
    }

    async fn query_merchant(
        &self,
        merchant: &str,
        default: &Scope,
        flow: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<MerchantTotals, StoreError> {
        PgStatsStore::query_merchant(self, merchant, default, flow, from_hour, to_hour).await
    }
}
