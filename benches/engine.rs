//! The pure flow engine on the bundled `cod_confirmation` flow: one whole conversation (start,
//! Confirm tapped, code typed, code found correct) and each of its steps alone. No I/O: this is
//! the engine's share of a session step, without the store or the OTP ledger.
//!
//! Run: `cargo bench --bench engine`

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use waotp::flow::engine::{self, Effect, Event, SessionState, SessionStatus};
use waotp::flow::Flow;

fn cod_flow() -> Arc<Flow> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let flows = waotp::flow::load_dir(&dir).expect("bundled flows load");
    flows
        .get("cod_confirmation")
        .expect("cod_confirmation is bundled")
        .clone()
}

fn vars() -> BTreeMap<String, Value> {
    [
        ("customer_name", json!("Asha")),
        ("order_id", json!("A-1042")),
        ("total", json!("₹499")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("in range")
}

/// The events of one confirmed order, in order. The runtime turns the engine's `VerifyOtp`
/// effect into `OtpCorrect` after asking the ledger; here the verdict is given directly.
fn conversation() -> [Event; 4] {
    [
        Event::Start,
        Event::Reply {
            id: "confirm".into(),
        },
        Event::Text {
            body: "123456".into(),
        },
        Event::OtpCorrect,
    ]
}

fn run_conversation(flow: &Flow, rng: &mut StdRng) -> (SessionState, usize) {
    let mut session = engine::new_session(flow, vars(), "en", now()).expect("vars given");
    let mut effects = 0;
    for event in conversation() {
        let (next, out) = engine::step(flow, &session, event, now(), rng);
        session = next;
        effects += out.len();
    }
    (session, effects)
}

fn engine_benches(c: &mut Criterion) {
    let flow = cod_flow();
    let mut rng = StdRng::seed_from_u64(7);

    // A bench of a conversation that silently stopped confirming would measure nothing.
    let (done, _) = run_conversation(&flow, &mut rng);
    assert_eq!(done.status, SessionStatus::Completed);
    assert_eq!(done.outcome.as_deref(), Some("confirmed"));

    let mut g = c.benchmark_group("engine");
    g.bench_function("cod_conversation", |b| {
        b.iter(|| run_conversation(&flow, &mut rng))
    });

    // Each step alone, from the session state that precedes it.
    let mut before = Vec::new();
    let mut session = engine::new_session(&flow, vars(), "en", now()).expect("vars given");
    for event in conversation() {
        before.push((session.clone(), event.clone()));
        let (next, effects) = engine::step(&flow, &session, event, now(), &mut rng);
        if matches!(before.len(), 3) {
            assert!(
                effects
                    .iter()
                    .any(|e| matches!(e, Effect::VerifyOtp { .. })),
                "typing a code must ask for a verification"
            );
        }
        session = next;
    }
    for (name, (state, event)) in ["start", "reply_confirm", "type_code", "otp_correct"]
        .into_iter()
        .zip(before)
    {
        g.bench_function(format!("step_{name}"), |b| {
            b.iter(|| engine::step(&flow, &state, event.clone(), now(), &mut rng))
        });
    }
    g.finish();
}

criterion_group!(benches, engine_benches);
criterion_main!(benches);
