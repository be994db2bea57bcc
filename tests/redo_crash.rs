//! A session step acknowledged from the journal alone survives `kill -9`.
//!
//! Store writes are durable once their redo record is in the journal; sled itself is flushed
//! later, in the background. Here a child process opens the store with no background flush at
//! all, writes a session step (the session, its outbox entry, a funnel counter) and an OTP
//! issue, waits for [`Store::logged`], reports the acknowledgement and is killed with SIGKILL
//! before any checkpoint moved them to sled (sled flushes only the ledger's own writes, as its
//! timer may). Reopening the directory finds every write: replayed from the journal before
//! anything reads the database.

mod killed_child;
use std::path::Path;
use waotp::otp::policy::OtpPolicy;
use waotp::otp::rules::IssueRequest;
use waotp::otp::{CustomerNumber, OtpKey, OtpSubject};
use waotp::store::embedded::otp::OtpLedger;
use waotp::store::{IssueKind, IssueOutcome};
use waotp::store::{OutboxEntry, OutboxPayload, SessionRecord, StepWrite};
use waotp::store::{Store, StoreOptions};

const CHILD: &str = "WAOTP_TEST_REDO_CHILD";
const SESSION: &str = "ses_00000000000000000000redo";
const CUSTOMER: &str = "919876543210";

/// The child's half: writes, acknowledges on stdout, then waits to be killed.
async fn write_and_wait(dir: &Path) {
    let no_background_flush = StoreOptions {
        checkpoint_every: None,
        sled_flush_every_ms: None,
        ..StoreOptions::default()
    };
    let store = Store::open_with_options(dir, |_| {}, None, no_background_flush).expect("store");
    let key = OtpKey::load_or_create(dir, None).expect("otp key");
    let ledger = OtpLedger::open(store.db(), key)
        .expect("ledger")
        .logged(store.redo());
    let registry =
        waotp::runtime::flows::FlowRegistry::load(Path::new("flows"), Default::default())
            .expect("flows");
    let flow = registry.get("signup_verification").expect("flow");
    let now = chrono::Utc::now();
    let engine =
        waotp::flow::engine::new_session(&flow, Default::default(), "en", now).expect("session");
    store
        .sessions()
        .put_flow_source(
            flow.hash(),
            &flow.path().display().to_string(),
            flow.source(),
        )
        .expect("flow source");
    let record = SessionRecord {
        id: SESSION.into(),
        to: format!("+{CUSTOMER}"),
        customer: CUSTOMER.into(),
        created_at: now,
        updated_at: now,
        step: 7,
        engine,
        timer_key: None,
        otp_purpose: None,
        otp_bound: Vec::new(),
        last_inbound: 42,
        otp_refused: None,
        merchant: String::new(),
        number: String::new(),
    };
    let entry = OutboxEntry::pending(
        format!("{SESSION}-7-0"),
        Some(SESSION.into()),
        CUSTOMER.into(),
        OutboxPayload::Text {
            text: "the step's message".into(),
        },
        now,
    );
    store
        .sessions()
        .apply(StepWrite {
            record: Some(record),
            outbox: vec![entry],
            ..StepWrite::default()
        })
        .expect("step");
    let customer = CustomerNumber::parse(&format!("+{CUSTOMER}")).expect("number");
    let subject = OtpSubject::new(SESSION, "signup");
    let policy = OtpPolicy::default();
    let issued = ledger
        .issue(
            IssueRequest {
                subject: &subject,
                flow: "signup_verification",
                customer: &customer,
                requester: &customer,
                merchant: "",
                decoy: false,
                policy: &policy,
            },
            IssueKind::First,
            "step-7",
            now,
        )
        .expect("issue");
    assert!(matches!(issued, IssueOutcome::Issued(_)), "{issued:?}");
    // sled's own timer flush may write the ledger's writes (straight to sled) and their
    // position to disk at any moment, ahead of any checkpoint; the step's writes are still in
    // memory then, and the start must replay them all the same.
    store.db().flush().expect("sled flush");
    store.logged().await.expect("durable");
    killed_child::acknowledge_and_wait();
}

#[tokio::test]
async fn a_step_acknowledged_before_the_background_flush_survives_kill_9() {
    if let Some(dir) = std::env::var_os(CHILD) {
        write_and_wait(Path::new(&dir)).await;
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // SIGKILL: no shutdown checkpoint, no flush of sled.
    killed_child::run_until_acknowledged_then_kill(
        "a_step_acknowledged_before_the_background_flush_survives_kill_9",
        CHILD,
        &data,
    );

    let store = Store::open(&data, |_| {}).expect("reopen after the crash");
    let record = store
        .sessions()
        .get(SESSION)
        .expect("read")
        .expect("the acknowledged step was lost");
    assert_eq!((record.step, record.last_inbound), (7, 42));
    let entry = store
        .sessions()
        .outbox_entry(&format!("{SESSION}-7-0"))
        .expect("read")
        .expect("the step's outbox entry was lost");
    assert!(entry.is_queued());
    let key = OtpKey::load_or_create(&data, None).expect("otp key");
    let ledger = OtpLedger::open(store.db(), key)
        .expect("ledger")
        .logged(store.redo());
    assert!(
        ledger.record(SESSION).expect("read").is_some(),
        "the acknowledged OTP issue was lost"
    );
    assert!(
        ledger.code_for_sending(SESSION).expect("read").is_some(),
        "the code's sealed copy for sending was lost"
    );
}
