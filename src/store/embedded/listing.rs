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
//! then hold fewer sessions than asked, with a cursor to go on from.
//!
//! A merchant's listing ([`SessionQuery::merchant`]) is one more filter on the records read. A
//! cursor never names another merchant's session: when the last entry a page read is not the
//! merchant's, the cursor is the start of the millisecond after it instead (a session of the
//! merchant created in that same millisecond may then be listed twice, never skipped).

use super::sessions::{dec, key, timed_key, SessionRecord, SessionStore, CREATED, SESSION};
use super::{Cursor, StoreError};
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

/// Whose sessions a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantFilter {
    /// The merchant's id.
    pub id: String,
    /// Whether records that name no merchant (written before merchants existed) are this
    /// merchant's: true for the default scope's merchant.
    pub owns_unscoped: bool,
}

impl MerchantFilter {
    pub fn admits(&self, r: &SessionRecord) -> bool {
        if r.merchant.is_empty() {
            self.owns_unscoped
        } else {
            r.merchant == self.id
        }
    }
}

/// Which sessions to list, and where to start.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Only this merchant's sessions (every merchant's when `None`).
    pub merchant: Option<MerchantFilter>,
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

/// The cursor of a position in the listing: the creation index key of a session, in hex.
fn cursor_at(position: &[u8]) -> Cursor {
    Cursor::new(&hex::encode(position))
}

/// The position a cursor of [`cursor_at`] names; `None` for any other text.
fn position_of(cursor: &Cursor) -> Option<Vec<u8>> {
    let bytes = hex::decode(cursor.engine_part()).ok()?;
    (bytes.len() > 9 && bytes[0] == CREATED).then_some(bytes)
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
        unset_or(self.merchant.as_ref(), |m| m.admits(r))
            && unset_or(self.flow.as_deref(), |f| r.engine.flow_id.as_str() == f)
            && unset_or(self.status, |s| s == liveness)
            && unset_or(self.outcome.as_deref(), |o| {
                r.engine.outcome.as_deref() == Some(o)
            })
            && unset_or(self.customer.as_deref(), |c| r.customer == c)
    }
}

/// A listing position that tells nothing of the session at index key `k` (another merchant's):
/// the start of the millisecond after its creation.
fn foreign_position(k: &[u8]) -> Vec<u8> {
    let ms = k
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i64::from_be_bytes);
    timed_key(CREATED, ms.saturating_add(1), &[0])
}

