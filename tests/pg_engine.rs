//! The PostgreSQL engine against a real server: what several instances on one database rely
//! on. Each test creates its own database (`pg_support`); without `WAOTP_TEST_DATABASE_URL`
//! they print a notice and pass.
//!
//! "Two instances" are two engines connected to one database, each with its own pools, as two
//! `waotp serve` processes would be.

mod pg_support;

use chrono::{DateTime, Duration as Span, Utc};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use waotp::domain::{InboundEvent, InboundMessage, MessageContent, MessageId, WaId};
use waotp::otp::OtpKey;
use waotp::store::postgres::{LockClass, PgEngine};
use waotp::store::{
    OutboxEntry, OutboxPayload, OutboxQueue, OutboxState, Recorded, SessionRecord, StepWrite,
    TimerRef,
};

const LEASE: Duration = Duration::from_secs(30);

fn key() -> OtpKey {
    OtpKey::generate(&mut rand::rngs::OsRng)
}

/// Two engines on one fresh database, sharing the sealing key like two instances.
async fn two_instances(test: &str) -> Option<(pg_support::TestDatabase, PgEngine, PgEngine)> {
    let db = pg_support::fresh_database(test).await?;
    let key = key();
    let a = PgEngine::connect(&db.url, &key)
        .await
        .expect("first instance");
    let b = PgEngine::connect(&db.url, &key)
        .await
        .expect("second instance");
    Some((db, a, b))
}

fn message(id: &str, customer: &str, text: &str) -> InboundEvent {
    InboundEvent::Message(InboundMessage {
        id: MessageId::parse(id).expect("id"),
        from: WaId::parse(customer).expect("wa id"),
        user_id: None,
        profile_name: None,
        timestamp: 1,
        phone_number_id: None,
        context: None,
        content: MessageContent::Text { body: text.into() },
        errors: vec![],
    })
}

fn session(id: &str, customer: &str, now: DateTime<Utc>) -> SessionRecord {
    let registry = waotp::runtime::flows::FlowRegistry::load(
        std::path::Path::new("flows"),
        Default::default(),
    )
    .expect("flows");
    let flow = registry.get("signup_verification").expect("flow");
    let engine =
        waotp::flow::engine::new_session(&flow, Default::default(), "en", now).expect("session");
    SessionRecord {
        id: id.into(),
        to: format!("+{customer}"),
        customer: customer.into(),
        created_at: now,
        updated_at: now,
        step: 1,
        engine,
        timer_key: None,
        otp_purpose: None,
        otp_bound: Vec::new(),
        last_inbound: 0,
        otp_refused: None,
        merchant: "m1".into(),
        number: "n1".into(),
    }
}

fn entry(id: &str, to: &str, now: DateTime<Utc>) -> OutboxEntry {
    OutboxEntry::pending(
        id.into(),
        None,
        to.into(),
        OutboxPayload::Text { text: "hi".into() },
        now,
    )
}

async fn queue(engine: &PgEngine, entries: Vec<OutboxEntry>) {
    engine
        .apply_step(StepWrite {
            outbox: entries,
            ..StepWrite::default()
        })
        .await
        .expect("step");
}

#[tokio::test]
async fn migrations_apply_once_when_two_instances_start_together() {
    let Some(db) = pg_support::fresh_database("migrations_once").await else {
        return;
    };
    let key = key();
    let (a, b) = tokio::join!(
        PgEngine::connect(&db.url, &key),
        PgEngine::connect(&db.url, &key)
    );
    a.expect("first start");
    b.expect("second start");
    let client = pg_support::connect(&db.url).await;
    let rows = client
        .query(
            "SELECT version, count(*) FROM waotp_schema_migrations GROUP BY version ORDER BY 1",
            &[],
        )
        .await
        .expect("versions");
    let versions: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: Vec<(i32, i64)> = waotp::store::postgres::migrate::MIGRATIONS
        .iter()
        .map(|m| (m.version, 1))
        .collect();
    assert_eq!(versions, expected);
    // A third start finds nothing to do.
    PgEngine::connect(&db.url, &key).await.expect("restart");
}

