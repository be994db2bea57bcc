//! Work that waits for its time: session timers and outbox entries, claimed by one instance at
//! a time.
//!
//! A claim is how several instances share the work without doing it twice: a claimed timer or
//! entry is given to no other claim until its holder settles it or the claim's lease runs out
//! (its holder died). A live holder keeps its outbox claims by renewing them
//! ([`OutboxQueue::renew`]) for as long as the entries wait in its queue, and writes an entry in
//! flight only while its claim is still its own ([`OutboxQueue::begin_send`]): an entry whose
//! claim passed to another sender is dropped unsent, never sent by both.
//!
//! The claimer is the [`crate::store::Storage`] bundle: each one an engine builds is one claimer
//! (PostgreSQL: one instance; embedded: one per bundle of the process, and the process builds
//! one). An embedded process that dies leaves its claims with it, and at the next start
//! in-flight entries are found by [`OutboxQueue::in_flight`].

use super::StoreError;
use crate::store::{MessageLink, OutboxEntry};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long an outbox or timer claim stays its holder's when the holder stops without
/// settling it (killed, or cut off from the database); another instance takes it over then.
/// Longer than the slowest send (a Graph API call: 5 s to connect, 15 s for the answer; a
/// merchant call: 10 s), so a live holder keeps its claim through a send; short enough that a
/// dead instance's sends and timers are picked up within about half a minute. A holder renews
/// its outbox claims every [`CLAIM_RENEWAL`] while it holds them, however long they wait.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// How often a holder renews the outbox claims it holds: a third of the lease, so that two
/// renewals may fail (a slow or briefly unreachable database) before the claim runs out.
pub const CLAIM_RENEWAL: Duration = Duration::from_secs(10);

/// A session's pending timer, as the session record keeps it: when it is due, whose it is
/// and which of the flow's timers. Replacing or cancelling a timer names it by this.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimerRef {
    /// Due time in milliseconds since the Unix epoch (the precision timers are kept in).
    pub due_ms: i64,
    pub session_id: String,
    pub timer_id: String,
}

impl TimerRef {
    pub fn new(due: DateTime<Utc>, session_id: &str, timer_id: &str) -> TimerRef {
        TimerRef {
            due_ms: due.timestamp_millis().max(0),
            session_id: session_id.to_owned(),
            timer_id: timer_id.to_owned(),
        }
    }

    pub fn due(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.due_ms)
            .single()
            .unwrap_or_default()
    }
}

/// A due timer, claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub timer: TimerRef,
    /// The engine's sequence number of the timer, compared by the flow engine so that a stale
    /// timer does nothing.
    pub seq: u64,
}

/// Timers set by session steps ([`crate::store::StepWrite::timer_set`]).
///
/// Timer claims are not renewed: a timer claimed twice (its first claim waited behind its
/// customer's work for longer than the lease) still fires once, because firing checks, under
/// the session's lock, that the timer is still the session's, and the step that fires it
/// removes it in the same write.
#[async_trait::async_trait]
pub trait Timers: Send + Sync + std::fmt::Debug {
    /// Claims up to `limit` timers due at `now`, earliest first. A claimed timer is returned
    /// by no other claim (of this instance or another) until it is removed (by the step that
    /// fires it: [`crate::store::StepWrite::timer_remove`], or [`Timers::drop_timer`]), given
    /// back ([`Timers::release_timer`]), or `lease` has passed since the claim: so each timer
    /// fires once, and the timer of an instance that died fires after the lease. Timers not
    /// yet due are never returned.
    async fn claim_due_timers(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<DueTimer>, StoreError>;

    /// Ends this claim without firing: the timer stays and the next claim may take it.
    async fn release_timer(&self, timer: &TimerRef) -> Result<(), StoreError>;

    /// Removes a timer that came due but no longer matters (its session ended or replaced it).
    /// Removing a timer that is gone changes nothing.
    async fn drop_timer(&self, timer: &TimerRef) -> Result<(), StoreError>;

    /// How many timers are due at `now` and not yet fired, claimed or not (the backlog
    /// gauge), counting at most `limit` of them: never a read of the whole backlog.
    async fn due_count(&self, now: DateTime<Utc>, limit: usize) -> Result<usize, StoreError>;
}

/// The outbox: entries written by steps ([`crate::store::StepWrite::outbox`]), claimed by
/// senders, settled by them or by status webhooks.
#[async_trait::async_trait]
pub trait OutboxQueue: Send + Sync + std::fmt::Debug {
    /// Claims up to `limit` queued entries (`Pending` or `InDoubt`) due at `now`, in queue
    /// order (due time, then id). A claimed entry is returned by no other claim until its
    /// holder settles it ([`OutboxQueue::update_outbox`] to `Done` or `Failed`),
    /// gives it back ([`OutboxQueue::release`]), or `lease` has passed since the claim or its
    /// last renewal ([`OutboxQueue::renew`], [`OutboxQueue::begin_send`]).
    ///
    /// One recipient's entries go out one after another, in queue order: no entry is returned
    /// while an entry of its recipient (merchant, number and `to`) is held by an earlier claim,
    /// nor ahead of an earlier queued entry of that recipient due at `now` that this claim
    /// does not return. (One claim may return several entries of a recipient, in order.)
    ///
    /// An entry whose holder's lease ran out while it was being sent comes back with its state
    /// still `InFlight`: whether WhatsApp got it is unknown, and the caller applies the
    /// in-doubt rules to it (as to [`OutboxQueue::in_flight`] at start), never a blind resend.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Gives claimed entries back unchanged (a sender that will not send them now). Only this
    /// claimer's claims end: an entry whose claim passed to another sender stays with it.
    async fn release(&self, entry_ids: &[String]) -> Result<(), StoreError>;

