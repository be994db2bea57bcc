//! The merchant API's idempotency keys: the request record written by the step that starts the
//! session (in its transaction), the first answer kept once, sealed (a reverse-OTP answer
//! carries a code), and keys read as absent — then purged — once older than the TTL.

use super::sessions::to_json;
use super::{query_error, PgEngine};
use crate::store::IDEMPOTENCY_TTL;
use crate::store::{IdempotencyKey, IdempotentRequest, IdempotentStart, StoreError, StoredAnswer};
use chrono::{DateTime, Utc};

fn seal_slot(key: &IdempotencyKey) -> Vec<u8> {
    let mut slot = b"pg-idempotency\0".to_vec();
    slot.extend_from_slice(key.scope());
    slot.push(0);
    slot.extend_from_slice(key.key().as_bytes());
    slot
}

fn ttl() -> chrono::Duration {
    chrono::Duration::from_std(IDEMPOTENCY_TTL).unwrap_or_else(|_| chrono::Duration::days(1))
}

impl PgEngine {
    /// Writes the request record of a session's first step, inside that step's transaction.
    /// A key used again after it expired starts over.
    pub(super) async fn write_idempotent(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        start: &IdempotentStart,
        session_id: &str,
    ) -> Result<(), StoreError> {
        let s = tx
            .prepare_cached(
                "INSERT INTO waotp_idempotency_keys (scope, key, request, session_id, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (scope, key) DO UPDATE SET
                 request = EXCLUDED.request, session_id = EXCLUDED.session_id,
                 created_at = EXCLUDED.created_at, answer = NULL",
            )
            .await
            .map_err(|e| query_error("cannot keep an idempotency key", e))?;
        tx.execute(
            &s,
            &[
                &&start.key.scope()[..],
                &start.key.key(),
                &start.request,
                &session_id,
                &start.at,
            ],
        )
        .await
        .map_err(|e| query_error("cannot keep an idempotency key", e))?;
        Ok(())
    }

    pub async fn idempotent(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentRequest>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT request, created_at, session_id, answer FROM waotp_idempotency_keys
                 WHERE scope = $1 AND key = $2 AND created_at > $3",
                &[&&key.scope()[..], &key.key(), &(now - ttl())],
            )
            .await
            .map_err(|e| query_error("cannot read an idempotency key", e))?;
        Ok(row.map(|r| IdempotentRequest::stored(r.get(0), r.get(1), r.get(2), r.get(3))))
    }

    pub async fn keep_answer(
        &self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        let plain = to_json(answer)?;
        let sealed = self.sealer.seal(&plain, &seal_slot(key));
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE waotp_idempotency_keys SET answer = coalesce(answer, $3)
                 WHERE scope = $1 AND key = $2",
                &[&&key.scope()[..], &key.key(), &sealed],
            )
            .await
            .map_err(|e| query_error("cannot keep an answer", e))?;
        if n == 0 {
            return Err(StoreError::Corrupt(
                "an idempotency key vanished before its answer was kept".into(),
            ));
        }
        Ok(())
    }

    pub fn answer(
        &self,
        key: &IdempotencyKey,
        record: &IdempotentRequest,
    ) -> Result<Option<StoredAnswer>, StoreError> {
        let Some(sealed) = record.sealed_answer() else {
            return Ok(None);
        };
        let plain = self
            .sealer
            .open(sealed, &seal_slot(key))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    pub async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM waotp_idempotency_keys WHERE created_at <= $1",
                &[&(now - ttl())],
            )
            .await
            .map_err(|e| query_error("cannot purge idempotency keys", e))?;
        Ok(n as usize)
    }
}
