//! The append-only audit log of OTP activity in PostgreSQL: the table `otp_audit`.
//!
//! Entries are the embedded engine's [`AuditEntry`] (no code, no digest, the customer masked),
//! stored as JSON with their session id beside them; a `bigserial` id gives the append order.
//! Ids burnt by rolled-back transactions leave gaps, which is harmless: only order matters.
//! Nothing here updates or deletes an entry.

use deadpool_postgres::Pool;
use tokio_postgres::types::Json;

use crate::store::{Audit, AuditEntry, StoreError};

fn database(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Appends `entry` inside `tx`, so that it commits with the change it records.
pub async fn append_in(
    tx: &tokio_postgres::Transaction<'_>,
    entry: &AuditEntry,
) -> Result<u64, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "INSERT INTO otp_audit (session_id, entry) VALUES ($1, $2) RETURNING id",
            &[&entry.session_id(), &Json(entry)],
        )
        .await?;
    Ok(id_of(row.get(0)))
}

fn id_of(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}

fn db_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// The audit table.
#[derive(Clone)]
pub struct PgAuditLog {
    pool: Pool,
}

impl std::fmt::Debug for PgAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditLog").finish_non_exhaustive()
    }
}

impl PgAuditLog {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Appends one entry on its own (changes of other state append inside their transaction
    /// with [`append_in`]). Returns its id.
    pub async fn append(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(database)?;
        let row = client
            .query_one(
                "INSERT INTO otp_audit (session_id, entry) VALUES ($1, $2) RETURNING id",
                &[&entry.session_id(), &Json(entry)],
            )
            .await
            .map_err(database)?;
        Ok(id_of(row.get(0)))
    }

    /// Entries with ids from `from` on, oldest first, at most `limit` of them.
    pub async fn read_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let client = self.pool.get().await.map_err(database)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT id, entry FROM otp_audit WHERE id >= $1 ORDER BY id LIMIT $2",
                &[&db_id(from), &limit],
            )
            .await
            .map_err(database)?;
        rows.into_iter().map(|row| decode(&row)).collect()
    }

    /// Every entry of one session, oldest first.
    pub async fn for_session(&self, session_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.pool.get().await.map_err(database)?;
        let rows = client
            .query(
                "SELECT id, entry FROM otp_audit WHERE session_id = $1 ORDER BY id",
                &[&session_id],
            )
            .await
            .map_err(database)?;
        rows.into_iter()
            .map(|row| decode(&row).map(|(_, e)| e))
            .collect()
    }
}

fn decode(row: &tokio_postgres::Row) -> Result<(u64, AuditEntry), StoreError> {
    let id = id_of(row.get(0));
    let value: serde_json::Value = row.get(1);
    let entry = serde_json::from_value(value)
        .map_err(|e| StoreError::Corrupt(format!("audit entry {id}: {e}")))?;
    Ok((id, entry))
}

#[async_trait::async_trait]
impl Audit for PgAuditLog {
    async fn read_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        PgAuditLog::read_from(self, from, limit).await
    }

    async fn for_session(&self, session_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        PgAuditLog::for_session(self, session_id).await
    }
}
