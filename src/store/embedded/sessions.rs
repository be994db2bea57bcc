//! Sessions and everything a session step writes: timers, outbox entries, links from sent
//! WhatsApp messages back to their session, each customer's last-message time (the 24-hour
//! window) and, in sandbox mode, the recorded outbound messages.
//!
//! All of it lives in one tree, `runtime`, under one-byte prefixes, so that a step — the new
//! session, its outbox entries and its timers — is one atomic sled batch:
//!
//! "customer" in the keys below is the caller's scoped customer key,
//! [`crate::tenants::Scope::customer_key`] (merchant, number and customer): one customer's
//! sessions, windows, default replies, pauses and sandbox messages at two numbers never mix.
//! A store written before merchants existed had bare customer ids there; they are moved into the
//! default scope once ([`SessionStore::adopt_unscoped_keys`]).
//! - `s` session id → [`SessionRecord`]
//! - `a` customer `\0` flow → session id, for active sessions
//! - `i`, `d`: the merchant API's idempotency keys (see [`super::idempotency`])
//! - `t` due (ms) ++ session id `\0` timer id → timer sequence number
//! - `o` entry id → [`OutboxEntry`]; `q` due (ms) ++ entry id: entries waiting to be sent
//! - `m` WhatsApp message id → [`MessageLink`]
//! - `w` customer → time of their last message (ms)
//! - `b` customer `\0` time ++ entry id → a sandbox-recorded message
//! - `u` WhatsApp message id `\0` status → a delivery status that arrived before we had stored
//!   the message's link (WhatsApp can report `sent` before its send call returns to us)
//! - `r` customer → when they last got the default reply (ms)
//! - `f` flow hash → the flow file's name and text, so a session keeps its version across
//!   restarts even after the file changed
//! - `e` entry id → the WhatsApp message id a status webhook reported for it (echoing the entry
//!   id in `biz_opaque_callback_data`): proof that WhatsApp accepted a send whose answer we lost
//! - `p` customer → until when (ms) sends to them wait after Meta's pair rate limit
//!
//! Time-ordered indexes let the purge and the start-up read only what they need, so that a
//! million idle sessions are never scanned (a full scan would also pull every node into memory):
//! - `x` updated (ms) ++ session id: sessions that have ended;
//! - `y` created (ms) ++ entry id: outbox entries that are finished (sent, failed, skipped);
//! - `n` entry id: outbox entries in flight;
//! - `k` sent (ms) ++ WhatsApp message id: delivery links;
//! - `c` created (ms) ++ session id: every session, for the API's listing
//!   (see [`super::listing`]).

use super::idempotency::IdempotentStart;
use super::{DueTimer, StoreError, TimerRef};
use crate::flow::engine::{OutboundMessage, SessionState, SessionStatus, TemplateRef};
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub(super) const SESSION: u8 = b's';
const ACTIVE: u8 = b'a';
const TIMER: u8 = b't';
const OUTBOX: u8 = b'o';
const QUEUE: u8 = b'q';
const LINK: u8 = b'm';
const WINDOW: u8 = b'w';
const SANDBOX: u8 = b'b';
const FLOW_SOURCE: u8 = b'f';
const PARKED: u8 = b'u';
const DEFAULT_REPLY: u8 = b'r';
const ENDED: u8 = b'x';
const FINISHED: u8 = b'y';
const IN_FLIGHT: u8 = b'n';
const LINK_TIME: u8 = b'k';
const ECHO: u8 = b'e';
const PAIR_PAUSE: u8 = b'p';
pub(super) const CREATED: u8 = b'c';
/// Present once the time-ordered indexes cover every record (built once for older stores).
const INDEXED: &[u8] = b"\0indexed-v2";
/// Present once every customer key names its scope (moved once for older stores).
const SCOPED: &[u8] = b"\0customers-scoped-v3";

/// A conversation with one customer on one flow version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    /// The customer's number, E.164 with `+`.
    pub to: String,
    /// The customer's WhatsApp id (the digits of `to`).
    pub customer: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Steps applied so far; with the session id it names each step's outbox entries.
    pub step: u64,
    pub engine: SessionState,
    /// The pending timer, to replace or drop it. (Records written before timers were named
    /// by [`TimerRef`] hold the timer's index key; they read back as the same timer.)
    #[serde(default, deserialize_with = "legacy_timer::deserialize")]
    pub timer_key: Option<TimerRef>,
    /// What the current code is bound to: purpose and the names of bound variables.
    pub otp_purpose: Option<String>,
    pub otp_bound: Vec<String>,
    /// One past the sequence number of the last inbound event applied, so a replay after a
    /// crash never applies one twice.
    #[serde(default)]
    pub last_inbound: u64,
    /// The anti-abuse limit that last refused this session a code (`country_not_allowed`,
    /// `customer_rate_limited`, `customer_blocked`, `global_ceiling`), so an ending that the
    /// flow calls `locked` still says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp_refused: Option<String>,
    /// The merchant the session belongs to (empty in records written before merchants
    /// existed: those belong to the default scope).
    #[serde(default)]
    pub merchant: String,
    /// The `phone_number_id` of the business number the conversation is with (empty like
    /// `merchant` in older records).
    #[serde(default)]
    pub number: String,
}

