//! The journal stays bounded when store writes arrive and webhook events do not.
//!
//! Every store write appends a redo record to the inbound journal. Here a child process opens
//! the store with small journal segments and writes many session steps — as the API does in
//! sandbox mode, where no webhook event ever arrives — checkpointing as it goes: the journal's
//! directory never holds much more than a segment. Its last writes come after the last
//! checkpoint; then one webhook event is recorded, the child acknowledges and is killed with
//! SIGKILL. Reopening the directory finds every acknowledged write, and the event where its
//! record says it is.

mod killed_child;
use std::path::Path;
use waotp::domain::{InboundEvent, InboundMessage, MessageContent, MessageId, WaId};
use waotp::store::Recorded;
use waotp::store::{SessionRecord, StepWrite};
use waotp::store::{Store, StoreOptions};

const CHILD: &str = "WAOTP_TEST_JOURNAL_BOUND_CHILD";
const CUSTOMER: &str = "919876543210";
const SEGMENT_BYTES: u64 = 16 * 1024;
/// Writes in all, the last [`UNCHECKPOINTED`] of them after the last checkpoint.
const WRITES: usize = 300;
const UNCHECKPOINTED: usize = 5;
/// The journal may hold the current segment, one closed segment not yet settled, and the
/// write that went past the size.
const BOUND: u64 = 3 * SEGMENT_BYTES;
const EVENT_ID: &str = "wamid.journal-bound-event";

fn session_id(i: usize) -> String {
    format!("ses_0000000000000000{i:08}")
}

fn journal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("inbound"))
        .expect("journal directory")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn event() -> InboundEvent {
    InboundEvent::Message(InboundMessage {
        id: MessageId::parse(EVENT_ID).expect("id"),
        from: WaId::parse(CUSTOMER).expect("wa id"),
        user_id: None,
        profile_name: None,
        timestamp: 1,
        phone_number_id: None,
        context: None,
        content: MessageContent::Text {
            body: "after the redo-only segments".into(),
        },
        errors: vec![],
    })
}

/// The child's half: writes, acknowledges on stdout, then waits to be killed.
async fn write_and_wait(dir: &Path) {
    let small_segments = StoreOptions {
        checkpoint_every: None,
        segment_bytes: SEGMENT_BYTES,
        ..StoreOptions::default()
    };
    let store = Store::open_with_options(dir, |_| {}, None, small_segments).expect("store");
    let registry =
        waotp::runtime::flows::FlowRegistry::load(Path::new("flows"), Default::default())
            .expect("flows");
    let flow = registry.get("signup_verification").expect("flow");
    store
        .sessions()
        .put_flow_source(
            flow.hash(),
            &flow.path().display().to_string(),
            flow.source(),
        )
        .expect("flow source");
    let mut appended = 0;
    let mut largest = 0;
    for i in 0..WRITES {
        let now = chrono::Utc::now();
        let engine = waotp::flow::engine::new_session(&flow, Default::default(), "en", now)
            .expect("session");
        let record = SessionRecord {
            id: session_id(i),
            to: format!("+{CUSTOMER}"),
            customer: CUSTOMER.into(),
            created_at: now,
            updated_at: now,
            step: i as u64 + 1,
            engine,
            timer_key: None,
            otp_purpose: None,
            otp_bound: Vec::new(),
            last_inbound: 0,
            otp_refused: None,
            merchant: String::new(),
            number: String::new(),
        };
        let before = journal_bytes(dir);
        store
            .sessions()
            .apply(StepWrite {
                record: Some(record),
                ..StepWrite::default()
            })
            .expect("step");
        store.logged().await.expect("durable");
        appended += journal_bytes(dir).saturating_sub(before);
        if i < WRITES - UNCHECKPOINTED {
            store.inbound().checkpoint_now().expect("checkpoint");
        }
        largest = largest.max(journal_bytes(dir));
    }
    // The store wrote far more than the bound: the journal stayed under it only because
    // segments without events were closed and deleted.
    assert!(
        appended > 4 * BOUND,
        "only {appended} bytes appended: the test does not exercise rotation"
    );
    assert!(
        largest <= BOUND,
        "the journal grew to {largest} bytes, above {BOUND}"
    );
    let recorded = store
        .inbound()
        .record(&event(), chrono::Utc::now().timestamp())
        .expect("record");
    assert!(matches!(recorded, Recorded::New { .. }), "{recorded:?}");
    store.inbound().durable().await.expect("event durable");
    killed_child::acknowledge_and_wait();
}

#[tokio::test]
async fn redo_only_writes_keep_the_journal_bounded_and_survive_kill_9() {
    if let Some(dir) = std::env::var_os(CHILD) {
        write_and_wait(Path::new(&dir)).await;
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // SIGKILL: no shutdown checkpoint, no flush of sled.
    killed_child::run_until_acknowledged_then_kill(
        "redo_only_writes_keep_the_journal_bounded_and_survive_kill_9",
        CHILD,
        &data,
    );

    let store = Store::open(&data, |_| {}).expect("reopen after the crash");
    for i in 0..WRITES {
        let record = store
            .sessions()
            .get(&session_id(i))
            .expect("read")
            .unwrap_or_else(|| panic!("acknowledged write {i} was lost"));
        assert_eq!(record.step, i as u64 + 1);
    }
    let pending = store.inbound().pending().expect("pending events");
    assert_eq!(pending.len(), 1, "{pending:?}");
    let InboundEvent::Message(m) = &pending[0].1.event else {
        panic!("not the message: {pending:?}");
    };
    assert_eq!(m.id.as_str(), EVENT_ID);
    assert!(journal_bytes(&data) <= BOUND);
}
