//! Session steps, the active index, idempotency keys, listing and per-customer records.

use super::support::{at, customer_key, entry, first_step, now, session, start};
use super::Backend;
use waotp::flow::engine::SessionStatus;
use waotp::store::{
    Cursor, Delivery, IdempotencyKey, IdempotentStart, MessageLink, OutboxState, SessionQuery,
    StepWrite, StoreError, StoredAnswer, TimerRef,
};

const CUSTOMER: &str = "15550003333";

pub async fn a_step_is_applied_whole(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let mut record = session("ses_step", CUSTOMER, t0);
    let timer = TimerRef::new(at(t0, 600), "ses_step", "reminder");
    record.timer_key = Some(timer.clone());
    let mut write = first_step(&record);
    write.outbox = vec![
        entry("ses_step:1:0", "ses_step", CUSTOMER, t0),
        entry("ses_step:1:1", "ses_step", CUSTOMER, t0),
    ];
    write.timer_set = Some((timer.clone(), 1));
    s.sessions.apply_step(write).await.expect("step");
    s.engine.durable().await.expect("durable");

    let flow = record.engine.flow_id.as_str().to_owned();
    let key = customer_key(CUSTOMER);
    assert_eq!(
        s.sessions.get("ses_step").await.expect("get"),
        Some(record.clone())
    );
    assert_eq!(
        s.sessions
            .active(&key, &flow)
            .await
            .expect("active")
            .as_deref(),
        Some("ses_step")
    );
    let active: Vec<String> = s
        .sessions
        .active_for(&key)
        .await
        .expect("active for")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(active, ["ses_step"]);
    for id in ["ses_step:1:0", "ses_step:1:1"] {
        let e = s
            .outbox
            .outbox_entry(id)
            .await
            .expect("entry")
            .expect("queued");
        assert_eq!(e.state, OutboxState::Pending);
    }
    assert_eq!(s.outbox.depth().await.expect("depth"), 2);
    let due = s
        .timers
        .claim_due_timers(at(t0, 601), 10, std::time::Duration::from_secs(60))
        .await
        .expect("timers");
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].timer.clone(), due[0].seq), (timer, 1));

    // The same step written again (a replay) queues nothing twice.
    let mut again = first_step(&record);
    again.outbox = vec![entry("ses_step:1:0", "ses_step", CUSTOMER, t0)];
    s.sessions.apply_step(again).await.expect("replayed step");
    assert_eq!(s.outbox.depth().await.expect("depth"), 2);

    // Everything of the step is there after a restart.
    let s = b.reopen(s).await;
    assert_eq!(s.sessions.get("ses_step").await.expect("get"), Some(record));
    assert_eq!(s.outbox.depth().await.expect("depth"), 2);
}

pub async fn a_completed_session_leaves_the_active_index_and_is_purged(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let mut record = session("ses_done", CUSTOMER, t0);
    let timer = TimerRef::new(at(t0, 60), "ses_done", "state");
    record.timer_key = Some(timer.clone());
    let mut write = first_step(&record);
    write.timer_set = Some((timer.clone(), 1));
    s.sessions.apply_step(write).await.expect("step");
    start(&s, &session("ses_live", "15550004444", t0)).await;

    let flow = record.engine.flow_id.as_str().to_owned();
    record.step = 2;
    record.updated_at = at(t0, 1);
    record.engine.status = SessionStatus::Completed;
    record.engine.outcome = Some("verified".into());
    record.timer_key = None;
    s.sessions
        .apply_step(StepWrite {
            record: Some(record.clone()),
            deactivate: Some((customer_key(CUSTOMER), flow.clone())),
            timer_remove: Some(timer),
            ..StepWrite::default()
        })
        .await
        .expect("last step");
    s.engine.durable().await.expect("durable");
    assert_eq!(
        s.sessions
            .active(&customer_key(CUSTOMER), &flow)
            .await
            .expect("active"),
        None
    );
    assert!(s
        .timers
        .claim_due_timers(at(t0, 3600), 10, std::time::Duration::from_secs(60))
        .await
        .expect("timers")
        .is_empty());

    let purged = s
        .sessions
        .purge_completed_before(at(t0, 2))
        .await
        .expect("purge");
    assert!(purged >= 1);
    assert_eq!(s.sessions.get("ses_done").await.expect("get"), None);
    assert!(
        s.sessions.get("ses_live").await.expect("get").is_some(),
        "an active session is never purged"
    );
}

