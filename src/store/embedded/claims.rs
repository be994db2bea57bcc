//! The embedded engine's outbox claims, kept in memory: one process owns the database, so its
//! claims need not be stored, and a process that dies takes them with it (its in-flight
//! entries are found again at the next start, by [`OutboxQueue::in_flight`]).
//!
//! Each claim has its claimer — the [`crate::store::Storage`] bundle that made it, one per
//! bundle the engine builds — and a lease, as on a shared database: a claim not renewed for
//! its lease ends and the entry may be claimed again, and a holder whose claim ended or passed
//! to another claimer can no longer start a send of the entry, move it or give it back. The
//! check and the write happen under one lock, so no claim changes hands between them.
//!
//! An entry left in flight by a holder of this process whose claim ran out is not handed to
//! the next claim: in one process the holder is still there and settles it.

use super::sessions::outbox_recipient;
use super::Embedded;
use crate::store::{MessageLink, OutboxEntry, OutboxQueue, OutboxState, StoreError};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Every claim of the process, by entry id.
#[derive(Debug, Default)]
pub(super) struct OutboxClaims {
    held: Mutex<HashMap<String, Claim>>,
    claimers: AtomicU64,
}

#[derive(Debug)]
struct Claim {
    /// Whose turn the entry waits for: one recipient's entries go out in order.
    recipient: String,
    claimer: u64,
    until: Instant,
}

impl OutboxClaims {
    /// A name for one more claimer.
    pub(super) fn new_claimer(&self) -> u64 {
        self.claimers.fetch_add(1, Ordering::Relaxed)
    }

    /// The claims, those whose lease ran out ended.
    fn live(&self) -> MutexGuard<'_, HashMap<String, Claim>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        held.retain(|_, c| c.until > now);
        held
    }

    /// Ends the claim of `id`, whoever holds it (the entry was settled).
    pub(super) fn end(&self, id: &str) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// The outbox as one claimer sees it.
pub struct OutboxClaimer {
    engine: Arc<Embedded>,
    claimer: u64,
}

impl std::fmt::Debug for OutboxClaimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxClaimer")
            .field("claimer", &self.claimer)
            .finish_non_exhaustive()
    }
}

impl OutboxClaimer {
    pub(super) fn new(engine: Arc<Embedded>) -> OutboxClaimer {
        let claimer = engine.outbox_claims.new_claimer();
        OutboxClaimer { engine, claimer }
    }

    fn holds(&self, claims: &HashMap<String, Claim>, id: &str) -> bool {
        claims.get(id).is_some_and(|c| c.claimer == self.claimer)
    }

    /// Writes `entry` if this claimer holds its claim, renewing it for `renew`; a settled
    /// state ends it.
    fn write_if_held(
        &self,
        entry: &OutboxEntry,
        old_due_ms: i64,
        renew: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let mut claims = self.engine.outbox_claims.live();
        if !self.holds(&claims, &entry.id) {
            return Ok(false);
        }
        self.engine
            .store
            .sessions()
            .update_outbox(entry, old_due_ms, None)?;
        if matches!(entry.state, OutboxState::Done | OutboxState::Failed { .. }) {
            claims.remove(&entry.id);
        } else if let (Some(lease), Some(claim)) = (renew, claims.get_mut(&entry.id)) {
            claim.until = Instant::now() + lease;
        }
        Ok(true)
    }
}

#[async_trait::async_trait]
impl OutboxQueue for OutboxClaimer {
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut claims = self.engine.outbox_claims.live();
        let held: HashSet<String> = claims.keys().cloned().collect();
        let busy: HashSet<String> = claims.values().map(|c| c.recipient.clone()).collect();
        let due = self.engine.store.sessions().due_outbox_except(
            now,
            limit.saturating_add(held.len()),
            &held,
            &busy,
        )?;
        let until = Instant::now() + lease;
        // A recipient passed over once is passed over for the rest of this claim, so none of
        // its later entries goes ahead of the one left behind.
        let mut passed: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for e in due {
            let r = outbox_recipient(&e);
            if out.len() >= limit || busy.contains(&r) || passed.contains(&r) {
                passed.insert(r);
                continue;
            }
            claims.insert(
                e.id.clone(),
                Claim {
                    recipient: r,
                    claimer: self.claimer,
                    until,
                },
            );
            out.push(e);
        }
        Ok(out)
    }

    async fn release(&self, entry_ids: &[String]) -> Result<(), StoreError> {
        let mut claims = self.engine.outbox_claims.live();
        for id in entry_ids {
            if self.holds(&claims, id) {
                claims.remove(id);
            }
        }
        Ok(())
    }

    async fn renew(&self, entry_ids: &[String], lease: Duration) -> Result<usize, StoreError> {
        let mut claims = self.engine.outbox_claims.live();
        let until = Instant::now() + lease;
        let mut renewed = 0;
        for id in entry_ids {
            match claims.get_mut(id) {
                Some(c) if c.claimer == self.claimer => {
                    c.until = until;
                    renewed += 1;
                }
                _ => {}
            }
        }
        Ok(renewed)
    }

    async fn begin_send(
        &self,
        entry: &OutboxEntry,
        old_due_ms: i64,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut entry = entry.clone();
        entry.state = OutboxState::InFlight;
        self.write_if_held(&entry, old_due_ms, Some(lease))
    }

    async fn update_held(&self, entry: &OutboxEntry, old_due_ms: i64) -> Result<bool, StoreError> {
        self.write_if_held(entry, old_due_ms, None)
    }

    async fn update_outbox(
        &self,
        entry: &OutboxEntry,
        old_due_ms: i64,
        link: Option<(&str, &MessageLink)>,
    ) -> Result<(), StoreError> {
        self.engine
            .store
            .sessions()
            .update_outbox(entry, old_due_ms, link)?;
        if matches!(entry.state, OutboxState::Done | OutboxState::Failed { .. }) {
            self.engine.outbox_claims.end(&entry.id);
        }
        Ok(())
    }

    async fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        self.engine.store.sessions().outbox_entry(id)
    }

    async fn in_flight(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let found = self.engine.store.sessions().in_flight()?;
        let claims = self.engine.outbox_claims.live();
        Ok(found
            .into_iter()
            .filter(|e| !claims.contains_key(&e.id))
            .collect())
    }

    async fn note_echo(&self, entry_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.engine.store.sessions().note_echo(entry_id, message_id)
    }

    async fn echo(&self, entry_id: &str) -> Result<Option<String>, StoreError> {
        self.engine.store.sessions().echo(entry_id)
    }

    async fn pause_recipient(&self, recipient: &str, until_ms: i64) -> Result<(), StoreError> {
        self.engine
            .store
            .sessions()
            .pause_recipient(recipient, until_ms)
    }

    async fn recipient_paused_until(&self, recipient: &str) -> Result<Option<i64>, StoreError> {
        self.engine
            .store
            .sessions()
            .recipient_paused_until(recipient)
    }

    async fn depth(&self) -> Result<usize, StoreError> {
        Ok(self.engine.store.sessions().outbox_depth())
    }
}
