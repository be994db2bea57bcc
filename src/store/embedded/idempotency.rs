//! Idempotency keys of the merchant API, in the `runtime` tree beside the sessions they start.
//!
//! - `i` scope ++ `\0` ++ key → [`IdempotentRequest`]: which request first used the key (its
//!   digest), when, the session it started and, once written, the first answer, sealed;
//! - `d` created (ms) ++ scope ++ `\0` ++ key: the same keys by age, for the purge.
//!
//! The scope is a digest of the API key, never the key itself. The request record is written in
//! the batch of the step that creates the session, so a crash cannot leave a session without its
//! key; the answer follows once the step is done. It is sealed ([`crate::otp::RecordSealer`],
//! bound to its storage key) because a reverse-OTP answer carries the code the customer must
//! send. Keys live [`IDEMPOTENCY_TTL`]; older ones read as absent and the purge removes them.
//! This module knows nothing of HTTP: statuses and bodies are stored as given.

use super::sessions::{dec, enc, key, timed_key, SessionStore};
use super::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub(super) const IDEMPOTENCY: u8 = b'i';
const IDEMPOTENCY_TIME: u8 = b'd';
/// Present once keys from before scoping (bare key → session id, never deleted) are dropped.
const SCOPED: &[u8] = b"\0idempotency-scoped-v1";

/// How long a key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A merchant's idempotency key: the digest of their API key and the key they sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    scope: [u8; 32],
    key: String,
}

impl IdempotencyKey {
    pub fn new(scope: &[u8; 32], key: &str) -> IdempotencyKey {
        IdempotencyKey {
            scope: *scope,
            key: key.to_owned(),
        }
    }

    /// The digest of the API key that used it.
    pub fn scope(&self) -> &[u8; 32] {
        &self.scope
    }

    /// The key the merchant sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where the request record is stored, and what its sealed answer is bound to.
    pub(super) fn storage(&self) -> Vec<u8> {
        key(IDEMPOTENCY, &[&self.scope, self.key.as_bytes()])
    }

    fn time_key(&self, at: DateTime<Utc>) -> Vec<u8> {
        timed_key(
            IDEMPOTENCY_TIME,
            at.timestamp_millis(),
            &self.storage()[1..],
        )
    }
}

/// What the step starting a session writes for its idempotency key.
#[derive(Debug, Clone)]
pub struct IdempotentStart {
    pub key: IdempotencyKey,
    /// Digest of the request (method, path, canonical body), hex.
    pub request: String,
    pub at: DateTime<Utc>,
}

/// The first use of an idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotentRequest {
    pub request: String,
    pub created_at: DateTime<Utc>,
    pub session_id: String,
    /// The first answer (`{"status", "body"}`), sealed; absent if the process stopped between
    /// the session's step and writing it.
    #[serde(default, with = "hex_opt")]
    pub(super) answer: Option<Vec<u8>>,
}

impl IdempotentRequest {
    /// A request record as an engine read it back, its answer still sealed.
    pub(crate) fn stored(
        request: String,
        created_at: DateTime<Utc>,
        session_id: String,
        sealed_answer: Option<Vec<u8>>,
    ) -> IdempotentRequest {
        IdempotentRequest {
            request,
            created_at,
            session_id,
            answer: sealed_answer,
        }
    }

    /// The first answer, still sealed, if one was kept.
    pub(crate) fn sealed_answer(&self) -> Option<&[u8]> {
        self.answer.as_deref()
    }
}