pub async fn idempotency_keys_keep_their_first_request_and_answer(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let key = IdempotencyKey::new(&[7; 32], "order-1");
    let other_merchant = IdempotencyKey::new(&[8; 32], "order-1");
    let record = session("ses_idem", CUSTOMER, t0);
    let mut write = first_step(&record);
    write.idempotency = Some(IdempotentStart {
        key: key.clone(),
        request: "digest-of-the-request".into(),
        at: t0,
    });
    s.sessions.apply_step(write).await.expect("step");
    let found = s
        .idempotency
        .idempotent(&key, t0)
        .await
        .expect("read")
        .expect("kept with the step");
    assert_eq!(
        (found.session_id.as_str(), found.request.as_str()),
        ("ses_idem", "digest-of-the-request")
    );
    assert_eq!(
        s.idempotency
            .idempotent(&other_merchant, t0)
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        s.idempotency.answer(&key, &found).await.expect("answer"),
        None
    );

    let answer = StoredAnswer {
        status: 201,
        body: serde_json::json!({"session": "ses_idem", "otp": {"code": "493817"}}),
    };
    s.idempotency
        .keep_answer(&key, &answer)
        .await
        .expect("keep");
    s.engine.durable().await.expect("durable");
    let s = b.reopen(s).await;
    let found = s
        .idempotency
        .idempotent(&key, at(t0, 60))
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        s.idempotency.answer(&key, &found).await.expect("answer"),
        Some(answer)
    );

    let tomorrow = at(t0, 24 * 3600 + 1);
    assert_eq!(
        s.idempotency
            .idempotent(&key, tomorrow)
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        s.idempotency
            .purge_idempotency(tomorrow)
            .await
            .expect("purge"),
        1
    );
}

pub async fn listing_pages_through_every_session_once_newest_first(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let ids: Vec<String> = (0..5).map(|i| format!("ses_list{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        start(&s, &session(id, CUSTOMER, at(t0, i as i64))).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..10 {
        let page = s
            .listing
            .list(&SessionQuery {
                starting_after: cursor.clone(),
                limit: 2,
                ..SessionQuery::default()
            })
            .await
            .expect("page");
        assert!(page.sessions.len() <= 2);
        seen.extend(page.sessions.into_iter().map(|r| r.id));
        // A cursor goes out as text and comes back as text.
        cursor = page
            .next_cursor
            .map(|c| Cursor::decode(&c.encode()).expect("its own cursor"));
        if cursor.is_none() {
            break;
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let filtered = s
        .listing
        .list(&SessionQuery {
            customer: Some("15550009999".into()),
            limit: 10,
            ..SessionQuery::default()
        })
        .await
        .expect("page");
    assert!(filtered.sessions.is_empty());
}

pub async fn a_listing_refuses_a_cursor_it_never_gave(b: &dyn Backend) {
    let s = b.open().await;
    start(&s, &session("ses_one", CUSTOMER, now())).await;
    let forged = Cursor::decode("cur_zz-not-a-position").expect("looks like a cursor");
    let refused = s
        .listing
        .list(&SessionQuery {
            starting_after: Some(forged),
            limit: 10,
            ..SessionQuery::default()
        })
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert!(Cursor::decode("not a cursor").is_none());
}

pub async fn customer_records_are_kept(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let key = customer_key(CUSTOMER);
    s.sessions.touch_window(&key, t0).await.expect("window");
    s.sessions
        .note_default_reply(&key, at(t0, 1))
        .await
        .expect("reply");
    let link = MessageLink {
        session_id: Some("ses_x".into()),
        entry_id: "ses_x:1:0".into(),
        delivery: Delivery::Sent,
        sent_at: t0,
        tracked: true,
    };
    s.sessions.put_link("wamid.out", &link).await.expect("link");
    s.sessions
        .put_flow_source("hash1", "signup.toml", "[flow]")
        .await
        .expect("flow source");
    s.sessions
        .record_sandbox(&key, t0, "e1", &serde_json::json!({"text": "one"}))
        .await
        .expect("sandbox");
    s.sessions
        .record_sandbox(&key, at(t0, 1), "e2", &serde_json::json!({"text": "two"}))
        .await
        .expect("sandbox");
    s.outbox
        .note_echo("ses_x:1:0", "wamid.out")
        .await
        .expect("echo");
    s.outbox
        .pause_recipient(&key, t0.timestamp_millis() + 5_000)
        .await
        .expect("pause");
    s.engine.durable().await.expect("durable");

    let s = b.reopen(s).await;
    assert_eq!(
        s.sessions
            .last_customer_message(&key)
            .await
            .expect("window"),
        Some(t0)
    );
    assert_eq!(
        s.sessions.last_default_reply(&key).await.expect("reply"),
        Some(at(t0, 1))
    );
    assert_eq!(
        s.sessions.link("wamid.out").await.expect("link"),
        Some(link)
    );
    assert_eq!(
        s.sessions.flow_source("hash1").await.expect("source"),
        Some(("signup.toml".into(), "[flow]".into()))
    );
    assert_eq!(
        s.sessions.sandbox_messages(&key).await.expect("sandbox"),
        [
            serde_json::json!({"text": "one"}),
            serde_json::json!({"text": "two"})
        ]
    );
    assert_eq!(
        s.outbox.echo("ses_x:1:0").await.expect("echo").as_deref(),
        Some("wamid.out")
    );
    assert_eq!(
        s.outbox.recipient_paused_until(&key).await.expect("pause"),
        Some(t0.timestamp_millis() + 5_000)
    );
    assert_eq!(s.sessions.get("ses_nobody").await.expect("get"), None);
}