impl SessionRecord {
    pub fn is_active(&self) -> bool {
        self.engine.status != SessionStatus::Completed
    }

    /// The merchant and number the session belongs to; `default` for records written before
    /// they were stored.
    pub fn scope_or(&self, default: &crate::tenants::Scope) -> crate::tenants::Scope {
        if self.merchant.is_empty() {
            default.clone()
        } else {
            crate::tenants::Scope::new(self.merchant.clone(), self.number.clone())
        }
    }
}

/// What an outbox entry delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxPayload {
    /// A flow message to the customer.
    Message { message: OutboundMessage },
    /// The session's current code in its authentication template. The code itself stays sealed
    /// in the OTP ledger and is opened only to send; `generation` names which code.
    Code {
        template: Option<TemplateRef>,
        text: Option<String>,
        generation: u32,
    },
    /// A plain text outside any flow (the default reply).
    Text { text: String },
    /// A signed callback to the merchant.
    Callback {
        url: String,
        event_id: String,
        body: serde_json::Value,
    },
    /// A read receipt with the typing indicator for a customer's message a flow answers.
    ReadReceipt { message_id: String },
    /// A merchant hook; its answer becomes a `HookOk`/`HookError` event of the session.
    Hook {
        hook: String,
        url: String,
        body: serde_json::Value,
    },
}

/// Where an outbox entry stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OutboxState {
    Pending,
    /// Claimed by a sender; if the process died here, whether the other side got it is unknown.
    InFlight,
    /// Sent, but no answer said whether WhatsApp accepted it (timeout, connection lost, a 2xx
    /// without a message id, a crash mid-send). Queued at the end of the in-doubt wait: a status
    /// webhook echoing the entry id settles it as sent before then; otherwise it is sent once
    /// more.
    InDoubt,
    Done,
    Failed {
        reason: String,
    },
}

/// One thing to send, created in the same write as the step that asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// `session:step:index`, so one step's message can never be queued twice.
    pub id: String,
    pub session_id: Option<String>,
    /// Recipient WhatsApp id (digits), for messages.
    pub to: String,
    pub payload: OutboxPayload,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub due_ms: i64,
    pub state: OutboxState,
    /// Set once the free-form message was swapped for its template (outside 24 hours).
    #[serde(default)]
    pub use_template: bool,
    /// Set once the entry was sent again after being in doubt; it is never sent a third time.
    #[serde(default)]
    pub resent: bool,
    /// The merchant whose entry it is (whose callback secret signs it), empty in entries
    /// written before merchants existed (the default scope).
    #[serde(default)]
    pub merchant: String,
    /// The `phone_number_id` a message goes out from (empty like `merchant`).
    #[serde(default)]
    pub number: String,
}

impl OutboxEntry {
    /// A new entry, due now and not yet tried.
    pub fn pending(
        id: String,
        session_id: Option<String>,
        to: String,
        payload: OutboxPayload,
        now: DateTime<Utc>,
    ) -> OutboxEntry {
        OutboxEntry {
            id,
            session_id,
            to,
            payload,
            attempts: 0,
            created_at: now,
            due_ms: now.timestamp_millis(),
            state: OutboxState::Pending,
            use_template: false,
            resent: false,
            merchant: String::new(),
            number: String::new(),
        }
    }

    /// The entry, sent from (and signed for) `scope`.
    pub fn from_scope(mut self, scope: &crate::tenants::Scope) -> OutboxEntry {
        self.merchant = scope.merchant.clone();
        self.number = scope.number.clone();
        self
    }

    /// The merchant and number the entry belongs to; `default` for entries written before
    /// they were stored.
    pub fn scope_or(&self, default: &crate::tenants::Scope) -> crate::tenants::Scope {
        if self.merchant.is_empty() {
            default.clone()
        } else {
            crate::tenants::Scope::new(self.merchant.clone(), self.number.clone())
        }
    }

    /// Whether the entry waits in the queue (to be sent, or to be settled after a doubt).
    pub fn is_queued(&self) -> bool {
        matches!(self.state, OutboxState::Pending | OutboxState::InDoubt)
    }
}

/// Delivery states in the order a message moves through them; `failed` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Accepted,
    Sent,
    Delivered,
    Read,
    Failed,
}

/// A WhatsApp message we sent, tied back to its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageLink {
    pub session_id: Option<String>,
    pub entry_id: String,
    pub delivery: Delivery,
    pub sent_at: DateTime<Utc>,
    /// Whether a failure must be told to the flow (prompts and codes).
    pub tracked: bool,
}

/// Everything one step changes, written atomically.
#[derive(Debug, Default)]
pub struct StepWrite {
    pub record: Option<SessionRecord>,
    pub activate: Option<(String, String)>,
    pub deactivate: Option<(String, String)>,
    /// The merchant's idempotency key of the request starting this session.
    pub idempotency: Option<IdempotentStart>,
    pub timer_remove: Option<TimerRef>,
    /// The timer to set, with its sequence number ([`crate::store::DueTimer::seq`]).
    pub timer_set: Option<(TimerRef, u64)>,
    pub outbox: Vec<OutboxEntry>,
}

