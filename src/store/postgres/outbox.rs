//! Outbox claims: `FOR UPDATE SKIP LOCKED` hands each due entry to one sender, and a lease
//! (`claimed_until`) hands it to another once its holder is gone.
//!
//! A claim takes a recipient's (merchant, number and `to`) entries in queue order, and none
//! while an entry of that recipient is held by an earlier claim: one recipient's messages go out
//! in order, whichever instances send. An entry in flight keeps its claim until it is
//! settled; if its lease runs out first (its holder died mid-send), the next claim returns it
//! still `InFlight`, and the sender applies the in-doubt rules: never a blind resend.
//!
//! A live holder renews its claims while they wait in its queue, and every write a holder makes
//! to an entry it has not sent (in flight, postponed, given up) and every release carries the
//! condition `claimed_by = <this instance> AND claimed_until > now()` in its own statement:
//! a holder whose claim passed to another instance changes nothing, so one entry is never
//! sent by two.

use super::sessions::{from_json, outbox_row, to_json};
use super::{query_error, PgEngine};
use crate::store::{MessageLink, OutboxEntry, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_postgres::types::ToSql;

/// A lease in milliseconds. Leases run on the database server's clock, which every instance
/// shares: a claim expires at the same moment for all of them, however their clocks drift.
pub(super) fn lease_ms(lease: Duration) -> f64 {
    lease.as_secs_f64() * 1000.0
}

impl PgEngine {
    /// Claims up to `limit` entries due at `now` for `lease` (see the module doc).
    pub async fn claim_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let fail = |e| query_error("cannot claim outbox entries", e);
        let c = self.client().await?;
        // Entries due (or left in flight) and free, of recipients none of whose entries is held,
        // in queue order. The recipient's advisory lock (held to the end of this statement's
        // transaction) keeps two claims running at once from splitting one recipient's queue;
        // a row another transaction is writing right now is skipped, and the update re-checks
        // the claim condition on the row as it is by then.
        let s = c
            .prepare_cached(
                "WITH chosen AS (
                     SELECT o.id FROM waotp_outbox o
                     WHERE ((o.queued AND o.due_ms <= $1) OR o.state = 'in_flight')
                       AND (o.claimed_until IS NULL OR o.claimed_until <= now())
                       AND NOT EXISTS (
                           SELECT 1 FROM waotp_outbox b
                           WHERE b.recipient = o.recipient AND b.claimed_until > now())
                       AND pg_try_advisory_xact_lock($5, hashtext(o.recipient))
                     ORDER BY o.due_ms, o.id
                     LIMIT $2
                     FOR UPDATE OF o SKIP LOCKED
                 )
                 UPDATE waotp_outbox o
                 SET claimed_until = now() + $3::float8 * interval '1 millisecond', claimed_by = $4
                 FROM chosen WHERE o.id = chosen.id
                   AND ((o.queued AND o.due_ms <= $1) OR o.state = 'in_flight')
                   AND (o.claimed_until IS NULL OR o.claimed_until <= now())
                 RETURNING o.entry, o.due_ms, o.id",
            )
            .await
            .map_err(fail)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 5] = [
            &now.timestamp_millis(),
            &limit,
            &lease_ms(lease),
            &&*self.instance,
            &super::LockClass::Recipient.id(),
        ];
        let mut rows = c.query(&s, &params).await.map_err(fail)?;
        rows.sort_by_key(|r| (r.get::<_, i64>(1), r.get::<_, String>(2)));
        rows.into_iter()
            .map(|r| from_json(r.get::<_, &[u8]>(0)))
            .collect()
    }

    /// Gives this instance's claims of `ids` back unchanged; a claim another instance took
    /// over stays its own.
    pub async fn release_outbox(&self, ids: &[String]) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE waotp_outbox SET claimed_until = NULL, claimed_by = NULL
             WHERE id = ANY($1) AND claimed_by = $2",
            &[&ids, &&*self.instance],
        )
        .await
        .map_err(|e| query_error("cannot release outbox entries", e))?;
        Ok(())
    }

    /// Renews, for `lease` from now on the server's clock, the claims of `ids` this instance
    /// still holds; returns how many.
    pub async fn renew_outbox(&self, ids: &[String], lease: Duration) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let fail = |e| query_error("cannot renew outbox claims", e);
        let c = self.client().await?;
        let s = c
            .prepare_cached(
                "UPDATE waotp_outbox
                 SET claimed_until = now() + $3::float8 * interval '1 millisecond'
                 WHERE id = ANY($1) AND claimed_by = $2 AND claimed_until > now()",
            )
            .await
            .map_err(fail)?;
        let params: [&(dyn ToSql + Sync); 3] = [&ids, &&*self.instance, &lease_ms(lease)];
        let renewed = c.execute(&s, &params).await.map_err(fail)?;
        Ok(usize::try_from(renewed).unwrap_or(usize::MAX))
    }

    /// Writes `entry` only if this instance still holds its claim (its lease not run out on
    /// the server's clock), in one statement, and says whether it did. With `renew`, the claim
    /// is renewed for that lease in the same write; a settled state ends it.
    pub async fn update_if_held(
        &self,
        entry: &OutboxEntry,
        renew: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let fail = |e| query_error("cannot update a claimed outbox entry", e);
        let row = outbox_row(entry);
        let settled = matches!(row.state, "done" | "failed");
        let c = self.client().await?;
        // The claim condition and the write are one statement: a claim taken over between a
        // check and a write could not be told from one still held.
        let s = c
            .prepare_cached(
                "WITH written AS (
                     UPDATE waotp_outbox
                     SET entry = $3, state = $4, queued = $5, due_ms = $6,
                         claimed_until = CASE
                             WHEN $7 THEN NULL
                             WHEN $8::float8 IS NOT NULL
                                 THEN now() + $8::float8 * interval '1 millisecond'
                             ELSE claimed_until END,
                         claimed_by = CASE WHEN $7 THEN NULL ELSE claimed_by END
                     WHERE id = $1 AND claimed_by = $2 AND claimed_until > now()
                     RETURNING queued
                 )
                 SELECT queued FROM written",
            )
            .await
            .map_err(fail)?;
        let json = to_json(entry)?;
        let renew_ms = renew.map(lease_ms);
        let params: [&(dyn ToSql + Sync); 8] = [
            &entry.id,
            &&*self.instance,
            &json,
            &row.state,
            &row.queued,
            &entry.due_ms,
            &settled,
            &renew_ms,
        ];
        let written = c.query_opt(&s, &params).await.map_err(fail)?;
        if written.as_ref().is_some_and(|r| r.get::<_, bool>(0)) {
            // Queued again (postponed): other instances may look for it when it comes due.
            c.batch_execute(&format!("NOTIFY {}", super::sessions::WORK_CHANNEL))
                .await
                .map_err(fail)?;
        }
        Ok(written.is_some())
    }

    /// Writes an entry's new state (and the link of the message it became) in one
    /// transaction; a settled state (`Done`, `Failed`) ends the claim, any other keeps it
    /// (its holder gives back what it rescheduled).
    pub async fn update_outbox(
        &self,
        entry: &OutboxEntry,
        link: Option<(&str, &MessageLink)>,
    ) -> Result<(), StoreError> {
        let fail = |e| query_error("cannot update an outbox entry", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        match self.write_outbox(&tx, entry, link).await {
            Ok(()) => tx.commit().await.map_err(fail),
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn write_outbox(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        entry: &OutboxEntry,
        link: Option<(&str, &MessageLink)>,
    ) -> Result<(), StoreError> {
        let fail = |e| query_error("cannot update an outbox entry", e);
        let row = outbox_row(entry);
        // A status webhook moving an entry in doubt, or its holder rescheduling it, must not
        // hand it to another instance while the holder still has it.
        let keep_claim = !matches!(row.state, "done" | "failed");
        let s = tx
            .prepare_cached(
                "INSERT INTO waotp_outbox
                 (id, recipient, session_id, entry, state, queued, due_ms, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO UPDATE SET
                 entry = EXCLUDED.entry, state = EXCLUDED.state, queued = EXCLUDED.queued,
                 due_ms = EXCLUDED.due_ms,
                 claimed_until = CASE WHEN $9 THEN waotp_outbox.claimed_until END,
                 claimed_by = CASE WHEN $9 THEN waotp_outbox.claimed_by END",
            )
            .await
            .map_err(fail)?;
        let json = to_json(entry)?;
        let params: [&(dyn ToSql + Sync); 9] = [
            &entry.id,
            &row.recipient,
            &entry.session_id,
            &json,
            &row.state,
            &row.queued,
            &entry.due_ms,
            &entry.created_at,
            &keep_claim,
        ];
        tx.execute(&s, &params).await.map_err(fail)?;
        if let Some((message_id, l)) = link {
            let earlier = tx
                .query_opt(
                    "SELECT link FROM waotp_message_links WHERE message_id = $1 FOR UPDATE",
                    &[&message_id],
                )
                .await
                .map_err(fail)?;
            let mut l = l.clone();
            if let Some(earlier) = earlier {
                let earlier: MessageLink = from_json(earlier.get::<_, &[u8]>(0))?;
                l.delivery = l.delivery.max(earlier.delivery);
            }
            tx.execute(
                "INSERT INTO waotp_message_links (message_id, link, sent_at) VALUES ($1, $2, $3)
                 ON CONFLICT (message_id) DO UPDATE
                 SET link = EXCLUDED.link, sent_at = EXCLUDED.sent_at",
                &[&message_id, &to_json(&l)?, &l.sent_at],
            )
            .await
            .map_err(fail)?;
        }
        if row.queued {
            tx.batch_execute(&format!("NOTIFY {}", super::sessions::WORK_CHANNEL))
                .await
                .map_err(fail)?;
        }
        Ok(())
    }

    pub async fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let c = self.client().await?;
        let s = c
            .prepare_cached("SELECT entry FROM waotp_outbox WHERE id = $1")
            .await
            .map_err(|e| query_error("cannot read an outbox entry", e))?;
        c.query_opt(&s, &[&id])
            .await
            .map_err(|e| query_error("cannot read an outbox entry", e))?
            .map(|r| from_json(r.get::<_, &[u8]>(0)))
            .transpose()
    }

    /// Entries in flight whose claim has ended: their sender is gone.
    pub async fn outbox_in_flight(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT entry FROM waotp_outbox
             WHERE state = 'in_flight' AND (claimed_until IS NULL OR claimed_until <= now())
             ORDER BY due_ms, id",
            &[],
        )
        .await
        .map_err(|e| query_error("cannot read entries in flight", e))?
        .into_iter()
        .map(|r| from_json(r.get::<_, &[u8]>(0)))
        .collect()
    }

    pub async fn note_echo(&self, entry_id: &str, message_id: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO waotp_echoes (entry_id, message_id) VALUES ($1, $2)
             ON CONFLICT (entry_id) DO UPDATE SET message_id = EXCLUDED.message_id",
            &[&entry_id, &message_id],
        )
        .await
        .map_err(|e| query_error("cannot note an echo", e))?;
        Ok(())
    }

    pub async fn echo(&self, entry_id: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT message_id FROM waotp_echoes WHERE entry_id = $1",
            &[&entry_id],
        )
        .await
        .map_err(|e| query_error("cannot read an echo", e))?
        .map(|r| r.get(0)))
    }

    /// Entries queued or in flight.
    pub async fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM waotp_outbox WHERE queued OR state = 'in_flight'")
            .await
    }
}