/// An answer to give again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl SessionStore {
    /// Drops keys written before keys were scoped to an API key (bare key → session id): they
    /// had no age and were never deleted. Once per store.
    pub(super) fn drop_unscoped_keys(&self) -> Result<(), StoreError> {
        if self.tree.contains_key(SCOPED)? {
            return Ok(());
        }
        let mut batch = super::redo::Batch::default();
        for item in self.tree.scan_prefix([IDEMPOTENCY]) {
            batch.remove(item?.0);
        }
        batch.insert(SCOPED, &[]);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Adds the request record of a session's first step to its batch.
    pub(super) fn write_idempotent(
        batch: &mut super::redo::Batch,
        start: &IdempotentStart,
        session_id: &str,
    ) -> Result<(), StoreError> {
        let record = IdempotentRequest {
            request: start.request.clone(),
            created_at: start.at,
            session_id: session_id.to_owned(),
            answer: None,
        };
        batch.insert(start.key.storage(), enc(&record)?);
        batch.insert(start.key.time_key(start.at), &[]);
        Ok(())
    }

    /// The first use of `key`, unless it is older than [`IDEMPOTENCY_TTL`] at `now`.
    pub fn idempotent(
        &self,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentRequest>, StoreError> {
        let Some(bytes) = self.tree.get(key.storage())? else {
            return Ok(None);
        };
        let record: IdempotentRequest = dec(&bytes)?;
        Ok((!expired(record.created_at, now)).then_some(record))
    }

    /// Keeps the first answer given under `key` (not yet durable: the caller group-commits).
    pub fn keep_answer(
        &self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        let Some(bytes) = self.tree.get(key.storage())? else {
            return Err(StoreError::Corrupt(
                "an idempotency key vanished before its answer was kept".into(),
            ));
        };
        let mut record: IdempotentRequest = dec(&bytes)?;
        record.answer = Some(self.sealer.seal(&enc(answer)?, &key.storage()));
        self.tree.put(key.storage(), enc(&record)?)?;
        Ok(())
    }

    /// The first answer given under `key`, opened; `None` when it was never written.
    pub fn answer(
        &self,
        key: &IdempotencyKey,
        record: &IdempotentRequest,
    ) -> Result<Option<StoredAnswer>, StoreError> {
        let Some(sealed) = &record.answer else {
            return Ok(None);
        };
        let plain = self
            .sealer
            .open(sealed, &key.storage())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        dec(&plain).map(Some)
    }

    /// Removes idempotency keys first used more than [`IDEMPOTENCY_TTL`] before `now`.
    pub fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut removed = 0;
        let cutoff = now - ttl();
        // Inclusive of the cutoff's millisecond, as [`expired`] is.
        let end = timed_key(
            IDEMPOTENCY_TIME,
            cutoff.timestamp_millis().saturating_add(1),
            &[],
        );
        for item in self.tree.range(vec![IDEMPOTENCY_TIME]..end) {
            let (k, _) = item?;
            let mut storage = vec![IDEMPOTENCY];
            storage.extend_from_slice(&k[9..]);
            let mut batch = super::redo::Batch::default();
            batch.remove(&k);
            // A key used again after it expired has a later index entry of its own.
            let stale = match self.tree.get(&storage)? {
                Some(bytes) => expired(dec::<IdempotentRequest>(&bytes)?.created_at, now),
                None => false,
            };
            if stale {
                batch.remove(storage);
                removed += 1;
            }
            self.tree.apply_batch(batch)?;
        }
        Ok(removed)
    }
}

fn ttl() -> chrono::Duration {
    chrono::Duration::from_std(IDEMPOTENCY_TTL).unwrap_or_else(|_| chrono::Duration::days(1))
}

fn expired(created_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    created_at + ttl() <= now
}

mod hex_opt {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| hex::decode(h).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::{OtpKey, RecordSealer};
    use std::sync::Arc;

    fn store(dir: &std::path::Path) -> (sled::Db, SessionStore) {
        let db = sled::open(dir).expect("sled");
        let key = OtpKey::load_or_create(dir, None).expect("key");
        let store = SessionStore::open(
            &db,
            Arc::new(RecordSealer::new(&key)),
            crate::store::embedded::Redo::none(),
        )
        .expect("open");
        (db, store)
    }

    fn start(key: &IdempotencyKey, at: DateTime<Utc>) -> IdempotentStart {
        IdempotentStart {
            key: key.clone(),
            request: "digest".into(),
            at,
        }
    }

