//! Sessions and a step's writes: the session row, the active index, timers, outbox entries and
//! the idempotency key, in one transaction per step, followed (on commit) by `NOTIFY
//! waotp_work` so every instance's outbox worker and timer loop look at once.
//!
//! Also what steps read and write beside them: customers' windows and default replies,
//! delivery links, statuses that came early, flow sources and sandbox recordings.

use super::{query_error, PgEngine};
use crate::domain::DeliveryStatus;
use crate::store::{MessageLink, OutboxEntry, SessionRecord, StepWrite, StoreError};
use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;

/// The channel steps notify when they queued work.
pub const WORK_CHANNEL: &str = "waotp_work";

/// A record as stored: its JSON, as bytes (see the migration's note on bytea).
pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The columns of an outbox entry other than its claim.
pub(super) struct OutboxRow {
    pub state: &'static str,
    pub queued: bool,
    pub recipient: String,
}

pub(super) fn outbox_row(e: &OutboxEntry) -> OutboxRow {
    use crate::store::OutboxState as S;
    OutboxRow {
        state: match e.state {
            S::Pending => "pending",
            S::InFlight => "in_flight",
            S::InDoubt => "in_doubt",
            S::Done => "done",
            S::Failed { .. } => "failed",
        },
        queued: e.is_queued(),
        recipient: format!("{}\u{1f}{}\u{1f}{}", e.merchant, e.number, e.to),
    }
}

