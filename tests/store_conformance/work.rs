//! Claims of outbox entries and timers; locks.

use super::support::{at, entry, eventually, first_step, now, session};
use super::Backend;
use std::time::Duration;
use waotp::store::{LockKey, OutboxState, TimerRef};

const LEASE: Duration = Duration::from_secs(1);
/// A lease no case outlives.
const LONG: Duration = Duration::from_secs(600);
const ANA: &str = "15550001111";
const BEN: &str = "15550002222";

fn ids(entries: &[waotp::store::OutboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

pub async fn a_claimed_entry_is_not_claimed_again_until_settled_or_released(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let mut write = first_step(&session("ses_c", ANA, t0));
    write.outbox = vec![
        entry("ses_c:1:0", "ses_c", ANA, t0),
        entry("ses_d:1:0", "ses_d", BEN, t0),
        entry("ses_c:1:9", "ses_c", ANA, at(t0, 3600)),
    ];
    s.sessions.apply_step(write).await.expect("step");

    let claimed = s.outbox.claim_due(t0, 10, LEASE).await.expect("claim");
    assert_eq!(
        ids(&claimed),
        ["ses_c:1:0", "ses_d:1:0"],
        "due entries, in queue order"
    );
    assert!(
        s.outbox
            .claim_due(t0, 10, LEASE)
            .await
            .expect("claim")
            .is_empty(),
        "claimed entries are not claimed twice"
    );

    // Given back unchanged: claimable again.
    s.outbox
        .release(&["ses_d:1:0".to_owned()])
        .await
        .expect("release");
    let again = s.outbox.claim_due(t0, 10, LEASE).await.expect("claim");
    assert_eq!(ids(&again), ["ses_d:1:0"]);

    // Settled: gone from the queue.
    let mut sent = claimed[0].clone();
    sent.state = OutboxState::Done;
    s.outbox
        .update_outbox(&sent, claimed[0].due_ms, None)
        .await
        .expect("settle");
    // Rescheduled: claimable at its new time, not before.
    let mut retry = again[0].clone();
    retry.attempts += 1;
    retry.due_ms = at(t0, 30).timestamp_millis();
    s.outbox
        .update_outbox(&retry, again[0].due_ms, None)
        .await
        .expect("retry later");
    assert!(
        s.outbox
            .claim_due(at(t0, 31), 10, LEASE)
            .await
            .expect("claim")
            .is_empty(),
        "still its holder's until given back"
    );
    s.outbox
        .release(&["ses_d:1:0".to_owned()])
        .await
        .expect("give back");
    assert!(s
        .outbox
        .claim_due(t0, 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
    let later = s
        .outbox
        .claim_due(at(t0, 31), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(ids(&later), ["ses_d:1:0"]);
    assert_eq!(later[0].attempts, 1);
    assert_eq!(
        s.outbox
            .outbox_entry("ses_c:1:0")
            .await
            .expect("entry")
            .map(|e| e.state),
        Some(OutboxState::Done)
    );
}

pub async fn one_recipients_entries_are_claimed_in_order(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let mut write = first_step(&session("ses_o", ANA, t0));
    write.outbox = vec![
        entry("ses_o:1:0", "ses_o", ANA, t0),
        entry("ses_o:1:1", "ses_o", ANA, at(t0, 1)),
        entry("ses_p:1:0", "ses_p", BEN, at(t0, 2)),
    ];
    s.sessions.apply_step(write).await.expect("step");
    // A claim of one entry: the first of the queue.
    let first = s
        .outbox
        .claim_due(at(t0, 5), 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(ids(&first), ["ses_o:1:0"]);
    // Ana's second entry waits while her first is held; Ben's does not.
    let next = s
        .outbox
        .claim_due(at(t0, 5), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(ids(&next), ["ses_p:1:0"]);
    let mut sent = first[0].clone();
    sent.state = OutboxState::Done;
    s.outbox
        .update_outbox(&sent, first[0].due_ms, None)
        .await
        .expect("settle");
    let then = s
        .outbox
        .claim_due(at(t0, 5), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(ids(&then), ["ses_o:1:1"]);
}

pub async fn an_entry_left_in_flight_comes_back_for_the_in_doubt_rules(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let mut write = first_step(&session("ses_f", ANA, t0));
    write.outbox = vec![entry("ses_f:1:0", "ses_f", ANA, t0)];
    s.sessions.apply_step(write).await.expect("step");
    let claimed = s.outbox.claim_due(t0, 10, LEASE).await.expect("claim");
    assert_eq!(ids(&claimed), ["ses_f:1:0"]);
    let mut sending = claimed[0].clone();
    sending.state = OutboxState::InFlight;
    s.outbox
        .update_outbox(&sending, claimed[0].due_ms, None)
        .await
        .expect("in flight");
    s.engine.durable().await.expect("durable");
    assert!(
        s.outbox
            .claim_due(t0, 10, LEASE)
            .await
            .expect("claim")
            .is_empty(),
        "held while its holder lives"
    );
    assert!(s.outbox.in_flight().await.expect("in flight").is_empty());

    // Its holder stops mid-send; after the lease the entry comes back, still in flight, so
    // that the in-doubt rules decide (never a blind resend).
    let s = b.reopen(s).await;
    let back = eventually("the entry comes back after the lease", || {
        let s = s.clone();
        async move {
            let mut found = s.outbox.in_flight().await.expect("in flight");
            if found.is_empty() {
                found = s
                    .outbox
                    .claim_due(at(t0, 3600), 10, LEASE)
                    .await
                    .expect("claim");
            }
            (!found.is_empty()).then_some(found)
        }
    })
    .await;
    assert_eq!(ids(&back), ["ses_f:1:0"]);
    assert_eq!(back[0].state, OutboxState::InFlight);
}

/// Queues `entries` (with a session of Ana's) and claims them all as `s` for [`LEASE`].
async fn queue_and_claim(
    s: &waotp::store::Storage,
    session_id: &str,
    entries: Vec<waotp::store::OutboxEntry>,
) -> Vec<waotp::store::OutboxEntry> {
    let t0 = entries[0].created_at;
    let mut write = first_step(&session(session_id, ANA, t0));
    let n = entries.len();
    write.outbox = entries;
    s.sessions.apply_step(write).await.expect("step");
    let claimed = s.outbox.claim_due(t0, 10, LEASE).await.expect("claim");
    assert_eq!(claimed.len(), n, "every entry claimed");
    claimed
}

/// Polls `claimer` until its claim (for [`LONG`]) returns something: a lease ran out.
async fn taken_over(
    claimer: &waotp::store::Storage,
    due: chrono::DateTime<chrono::Utc>,
) -> Vec<waotp::store::OutboxEntry> {
    eventually(
        "the lease runs out and another claimer takes the entry",
        || {
            let claimer = claimer.clone();
            async move {
                let got = claimer
                    .outbox
                    .claim_due(due, 10, LONG)
                    .await
                    .expect("claim");
                (!got.is_empty()).then_some(got)
            }
        },
    )
    .await
}

pub async fn a_claim_taken_over_after_its_lease_cannot_start_a_send(b: &dyn Backend) {
    let s = b.open().await;
    let other = b.another_claimer(&s).await;
    let t0 = now();
    let mine = queue_and_claim(&s, "ses_x", vec![entry("ses_x:1:0", "ses_x", ANA, t0)]).await;
    let id = "ses_x:1:0";

    // The holder is slow: its lease runs out and another claimer takes the entry.
    let theirs = taken_over(&other, t0).await;
    assert_eq!(ids(&theirs), [id]);
    let before = s.outbox.outbox_entry(id).await.expect("read");
    assert_eq!(
        before.as_ref().map(|e| &e.state),
        Some(&OutboxState::Pending)
    );

    // The first holder may no longer send it, nor move it.
    assert!(
        !s.outbox
            .begin_send(&mine[0], mine[0].due_ms, LEASE)
            .await
            .expect("begin send"),
        "a claim taken over must not start a send"
    );
    let mut postponed = mine[0].clone();
    postponed.due_ms = at(t0, 60).timestamp_millis();
    assert!(
        !s.outbox
            .update_held(&postponed, mine[0].due_ms)
            .await
            .expect("update held"),
        "a claim taken over must not move the entry"
    );
    assert_eq!(
        s.outbox.outbox_entry(id).await.expect("read"),
        before,
        "the entry is unchanged"
    );

    // Its new holder sends it: in flight, held, not claimable by anyone.
    assert!(other
        .outbox
        .begin_send(&theirs[0], theirs[0].due_ms, LONG)
        .await
        .expect("begin send"));
    assert_eq!(
        s.outbox
            .outbox_entry(id)
            .await
            .expect("read")
            .map(|e| e.state),
        Some(OutboxState::InFlight)
    );
    assert!(s
        .outbox
        .claim_due(at(t0, 3600), 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
}

pub async fn a_renewed_claim_outlives_its_first_lease(b: &dyn Backend) {
    let s = b.open().await;
    let other = b.another_claimer(&s).await;
    let t0 = now();
    let mine = queue_and_claim(
        &s,
        "ses_r",
        vec![
            entry("ses_r:1:0", "ses_r", ANA, t0),
            entry("ses_s:1:0", "ses_s", BEN, t0),
        ],
    )
    .await;
    assert_eq!(ids(&mine), ["ses_r:1:0", "ses_s:1:0"]);
    let renewed = s
        .outbox
        .renew(&["ses_r:1:0".to_owned()], LONG)
        .await
        .expect("renew");
    assert_eq!(renewed, 1);

    // Ben's entry, claimed with Ana's for the same lease but not renewed, passes on: the first
    // lease is over. Ana's stays with its holder.
    let theirs = taken_over(&other, t0).await;
    assert_eq!(
        ids(&theirs),
        ["ses_s:1:0"],
        "only the claim not renewed passes on"
    );
    assert!(other
        .outbox
        .claim_due(at(t0, 3600), 10, LONG)
        .await
        .expect("claim")
        .is_empty());

    // Renewing a claim another claimer holds renews nothing and takes nothing.
    assert_eq!(
        s.outbox
            .renew(&["ses_r:1:0".to_owned(), "ses_s:1:0".to_owned()], LONG)
            .await
            .expect("renew"),
        1
    );
    assert!(!s
        .outbox
        .begin_send(&mine[1], mine[1].due_ms, LONG)
        .await
        .expect("begin send"));
    assert!(s
        .outbox
        .begin_send(&mine[0], mine[0].due_ms, LONG)
        .await
        .expect("begin send"));
    assert_eq!(
        s.outbox
            .outbox_entry("ses_r:1:0")
            .await
            .expect("read")
            .map(|e| e.state),
        Some(OutboxState::InFlight)
    );
}

pub async fn a_release_gives_back_only_the_claimers_own_claims(b: &dyn Backend) {
    let s = b.open().await;
    let other = b.another_claimer(&s).await;
    let t0 = now();
    let mine = queue_and_claim(&s, "ses_g", vec![entry("ses_g:1:0", "ses_g", ANA, t0)]).await;
    let theirs = taken_over(&other, t0).await;
    assert_eq!(ids(&theirs), ids(&mine));
    // The first holder's task ends and gives back what it held: not the other's claim.
    s.outbox
        .release(&["ses_g:1:0".to_owned()])
        .await
        .expect("release");
    assert!(
        s.outbox
            .claim_due(t0, 10, LEASE)
            .await
            .expect("claim")
            .is_empty(),
        "the entry stays with its new holder"
    );
    other
        .outbox
        .release(&["ses_g:1:0".to_owned()])
        .await
        .expect("release");
    assert_eq!(
        ids(&s.outbox.claim_due(t0, 10, LEASE).await.expect("claim")),
        ["ses_g:1:0"]
    );
}

pub async fn a_due_timer_is_claimed_once(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let due = TimerRef::new(at(t0, 10), "ses_t1", "reminder");
    let later = TimerRef::new(at(t0, 100), "ses_t2", "state");
    for (id, timer) in [("ses_t1", &due), ("ses_t2", &later)] {
        let mut record = session(id, ANA, t0);
        record.timer_key = Some(timer.clone());
        let mut write = first_step(&record);
        write.activate = None;
        write.timer_set = Some((timer.clone(), 3));
        s.sessions.apply_step(write).await.expect("step");
    }
    assert!(s
        .timers
        .claim_due_timers(t0, 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
    let claimed = s
        .timers
        .claim_due_timers(at(t0, 50), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!((&claimed[0].timer, claimed[0].seq), (&due, 3));
    assert!(
        s.timers
            .claim_due_timers(at(t0, 50), 10, LEASE)
            .await
            .expect("claim")
            .is_empty(),
        "a claimed timer is not claimed twice"
    );
    s.timers.release_timer(&due).await.expect("release");
    let again = s
        .timers
        .claim_due_timers(at(t0, 50), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1, "a released timer is claimed again");

    // Fired by its step: gone for good.
    let mut record = session("ses_t1", ANA, t0);
    record.step = 2;
    s.sessions
        .apply_step(waotp::store::StepWrite {
            record: Some(record),
            timer_remove: Some(due.clone()),
            ..Default::default()
        })
        .await
        .expect("fire");
    let rest = s
        .timers
        .claim_due_timers(at(t0, 200), 10, LEASE)
        .await
        .expect("claim");
    assert_eq!(rest.iter().map(|t| &t.timer).collect::<Vec<_>>(), [&later]);
    s.timers.drop_timer(&later).await.expect("drop");
    s.timers
        .drop_timer(&later)
        .await
        .expect("dropping twice is harmless");
    assert_eq!(
        s.timers.due_count(at(t0, 200), 100).await.expect("count"),
        0
    );
}

pub async fn timers_survive_reopening(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let timer = TimerRef::new(at(t0, 10), "ses_tr", "state");
    let mut record = session("ses_tr", ANA, t0);
    record.timer_key = Some(timer.clone());
    let mut write = first_step(&record);
    write.timer_set = Some((timer.clone(), 1));
    s.sessions.apply_step(write).await.expect("step");
    s.engine.durable().await.expect("durable");
    // Claimed by an instance that then dies: claimed again after the lease.
    assert_eq!(
        s.timers
            .claim_due_timers(at(t0, 20), 10, LEASE)
            .await
            .expect("claim")
            .len(),
        1
    );
    let s = b.reopen(s).await;
    let back = eventually("the timer is claimable after the lease", || {
        let s = s.clone();
        async move {
            let found = s
                .timers
                .claim_due_timers(at(t0, 20), 10, LEASE)
                .await
                .expect("claim");
            (!found.is_empty()).then_some(found)
        }
    })
    .await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].timer, timer);
    let kept = s.sessions.get("ses_tr").await.expect("get").expect("kept");
    assert_eq!(kept.timer_key, Some(timer));
}

pub async fn locks_exclude_each_other_and_only_each_other(b: &dyn Backend) {
    let s = b.open().await;
    let held = s
        .locks
        .lock(LockKey::Session("ses_l".into()))
        .await
        .expect("lock");
    let same = tokio::time::timeout(
        Duration::from_millis(200),
        s.locks.lock(LockKey::Session("ses_l".into())),
    )
    .await;
    assert!(same.is_err(), "a held lock is not given twice");
    // Other kinds of key never wait for it.
    let start = s
        .locks
        .lock(LockKey::Start {
            customer: "k".into(),
            flow: "f".into(),
        })
        .await
        .expect("start lock");
    let customer = s
        .locks
        .lock(LockKey::Customer("k".into()))
        .await
        .expect("customer lock");
    drop((start, customer));

    // Released on drop: a waiter gets it.
    let locks = s.locks.clone();
    let waiter = tokio::spawn(async move {
        locks
            .lock(LockKey::Session("ses_l".into()))
            .await
            .map(|_| ())
    });
    drop(held);
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter gets the lock")
        .expect("task")
        .expect("lock");
}