    /// Renews, for `lease` from now, the claims of `entry_ids` this claimer still holds (its
    /// lease not run out); the others are left as they are. Returns how many it renewed. A
    /// holder calls it every [`CLAIM_RENEWAL`] while entries wait in its queue, so that a slow
    /// but live sender keeps them and a dead one loses them after one lease.
    async fn renew(&self, entry_ids: &[String], lease: Duration) -> Result<usize, StoreError>;

    /// Starts sending a claimed entry: writes `entry` in flight (whatever its `state` says)
    /// and renews its claim for `lease`, in one atomic write — only if this claimer still
    /// holds the claim (not given back, not run out). Returns `false` when it does not, having
    /// changed nothing: another sender may have the entry now, and the caller must not send
    /// it. `old_due_ms` is the due time it was queued at.
    async fn begin_send(
        &self,
        entry: &OutboxEntry,
        old_due_ms: i64,
        lease: Duration,
    ) -> Result<bool, StoreError>;

    /// Like [`OutboxQueue::update_outbox`] without a link, for a holder changing an entry it
    /// has not sent (postponing it behind its recipient's retry, giving it up): writes `entry`
    /// only if this claimer still holds its claim, and returns whether it did.
    async fn update_held(&self, entry: &OutboxEntry, old_due_ms: i64) -> Result<bool, StoreError>;

    /// Writes `entry` (its new state and due time) and, atomically with it, the link of the
    /// WhatsApp message it became. `old_due_ms` is the due time it was queued at; a queued
    /// state (`Pending`, `InDoubt`) keeps it queued at its new `due_ms`. A settled state
    /// (`Done`, `Failed`) ends any claim of the entry; any other write leaves claims as they
    /// are — a status webhook moving an entry in doubt never takes it from the sender holding
    /// it, and the holder gives back what it rescheduled with [`OutboxQueue::release`]. A link
    /// keeps the furthest delivery state already stored (a status webhook may have come
    /// first). The write does not depend on a claim: a sender records the answer to a send it
    /// made even if its claim ran out meanwhile, for that answer is the truth about the entry.
    async fn update_outbox(
        &self,
        entry: &OutboxEntry,
        old_due_ms: i64,
        link: Option<(&str, &MessageLink)>,
    ) -> Result<(), StoreError>;

    async fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError>;

    /// Entries in flight and claimed by nobody alive: at start, those the last run of this
    /// instance left mid-send (the in-doubt rules apply to them).
    async fn in_flight(&self) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Records that a status webhook named `message_id` as the message WhatsApp made of entry
    /// `entry_id` (echoed in `biz_opaque_callback_data`), and reading it back: proof that an
    /// entry in doubt was sent.
    async fn note_echo(&self, entry_id: &str, message_id: &str) -> Result<(), StoreError>;
    async fn echo(&self, entry_id: &str) -> Result<Option<String>, StoreError>;

    /// Holds sends to `recipient` (a scoped customer key) until `until_ms` (Meta's pair rate
    /// limit), and reading it back.
    async fn pause_recipient(&self, recipient: &str, until_ms: i64) -> Result<(), StoreError>;
    async fn recipient_paused_until(&self, recipient: &str) -> Result<Option<i64>, StoreError>;

    /// Entries queued or in flight (a gauge).
    async fn depth(&self) -> Result<usize, StoreError>;
}