impl SessionStore {
    /// Adds every session of a store written before the creation index existed (one full
    /// scan, once).
    pub(super) fn index_created(&self) -> Result<(), StoreError> {
        if self.tree.contains_key(INDEXED_CREATED)? {
            return Ok(());
        }
        let mut batch = super::redo::Batch::default();
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
        if let Some(cursor) = &query.starting_after {
            let at = position_of(cursor)
                .ok_or_else(|| StoreError::Invalid("not a cursor of this listing".into()))?;
            high = high.min(at);
        }
        let mut sessions = Vec::new();
        // The last index entry read, and where the next page starts.
        let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
        if low < high {
            for item in self.tree.range(low.clone()..high).rev().take(MAX_SCANNED) {
                let (k, _) = item?;
                last = Some((k.to_vec(), k.to_vec()));
                let Some(v) = self.tree.get(key(SESSION, &[&k[9..]]))? else {
                    continue;
                };
                let r: SessionRecord = dec(&v)?;
                if query.merchant.as_ref().is_some_and(|m| !m.admits(&r)) {
                    last = Some((k.to_vec(), foreign_position(&k)));
                    continue;
                }
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
            Some((read, at)) if self.tree.range(low..read.clone()).next_back().is_some() => {
                Some(cursor_at(&at))
            }
            _ => None,
        };
        Ok(SessionPage {
            sessions,
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::engine::{self, SessionStatus};
    use crate::store::embedded::sessions::StepWrite;
    use crate::store::embedded::Store;
    use chrono::Duration;

    fn record(id: &str, customer: &str, created_at: DateTime<Utc>) -> SessionRecord {
        let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
        let registry =
            crate::runtime::flows::FlowRegistry::load(&flows, Default::default()).expect("flows");
        let flow = registry.get("signup_verification").expect("flow");
        let engine =
            engine::new_session(&flow, Default::default(), "en", created_at).expect("session");
        SessionRecord {
            id: id.to_owned(),
            to: format!("+{customer}"),
            customer: customer.to_owned(),
            created_at,
            updated_at: created_at,
            step: 1,
            engine,
            timer_key: None,
            otp_purpose: None,
            otp_bound: Vec::new(),
            last_inbound: 0,
            otp_refused: None,
            merchant: String::new(),
            number: String::new(),
        }
    }

    fn write(store: &SessionStore, r: &SessionRecord) {
        store
            .apply(StepWrite {
                record: Some(r.clone()),
                ..StepWrite::default()
            })
            .expect("write");
    }

    fn ids(page: &SessionPage) -> Vec<&str> {
        page.sessions.iter().map(|r| r.id.as_str()).collect()
    }

    fn all(limit: usize) -> SessionQuery {
        SessionQuery {
            limit,
            ..SessionQuery::default()
        }
    }

    #[test]
    fn pages_follow_creation_newest_first_and_the_purge_takes_the_index_entry_along() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("store");
        let sessions = store.sessions();
        let t0 = Utc::now() - Duration::days(30);
        for (i, id) in ["ses_a", "ses_b", "ses_c"].iter().enumerate() {
            write(
                sessions,
                &record(id, "447700900001", t0 + Duration::minutes(i as i64)),
            );
        }
        // A later step of a session does not list it twice.
        let mut later = record("ses_b", "447700900001", t0 + Duration::minutes(1));
        later.step = 2;
        write(sessions, &later);
        let page = sessions.list(&all(50)).expect("list");
        assert_eq!(ids(&page), ["ses_c", "ses_b", "ses_a"]);
        assert!(page.next_cursor.is_none());

        let first = sessions.list(&all(2)).expect("list");
        assert_eq!(ids(&first), ["ses_c", "ses_b"]);
        let cursor = first.next_cursor.expect("more");
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor.clone()));
        let rest = sessions
            .list(&SessionQuery {
                starting_after: Some(cursor),
                ..all(2)
            })
            .expect("list");
        assert_eq!(ids(&rest), ["ses_a"]);
        assert!(rest.next_cursor.is_none());

        // The oldest ends and is purged: gone from the listing, index entry included.
        let mut ended = record("ses_a", "447700900001", t0);
        ended.step = 2;
        ended.engine.status = SessionStatus::Completed;
        write(sessions, &ended);
        assert_eq!(
            sessions.purge_completed_before(Utc::now()).expect("purge"),
            1
        );
        assert_eq!(
            ids(&sessions.list(&all(50)).expect("list")),
            ["ses_c", "ses_b"]
        );
        assert_eq!(sessions.tree.scan_prefix([CREATED]).count(), 2);
    }

    #[test]
    fn a_merchant_lists_its_own_sessions_and_unscoped_ones_are_the_default_merchants() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("store");
        let sessions = store.sessions();
        let t0 = Utc::now() - Duration::days(1);
        let scoped = |id: &str, merchant: &str, minute: i64| {
            let mut r = record(id, "447700900003", t0 + Duration::minutes(minute));
            r.merchant = merchant.to_owned();
            r.number = format!("{merchant}-1");
            r
        };
        write(sessions, &record("ses_old", "447700900003", t0));
        write(sessions, &scoped("ses_a1", "a", 1));
        write(sessions, &scoped("ses_b1", "b", 2));
        write(sessions, &scoped("ses_a2", "a", 3));
        let of = |id: &str, owns_unscoped: bool, limit: usize| SessionQuery {
            merchant: Some(MerchantFilter {
                id: id.to_owned(),
                owns_unscoped,
            }),
            ..all(limit)
        };
        assert_eq!(
            ids(&sessions.list(&of("a", true, 50)).expect("list")),
            ["ses_a2", "ses_a1", "ses_old"]
        );
        assert_eq!(
            ids(&sessions.list(&of("b", false, 50)).expect("list")),
            ["ses_b1"]
        );
        assert_eq!(
            ids(&sessions.list(&of("a", false, 50)).expect("list")),
            ["ses_a2", "ses_a1"]
        );
        // b's last page ends on a's sessions: nothing follows, and no cursor is handed out.
        let page = sessions.list(&of("b", false, 1)).expect("list");
        assert_eq!(ids(&page), ["ses_b1"]);
        let rest = sessions
            .list(&SessionQuery {
                starting_after: page.next_cursor,
                ..of("b", false, 1)
            })
            .expect("list");
        assert!(rest.sessions.is_empty() && rest.next_cursor.is_none());
    }

    #[test]
    fn a_position_past_another_merchants_session_names_only_the_next_millisecond() {
        let at = Utc::now();
        let r = record("ses_0123456789abcdef01234567", "447700900004", at);
        let k = created_key(&r);
        let position = foreign_position(&k);
        let cursor = Cursor::decode(&cursor_at(&position).encode()).expect("a cursor");
        assert!(position > k, "the session itself is below the position");
        assert!(position < timed_key(CREATED, at.timestamp_millis() + 1, b"ses_"));
        assert!(!cursor.encode().contains(&hex::encode("0123456789abcdef")));
    }