impl PgEngine {
    pub async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let c = self.client().await?;
        let s = c
            .prepare_cached("SELECT record FROM waotp_sessions WHERE id = $1")
            .await
            .map_err(|e| query_error("cannot read a session", e))?;
        c.query_opt(&s, &[&id])
            .await
            .map_err(|e| query_error("cannot read a session", e))?
            .map(|r| from_json(r.get::<_, &[u8]>(0)))
            .transpose()
    }

    pub async fn active_session(
        &self,
        customer: &str,
        flow: &str,
    ) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let s = c
            .prepare_cached(
                "SELECT session_id FROM waotp_active_sessions WHERE customer_key = $1 AND flow = $2",
            )
            .await
            .map_err(|e| query_error("cannot read the active session", e))?;
        Ok(c.query_opt(&s, &[&customer, &flow])
            .await
            .map_err(|e| query_error("cannot read the active session", e))?
            .map(|r| r.get(0)))
    }

    pub async fn active_sessions_of(
        &self,
        customer: &str,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let c = self.client().await?;
        let s = c
            .prepare_cached(
                "SELECT s.record FROM waotp_active_sessions a
                 JOIN waotp_sessions s ON s.id = a.session_id
                 WHERE a.customer_key = $1 ORDER BY a.flow",
            )
            .await
            .map_err(|e| query_error("cannot read active sessions", e))?;
        c.query(&s, &[&customer])
            .await
            .map_err(|e| query_error("cannot read active sessions", e))?
            .into_iter()
            .map(|r| from_json(r.get::<_, &[u8]>(0)))
            .collect()
    }

    /// Applies one step in one transaction (see the module doc).
    pub async fn apply_step(&self, w: StepWrite) -> Result<(), StoreError> {
        let fail = |e| query_error("cannot apply a step", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        match self.write_step(&tx, &w).await {
            Ok(()) => tx.commit().await.map_err(fail),
            Err(e) => {
                // Ended here rather than when the connection is next used, so that nothing of
                // the step (its row locks included) outlives the error.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn write_step(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        w: &StepWrite,
    ) -> Result<(), StoreError> {
        let fail = |e| query_error("cannot apply a step", e);
        let mut wake = false;
        if let Some(t) = &w.timer_remove {
            let s = tx
                .prepare_cached(
                    "DELETE FROM waotp_timers
                     WHERE session_id = $1 AND timer_id = $2 AND due_ms = $3",
                )
                .await
                .map_err(fail)?;
            tx.execute(&s, &[&t.session_id, &t.timer_id, &t.due_ms])
                .await
                .map_err(fail)?;
        }
        if let Some((t, seq)) = &w.timer_set {
            let s = tx
                .prepare_cached(
                    "INSERT INTO waotp_timers (due_ms, session_id, timer_id, seq)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (session_id, timer_id, due_ms) DO UPDATE
                     SET seq = EXCLUDED.seq, claimed_until = NULL, claimed_by = NULL",
                )
                .await
                .map_err(fail)?;
            tx.execute(&s, &[&t.due_ms, &t.session_id, &t.timer_id, &(*seq as i64)])
                .await
                .map_err(fail)?;
            wake = true;
        }
        if let Some(r) = &w.record {
            let s = tx
                .prepare_cached(
                    "INSERT INTO waotp_sessions
                     (id, merchant, number, customer, flow, active, outcome, created_at,
                      updated_at, record)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (id) DO UPDATE SET
                     merchant = EXCLUDED.merchant, number = EXCLUDED.number,
                     customer = EXCLUDED.customer, flow = EXCLUDED.flow,
                     active = EXCLUDED.active, outcome = EXCLUDED.outcome,
                     updated_at = EXCLUDED.updated_at, record = EXCLUDED.record",
                )
                .await
                .map_err(fail)?;
            let record = to_json(r)?;
            let params: [&(dyn ToSql + Sync); 10] = [
                &r.id,
                &r.merchant,
                &r.number,
                &r.customer,
                &r.engine.flow_id.as_str(),
                &r.is_active(),
                &r.engine.outcome,
                &r.created_at,
                &r.updated_at,
                &record,
            ];
            tx.execute(&s, &params).await.map_err(fail)?;
            if let Some(start) = &w.idempotency {
                self.write_idempotent(tx, start, &r.id).await?;
            }
            if let Some((customer, flow)) = &w.deactivate {
                let s = tx
                    .prepare_cached(
                        "DELETE FROM waotp_active_sessions WHERE customer_key = $1 AND flow = $2",
                    )
                    .await
                    .map_err(fail)?;
                tx.execute(&s, &[customer, flow]).await.map_err(fail)?;
            }
            if let Some((customer, flow)) = &w.activate {
                let s = tx
                    .prepare_cached(
                        "INSERT INTO waotp_active_sessions (customer_key, flow, session_id)
                         VALUES ($1, $2, $3)
                         ON CONFLICT (customer_key, flow) DO UPDATE
                         SET session_id = EXCLUDED.session_id",
                    )
                    .await
                    .map_err(fail)?;
                tx.execute(&s, &[customer, flow, &r.id])
                    .await
                    .map_err(fail)?;
            }
        }
        if !w.outbox.is_empty() {
            // An entry written again (a replayed step) keeps the state it reached: a step's
            // message is never queued twice.
            let s = tx
                .prepare_cached(
                    "INSERT INTO waotp_outbox
                     (id, recipient, session_id, entry, state, queued, due_ms, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (id) DO NOTHING",
                )
                .await
                .map_err(fail)?;
            for e in &w.outbox {
                let row = outbox_row(e);
                let entry = to_json(e)?;
                let params: [&(dyn ToSql + Sync); 8] = [
                    &e.id,
                    &row.recipient,
                    &e.session_id,
                    &entry,
                    &row.state,
                    &row.queued,
                    &e.due_ms,
                    &e.created_at,
                ];
                tx.execute(&s, &params).await.map_err(fail)?;
            }
            wake = true;
        }
        if wake {
            // Delivered to every listener when (and only if) the transaction commits.
            tx.batch_execute(&format!("NOTIFY {WORK_CHANNEL}"))
                .await
                .map_err(fail)?;
        }
        Ok(())
    }

    async fn put_time(
        &self,
        table: &str,
        column: &str,
        key: &str,
        value: i64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "INSERT INTO {table} (customer_key, {column}) VALUES ($1, $2)
             ON CONFLICT (customer_key) DO UPDATE SET {column} = EXCLUDED.{column}"
        );
        let s = c
            .prepare_cached(&sql)
            .await
            .map_err(|e| query_error("cannot write a customer's time", e))?;
        c.execute(&s, &[&key, &value])
            .await
            .map_err(|e| query_error("cannot write a customer's time", e))?;
        Ok(())
    }

    async fn get_time(
        &self,
        table: &str,
        column: &str,
        key: &str,
    ) -> Result<Option<i64>, StoreError> {
        let c = self.client().await?;
        let sql = format!("SELECT {column} FROM {table} WHERE customer_key = $1");
        let s = c
            .prepare_cached(&sql)
            .await
            .map_err(|e| query_error("cannot read a customer's time", e))?;
        Ok(c.query_opt(&s, &[&key])
            .await
            .map_err(|e| query_error("cannot read a customer's time", e))?
            .map(|r| r.get(0)))
    }

    pub async fn touch_window(&self, customer: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.put_time("waotp_windows", "at_ms", customer, at.timestamp_millis())
            .await
    }

    pub async fn last_customer_message(
        &self,
        customer: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .get_time("waotp_windows", "at_ms", customer)
            .await?
            .and_then(DateTime::from_timestamp_millis))
    }

    pub async fn note_default_reply(
        &self,
        customer: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.put_time(
            "waotp_default_replies",
            "at_ms",
            customer,
            at.timestamp_millis(),
        )
        .await
    }

    pub async fn last_default_reply(
        &self,
        customer: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .get_time("waotp_default_replies", "at_ms", customer)
            .await?
            .and_then(DateTime::from_timestamp_millis))
    }

    pub async fn pause_recipient(&self, recipient: &str, until_ms: i64) -> Result<(), StoreError> {
        self.put_time("waotp_recipient_pauses", "until_ms", recipient, until_ms)
            .await
    }

    pub async fn recipient_paused_until(&self, recipient: &str) -> Result<Option<i64>, StoreError> {
        self.get_time("waotp_recipient_pauses", "until_ms", recipient)
            .await
    }

    pub async fn link(&self, message_id: &str) -> Result<Option<MessageLink>, StoreError> {
        let c = self.client().await?;
        let s = c
            .prepare_cached("SELECT link FROM waotp_message_links WHERE message_id = $1")
            .await
            .map_err(|e| query_error("cannot read a link", e))?;
        c.query_opt(&s, &[&message_id])
            .await
            .map_err(|e| query_error("cannot read a link", e))?
            .map(|r| from_json(r.get::<_, &[u8]>(0)))
            .transpose()
    }

    pub async fn put_link(&self, message_id: &str, link: &MessageLink) -> Result<(), StoreError> {
        let c = self.client().await?;
        let s = c
            .prepare_cached(
                "INSERT INTO waotp_message_links (message_id, link, sent_at) VALUES ($1, $2, $3)
                 ON CONFLICT (message_id) DO UPDATE
                 SET link = EXCLUDED.link, sent_at = EXCLUDED.sent_at",
            )
            .await
            .map_err(|e| query_error("cannot write a link", e))?;
        c.execute(&s, &[&message_id, &to_json(link)?, &link.sent_at])
            .await
            .map_err(|e| query_error("cannot write a link", e))?;
        Ok(())
    }

    pub async fn park_status(
        &self,
        message_id: &str,
        status: &DeliveryStatus,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO waotp_parked_statuses (message_id, status, body, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (message_id, status) DO UPDATE SET body = EXCLUDED.body, at = EXCLUDED.at",
            &[&message_id, &status.status.as_str(), &to_json(status)?, &status.timestamp],
        )
        .await
        .map_err(|e| query_error("cannot park a status", e))?;
        Ok(())
    }

    pub async fn take_parked(&self, message_id: &str) -> Result<Vec<DeliveryStatus>, StoreError> {
        let c = self.client().await?;
        // DELETE … RETURNING: two instances taking at once each get a status at most once.
        let mut rows = c
            .query(
                "DELETE FROM waotp_parked_statuses WHERE message_id = $1
                 RETURNING body, at, status",
                &[&message_id],
            )
            .await
            .map_err(|e| query_error("cannot take parked statuses", e))?;
        rows.sort_by_key(|r| (r.get::<_, i64>(1), r.get::<_, String>(2)));
        rows.into_iter()
            .map(|r| from_json(r.get::<_, &[u8]>(0)))
            .collect()
    }

    pub async fn put_flow_source(
        &self,
        hash: &str,
        name: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO waotp_flow_sources (hash, name, source) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO NOTHING",
            &[&hash, &name, &text],
        )
        .await
        .map_err(|e| query_error("cannot keep a flow source", e))?;
        Ok(())
    }

    pub async fn flow_source(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT name, source FROM waotp_flow_sources WHERE hash = $1",
            &[&hash],
        )
        .await
        .map_err(|e| query_error("cannot read a flow source", e))?
        .map(|r| (r.get(0), r.get(1))))
    }

    pub async fn record_sandbox(
        &self,
        customer: &str,
        at: DateTime<Utc>,
        entry_id: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO waotp_sandbox_messages (customer_key, at, entry_id, body)
             VALUES ($1, $2, $3, $4)",
            &[&customer, &at, &entry_id, &to_json(body)?],
        )
        .await
        .map_err(|e| query_error("cannot record a sandbox message", e))?;
        Ok(())
    }

    pub async fn sandbox_messages(
        &self,
        customer: &str,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT body FROM waotp_sandbox_messages WHERE customer_key = $1
                 ORDER BY at, entry_id, id",
            &[&customer],
        )
        .await
        .map_err(|e| query_error("cannot read sandbox messages", e))?
        .into_iter()
        .map(|r| from_json(r.get::<_, &[u8]>(0)))
        .collect()
    }

    /// Removes sessions that ended before `cutoff` with their timers, finished outbox entries
    /// created before it (and their echoes), links of messages sent before it, pauses that are
    /// over and statuses parked for over a day. Returns how many records went.
    pub async fn purge_completed_before(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let fail = |e| query_error("cannot purge", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        let mut removed = 0u64;
        let counted = |row: tokio_postgres::Row| row.get::<_, i64>(0).max(0) as u64;
        removed += counted(
            tx.query_one(
                "WITH gone AS (
                     DELETE FROM waotp_sessions WHERE NOT active AND updated_at < $1 RETURNING id),
                 timers AS (
                     DELETE FROM waotp_timers WHERE session_id IN (SELECT id FROM gone))
                 SELECT count(*) FROM gone",
                &[&cutoff],
            )
            .await
            .map_err(fail)?,
        );
        removed += counted(
            tx.query_one(
                "WITH gone AS (
                     DELETE FROM waotp_outbox
                     WHERE state IN ('done', 'failed') AND created_at < $1 RETURNING id),
                 echoes AS (
                     DELETE FROM waotp_echoes WHERE entry_id IN (SELECT id FROM gone))
                 SELECT count(*) FROM gone",
                &[&cutoff],
            )
            .await
            .map_err(fail)?,
        );
        removed += tx
            .execute(
                "DELETE FROM waotp_message_links WHERE sent_at < $1",
                &[&cutoff],
            )
            .await
            .map_err(fail)?;
        let now_ms = Utc::now().timestamp_millis();
        tx.execute(
            "DELETE FROM waotp_recipient_pauses WHERE until_ms < $1",
            &[&now_ms],
        )
        .await
        .map_err(fail)?;
        let parked_cutoff = (Utc::now() - chrono::Duration::days(1)).timestamp();
        removed += tx
            .execute(
                "DELETE FROM waotp_parked_statuses WHERE at < $1",
                &[&parked_cutoff],
            )
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(removed as usize)
    }
}