/// Session records written before timers were named by [`TimerRef`] keep the timer's index
/// key (`t` due ++ session id `\0` timer id); both forms read as a [`TimerRef`].
mod legacy_timer {
    use super::TimerRef;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Ref(TimerRef),
        Key(Vec<u8>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TimerRef>, D::Error> {
        Ok(match Option::<Stored>::deserialize(d)? {
            None => None,
            Some(Stored::Ref(t)) => Some(t),
            Some(Stored::Key(k)) => from_key(&k),
        })
    }

    fn from_key(k: &[u8]) -> Option<TimerRef> {
        let due_ms = i64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
        let mut parts = k.get(9..)?.splitn(2, |b| *b == 0);
        let (sid, tid) = (parts.next()?, parts.next()?);
        Some(TimerRef {
            due_ms,
            session_id: String::from_utf8_lossy(sid).into_owned(),
            timer_id: String::from_utf8_lossy(tid).into_owned(),
        })
    }
}

/// Handle to the runtime tree.
#[derive(Debug, Clone)]
pub struct SessionStore {
    pub(super) tree: super::redo::LoggedTree,
    /// Seals stored answers that may carry a code.
    pub(super) sealer: std::sync::Arc<crate::otp::RecordSealer>,
}

pub(super) fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// The recipient an outbox entry is queued for: its customer at its number, per merchant
/// (outbox entries of one recipient go out one after another, in queue order).
pub(super) fn outbox_recipient(e: &OutboxEntry) -> String {
    let sep = crate::tenants::SCOPE_SEPARATOR;
    format!("{}{sep}{}{sep}{}", e.merchant, e.number, e.to)
}

pub(super) fn timed_key(prefix: u8, due_ms: i64, rest: &[u8]) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(&due_ms.max(0).to_be_bytes());
    k.extend_from_slice(rest);
    k
}

pub(super) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn ended_key(r: &SessionRecord) -> Vec<u8> {
    timed_key(ENDED, r.updated_at.timestamp_millis(), r.id.as_bytes())
}

fn link_time_key(message_id: &[u8], l: &MessageLink) -> Vec<u8> {
    timed_key(LINK_TIME, l.sent_at.timestamp_millis(), message_id)
}

/// Whether the entry is settled: sent, failed or skipped, never to be sent again.
fn is_finished(e: &OutboxEntry) -> bool {
    matches!(e.state, OutboxState::Done | OutboxState::Failed { .. })
}

/// Whether a finished entry is purged with its session's record rather than by an index key of
/// its own: its id is the session's followed by `:` (a flow's messages, codes, callbacks and
/// hooks). Notices and entries without a session keep the time index.
fn purged_with_session(e: &OutboxEntry) -> bool {
    e.session_id
        .as_deref()
        .and_then(|s| e.id.strip_prefix(s))
        .is_some_and(|rest| rest.starts_with(':'))
}

/// Whether a finished entry is kept at all. A read receipt is not: nothing reads it once it is
/// settled (it is best effort, and its id comes from an inbound event handled only once).
fn kept_when_finished(e: &OutboxEntry) -> bool {
    !matches!(e.payload, OutboxPayload::ReadReceipt { .. })
}

/// The index entries an outbox entry's state calls for. `was_in_flight`: whether the entry
/// may have an in-flight key to remove (a new entry has none).
fn index_outbox(batch: &mut super::redo::Batch, e: &OutboxEntry, was_in_flight: bool) {
    let in_flight = key(IN_FLIGHT, &[e.id.as_bytes()]);
    if e.state == OutboxState::InFlight {
        batch.insert(in_flight, &[]);
    } else if was_in_flight {
        batch.remove(in_flight);
    }
    if is_finished(e) && kept_when_finished(e) && !purged_with_session(e) {
        batch.insert(
            timed_key(FINISHED, e.created_at.timestamp_millis(), e.id.as_bytes()),
            &[],
        );
    }
}

impl SessionStore {
    pub(super) fn open(
        db: &sled::Db,
        sealer: std::sync::Arc<crate::otp::RecordSealer>,
        redo: super::redo::Redo,
    ) -> Result<SessionStore, StoreError> {
        let store = SessionStore {
            tree: super::redo::LoggedTree::open(db, "runtime", redo)?,
            sealer,
        };
        // The queue and the entries in flight are read at every pass of the outbox, and are
        // few at any moment: they stay in memory.
        store.tree.keep_resident(&[QUEUE, IN_FLIGHT])?;
        if !store.tree.contains_key(INDEXED)? {
            store.build_indexes()?;
        }
        store.drop_unscoped_keys()?;
        store.index_created()?;
        Ok(store)
    }