    #[test]
    fn a_store_from_before_the_creation_index_is_indexed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = Utc::now();
        {
            let store = Store::open(dir.path(), |_| {}).expect("store");
            let sessions = store.sessions();
            write(sessions, &record("ses_old", "447700900002", t0));
            // As an older version left it: no index entry, no marker.
            for item in sessions.tree.scan_prefix([CREATED]) {
                sessions.tree.remove(item.expect("key").0).expect("remove");
            }
            sessions.tree.remove(INDEXED_CREATED).expect("remove");
            assert!(sessions.list(&all(50)).expect("list").sessions.is_empty());
            store.flush().expect("flush");
        }
        let store = Store::open(dir.path(), |_| {}).expect("reopen");
        assert_eq!(
            ids(&store.sessions().list(&all(50)).expect("list")),
            ["ses_old"]
        );
    }

    #[test]
    fn a_record_naming_its_timer_by_key_reads_back_the_same_timer() {
        let timer = crate::store::TimerRef::new(
            DateTime::from_timestamp(100, 0).expect("t"),
            "s1",
            "state",
        );
        let mut value =
            serde_json::to_value(record("s1", "15550001111", Utc::now())).expect("json");
        value["timer_key"] = serde_json::json!(
            crate::store::embedded::sessions::SessionStore::timer_key(&timer)
        );
        let read: SessionRecord = serde_json::from_value(value).expect("legacy record");
        assert_eq!(read.timer_key, Some(timer.clone()));
        let mut current = record("s1", "15550001111", Utc::now());
        current.timer_key = Some(timer);
        let again: SessionRecord =
            serde_json::from_slice(&serde_json::to_vec(&current).expect("enc")).expect("record");
        assert_eq!(again, current);
    }

    #[test]
    fn a_flows_finished_entries_go_with_its_session_and_read_receipts_at_once() {
        use crate::store::embedded::sessions::{OutboxEntry, OutboxPayload, OutboxState};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("store");
        let sessions = store.sessions();
        let t0 = Utc::now() - Duration::days(30);
        let entry = |id: &str, session: Option<&str>, payload: OutboxPayload| {
            OutboxEntry::pending(
                id.to_owned(),
                session.map(str::to_owned),
                "447700900001".into(),
                payload,
                t0,
            )
        };
        let text = || OutboxPayload::Text { text: "hi".into() };
        let receipt = entry(
            "read:7",
            None,
            OutboxPayload::ReadReceipt {
                message_id: "wamid.in".into(),
            },
        );
        let flow_message = entry("ses_a:1:0", Some("ses_a"), text());
        let notice = entry("notice:outside_window:ses_a:1:0", Some("ses_a"), text());
        let late = entry("ses_b:1:0", Some("ses_b"), text());
        let mut first = record("ses_a", "447700900001", t0);
        first.step = 2;
        first.engine.status = SessionStatus::Completed;
        let mut second = record("ses_b", "447700900002", t0);
        second.step = 2;
        second.engine.status = SessionStatus::Completed;
        for (r, outbox) in [
            (
                &first,
                vec![receipt.clone(), flow_message.clone(), notice.clone()],
            ),
            (&second, vec![late.clone()]),
        ] {
            sessions
                .apply(StepWrite {
                    record: Some(r.clone()),
                    outbox,
                    ..StepWrite::default()
                })
                .expect("step");
        }
        for e in [&receipt, &flow_message, &notice] {
            let mut done = e.clone();
            done.state = OutboxState::Done;
            sessions
                .update_outbox(&done, e.due_ms, None)
                .expect("settle");
        }
        // The receipt is gone once settled; of the others only the notice has a time index
        // key (the flow's message is found through its session).
        assert_eq!(sessions.outbox_entry("read:7").expect("read"), None);
        assert!(sessions.outbox_entry("ses_a:1:0").expect("read").is_some());
        assert_eq!(sessions.tree.scan_prefix([b'y']).count(), 1);

        // ses_a goes with its message (and the notice by its index); ses_b's entry is still
        // queued, so ses_b waits for a later purge.
        assert_eq!(
            sessions.purge_completed_before(Utc::now()).expect("purge"),
            3
        );
        assert_eq!(sessions.outbox_entry("ses_a:1:0").expect("read"), None);
        assert_eq!(
            sessions
                .outbox_entry("notice:outside_window:ses_a:1:0")
                .expect("read"),
            None
        );
        assert_eq!(sessions.get("ses_a").expect("get"), None);
        assert!(sessions.get("ses_b").expect("get").is_some());
        let mut done = late.clone();
        done.state = OutboxState::Failed {
            reason: "refused".into(),
        };
        sessions
            .update_outbox(&done, late.due_ms, None)
            .expect("settle");
        assert_eq!(
            sessions.purge_completed_before(Utc::now()).expect("purge"),
            2
        );
        assert_eq!(sessions.get("ses_b").expect("get"), None);
        assert_eq!(sessions.outbox_entry("ses_b:1:0").expect("read"), None);
        assert_eq!(sessions.tree.scan_prefix([b'o']).count(), 0);
    }
}