#[tokio::test]
async fn a_database_from_a_newer_release_is_refused() {
    let Some(db) = pg_support::fresh_database("newer_schema").await else {
        return;
    };
    PgEngine::connect(&db.url, &key())
        .await
        .expect("first start");
    pg_support::connect(&db.url)
        .await
        .execute(
            "INSERT INTO waotp_schema_migrations (version, name) VALUES (9999, 'future')",
            &[],
        )
        .await
        .expect("future version");
    let err = PgEngine::connect(&db.url, &key())
        .await
        .expect_err("a newer schema")
        .to_string();
    assert!(err.contains("9999") && err.contains("newer"), "{err}");
}

#[tokio::test]
async fn a_connect_error_names_the_server_not_the_password() {
    // A port nothing listens on: the pool's first connection fails.
    let err = PgEngine::connect(
        "postgres://waotp:s3cret-pass@127.0.0.1:1/waotp_db?connect_timeout=2",
        &key(),
    )
    .await
    .expect_err("no server")
    .to_string();
    assert!(err.contains("127.0.0.1:1/waotp_db"), "{err}");
    assert!(!err.contains("s3cret-pass"), "{err}");
}

#[tokio::test]
async fn concurrent_deliveries_of_one_event_record_it_once() {
    let Some((_db, a, b)) = two_instances("dedupe_concurrent").await else {
        return;
    };
    let customer = "m1\u{1f}n1\u{1f}15550001111";
    let mut tasks = Vec::new();
    for round in 0..8 {
        for engine in [&a, &b] {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..10 {
                    // Every task delivers the same ten events, in different orders.
                    let i = (i + round) % 10;
                    let event = message(&format!("wamid.{i}"), "15550001111", "hello");
                    out.push(
                        engine
                            .record_event(&event, customer, 100)
                            .await
                            .expect("record"),
                    );
                }
                out
            }));
        }
    }
    let mut seqs = Vec::new();
    for t in tasks {
        for r in t.await.expect("task") {
            if let Recorded::New { seq } = r {
                seqs.push(seq);
            }
        }
    }
    assert_eq!(seqs.len(), 10, "each event is new exactly once: {seqs:?}");
    let distinct: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), 10);
    assert!(a.event_seen("m\u{0}wamid.3").await.expect("seen"));
    assert!(!b.event_seen("m\u{0}wamid.99").await.expect("seen"));
}

