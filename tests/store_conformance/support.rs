//! What the cases build: sessions, outbox entries, inbound events.

use chrono::{DateTime, Duration, Utc};
use std::path::Path;
use std::sync::OnceLock;
use waotp::domain::{InboundEvent, InboundMessage, MessageContent, MessageId, WaId};
use waotp::flow::engine::SessionState;
use waotp::store::{OutboxEntry, OutboxPayload, SessionRecord, StepWrite, Storage};
use waotp::tenants::Scope;

/// The business number of the cases' events and sessions.
pub const NUMBER: &str = "1000000001";

pub fn scope() -> Scope {
    Scope::new("acme", NUMBER)
}

/// A whole number of milliseconds (what every engine keeps) near now.
pub fn now() -> DateTime<Utc> {
    let ms = Utc::now().timestamp_millis();
    DateTime::from_timestamp_millis(ms).expect("in range")
}

pub fn at(base: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    base + Duration::seconds(seconds)
}

/// A fresh session state of the bundled signup flow.
fn engine_state(now: DateTime<Utc>) -> SessionState {
    static REGISTRY: OnceLock<waotp::runtime::flows::FlowRegistry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(|| {
        waotp::runtime::flows::FlowRegistry::load(Path::new("flows"), Default::default())
            .expect("flows")
    });
    let flow = registry.get("signup_verification").expect("flow");
    waotp::flow::engine::new_session(&flow, Default::default(), "en", now).expect("session")
}

/// A session at step 1 of `customer` (digits), created at `created`.
pub fn session(id: &str, customer: &str, created: DateTime<Utc>) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        to: format!("+{customer}"),
        customer: customer.to_owned(),
        created_at: created,
        updated_at: created,
        step: 1,
        engine: engine_state(created),
        timer_key: None,
        otp_purpose: None,
        otp_bound: Vec::new(),
        last_inbound: 0,
        otp_refused: None,
        merchant: scope().merchant,
        number: scope().number,
    }
}

/// A text entry of `session` to `to`, due at `due`.
pub fn entry(id: &str, session: &str, to: &str, due: DateTime<Utc>) -> OutboxEntry {
    OutboxEntry::pending(
        id.to_owned(),
        Some(session.to_owned()),
        to.to_owned(),
        OutboxPayload::Text {
            text: format!("message {id}"),
        },
        due,
    )
    .from_scope(&scope())
}

/// The first step of a session: the record, active for its customer and flow.
pub fn first_step(record: &SessionRecord) -> StepWrite {
    StepWrite {
        record: Some(record.clone()),
        activate: Some((
            scope().customer_key(&record.customer),
            record.engine.flow_id.as_str().to_owned(),
        )),
        ..StepWrite::default()
    }
}

/// Applies the first step of a new session and waits until it is durable.
pub async fn start(storage: &Storage, record: &SessionRecord) {
    storage
        .sessions
        .apply_step(first_step(record))
        .await
        .expect("step");
    storage.engine.durable().await.expect("durable");
}

/// A text message from `customer` to [`NUMBER`].
pub fn message(id: &str, customer: &str) -> InboundEvent {
    InboundEvent::Message(InboundMessage {
        id: MessageId::parse(id).expect("id"),
        from: WaId::parse(customer).expect("wa id"),
        user_id: None,
        profile_name: None,
        timestamp: 1,
        phone_number_id: Some(NUMBER.into()),
        context: None,
        content: MessageContent::Text { body: "hi".into() },
        errors: vec![],
    })
}

/// The scoped key of `customer` at [`NUMBER`].
pub fn customer_key(customer: &str) -> String {
    scope().customer_key(customer)
}

/// Polls `probe` until it answers, for up to ten seconds.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
