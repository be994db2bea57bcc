//! Listing sessions for the merchant API: newest first, filtered, a page at a time.
//!
//! The order comes from an index in the `runtime` tree, `c` created (ms) ++ session id, written
//! in the same batch as a session's first step (so a listed session always exists and every
//! session is listed) and removed with the session by the purge. A page is a reverse range scan
//! of that index, so a cursor is simply the index key of the last session a page held: sessions
//! started later sort above it and never shift what comes after it.
//!
//! Filters other than the creation time are applied to the records read; a page reads at most
//! [`MAX_SCANNED`] index entries, so a rare filter costs bounded work per request: the page may
//! then hold fewer sessions than asked, with a cursor to go on from. A query is one merchant's
//! today (there is one); a merchant id would be one more filter here and a prefix of the key.

use super::sessions::{dec, key, timed_key, SessionRecord, SessionStore, CREATED, SESSION};
use super::StoreError;
use chrono::{DateTime, Utc};

/// Index entries one page may read.
pub const MAX_SCANNED: usize = 10_000;
/// Present once every session is in the creation index (built once for older stores).
const INDEXED_CREATED: &[u8] = b"\0indexed-created-v1";

/// Whether a session is running or has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Active,
    Completed,
}

/// Which sessions to list, and where to start.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub flow: Option<String>,
    pub status: Option<Liveness>,
    pub outcome: Option<String>,
    /// The customer's WhatsApp id: digits of the number, or a business-scoped user id.
    pub customer: Option<String>,
    /// Created strictly after / before these instants (millisecond precision).
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Only sessions after this one in the listing's order.
    pub starting_after: Option<Cursor>,
    pub limit: usize,
}

/// A position in the listing: the creation index key of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(Vec<u8>);

impl Cursor {
    /// The opaque text handed to callers.
    pub fn encode(&self) -> String {
        format!("cur_{}", hex::encode(&self.0))
    }

    /// A cursor given out by [`Cursor::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<Cursor> {
        let bytes = hex::decode(text.strip_prefix("cur_")?).ok()?;
        (bytes.len() > 9 && bytes[0] == CREATED).then_some(Cursor(bytes))
    }
}

/// One page of a listing.
#[derive(Debug)]
pub struct SessionPage {
    pub sessions: Vec<SessionRecord>,
    /// Where the next page starts; `None` once no session can follow.
    pub next_cursor: Option<Cursor>,
}

pub(super) fn created_key(r: &SessionRecord) -> Vec<u8> {
    timed_key(CREATED, r.created_at.timestamp_millis(), r.id.as_bytes())
}

/// Whether `wanted` is unset or `holds` for it.
fn unset_or<T>(wanted: Option<T>, holds: impl FnOnce(T) -> bool) -> bool {
    match wanted {
        None => true,
        Some(w) => holds(w),
    }
}

impl SessionQuery {
    fn admits(&self, r: &SessionRecord) -> bool {
        let liveness = if r.is_active() {
            Liveness::Active
        } else {
            Liveness::Completed
        };
        unset_or(self.flow.as_deref(), |f| r.engine.flow_id.as_str() == f)
            && unset_or(self.status, |s| s == liveness)
            && unset_or(self.outcome.as_deref(), |o| {
                r.engine.outcome.as_deref() == Some(o)
            })
            && unset_or(self.customer.as_deref(), |c| r.customer == c)
    }
}

impl SessionStore {
    /// Adds every session of a store written before the creation index existed (one full
    /// scan, once).
    pub(super) fn index_created(&self) -> Result<(), StoreError> {
        if self.tree.contains_key(INDEXED_CREATED)? {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for item in self.tree.scan_prefix([SESSION]) {
            let (_, v) = item?;
            let r: SessionRecord = dec(&v)?;
            batch.insert(created_key(&r), &[]);
        }
        batch.insert(INDEXED_CREATED, &[]);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// One page of sessions matching `query`, newest first (ties by id, descending).
    pub fn list(&self, query: &SessionQuery) -> Result<SessionPage, StoreError> {
        let low = match query.created_after {
            Some(t) => timed_key(CREATED, t.timestamp_millis().saturating_add(1), &[]),
            None => vec![CREATED],
        };
        let mut high = match query.created_before {
            Some(t) => timed_key(CREATED, t.timestamp_millis(), &[]),
            None => vec![CREATED + 1],
        };
        if let Some(Cursor(at)) = &query.starting_after {
            high = high.min(at.clone());
        }
        let mut sessions = Vec::new();
        let mut last = None;
        if low < high {
            for item in self.tree.range(low.clone()..high).rev().take(MAX_SCANNED) {
                let (k, _) = item?;
                last = Some(k.to_vec());
                let Some(v) = self.tree.get(key(SESSION, &[&k[9..]]))? else {
                    continue;
                };
                let r: SessionRecord = dec(&v)?;
                if query.admits(&r) {
                    sessions.push(r);
                    if sessions.len() >= query.limit {
                        break;
                    }
                }
            }
        }
        // Another page only when an index entry is left below the last one read.
        let next_cursor = match last {
            Some(at) if self.tree.range(low..at.clone()).next_back().is_some() => Some(Cursor(at)),
            _ => None,
        };
        Ok(SessionPage {
            sessions,
            next_cursor,
        })
    }
}
