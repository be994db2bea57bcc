//! Property tests of the pure engine on every bundled flow: random event sequences never panic,
//! a session is always either completed with an outcome its flow declares or waiting with a
//! timer set, and firing timers alone always brings a session to an end.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use waotp::flow::engine::{self, Effect, Event, SessionState, SessionStatus};
use waotp::flow::{load_dir, Flow};

#[derive(Debug, Clone)]
enum Action {
    Text(usize),
    Reply(usize),
    Interrupt(usize),
    FireTimer,
    StaleTimer,
    OtpCorrect,
    OtpWrong(u32),
    OtpExpired,
    OtpLocked,
    OtpResend,
    OtpRefused,
    OtpTooSoon(u64),
    DeliveryFailed,
    HookOk(bool),
    HookError,
    Cancel,
    Start,
    Wait(i64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0usize..64).prop_map(Action::Text),
        3 => (0usize..64).prop_map(Action::Reply),
        1 => (0usize..8).prop_map(Action::Interrupt),
        3 => Just(Action::FireTimer),
        1 => Just(Action::StaleTimer),
        2 => Just(Action::OtpCorrect),
        2 => (0u32..6).prop_map(Action::OtpWrong),
        1 => Just(Action::OtpExpired),
        1 => Just(Action::OtpLocked),
        1 => Just(Action::OtpResend),
        1 => Just(Action::OtpRefused),
        1 => (1u64..120).prop_map(Action::OtpTooSoon),
        1 => Just(Action::DeliveryFailed),
        2 => any::<bool>().prop_map(Action::HookOk),
        1 => Just(Action::HookError),
        1 => Just(Action::Cancel),
        1 => Just(Action::Start),
        1 => (1i64..100_000).prop_map(Action::Wait),
    ]
}

fn flows() -> Vec<Arc<Flow>> {
    match load_dir(Path::new("flows")) {
        Ok(set) => set.iter().cloned().collect(),
        Err(e) => panic!("bundled flows do not load: {e}"),
    }
}

/// Words a customer might type or tap in `flow`: every title, id, synonym and interrupt word,
/// plus codes and noise.
fn vocabulary(flow: &Flow) -> (Vec<String>, Vec<String>, Vec<String>) {
    let f = flow.file();
    let mut words = vec![
        "123456".to_owned(),
        "1234 5678".to_owned(),
        "hello".to_owned(),
        String::new(),
        "🙂".to_owned(),
        "resend".to_owned(),
    ];
    let mut ids = vec!["resend".to_owned(), "nonsense".to_owned()];
    for s in f.states.values() {
        for b in &s.buttons {
            words.extend(
                b.title
                    .variants()
                    .into_iter()
                    .map(|(_, t)| t.as_str().to_owned()),
            );
            words.extend(b.synonyms.iter().map(|w| w.as_str().to_owned()));
            ids.push(b.id.as_str().to_owned());
        }
        for r in s.list.iter().flat_map(|l| &l.rows) {
            words.extend(
                r.title
                    .variants()
                    .into_iter()
                    .map(|(_, t)| t.as_str().to_owned()),
            );
            ids.push(r.id.as_str().to_owned());
        }
    }
    let interrupts: Vec<String> = f
        .interrupts
        .keys()
        .cloned()
        .chain(["bogus".to_owned()])
        .collect();
    for i in f.interrupts.values() {
        words.extend(i.words.iter().map(|w| w.as_str().to_owned()));
    }
    (words, ids, interrupts)
}

fn start_vars(flow: &Flow) -> BTreeMap<String, Value> {
    flow.file()
        .vars
        .keys()
        .map(|k| (k.clone(), Value::from(format!("{k}-value"))))
        .collect()
}

fn hook_of(flow: &Flow, session: &SessionState) -> String {
    flow.file()
        .states
        .get(session.state.as_str())
        .and_then(|s| s.hook.as_ref())
        .map_or_else(String::new, |h| h.as_str().to_owned())
}

