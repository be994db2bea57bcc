//! The inbound event log: each WhatsApp event recorded once, in arrival order, until handled.
//!
//! One tree, `inbound`, holds four kinds of record under one-byte prefixes, so that recording an
//! event is a single atomic batch and a crash can never keep a dedupe record without its event
//! (which would silently drop WhatsApp's retry):
//! - `d` + dedupe key → receive time; the key is the message id, or message id + status;
//! - `t` + receive time + dedupe key, so expired records are found by a range scan;
//! - `l` + sequence number → the event, kept for the retention period;
//! - `p` + sequence number: not yet handled by the runtime, replayed after a restart.
//!
//! "Check, then write" is made race-free by a lock striped over the dedupe key: two deliveries of
//! one event always meet on the same stripe. A sled transaction would do the same at several
//! times the cost on the webhook's hot path (measured in `benches/webhook.rs`).

use super::StoreError;
use crate::domain::InboundEvent;
use crate::otp::RecordSealer;
use serde::{Deserialize, Serialize};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

const DEDUPE: u8 = b'd';
const BY_TIME: u8 = b't';
const LOG: u8 = b'l';
const PENDING: u8 = b'p';
const STRIPES: usize = 256;

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

/// Handle to the inbound records.
#[derive(Debug, Clone)]
pub struct InboundLog {
    tree: sled::Tree,
    // Events are sealed at rest: a customer's message may be the code they were sent.
    sealer: Arc<RecordSealer>,
    ids: sled::Db,
    stripes: Arc<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [prefix; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .get(1..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("inbound key is not a sequence number".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The key range holding all records of one prefix.
fn prefix_range(prefix: u8) -> std::ops::Range<[u8; 1]> {
    [prefix]..[prefix + 1]
}

impl InboundLog {
    fn decode(&self, slot: &[u8], bytes: &[u8]) -> Result<StoredEvent, StoreError> {
        let plain = self.sealer.open(bytes, slot).map_err(|_| {
            StoreError::Corrupt("an inbound record does not open with this OTP key".into())
        })?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

impl InboundLog {
    pub(super) fn open(db: &sled::Db, sealer: Arc<RecordSealer>) -> Result<InboundLog, StoreError> {
        Ok(InboundLog {
            tree: db.open_tree("inbound")?,
            sealer,
            ids: db.clone(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
        })
    }

    /// Records `event` unless an event with the same dedupe key was recorded before. Not yet
    /// durable: follow with [`super::Store::durable`] before acknowledging.
    pub fn record(&self, event: &InboundEvent, now: i64) -> Result<Recorded, StoreError> {
        let dedupe_key = key(DEDUPE, &[event.dedupe_key().as_bytes()]);
        let stripe = (self.hasher.hash_one(&dedupe_key) as usize) % STRIPES;
        let _guard = self.stripes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.tree.contains_key(&dedupe_key)? {
            return Ok(Recorded::Duplicate);
        }
        let seq = self.ids.generate_id()?;
        let plain = serde_json::to_vec(&StoredEvent {
            received_at: now,
            event: event.clone(),
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let log_key = seq_key(LOG, seq);
        let value = self.sealer.seal(&plain, &log_key);
        let mut batch = sled::Batch::default();
        batch.insert(dedupe_key.as_slice(), &now.to_be_bytes());
        batch.insert(
            key(BY_TIME, &[&now.max(0).to_be_bytes(), &dedupe_key[1..]]),
            &[],
        );
        batch.insert(&log_key, value);
        batch.insert(&seq_key(PENDING, seq), &[]);
        self.tree.apply_batch(batch)?;
        Ok(Recorded::New { seq })
    }

    /// Whether an event with this dedupe key has been recorded.
    pub fn seen(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        Ok(self
            .tree
            .contains_key(key(DEDUPE, &[dedupe_key.as_bytes()]))?)
    }

    /// Events recorded but not yet handled, oldest first.
    pub fn pending(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.range(prefix_range(PENDING)) {
            let (key, _) = item?;
            let seq = seq_of(&key)?;
            let slot = seq_key(LOG, seq);
            if let Some(bytes) = self.tree.get(slot)? {
                out.push((seq, self.decode(&slot, &bytes)?));
            }
        }
        Ok(out)
    }

    /// Marks an event as handled: it will not be replayed after a restart.
    pub fn mark_handled(&self, seq: u64) -> Result<(), StoreError> {
        self.tree.remove(seq_key(PENDING, seq))?;
        Ok(())
    }

    /// One logged event by sequence number.
    pub fn get(&self, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        let slot = seq_key(LOG, seq);
        self.tree
            .get(slot)?
            .map(|b| self.decode(&slot, &b))
            .transpose()
    }

    /// Every logged event, oldest first (for tests and operators; not for hot paths).
    pub fn all(&self) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        self.tree
            .range(prefix_range(LOG))
            .map(|item| {
                let (k, v) = item?;
                Ok((seq_of(&k)?, self.decode(&k, &v)?))
            })
            .collect()
    }

    /// Number of logged events (counts by scanning: for tests and operators).
    pub fn len(&self) -> usize {
        self.tree.range(prefix_range(LOG)).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of events not yet handled (counts by scanning).
    pub fn pending_len(&self) -> usize {
        self.tree.range(prefix_range(PENDING)).count()
    }

    /// Removes dedupe records and handled events received before `cutoff` (Unix seconds).
    /// Returns how many records went.
    pub fn purge_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        let end = key(BY_TIME, &[&cutoff.max(0).to_be_bytes()]);
        for item in self.tree.range([BY_TIME].as_slice()..end.as_slice()) {
            let (time_key, _) = item?;
            let mut batch = sled::Batch::default();
            batch.remove(key(DEDUPE, &[&time_key[9..]]));
            batch.remove(&time_key);
            self.tree.apply_batch(batch)?;
            removed += 1;
        }
        // Sequence numbers grow with arrival, so old events are at the front of the log.
        for item in self.tree.range(prefix_range(LOG)) {
            let (key, value) = item?;
            if self.decode(&key, &value)?.received_at >= cutoff {
                break;
            }
            if !self.tree.contains_key(seq_key(PENDING, seq_of(&key)?))? {
                self.tree.remove(&key)?;
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
