//! The inbound event log: each WhatsApp event recorded once, in arrival order, until handled.
//!
//! Four trees change together in one sled transaction, so a crash can never keep a dedupe record
//! without its event (which would silently drop WhatsApp's retry):
//! - `dedupe`: dedupe key → receive time; the key is the message id, or message id + status;
//! - `dedupe_by_time`: receive time ++ dedupe key, so expired records are found by a range scan;
//! - `inbound`: sequence number → the event, kept for the retention period;
//! - `inbound_pending`: sequence numbers not yet handled by the runtime, replayed after a restart.

use super::StoreError;
use crate::domain::InboundEvent;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

/// The outcome of recording an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First time seen; handle it. The sequence number orders events by arrival.
    New { seq: u64 },
    /// Seen before; acknowledge and do nothing.
    Duplicate,
}

/// An event as kept in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Unix seconds when we received it.
    pub received_at: i64,
    pub event: InboundEvent,
}

/// Handle to the inbound trees.
#[derive(Debug, Clone)]
pub struct InboundLog {
    dedupe: sled::Tree,
    dedupe_by_time: sled::Tree,
    log: sled::Tree,
    pending: sled::Tree,
    ids: sled::Db,
}

fn time_key(at: i64, dedupe_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + dedupe_key.len());
    k.extend_from_slice(&at.max(0).to_be_bytes());
    k.extend_from_slice(dedupe_key);
    k
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt("inbound key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode(bytes: &[u8]) -> Result<StoredEvent, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl InboundLog {
    pub(super) fn open(db: &sled::Db) -> Result<InboundLog, StoreError> {
        Ok(InboundLog {
            dedupe: db.open_tree("dedupe")?,
            dedupe_by_time: db.open_tree("dedupe_by_time")?,
            log: db.open_tree("inbound")?,
            pending: db.open_tree("inbound_pending")?,
            ids: db.clone(),
        })
    }

    /// Records `event` unless an event with the same dedupe key was recorded before. Not yet
    /// durable: follow with [`super::Store::durable`] before acknowledging.
    pub fn record(&self, event: &InboundEvent, now: i64) -> Result<Recorded, StoreError> {
        let key = event.dedupe_key();
        if self.dedupe.contains_key(key.as_bytes())? {
            // The common retry case, answered without a transaction or a new sequence number.
            return Ok(Recorded::Duplicate);
        }
        let seq = self.ids.generate_id()?;
        let value = serde_json::to_vec(&StoredEvent {
            received_at: now,
            event: event.clone(),
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let seq_key = seq.to_be_bytes();
        let by_time = time_key(now, key.as_bytes());
        let result = (&self.dedupe, &self.dedupe_by_time, &self.log, &self.pending).transaction(
            |(dedupe, by_time_tree, log, pending)| {
                if dedupe.get(key.as_bytes())?.is_some() {
                    return Ok(Recorded::Duplicate);
                }
                dedupe.insert(key.as_bytes(), &now.to_be_bytes())?;
                by_time_tree.insert(by_time.as_slice(), &[])?;
                log.insert(&seq_key, value.as_slice())?;
                pending.insert(&seq_key, &[])?;
                Ok::<_, ConflictableTransactionError<()>>(Recorded::New { seq })
            },
        );
        match result {
            Ok(r) => Ok(r),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => {
                Err(StoreError::Corrupt("inbound transaction aborted".into()))
            }
        }
    }

    /// Whether an event with this dedupe key has been recorded.
    pub fn seen(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        Ok(self.dedupe.contains_key(dedupe_key.as_bytes())?)
    }

    /// Events recorded but not yet handled, oldest first.
    pub fn pending(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        let mut out = Vec::new();
        for item in self.pending.iter() {
            let (key, _) = item?;
            let seq = seq_of(&key)?;
            if let Some(bytes) = self.log.get(key)? {
                out.push((seq, decode(&bytes)?));
            }
        }
        Ok(out)
    }

    /// Marks an event as handled: it will not be replayed after a restart.
    pub fn mark_handled(&self, seq: u64) -> Result<(), StoreError> {
        self.pending.remove(seq.to_be_bytes())?;
        Ok(())
    }

    /// One logged event by sequence number.
    pub fn get(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        self.log
            .get(seq.to_be_bytes())?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every logged event, oldest first (for tests and operators; not for hot paths).
    pub fn all(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        self.log
            .iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((seq_of(&k)?, decode(&v)?))
            })
            .collect()
    }

    /// Number of logged events.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Number of events not yet handled.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Removes dedupe records and handled events received before `cutoff` (Unix seconds).
    /// Returns how many records went.
    pub fn purge_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        let end = cutoff.max(0).to_be_bytes();
        for item in self.dedupe_by_time.range(..end.as_slice()) {
            let (time_key, _) = item?;
            self.dedupe.remove(&time_key[8..])?;
            self.dedupe_by_time.remove(&time_key)?;
            removed += 1;
        }
        // Sequence numbers grow with arrival, so old events are at the front of the log.
        for item in self.log.iter() {
            let (key, value) = item?;
            if decode(&value)?.received_at >= cutoff {
                break;
            }
            if !self.pending.contains_key(&key)? {
                self.log.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{InboundMessage, MessageContent, MessageId, WaId};
    use crate::store::Store;

    fn text(id: &str) -> InboundEvent {
        InboundEvent::Message(InboundMessage {
            id: MessageId::parse(id).expect("id"),
            from: WaId::parse("15550001111").expect("wa id"),
            user_id: None,
            profile_name: None,
            timestamp: 1,
            phone_number_id: None,
            context: None,
            content: MessageContent::Text { body: "hi".into() },
            errors: vec![],
        })
    }

    #[test]
    fn records_once_and_keeps_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("open");
        let log = store.inbound();
        let Recorded::New { seq: a } = log.record(&text("wamid.a"), 100).expect("record") else {
            panic!("new")
        };
        assert_eq!(
            log.record(&text("wamid.a"), 101).expect("again"),
            Recorded::Duplicate
        );
        let Recorded::New { seq: b } = log.record(&text("wamid.b"), 102).expect("record") else {
            panic!("new")
        };
        assert!(a < b);
        let pending: Vec<u64> = log
            .pending()
            .expect("pending")
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(pending, vec![a, b]);
        log.mark_handled(a).expect("handled");
        assert_eq!(log.pending_len(), 1);
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn purge_removes_only_old_handled_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("open");
        let log = store.inbound();
        let Recorded::New { seq: old } = log.record(&text("wamid.old"), 10).expect("r") else {
            panic!("new")
        };
        log.record(&text("wamid.old-pending"), 11).expect("r");
        log.record(&text("wamid.new"), 1_000).expect("r");
        log.mark_handled(old).expect("handled");
        log.purge_before(500).expect("purge");
        assert!(!log.seen(&text("wamid.old").dedupe_key()).expect("seen"));
        assert!(log.seen(&text("wamid.new").dedupe_key()).expect("seen"));
        // The unhandled old event stays in the log until it is handled.
        assert_eq!(log.len(), 2);
        assert_eq!(log.pending_len(), 2);
        // After purge the old message would be accepted again, as WhatsApp stops retrying
        // after 7 days anyway.
        assert!(matches!(
            log.record(&text("wamid.old"), 1_001).expect("r"),
            Recorded::New { .. }
        ));
    }
}