fn check_invariants(
    flow: &Flow,
    session: &SessionState,
    effects: &[Effect],
) -> Result<(), TestCaseError> {
    let outcomes = engine::possible_outcomes(flow);
    match session.status {
        SessionStatus::Completed => {
            let outcome = session.outcome.clone().unwrap_or_default();
            prop_assert!(
                outcomes.contains(&outcome),
                "undeclared outcome {outcome} in {}",
                flow.id()
            );
        }
        SessionStatus::Active => {
            prop_assert!(
                session.timer.is_some(),
                "{} waits in `{}` without a timer",
                flow.id(),
                session.state
            );
        }
        SessionStatus::New => prop_assert!(false, "session not started"),
    }
    let completes = effects
        .iter()
        .filter(|e| matches!(e, Effect::Complete { .. }))
        .count();
    prop_assert!(completes <= 1);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_events_keep_sessions_well_formed(actions in proptest::collection::vec(action(), 0..40), seed in any::<u64>()) {
        for flow in flows() {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().unwrap_or_default();
            let (words, ids, interrupts) = vocabulary(&flow);
            let session = engine::new_session(&flow, start_vars(&flow), "en", now);
            let mut session = session.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (s, fx) = engine::step(&flow, &session, Event::Start, now, &mut rng);
            session = s;
            check_invariants(&flow, &session, &fx)?;
            let mut completed = session.status == SessionStatus::Completed;
            for a in &actions {
                let event = match a {
                    Action::Text(i) => Event::Text { body: words[i % words.len()].clone() },
                    Action::Reply(i) => Event::Reply { id: ids[i % ids.len()].clone() },
                    Action::Interrupt(i) => Event::Interrupt { name: interrupts[i % interrupts.len()].clone() },
                    Action::FireTimer => match &session.timer {
                        Some(t) => { now = now.max(t.at); Event::TimerFired { id: t.id.clone(), seq: t.seq } }
                        None => continue,
                    },
                    Action::StaleTimer => Event::TimerFired { id: "state".to_owned(), seq: session.timer_seq + 7 },
                    Action::OtpCorrect => Event::OtpCorrect,
                    Action::OtpWrong(n) => Event::OtpWrong { attempts_left: *n },
                    Action::OtpExpired => Event::OtpExpired,
                    Action::OtpLocked => Event::OtpLocked,
                    Action::OtpResend => Event::OtpResendRequested,
                    Action::OtpRefused => Event::OtpRefused,
                    Action::OtpTooSoon(secs) => Event::OtpResendTooSoon { wait_secs: *secs },
                    Action::DeliveryFailed => Event::DeliveryFailed { reason: "x".to_owned(), elsewhere: false },
                    Action::HookOk(found) => {
                        let mut fields = serde_json::Map::new();
                        fields.insert("found".to_owned(), Value::Bool(*found));
                        fields.insert("account_id".to_owned(), Value::from("acc-1"));
                        fields.insert("phone".to_owned(), Value::from("+15550000000"));
                        fields.insert("url".to_owned(), Value::from("https://example.test/r"));
                        Event::HookOk { hook: hook_of(&flow, &session), fields }
                    }
                    Action::HookError => Event::HookError { hook: hook_of(&flow, &session), reason: "x".to_owned() },
                    Action::Cancel => Event::CancelFromApi,
                    Action::Start => Event::Start,
                    Action::Wait(secs) => { now += Duration::seconds(*secs); continue; }
                };
                // A failed code that went to another number never shows in the chat, in any
                // state the session can reach.
                let elsewhere = Event::DeliveryFailed { reason: "x".to_owned(), elsewhere: true };
                let (same, none) = engine::step(&flow, &session, elsewhere, now, &mut rng);
                prop_assert!(none.is_empty(), "a failure elsewhere acted: {none:?}");
                prop_assert_eq!(&same, &session);
                let (s, fx) = engine::step(&flow, &session, event, now, &mut rng);
                if completed {
                    prop_assert!(fx.is_empty(), "a completed session still acted: {fx:?}");
                    prop_assert_eq!(&s, &session);
                }
                session = s;
                check_invariants(&flow, &session, &fx)?;
                completed = session.status == SessionStatus::Completed;
            }
            // Liveness: with nobody answering, timers alone end every session.
            for _ in 0..64 {
                let Some(t) = session.timer.clone() else { break };
                now = now.max(t.at);
                let (s, fx) = engine::step(&flow, &session, Event::TimerFired { id: t.id, seq: t.seq }, now, &mut rng);
                session = s;
                check_invariants(&flow, &session, &fx)?;
            }
            prop_assert_eq!(session.status, SessionStatus::Completed, "{} never ended in `{}`", flow.id(), session.state);
        }
    }
}
