//! Inbound events: recorded once by their dedupe key, in arrival order, until handled.
//!
//! `INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING seq` decides new or duplicate in one
//! statement, whichever instance WhatsApp retried to. The statement first takes the customer's
//! `Record` advisory lock, held until it commits, so one customer's sequence numbers commit in
//! the order they were taken: a handler reading the customer's pending events never sees a
//! later one before an earlier one commits. Events are sealed (a customer's message may be the
//! code they were sent), bound to their dedupe key.

use super::{query_error, PgEngine};
use crate::domain::InboundEvent;
use crate::store::{Recorded, StoreError, StoredEvent};

fn seal_slot(dedupe_key: &[u8]) -> Vec<u8> {
    let mut slot = b"pg-inbound\0".to_vec();
    slot.extend_from_slice(dedupe_key);
    slot
}

impl PgEngine {
    /// Records `event` of `customer_key` received at `now` (Unix seconds) unless its dedupe key
    /// was recorded before. Committed when this returns.
    pub async fn record_event(
        &self,
        event: &InboundEvent,
        customer_key: &str,
        now: i64,
    ) -> Result<Recorded, StoreError> {
        let dedupe_key = event.dedupe_key();
        let plain = serde_json::to_vec(&StoredEvent {
            received_at: now,
            event: event.clone(),
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sealed = self.sealer.seal(&plain, &seal_slot(dedupe_key.as_bytes()));
        let fail = |e| query_error("cannot record an event", e);
        let client = self.client().await?;
        // One statement, so one round trip and its own transaction: the customer's lock is
        // taken before the row (and its sequence number) is made, and held to the commit.
        let insert = client
            .prepare_cached(
                "INSERT INTO waotp_inbound_events (dedupe_key, customer_key, received_at, event)
                 SELECT $1, $2, $3, $4 FROM pg_advisory_xact_lock($5, $6)
                 ON CONFLICT (dedupe_key) DO NOTHING
                 RETURNING seq",
            )
            .await
            .map_err(fail)?;
        let row = client
            .query_opt(
                &insert,
                &[
                    &dedupe_key.as_bytes(),
                    &customer_key,
                    &now,
                    &sealed,
                    &super::LockClass::Record.id(),
                    &super::locks::lock_key(customer_key),
                ],
            )
            .await
            .map_err(fail)?;
        let Some(row) = row else {
            return Ok(Recorded::Duplicate);
        };
        let seq = row.get::<_, i64>(0) as u64;
        // Committed, so durable: the runtime may act on it now.
        let release = self
            .release
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(release) = release {
            release(seq, event.clone());
        }
        Ok(Recorded::New { seq })
    }

    fn open_event(&self, dedupe_key: &[u8], sealed: &[u8]) -> Result<StoredEvent, StoreError> {
        let plain = self
            .sealer
            .open(sealed, &seal_slot(dedupe_key))
            .map_err(|_| StoreError::Corrupt("an inbound event does not open".into()))?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    fn events(
        &self,
        rows: Vec<tokio_postgres::Row>,
    ) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        rows.iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let key: &[u8] = r.get(1);
                let sealed: &[u8] = r.get(2);
                Ok((seq as u64, self.open_event(key, sealed)?))
            })
            .collect()
    }

    /// Sets the hook called with each event this instance records, once committed.
    pub fn on_recorded(&self, release: Option<crate::store::Release>) {
        *self.release.write().unwrap_or_else(|p| p.into_inner()) = release;
    }

    /// A number greater than every sequence number given out so far (committed or not).
    pub async fn next_event_seq(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
                 FROM waotp_inbound_events_seq_seq",
                &[],
            )
            .await
            .map_err(|e| query_error("cannot read the event sequence", e))?;
        Ok(row.get::<_, i64>(0).max(1) as u64)
    }

    /// Every event kept, in sequence order.
    pub async fn all_events(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, dedupe_key, event FROM waotp_inbound_events ORDER BY seq",
                &[],
            )
            .await
            .map_err(|e| query_error("cannot read events", e))?;
        self.events(rows)
    }

    /// Every event not yet handled, in sequence order.
    pub async fn pending_events(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, dedupe_key, event FROM waotp_inbound_events
                 WHERE handled_at IS NULL ORDER BY seq",
                &[],
            )
            .await
            .map_err(|e| query_error("cannot read pending events", e))?;
        self.events(rows)
    }

    /// One customer's events not yet handled, in sequence order.
    pub async fn pending_events_of(
        &self,
        customer_key: &str,
    ) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        let c = self.client().await?;
        let statement = c
            .prepare_cached(
                "SELECT seq, dedupe_key, event FROM waotp_inbound_events
                 WHERE customer_key = $1 AND handled_at IS NULL ORDER BY seq",
            )
            .await
            .map_err(|e| query_error("cannot read pending events", e))?;
        let rows = c
            .query(&statement, &[&customer_key])
            .await
            .map_err(|e| query_error("cannot read pending events", e))?;
        self.events(rows)
    }

    /// Marks an event handled (idempotent).
    pub async fn mark_event_handled(&self, seq: u64) -> Result<(), StoreError> {
        let c = self.client().await?;
        let statement = c
            .prepare_cached(
                "UPDATE waotp_inbound_events SET handled_at = now()
                 WHERE seq = $1 AND handled_at IS NULL",
            )
            .await
            .map_err(|e| query_error("cannot mark an event handled", e))?;
        c.execute(&statement, &[&(seq as i64)])
            .await
            .map_err(|e| query_error("cannot mark an event handled", e))?;
        Ok(())
    }

    /// Whether an event was marked handled (false for a number never recorded).
    pub async fn is_event_handled(&self, seq: u64) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT handled_at IS NOT NULL FROM waotp_inbound_events WHERE seq = $1",
                &[&(seq as i64)],
            )
            .await
            .map_err(|e| query_error("cannot read an event", e))?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    /// Whether an event with this dedupe key is recorded.
    pub async fn event_seen(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT 1 FROM waotp_inbound_events WHERE dedupe_key = $1",
                &[&dedupe_key.as_bytes()],
            )
            .await
            .map_err(|e| query_error("cannot read an event", e))?;
        Ok(row.is_some())
    }

    /// Events not yet handled.
    pub async fn pending_event_count(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM waotp_inbound_events WHERE handled_at IS NULL")
            .await
    }

    /// Events stored (handled or not).
    pub async fn event_count(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM waotp_inbound_events")
            .await
    }

    pub(super) async fn count(&self, sql: &str) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(sql, &[])
            .await
            .map_err(|e| query_error("cannot count", e))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// Forgets handled events received before `cutoff` (Unix seconds), and with them their
    /// dedupe keys. Returns how many went.
    pub async fn purge_events_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM waotp_inbound_events
                 WHERE received_at < $1 AND handled_at IS NOT NULL",
                &[&cutoff],
            )
            .await
            .map_err(|e| query_error("cannot purge events", e))?;
        Ok(n as usize)
    }
}