    /// Indexes the records of a store written before the time-ordered indexes existed (one
    /// full scan, once).
    fn build_indexes(&self) -> Result<(), StoreError> {
        let mut batch = super::redo::Batch::default();
        for item in self.tree.scan_prefix([SESSION]) {
            let (_, v) = item?;
            let r: SessionRecord = dec(&v)?;
            if !r.is_active() {
                batch.insert(ended_key(&r), &[]);
            }
        }
        for item in self.tree.scan_prefix([OUTBOX]) {
            let (_, v) = item?;
            let e: OutboxEntry = dec(&v)?;
            index_outbox(&mut batch, &e, true);
        }
        for item in self.tree.scan_prefix([LINK]) {
            let (k, v) = item?;
            let l: MessageLink = dec(&v)?;
            batch.insert(link_time_key(&k[1..], &l), &[]);
        }
        batch.insert(INDEXED, &[]);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Moves the customer keys of a store written before merchants existed (`a`, `w`, `r`,
    /// `b`, `p`) into `default` — the single-merchant setup's scope — and fills in the merchant
    /// and number of the sessions still active, so that an upgrade loses no conversation, no
    /// 24-hour window and no pause. Runs once (a marker says it is done); each key moves in one
    /// batch, so an interrupted run finishes at the next start. Returns how many keys moved.
    pub fn adopt_unscoped_keys(
        &self,
        default: &crate::tenants::Scope,
    ) -> Result<usize, StoreError> {
        if self.tree.contains_key(SCOPED)? {
            return Ok(0);
        }
        let separator = crate::tenants::SCOPE_SEPARATOR as u8;
        let mut moved = 0;
        for prefix in [ACTIVE, WINDOW, DEFAULT_REPLY, SANDBOX, PAIR_PAUSE] {
            for item in self.tree.scan_prefix([prefix]) {
                let (k, v) = item?;
                let rest = &k[1..];
                // The customer part ends at the first `\0` (`a` and `b` keys go on after it).
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                let (customer, tail) = rest.split_at(end);
                if customer.contains(&separator) {
                    continue;
                }
                let scoped = default.customer_key(&String::from_utf8_lossy(customer));
                let mut new_key = vec![prefix];
                new_key.extend_from_slice(scoped.as_bytes());
                new_key.extend_from_slice(tail);
                let mut batch = super::redo::Batch::default();
                if prefix == ACTIVE {
                    if let Some(mut r) = self.get(&String::from_utf8_lossy(&v))? {
                        if r.merchant.is_empty() {
                            r.merchant = default.merchant.clone();
                            r.number = default.number.clone();
                            batch.insert(key(SESSION, &[r.id.as_bytes()]), enc(&r)?);
                        }
                    }
                }
                batch.insert(new_key, v);
                batch.remove(k);
                self.tree.apply_batch(batch)?;
                moved += 1;
            }
        }
        self.tree.insert(SCOPED, &[])?;
        Ok(moved)
    }

    /// The key a timer is stored under.
    pub(super) fn timer_key(timer: &TimerRef) -> Vec<u8> {
        let mut rest = timer.session_id.as_bytes().to_vec();
        rest.push(0);
        rest.extend_from_slice(timer.timer_id.as_bytes());
        timed_key(TIMER, timer.due_ms, &rest)
    }

    pub fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.tree
            .get(key(SESSION, &[id.as_bytes()]))?
            .map(|b| dec(&b))
            .transpose()
    }

    /// The customer's active session on `flow`, if any.
    pub fn active(&self, customer: &str, flow: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree
            .get(key(ACTIVE, &[customer.as_bytes(), flow.as_bytes()]))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// All active sessions of a customer.
    pub fn active_for(&self, customer: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let mut prefix = key(ACTIVE, &[customer.as_bytes()]);
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (_, id) = item?;
            if let Some(r) = self.get(&String::from_utf8_lossy(&id))? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Writes one step atomically (not yet durable: the caller group-commits).
    pub fn apply(&self, w: StepWrite) -> Result<(), StoreError> {
        let mut batch = super::redo::Batch::default();
        if let Some(t) = &w.timer_remove {
            batch.remove(SessionStore::timer_key(t));
        }
        if let Some((t, seq)) = &w.timer_set {
            batch.insert(SessionStore::timer_key(t), &seq.to_be_bytes());
        }
        if let Some(r) = &w.record {
            batch.insert(key(SESSION, &[r.id.as_bytes()]), enc(r)?);
            if r.step == 1 {
                batch.insert(super::listing::created_key(r), &[]);
            }
            if !r.is_active() {
                batch.insert(ended_key(r), &[]);
            }
            if let Some(start) = &w.idempotency {
                SessionStore::write_idempotent(&mut batch, start, &r.id)?;
            }
            if let Some((customer, flow)) = &w.deactivate {
                batch.remove(key(ACTIVE, &[customer.as_bytes(), flow.as_bytes()]));
            }
            if let Some((customer, flow)) = &w.activate {
                batch.insert(
                    key(ACTIVE, &[customer.as_bytes(), flow.as_bytes()]),
                    r.id.as_bytes(),
                );
            }
        }
        for e in &w.outbox {
            batch.insert(key(OUTBOX, &[e.id.as_bytes()]), enc(e)?);
            batch.insert(
                timed_key(QUEUE, e.due_ms, e.id.as_bytes()),
                outbox_recipient(e).into_bytes(),
            );
            // A new entry: in no index yet.
            index_outbox(&mut batch, e, false);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Timers due at `now`, earliest first.
    pub fn due_timers(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let end = timed_key(TIMER, now.timestamp_millis().saturating_add(1), &[]);
        let mut out = Vec::new();
        for item in self.tree.range(vec![TIMER]..end).take(limit) {
            let (k, v) = item?;
            let rest = &k[9..];
            let mut parts = rest.splitn(2, |b| *b == 0);
            let (Some(sid), Some(tid)) = (parts.next(), parts.next()) else {
                continue;
            };
            let seq = v
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or_default();
            let due_ms = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i64::from_be_bytes);
            out.push(DueTimer {
                timer: TimerRef {
                    due_ms,
                    session_id: String::from_utf8_lossy(sid).into_owned(),
                    timer_id: String::from_utf8_lossy(tid).into_owned(),
                },
                seq,
            });
        }
        Ok(out)
    }

    /// Removes a timer that fired but no longer matters (its session is gone).
    pub fn drop_timer(&self, timer: &TimerRef) -> Result<(), StoreError> {
        self.tree.remove(SessionStore::timer_key(timer))?;
        Ok(())
    }

    /// Outbox entries due at `now`, earliest first.
    pub fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.due_outbox_except(now, limit, &Default::default(), &Default::default())
    }

    /// Like [`SessionStore::due_outbox`], without reading the entries named in `skip` (those a
    /// sender already holds).
    pub fn due_outbox_except(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        skip: &std::collections::HashSet<String>,
        skip_recipients: &std::collections::HashSet<String>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let end = timed_key(QUEUE, now.timestamp_millis().saturating_add(1), &[]);
        let mut out = Vec::new();
        for item in self.tree.range(vec![QUEUE]..end).take(limit) {
            let (k, recipient) = item?;
            let id = String::from_utf8_lossy(&k[9..]);
            if skip.contains(id.as_ref()) {
                continue;
            }
            // The queue key names its entry's recipient (not in stores written by 0.5 and
            // earlier): one already being served is passed over without reading its entry.
            if !recipient.is_empty()
                && std::str::from_utf8(&recipient).is_ok_and(|r| skip_recipients.contains(r))
            {
                continue;
            }
            let due = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_be_bytes);
            match self.outbox_entry(&id)? {
                // A status webhook and the sender may both move an entry in doubt; a key the
                // loser left behind names an entry that is no longer queued there.
                Some(e) if e.is_queued() && Some(e.due_ms.max(0)) == due => out.push(e),
                _ => {
                    self.tree.remove(k)?;
                }
            }
        }
        Ok(out)
    }

    pub fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        self.tree
            .get(key(OUTBOX, &[id.as_bytes()]))?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Entries queued or in flight.
    pub fn outbox_depth(&self) -> usize {
        self.tree.scan_prefix([QUEUE]).count()
    }

    /// Entries left in flight by a process that died mid-send.
    pub fn in_flight(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([IN_FLIGHT]) {
            let (k, _) = item?;
            if let Some(e) = self.outbox_entry(&String::from_utf8_lossy(&k[1..]))? {
                if e.state == OutboxState::InFlight {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Moves an entry to a new state and due time; `due_ms: None` takes it off the queue.
    pub fn update_outbox(
        &self,
        entry: &OutboxEntry,
        old_due_ms: i64,
        link: Option<(&str, &MessageLink)>,
    ) -> Result<(), StoreError> {
        let mut batch = super::redo::Batch::default();
        // The queue and in-flight keys are held in memory (`keep_resident`): looking first
        // costs no sled read, and spares the journal and sled the removal of a key that is not
        // there (an entry in flight is off the queue; a queued one is not in flight).
        let queued = timed_key(QUEUE, old_due_ms, entry.id.as_bytes());
        if self.tree.contains_key(&queued)? {
            batch.remove(queued);
        }
        if entry.is_queued() {
            batch.insert(
                timed_key(QUEUE, entry.due_ms, entry.id.as_bytes()),
                outbox_recipient(entry).into_bytes(),
            );
        }
        if is_finished(entry) && !kept_when_finished(entry) {
            batch.remove(key(OUTBOX, &[entry.id.as_bytes()]));
        } else {
            batch.insert(key(OUTBOX, &[entry.id.as_bytes()]), enc(entry)?);
        }
        let was_in_flight = self
            .tree
            .contains_key(key(IN_FLIGHT, &[entry.id.as_bytes()]))?;
        index_outbox(&mut batch, entry, was_in_flight);
        if let Some((message_id, l)) = link {
            // A status webhook may have beaten the sender here (see the runtime's `link_of`):
            // keep the state it reached, delivery states only move forward.
            let mut l = l.clone();
            if let Some(earlier) = self.link(message_id)? {
                l.delivery = l.delivery.max(earlier.delivery);
            }
            batch.insert(key(LINK, &[message_id.as_bytes()]), enc(&l)?);
            batch.insert(link_time_key(message_id.as_bytes(), &l), &[]);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Records that a status webhook named `message_id` as the message WhatsApp made of entry
    /// `entry_id` (the entry id came back in `biz_opaque_callback_data`).
    pub fn note_echo(&self, entry_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.tree
            .insert(key(ECHO, &[entry_id.as_bytes()]), message_id.as_bytes())?;
        Ok(())
    }

    /// The WhatsApp message id a status webhook reported for an entry, if any did.
    pub fn echo(&self, entry_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree
            .get(key(ECHO, &[entry_id.as_bytes()]))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Holds sends to `customer` until `until_ms` (Meta's pair rate limit).
    pub fn pause_recipient(&self, customer: &str, until_ms: i64) -> Result<(), StoreError> {
        self.tree.put(
            key(PAIR_PAUSE, &[customer.as_bytes()]),
            &until_ms.to_be_bytes(),
        )?;
        Ok(())
    }

    /// Until when (ms) sends to `customer` are held, if a pause was ever set.
    pub fn recipient_paused_until(&self, customer: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tree
            .get(key(PAIR_PAUSE, &[customer.as_bytes()]))?
            .and_then(|b| b.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    pub fn link(&self, message_id: &str) -> Result<Option<MessageLink>, StoreError> {
        self.tree
            .get(key(LINK, &[message_id.as_bytes()]))?
            .map(|b| dec(&b))
            .transpose()
    }

    pub fn put_link(&self, message_id: &str, link: &MessageLink) -> Result<(), StoreError> {
        let mut batch = super::redo::Batch::default();
        batch.insert(key(LINK, &[message_id.as_bytes()]), enc(link)?);
        batch.insert(link_time_key(message_id.as_bytes(), link), &[]);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Records that the customer wrote to us at `at` (opens the 24-hour window).
    pub fn touch_window(&self, customer: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.tree.put(
            key(WINDOW, &[customer.as_bytes()]),
            &at.timestamp_millis().to_be_bytes(),
        )?;
        Ok(())
    }

    /// When the customer last wrote to us.
    pub fn last_customer_message(
        &self,
        customer: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .tree
            .get(key(WINDOW, &[customer.as_bytes()]))?
            .and_then(|b| b.as_ref().try_into().ok().map(i64::from_be_bytes))
            .and_then(DateTime::from_timestamp_millis))
    }

    /// Keeps a sandbox-recorded message (its body already sealed where it holds a code).
    pub fn record_sandbox(
        &self,
        customer: &str,
        at: DateTime<Utc>,
        entry_id: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut k = key(SANDBOX, &[customer.as_bytes()]);
        k.push(0);
        k.extend_from_slice(&at.timestamp_micros().to_be_bytes());
        k.extend_from_slice(entry_id.as_bytes());
        self.tree.put(k, enc(body)?)?;
        Ok(())
    }

    /// Sandbox-recorded messages to a customer, oldest first.
    pub fn sandbox_messages(&self, customer: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut prefix = key(SANDBOX, &[customer.as_bytes()]);
        prefix.push(0);
        self.tree
            .scan_prefix(prefix)
            .map(|item| dec(&item?.1))
            .collect()
    }

    /// When the customer last got the default reply.
    pub fn last_default_reply(&self, customer: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .tree
            .get(key(DEFAULT_REPLY, &[customer.as_bytes()]))?
            .and_then(|b| b.as_ref().try_into().ok().map(i64::from_be_bytes))
            .and_then(DateTime::from_timestamp_millis))
    }

    /// Records that the customer got the default reply at `at`.
    pub fn note_default_reply(&self, customer: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.tree.put(
            key(DEFAULT_REPLY, &[customer.as_bytes()]),
            &at.timestamp_millis().to_be_bytes(),
        )?;
        Ok(())
    }

    /// Keeps a status for a message whose link is not stored yet.
    pub fn park_status(
        &self,
        message_id: &str,
        status: &crate::domain::DeliveryStatus,
    ) -> Result<(), StoreError> {
        let k = key(
            PARKED,
            &[message_id.as_bytes(), status.status.as_str().as_bytes()],
        );
        self.tree.put(k, enc(status)?)?;
        Ok(())
    }

    /// Takes (removes and returns) the statuses parked for a message.
    pub fn take_parked(
        &self,
        message_id: &str,
    ) -> Result<Vec<crate::domain::DeliveryStatus>, StoreError> {
        let mut prefix = key(PARKED, &[message_id.as_bytes()]);
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            if self.tree.remove(&k)?.is_some() {
                out.push(dec(&v)?);
            }
        }
        Ok(out)
    }

    /// Keeps a flow file's text under its hash (once).
    pub fn put_flow_source(&self, hash: &str, name: &str, text: &str) -> Result<(), StoreError> {
        let k = key(FLOW_SOURCE, &[hash.as_bytes()]);
        if !self.tree.contains_key(&k)? {
            self.tree.put(k, enc(&(name, text))?)?;
        }
        Ok(())
    }

    /// A flow file's name and text by hash.
    pub fn flow_source(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        self.tree
            .get(key(FLOW_SOURCE, &[hash.as_bytes()]))?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Removes completed sessions last updated before `cutoff`, finished outbox entries and
    /// delivery links older than it. (Idempotency keys have their own, shorter life:
    /// [`SessionStore::purge_idempotency`].)
    pub fn purge_completed_before(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut removed = 0;
        let end = |prefix| timed_key(prefix, cutoff.timestamp_millis(), &[]);
        for item in self.tree.range(vec![ENDED]..end(ENDED)) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k[9..]).into_owned();
            let mut batch = super::redo::Batch::default();
            batch.remove(&k);
            // A session written again since has a later index entry of its own.
            if let Some(r) = self
                .get(&id)?
                .filter(|r| !r.is_active() && r.updated_at < cutoff)
            {
                // Its finished outbox entries go with it. One still queued (a callback the
                // merchant keeps refusing) keeps the session for a later purge.
                let mut entries = Vec::new();
                let mut prefix = key(OUTBOX, &[id.as_bytes()]);
                prefix.push(b':');
                for item in self.tree.scan_prefix(&prefix) {
                    let (k, v) = item?;
                    entries.push((k, dec::<OutboxEntry>(&v)?));
                }
                if entries.iter().any(|(_, e)| !is_finished(e)) {
                    continue;
                }
                for (k, e) in entries {
                    batch.remove(k);
                    batch.remove(key(ECHO, &[e.id.as_bytes()]));
                    removed += 1;
                }
                batch.remove(key(SESSION, &[id.as_bytes()]));
                batch.remove(super::listing::created_key(&r));
                removed += 1;
            }
            self.tree.apply_batch(batch)?;
        }
        // Outbox entries that are finished (sent, failed or skipped) and old.
        for item in self.tree.range(vec![FINISHED]..end(FINISHED)) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k[9..]).into_owned();
            let mut batch = super::redo::Batch::default();
            batch.remove(&k);
            if self
                .outbox_entry(&id)?
                .is_some_and(|e| matches!(e.state, OutboxState::Done | OutboxState::Failed { .. }))
            {
                batch.remove(key(OUTBOX, &[id.as_bytes()]));
                batch.remove(key(ECHO, &[id.as_bytes()]));
                removed += 1;
            }
            self.tree.apply_batch(batch)?;
        }
        // Pair-rate pauses that are over.
        for item in self.tree.scan_prefix([PAIR_PAUSE]) {
            let (k, v) = item?;
            let until = v.as_ref().try_into().map(i64::from_be_bytes).unwrap_or(0);
            if until < Utc::now().timestamp_millis() {
                self.tree.remove(k)?;
            }
        }
        // Statuses parked for messages whose link never came (not ours, or long gone): a day is
        // far longer than a send call can take.
        let parked_cutoff = (Utc::now() - chrono::Duration::days(1)).timestamp();
        for item in self.tree.scan_prefix([PARKED]) {
            let (k, v) = item?;
            let s: crate::domain::DeliveryStatus = dec(&v)?;
            if s.timestamp < parked_cutoff {
                self.tree.remove(k)?;
                removed += 1;
            }
        }
        // Delivery links of old messages.
        for item in self.tree.range(vec![LINK_TIME]..end(LINK_TIME)) {
            let (k, _) = item?;
            let mut batch = super::redo::Batch::default();
            batch.remove(&k);
            batch.remove(key(LINK, &[&k[9..]]));
            self.tree.apply_batch(batch)?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(dir: &std::path::Path) -> std::sync::Arc<crate::otp::RecordSealer> {
        let key = crate::otp::OtpKey::load_or_create(dir, None).expect("key");
        std::sync::Arc::new(crate::otp::RecordSealer::new(&key))
    }

    fn entry(id: &str, created_at: DateTime<Utc>) -> OutboxEntry {
        OutboxEntry {
            id: id.into(),
            session_id: None,
            to: "15550001111".into(),
            payload: OutboxPayload::Text { text: "hi".into() },
            attempts: 0,
            created_at,
            due_ms: created_at.timestamp_millis(),
            state: OutboxState::Pending,
            use_template: false,
            resent: false,
            merchant: String::new(),
            number: String::new(),
        }
    }

    fn link(entry_id: &str, sent_at: DateTime<Utc>) -> MessageLink {
        MessageLink {
            session_id: None,
            entry_id: entry_id.into(),
            delivery: Delivery::Accepted,
            sent_at,
            tracked: false,
        }
    }

    #[test]
    fn in_flight_and_purge_go_through_the_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let store = SessionStore::open(&db, sealer(dir.path()), super::super::redo::Redo::none())
            .expect("open");
        let old = Utc::now() - chrono::Duration::days(40);
        let (mut a, mut b) = (entry("a", old), entry("b", Utc::now()));
        store
            .apply(StepWrite {
                outbox: vec![a.clone(), b.clone()],
                ..StepWrite::default()
            })
            .expect("apply");
        a.state = OutboxState::InFlight;
        store.update_outbox(&a, a.due_ms, None).expect("claim");
        assert_eq!(store.in_flight().expect("in flight"), vec![a.clone()]);
        a.state = OutboxState::Done;
        store
            .update_outbox(&a, a.due_ms, Some(("wamid.a", &link("a", old))))
            .expect("done");
        b.state = OutboxState::Done;
        store
            .update_outbox(&b, b.due_ms, Some(("wamid.b", &link("b", Utc::now()))))
            .expect("done");
        assert!(store.in_flight().expect("in flight").is_empty());
        let cutoff = Utc::now() - chrono::Duration::days(30);
        assert_eq!(store.purge_completed_before(cutoff).expect("purge"), 2);
        assert!(store.outbox_entry("a").expect("read").is_none());
        assert!(store.link("wamid.a").expect("read").is_none());
        assert!(store.outbox_entry("b").expect("read").is_some());
        assert!(store.link("wamid.b").expect("read").is_some());
    }

    #[test]
    fn a_store_from_before_the_indexes_is_indexed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let old = Utc::now() - chrono::Duration::days(40);
        {
            // Written as earlier versions did: records only, no index entries.
            let tree = db.open_tree("runtime").expect("tree");
            let mut e = entry("a", old);
            e.state = OutboxState::InFlight;
            tree.insert(key(OUTBOX, &[b"a"]), enc(&e).expect("enc"))
                .expect("insert");
            let mut f = entry("f", old);
            f.state = OutboxState::Failed { reason: "x".into() };
            tree.insert(key(OUTBOX, &[b"f"]), enc(&f).expect("enc"))
                .expect("insert");
            tree.insert(key(LINK, &[b"wamid.f"]), enc(&link("f", old)).expect("enc"))
                .expect("insert");
        }
        let store = SessionStore::open(&db, sealer(dir.path()), super::super::redo::Redo::none())
            .expect("open");
        assert_eq!(store.in_flight().expect("in flight").len(), 1);
        let cutoff = Utc::now() - chrono::Duration::days(30);
        assert_eq!(store.purge_completed_before(cutoff).expect("purge"), 2);
        assert!(store.outbox_entry("f").expect("read").is_none());
        assert!(store.outbox_entry("a").expect("read").is_some());
    }

    #[test]
    fn customer_keys_of_a_store_from_before_merchants_move_into_the_default_scope_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let store = SessionStore::open(&db, sealer(dir.path()), super::super::redo::Redo::none())
            .expect("open");
        let at = Utc::now();
        // An older version's keys: the bare customer id.
        store
            .tree
            .insert(
                key(ACTIVE, &[b"919876543210", b"signup_verification"]),
                b"ses_old".as_slice(),
            )
            .expect("active");
        store.touch_window("919876543210", at).expect("window");
        store.note_default_reply("919876543210", at).expect("reply");
        store
            .pause_recipient("919876543210", at.timestamp_millis() + 60_000)
            .expect("pause");
        store
            .record_sandbox("919876543210", at, "e1", &serde_json::json!({"n": 1}))
            .expect("sandbox");

        let scope = crate::tenants::Scope::new("default", "106540352242922");
        let scoped = scope.customer_key("919876543210");
        assert_eq!(store.adopt_unscoped_keys(&scope).expect("moved"), 5);
        assert_eq!(
            store
                .active(&scoped, "signup_verification")
                .expect("read")
                .as_deref(),
            Some("ses_old")
        );
        assert!(store
            .last_customer_message(&scoped)
            .expect("read")
            .is_some());
        assert!(store.last_default_reply(&scoped).expect("read").is_some());
        assert!(store
            .recipient_paused_until(&scoped)
            .expect("read")
            .is_some());
        assert_eq!(store.sandbox_messages(&scoped).expect("read").len(), 1);
        assert!(store
            .last_customer_message("919876543210")
            .expect("read")
            .is_none());
        assert!(store
            .active("919876543210", "signup_verification")
            .expect("read")
            .is_none());

        // Once: keys written afterwards are the caller's business.
        store.touch_window("14155550123", at).expect("window");
        assert_eq!(store.adopt_unscoped_keys(&scope).expect("again"), 0);
        assert!(store
            .last_customer_message("14155550123")
            .expect("read")
            .is_some());
    }

    #[test]
    fn a_queue_key_left_behind_by_a_race_is_dropped_not_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let store = SessionStore::open(&db, sealer(dir.path()), super::super::redo::Redo::none())
            .expect("open");
        let created = Utc::now() - chrono::Duration::seconds(10);
        let mut e = entry("a", created);
        store
            .apply(StepWrite {
                outbox: vec![e.clone()],
                ..StepWrite::default()
            })
            .expect("apply");
        // A writer that did not know the queued due time: the old key stays behind.
        let first_due = e.due_ms;
        e.state = OutboxState::InDoubt;
        e.due_ms = first_due + 1;
        store
            .update_outbox(&e, first_due - 5, None)
            .expect("update");
        assert_eq!(store.outbox_depth(), 2);
        let due = store.due_outbox(Utc::now(), 10).expect("due");
        assert_eq!(due, vec![e.clone()], "the entry once, at its own due time");
        assert_eq!(store.outbox_depth(), 1, "the stale key is gone");
        assert!(e.is_queued());
    }

    #[test]
    fn timer_keys_sort_by_due_time() {
        let a = TimerRef::new(DateTime::from_timestamp(100, 0).expect("t"), "z", "state");
        let b = TimerRef::new(DateTime::from_timestamp(200, 0).expect("t"), "a", "state");
        assert!(SessionStore::timer_key(&a) < SessionStore::timer_key(&b));
    }
}