#[tokio::test]
async fn a_customers_pending_events_come_in_order_until_handled() {
    let Some((_db, a, b)) = two_instances("pending_order").await else {
        return;
    };
    let alice = "m1\u{1f}n1\u{1f}15550001111";
    let bob = "m1\u{1f}n1\u{1f}15550002222";
    let mut alices = Vec::new();
    for i in 0..6 {
        // Alternating instances, as a load balancer would.
        let engine = if i % 2 == 0 { &a } else { &b };
        let event = message(&format!("wamid.a{i}"), "15550001111", &format!("a{i}"));
        let Recorded::New { seq } = engine.record_event(&event, alice, 100).await.expect("a")
        else {
            panic!("new event recorded as a duplicate");
        };
        alices.push(seq);
        let event = message(&format!("wamid.b{i}"), "15550002222", "b");
        engine.record_event(&event, bob, 100).await.expect("b");
    }
    let pending: Vec<u64> = b
        .pending_events_of(alice)
        .await
        .expect("pending")
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(pending, alices);
    let texts: Vec<String> = a
        .pending_events_of(alice)
        .await
        .expect("pending")
        .into_iter()
        .map(|(_, e)| match e.event {
            InboundEvent::Message(m) => match m.content {
                MessageContent::Text { body } => body,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, ["a0", "a1", "a2", "a3", "a4", "a5"]);
    a.mark_event_handled(alices[0]).await.expect("handled");
    a.mark_event_handled(alices[0])
        .await
        .expect("handled twice");
    assert!(b.is_event_handled(alices[0]).await.expect("read"));
    assert!(!b.is_event_handled(alices[1]).await.expect("read"));
    assert!(!b.is_event_handled(1_000_000).await.expect("read"));
    assert_eq!(b.pending_events_of(alice).await.expect("pending").len(), 5);
    assert_eq!(a.pending_events().await.expect("all pending").len(), 11);
    // The stored event is sealed: the customer's words are not in the table. Looked for as
    // they would be stored in the clear (`"body":"a3"`): two bytes alone turn up in random
    // ciphertext now and then.
    let client = pg_support::connect(&_db.url).await;
    let leaked = client
        .query_one(
            "SELECT count(*) FROM waotp_inbound_events \
             WHERE position('\"body\":\"a3\"'::bytea in event) > 0",
            &[],
        )
        .await
        .expect("scan");
    assert_eq!(leaked.get::<_, i64>(0), 0);
}

#[tokio::test]
async fn two_claimers_never_get_the_same_outbox_entry() {
    let Some((_db, a, b)) = two_instances("outbox_claims").await else {
        return;
    };
    let now = Utc::now();
    // One entry per recipient, so nothing but the claims themselves keeps them apart.
    let entries: Vec<OutboxEntry> = (0..60)
        .map(|i| entry(&format!("e{i:02}"), &format!("1555000{i:04}"), now))
        .collect();
    queue(&a, entries).await;
    let mut tasks = Vec::new();
    for engine in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claimed = engine.claim_outbox(now, 3, LEASE).await.expect("claim");
                if claimed.is_empty() {
                    return got;
                }
                got.extend(claimed.into_iter().map(|e| e.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "an entry was claimed twice");
    assert_eq!(all.len(), 60, "every entry was claimed");
}

#[tokio::test]
async fn a_recipients_entries_are_held_by_one_claim_at_a_time_in_order() {
    let Some((_db, a, b)) = two_instances("outbox_recipient").await else {
        return;
    };
    let now = Utc::now();
    // Queued in another order than they are due.
    let mut first = entry("e1", "15550001111", now);
    first.due_ms -= 1;
    let mut not_yet = entry("e0", "15550001111", now);
    not_yet.due_ms += 10_000;
    queue(&a, vec![entry("e2", "15550001111", now), not_yet, first]).await;
    let claimed = a.claim_outbox(now, 10, LEASE).await.expect("claim");
    assert_eq!(ids(&claimed), ["e1", "e2"]);
    assert!(b
        .claim_outbox(now, 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
    // One settled, the other still held: the recipient stays with its claim.
    let mut done = claimed[0].clone();
    done.state = OutboxState::Done;
    a.update_outbox(&done, None).await.expect("done");
    // Due by now, within the lease.
    let later = now + Span::seconds(20);
    assert!(b
        .claim_outbox(later, 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
    let mut done = claimed[1].clone();
    done.state = OutboxState::Done;
    a.update_outbox(&done, None).await.expect("done");
    assert_eq!(
        ids(&b.claim_outbox(later, 10, LEASE).await.expect("claim")),
        ["e0"]
    );
}

#[tokio::test]
async fn concurrent_claimers_keep_each_recipients_order() {
    let Some((_db, a, b)) = two_instances("outbox_order").await else {
        return;
    };
    let now = Utc::now();
    let mut entries = Vec::new();
    for r in 0..5 {
        for i in 0..8 {
            let mut e = entry(&format!("r{r}-{i}"), &format!("155500{r:05}"), now);
            e.due_ms -= 8 - i;
            entries.push(e);
        }
    }
    queue(&a, entries).await;
    // Every claim is logged before its entries are settled: a recipient's next entries cannot be
    // claimed before then, so the log holds each recipient's entries in the order they went.
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for engine in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let claimed = engine.claim_outbox(now, 3, LEASE).await.expect("claim");
                if claimed.is_empty() {
                    if engine.outbox_depth().await.expect("depth") == 0 {
                        return;
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                log.lock()
                    .expect("log")
                    .extend(claimed.iter().map(|e| e.id.clone()));
                for mut e in claimed {
                    e.state = OutboxState::Done;
                    engine.update_outbox(&e, None).await.expect("settle");
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("claimers finish")
            .expect("task");
    }
    let log = log.lock().expect("log").clone();
    assert_eq!(log.len(), 40, "each entry claimed once: {log:?}");
    for r in 0..5 {
        let went: Vec<&String> = log
            .iter()
            .filter(|id| id.starts_with(&format!("r{r}-")))
            .collect();
        let expected: Vec<String> = (0..8).map(|i| format!("r{r}-{i}")).collect();
        assert_eq!(went, expected.iter().collect::<Vec<_>>());
    }
}

fn ids(entries: &[OutboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// A lease short enough to see run out, long enough that a claim made just before is live.
const SHORT: Duration = Duration::from_secs(2);

/// Polls `probe` until it answers, for up to ten seconds.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_a_send_in_flight_comes_back_in_flight() {
    let Some((_db, a, b)) = two_instances("outbox_lease").await else {
        return;
    };
    let now = Utc::now();
    queue(
        &a,
        vec![
            entry("pending", "15550001111", now),
            entry("sending", "15550002222", now),
        ],
    )
    .await;
    let claimed = a.claim_outbox(now, 10, SHORT).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    // Instance a starts sending one, then dies: it never settles either.
    let mut sending = claimed
        .iter()
        .find(|e| e.id == "sending")
        .expect("sending")
        .clone();
    sending.state = OutboxState::InFlight;
    sending.attempts += 1;
    a.update_outbox(&sending, None).await.expect("in flight");
    drop(a);
    assert!(b
        .claim_outbox(now, 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
    assert!(b.outbox_in_flight().await.expect("in flight").is_empty());
    // Leases run on the server's clock: wait for it to pass.
    let mut taken = eventually("the dead instance's claims pass on", || async {
        let got = b.claim_outbox(now, 10, LEASE).await.expect("claim");
        (!got.is_empty()).then_some(got)
    })
    .await;
    taken.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(ids(&taken), ["pending", "sending"]);
    assert_eq!(taken[0].state, OutboxState::Pending);
    assert_eq!(
        taken[1].state,
        OutboxState::InFlight,
        "the in-doubt rules must apply"
    );
    // Taken over: held by b now, for its own lease.
    assert!(b
        .claim_outbox(now, 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
    assert!(b.outbox_in_flight().await.expect("in flight").is_empty());
}

#[tokio::test]
async fn a_send_starts_only_on_a_claim_its_instance_still_holds() {
    let Some((_db, a, b)) = two_instances("outbox_begin_send").await else {
        return;
    };
    let now = Utc::now();
    // One entry per recipient: nothing but the claims decides who may send what.
    let entries: Vec<OutboxEntry> = (0..20)
        .map(|i| entry(&format!("e{i:02}"), &format!("1555100{i:04}"), now))
        .collect();
    queue(&a, entries).await;
    let mine = a.claim_outbox(now, 50, SHORT).await.expect("claim");
    assert_eq!(mine.len(), 20);
    // Instance a is slow: it renews the claims of the even entries only.
    let even: Vec<String> = mine.iter().step_by(2).map(|e| e.id.clone()).collect();
    assert_eq!(
        OutboxQueue::renew(&a, &even, LEASE).await.expect("renew"),
        10
    );
    let theirs = eventually("b takes over the claims a did not renew", || async {
        let got = b.claim_outbox(now, 50, LEASE).await.expect("claim");
        (!got.is_empty()).then_some(got)
    })
    .await;
    let odd: Vec<&str> = mine
        .iter()
        .skip(1)
        .step_by(2)
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(ids(&theirs), odd);
    assert_eq!(
        OutboxQueue::renew(
            &a,
            &odd.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            LEASE
        )
        .await
        .expect("renew"),
        0,
        "a renews nothing b holds"
    );

    // Both instances try to start every entry at once: each starts on exactly one of them,
    // the one holding its claim.
    let mut races = Vec::new();
    for e in &mine {
        for engine in [a.clone(), b.clone()] {
            let e = e.clone();
            races.push(tokio::spawn(async move {
                let started = OutboxQueue::begin_send(&engine, &e, e.due_ms, LEASE)
                    .await
                    .expect("begin send");
                (e.id, started)
            }));
        }
    }
    let mut started_by = std::collections::HashMap::<String, usize>::new();
    let mut order = Vec::new();
    for (i, race) in races.into_iter().enumerate() {
        let (id, started) = race.await.expect("task");
        if started {
            *started_by.entry(id.clone()).or_default() += 1;
            // Even races are a's, odd ones b's.
            order.push((id, if i % 2 == 0 { "a" } else { "b" }));
        }
    }
    assert_eq!(started_by.len(), 20, "every entry started once: {order:?}");
    assert!(started_by.values().all(|n| *n == 1), "{started_by:?}");
    for (id, by) in &order {
        let expected = if odd.contains(&id.as_str()) { "b" } else { "a" };
        assert_eq!(by, &expected, "{id} started by the wrong instance");
    }
    for e in &mine {
        let now_stored = a.outbox_entry(&e.id).await.expect("read").expect("kept");
        assert_eq!(now_stored.state, OutboxState::InFlight);
    }
    // In flight and held: claimed by neither, and not left for the in-doubt rules.
    assert!(a
        .claim_outbox(now, 50, LEASE)
        .await
        .expect("claim")
        .is_empty());
    assert!(b.outbox_in_flight().await.expect("in flight").is_empty());
}

#[tokio::test]
async fn a_holder_that_lost_its_claim_neither_moves_nor_releases_the_entry() {
    let Some((_db, a, b)) = two_instances("outbox_held_writes").await else {
        return;
    };
    let now = Utc::now();
    queue(&a, vec![entry("e1", "15550003333", now)]).await;
    let mine = a.claim_outbox(now, 10, SHORT).await.expect("claim");
    assert_eq!(ids(&mine), ["e1"]);
    let theirs = eventually("b takes over the claim", || async {
        let got = b.claim_outbox(now, 10, LEASE).await.expect("claim");
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(ids(&theirs), ["e1"]);
    // a, late, postpones the entry behind a retry of its recipient, then gives back its claims.
    let mut postponed = mine[0].clone();
    postponed.due_ms += 60_000;
    assert!(!OutboxQueue::update_held(&a, &postponed, mine[0].due_ms)
        .await
        .expect("update held"));
    OutboxQueue::release(&a, &["e1".to_owned()])
        .await
        .expect("release");
    // Untouched, still b's: b starts it.
    let stored = a.outbox_entry("e1").await.expect("read").expect("kept");
    assert_eq!(stored, mine[0]);
    assert!(a
        .claim_outbox(now, 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
    assert!(
        OutboxQueue::begin_send(&b, &theirs[0], theirs[0].due_ms, LEASE)
            .await
            .expect("begin send")
    );
}

#[tokio::test]
async fn each_due_timer_is_claimed_once_and_a_dead_claim_passes_on() {
    let Some((_db, a, b)) = two_instances("timers").await else {
        return;
    };
    let now = Utc::now();
    for i in 0..40 {
        let due = now - Span::milliseconds(i);
        a.apply_step(StepWrite {
            timer_set: Some((TimerRef::new(due, &format!("ses_{i}"), "t"), i as u64)),
            ..StepWrite::default()
        })
        .await
        .expect("timer");
    }
    let future = TimerRef::new(now + Span::hours(1), "ses_future", "t");
    a.apply_step(StepWrite {
        timer_set: Some((future.clone(), 99)),
        ..StepWrite::default()
    })
    .await
    .expect("timer");
    let claims = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for engine in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let claims = claims.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let due = engine.claim_timers(now, 4, SHORT).await.expect("claim");
                if due.is_empty() {
                    return got;
                }
                claims.fetch_add(due.len(), Ordering::Relaxed);
                got.extend(due);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let distinct: HashSet<TimerRef> = all.iter().map(|t| t.timer.clone()).collect();
    assert_eq!(distinct.len(), 40);
    assert_eq!(
        claims.load(Ordering::Relaxed),
        40,
        "a timer was claimed twice"
    );
    assert!(
        !distinct.contains(&future),
        "a timer not yet due was claimed"
    );
    // Fired (removed by its step) or dropped: gone for good. The rest pass on after the lease.
    let fired = &all[0];
    b.apply_step(StepWrite {
        timer_remove: Some(fired.timer.clone()),
        ..StepWrite::default()
    })
    .await
    .expect("fire");
    b.drop_timer(&all[1].timer).await.expect("drop");
    let again = eventually("the claims pass on", || async {
        let got = a.claim_timers(now, 100, LEASE).await.expect("claim");
        (!got.is_empty()).then_some(got)
    })
    .await;
    let mut again: HashSet<TimerRef> = again.into_iter().map(|t| t.timer).collect();
    // Leases taken at slightly different moments may end a poll apart.
    while again.len() < 38 {
        let more = a.claim_timers(now, 100, LEASE).await.expect("claim");
        again.extend(more.into_iter().map(|t| t.timer));
        tokio::task::yield_now().await;
    }
    assert_eq!(again.len(), 38);
    assert!(!again.contains(&fired.timer) && !again.contains(&all[1].timer));
    // Due and not fired, claimed or not; bounded.
    assert_eq!(b.due_timer_count(now, 1000).await.expect("count"), 38);
    assert_eq!(b.due_timer_count(now, 5).await.expect("count"), 5);
    // A released claim is claimable at once.
    let one = all[2].timer.clone();
    a.release_timer(&one).await.expect("release");
    let released = b.claim_timers(now, 100, LEASE).await.expect("claim");
    assert_eq!(
        released.iter().map(|t| &t.timer).collect::<Vec<_>>(),
        [&one]
    );
}

#[tokio::test]
async fn a_lock_excludes_holders_on_two_instances() {
    let Some((_db, a, b)) = two_instances("locks").await else {
        return;
    };
    // A read-modify-write that loses updates unless the lock serializes it.
    let counter = Arc::new(std::sync::Mutex::new(0u32));
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let engine = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (counter, inside) = (counter.clone(), inside.clone());
        tasks.push(tokio::spawn(async move {
            let _guard = engine
                .locks()
                .lock(LockClass::Session, "ses_shared")
                .await
                .expect("lock");
            assert_eq!(
                inside.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            let seen = *counter.lock().expect("counter");
            tokio::task::yield_now().await;
            // A round trip to the server while holding: other holders would get in here.
            engine.healthy().await;
            *counter.lock().expect("counter") = seen + 1;
            inside.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(*counter.lock().expect("counter"), 24);
}

#[tokio::test]
async fn a_waiting_lock_is_granted_when_the_holder_drops_its_guard() {
    let Some((db, a, b)) = two_instances("lock_handover").await else {
        return;
    };
    let held = a
        .locks()
        .lock(LockClass::Customer, "m1\u{1f}n1\u{1f}15550001111")
        .await
        .expect("lock");
    // Another class with the same name is another lock.
    let other = b
        .locks()
        .lock(LockClass::Session, "m1\u{1f}n1\u{1f}15550001111")
        .await
        .expect("other class");
    drop(other);
    let waiter = tokio::spawn(async move {
        b.locks()
            .lock(LockClass::Customer, "m1\u{1f}n1\u{1f}15550001111")
            .await
            .expect("lock")
    });
    // The waiter is queued on the server behind the holder.
    let client = pg_support::connect(&db.url).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .expect("pg_locks")
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter never queued"
        );
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished());
    drop(held);
    let guard = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("granted after the holder let go")
        .expect("task");
    drop(guard);
}

#[tokio::test]
async fn a_step_is_all_or_nothing() {
    let Some((_db, a, b)) = two_instances("step_atomic").await else {
        return;
    };
    let now = Utc::now();
    let customer = "m1\u{1f}n1\u{1f}15550001111";
    let timer = TimerRef::new(now, "ses_1", "reminder");
    let good = StepWrite {
        record: Some(session("ses_1", "15550001111", now)),
        activate: Some((customer.into(), "signup_verification".into())),
        timer_set: Some((timer.clone(), 1)),
        outbox: vec![entry("ses_1:1:0", "15550001111", now)],
        ..StepWrite::default()
    };
    a.apply_step(good).await.expect("step");
    assert_eq!(
        b.active_session(customer, "signup_verification")
            .await
            .expect("active")
            .as_deref(),
        Some("ses_1")
    );
    assert_eq!(
        b.get_session("ses_1")
            .await
            .expect("get")
            .expect("stored")
            .step,
        1
    );
    // The next step fails at its last write (a NUL, which PostgreSQL refuses in text): none
    // of it may remain.
    let mut next = session("ses_1", "15550001111", now);
    next.step = 2;
    let mut bad_entry = entry("ses_1:2:0", "15550001111", now);
    bad_entry.to = "1555\u{0}".into();
    let bad = StepWrite {
        record: Some(next),
        deactivate: Some((customer.into(), "signup_verification".into())),
        timer_remove: Some(timer.clone()),
        timer_set: Some((TimerRef::new(now, "ses_1", "expiry"), 2)),
        outbox: vec![entry("ses_1:2:1", "15550003333", now), bad_entry],
        ..StepWrite::default()
    };
    assert!(a.apply_step(bad).await.is_err());
    assert_eq!(
        b.get_session("ses_1")
            .await
            .expect("get")
            .expect("stored")
            .step,
        1
    );
    assert_eq!(
        b.active_session(customer, "signup_verification")
            .await
            .expect("active")
            .as_deref(),
        Some("ses_1")
    );
    let timers = b.claim_timers(now, 10, LEASE).await.expect("timers");
    assert_eq!(
        timers.into_iter().map(|t| t.timer).collect::<Vec<_>>(),
        [timer]
    );
    let queued = b.claim_outbox(now, 10, LEASE).await.expect("outbox");
    assert_eq!(ids(&queued), ["ses_1:1:0"]);
    assert!(b.outbox_entry("ses_1:2:1").await.expect("read").is_none());
}

#[tokio::test]
async fn a_replayed_step_does_not_queue_its_message_again() {
    let Some((_db, a, _b)) = two_instances("step_replay").await else {
        return;
    };
    let now = Utc::now();
    queue(&a, vec![entry("ses_1:1:0", "15550001111", now)]).await;
    let claimed = a.claim_outbox(now, 10, LEASE).await.expect("claim");
    let mut sent = claimed[0].clone();
    sent.state = OutboxState::Done;
    a.update_outbox(&sent, None).await.expect("sent");
    queue(&a, vec![entry("ses_1:1:0", "15550001111", now)]).await;
    assert_eq!(
        a.outbox_entry("ses_1:1:0")
            .await
            .expect("read")
            .expect("kept")
            .state,
        OutboxState::Done
    );
    assert!(a
        .claim_outbox(now, 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
}

#[tokio::test]
async fn a_step_on_one_instance_wakes_the_other() {
    let Some((_db, a, b)) = two_instances("notify").await else {
        return;
    };
    let wakeups = b.wakeups();
    // The listener wakes both loops once it is listening; wait for that first.
    tokio::time::timeout(Duration::from_secs(10), wakeups.outbox.notified())
        .await
        .expect("listening");
    let woken = wakeups.outbox.notified();
    queue(&a, vec![entry("e1", "15550001111", Utc::now())]).await;
    tokio::time::timeout(Duration::from_secs(10), woken)
        .await
        .expect("woken by the other instance's step");
}

#[tokio::test]
async fn the_bundle_serves_every_concern_from_one_database() {
    let Some(db) = pg_support::fresh_database("storage_bundle").await else {
        return;
    };
    let (a, b) = tokio::join!(
        waotp::store::Storage::postgres(&db.url, None),
        waotp::store::Storage::postgres(&db.url, None)
    );
    let (a, b) = (a.expect("first instance"), b.expect("second instance"));
    assert_eq!(a.engine.name(), "postgres");
    assert!(a.shared && b.shared);
    assert!(a.engine.healthy().await);
    // Both instances sealed with the one key kept in the database: each reads the other's.
    let customer = "m1\u{1f}n1\u{1f}15550001111";
    let event = message("wamid.bundle", "15550001111", "hello");
    assert!(matches!(
        a.inbound
            .record(&event, customer, 100)
            .await
            .expect("record"),
        Recorded::New { .. }
    ));
    assert_eq!(
        b.inbound
            .record(&event, customer, 100)
            .await
            .expect("again"),
        Recorded::Duplicate
    );
    let pending = b.inbound.pending_of(customer).await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].1.event, event);
    assert_eq!(
        a.inbound.counts().await.expect("counts"),
        waotp::store::InboundCounts {
            recorded: 1,
            pending: 1
        }
    );
    assert!(b.inbound.next_seq().await.expect("next") > pending[0].0);
    // A step through one instance, claimed through the other.
    let now = Utc::now();
    a.sessions
        .apply_step(StepWrite {
            record: Some(session("ses_b", "15550001111", now)),
            activate: Some((customer.into(), "signup_verification".into())),
            outbox: vec![entry("ses_b:1:0", "15550001111", now)],
            ..StepWrite::default()
        })
        .await
        .expect("step");
    assert_eq!(b.outbox.depth().await.expect("depth"), 1);
    let claimed = b.outbox.claim_due(now, 10, LEASE).await.expect("claim");
    assert_eq!(ids(&claimed), ["ses_b:1:0"]);
    assert!(a
        .outbox
        .claim_due(now, 10, LEASE)
        .await
        .expect("claim")
        .is_empty());
    b.outbox
        .release(&["ses_b:1:0".to_owned()])
        .await
        .expect("release");
    assert_eq!(
        a.outbox
            .claim_due(now, 10, LEASE)
            .await
            .expect("claim")
            .len(),
        1
    );
    let active = b.sessions.active_for(customer).await.expect("active");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, "ses_b");
    // Locks by the contract's keys exclude across the two.
    let held = a
        .locks
        .lock(waotp::store::LockKey::Start {
            customer: customer.into(),
            flow: "signup_verification".into(),
        })
        .await
        .expect("lock");
    let waiting = tokio::spawn({
        let locks = b.locks.clone();
        let customer = customer.to_owned();
        async move {
            locks
                .lock(waotp::store::LockKey::Start {
                    customer,
                    flow: "signup_verification".into(),
                })
                .await
                .expect("lock")
        }
    });
    // A session lock is another lock: granted while the start lock is held.
    drop(
        b.locks
            .lock(waotp::store::LockKey::Session("ses_b".into()))
            .await
            .expect("session lock"),
    );
    assert!(!waiting.is_finished());
    drop(held);
    drop(
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("granted")
            .expect("task"),
    );
}

#[tokio::test]
async fn listing_pages_newest_first_by_merchant_and_idempotency_keys_round_trip() {
    use waotp::store::{
        IdempotencyKey, IdempotentStart, MerchantFilter, SessionQuery, StoredAnswer,
    };
    let Some((_db, a, b)) = two_instances("listing").await else {
        return;
    };
    let base = Utc::now() - Span::minutes(10);
    for i in 0..7 {
        let mut r = session(&format!("ses_{i}"), "15550001111", base + Span::seconds(i));
        if i % 3 == 0 {
            r.merchant = "m2".into();
        }
        let idempotency = (i == 1).then(|| IdempotentStart {
            key: IdempotencyKey::new(&[7; 32], "key-1"),
            request: "digest".into(),
            at: base,
        });
        a.apply_step(StepWrite {
            record: Some(r),
            idempotency,
            ..StepWrite::default()
        })
        .await
        .expect("step");
    }
    let mut query = SessionQuery {
        merchant: Some(MerchantFilter {
            id: "m1".into(),
            owns_unscoped: false,
        }),
        limit: 2,
        ..SessionQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = b.list_sessions(&query).await.expect("page");
        seen.extend(page.sessions.iter().map(|s| s.id.clone()));
        match page.next_cursor {
            Some(c) => query.starting_after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["ses_5", "ses_4", "ses_2", "ses_1"]);
    let bogus = SessionQuery {
        starting_after: waotp::store::Cursor::decode("cur_nonsense"),
        ..SessionQuery::default()
    };
    assert!(matches!(
        b.list_sessions(&bogus).await,
        Err(waotp::store::StoreError::Invalid(_))
    ));

    let key = IdempotencyKey::new(&[7; 32], "key-1");
    let first = b
        .idempotent(&key, base + Span::minutes(1))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(first.session_id, "ses_1");
    assert_eq!(b.answer(&key, &first).expect("answer"), None);
    let answer = StoredAnswer {
        status: 201,
        body: serde_json::json!({"code": "123456"}),
    };
    a.keep_answer(&key, &answer).await.expect("keep");
    let other = StoredAnswer {
        status: 500,
        body: serde_json::json!({}),
    };
    a.keep_answer(&key, &other).await.expect("keep again");
    let kept = b
        .idempotent(&key, base + Span::minutes(1))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(b.answer(&key, &kept).expect("answer"), Some(answer));
    // Expired after a day: absent, then purged.
    let later = base + Span::hours(25);
    assert!(b.idempotent(&key, later).await.expect("read").is_none());
    assert_eq!(b.purge_idempotency(later).await.expect("purge"), 1);
}