    /// What a session's first step writes for its key.
    fn step(store: &SessionStore, id: &str, idempotency: IdempotentStart) {
        let mut batch = crate::store::embedded::redo::Batch::default();
        SessionStore::write_idempotent(&mut batch, &idempotency, id).expect("encode");
        store.tree.apply_batch(batch).expect("apply");
    }

    #[test]
    fn keys_are_scoped_sealed_expire_after_a_day_and_are_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_db, store) = store(dir.path());
        let now = Utc::now();
        let (a, b) = (
            IdempotencyKey::new(&[1; 32], "k"),
            IdempotencyKey::new(&[2; 32], "k"),
        );
        let old = IdempotencyKey::new(&[1; 32], "old");
        step(&store, "ses_a", start(&a, now));
        step(
            &store,
            "ses_old",
            start(&old, now - chrono::Duration::hours(25)),
        );
        // Expired, then used again: its new life starts now.
        let reused = IdempotencyKey::new(&[1; 32], "reused");
        let day_ago = now - chrono::Duration::hours(25);
        step(&store, "ses_r1", start(&reused, day_ago));
        assert_eq!(store.idempotent(&reused, now).expect("read"), None);
        step(&store, "ses_r2", start(&reused, now));

        let found = store.idempotent(&a, now).expect("read").expect("kept");
        assert_eq!(found.session_id, "ses_a");
        assert_eq!(store.answer(&a, &found).expect("open"), None);
        assert_eq!(store.idempotent(&b, now).expect("read"), None, "scoped");
        assert_eq!(store.idempotent(&old, now).expect("read"), None, "expired");

        let answer = StoredAnswer {
            status: 201,
            body: serde_json::json!({"otp": {"code": "493817"}}),
        };
        store.keep_answer(&a, &answer).expect("keep");
        let found = store.idempotent(&a, now).expect("read").expect("kept");
        assert_eq!(store.answer(&a, &found).expect("open"), Some(answer));
        let raw = store.tree.get(a.storage()).expect("read").expect("stored");
        assert!(!String::from_utf8_lossy(&raw).contains("493817"), "sealed");
        // Sealed to its own key: moved under another, it does not open.
        assert!(store.answer(&b, &found).is_err());

        assert_eq!(store.purge_idempotency(now).expect("purge"), 1);
        assert!(store.tree.get(old.storage()).expect("read").is_none());
        assert!(store.idempotent(&a, now).expect("read").is_some());
        let again = store.idempotent(&reused, now).expect("read").expect("kept");
        assert_eq!(again.session_id, "ses_r2");
        let tomorrow = now + chrono::Duration::hours(24);
        assert_eq!(store.idempotent(&a, tomorrow).expect("read"), None);
        assert_eq!(store.purge_idempotency(tomorrow).expect("purge"), 2);
        assert_eq!(store.tree.scan_prefix([IDEMPOTENCY]).count(), 0);
        assert_eq!(store.tree.scan_prefix([IDEMPOTENCY_TIME]).count(), 0);
    }

    #[test]
    fn keys_from_before_scoping_are_dropped_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        // Written as earlier versions did: the bare key → session id.
        db.open_tree("runtime")
            .expect("tree")
            .insert(key(IDEMPOTENCY, &[b"order-1"]), b"ses_1".as_slice())
            .expect("insert");
        let sealer = Arc::new(RecordSealer::new(&OtpKey::generate(&mut rand::rngs::OsRng)));
        let store =
            SessionStore::open(&db, sealer, crate::store::embedded::Redo::none()).expect("open");
        assert_eq!(store.tree.scan_prefix([IDEMPOTENCY]).count(), 0);
        let now = Utc::now();
        let a = IdempotencyKey::new(&[1; 32], "order-1");
        step(&store, "ses_a", start(&a, now));
        store.drop_unscoped_keys().expect("again");
        assert!(store.idempotent(&a, now).expect("read").is_some());
    }
}
