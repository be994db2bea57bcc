//! Unit tests of the engine on the bundled flows, including snapshots of the effects the
//! runtime receives (so any change to what reaches WhatsApp or the OTP ledger is visible).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

use super::*;
use crate::flow::load::parse_flow;

fn flow(name: &str) -> Flow {
    let path = format!("{}/flows/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("bundled flow");
    parse_flow(&format!("{name}.toml"), &text).expect("valid flow")
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect()
}

fn cod() -> (Flow, SessionState) {
    let f = flow("cod_confirmation");
    let s = new_session(
        &f,
        vars(&[
            ("customer_name", "Asha"),
            ("order_id", "A-1"),
            ("total", "₹499"),
        ]),
        "en",
        t0(),
    )
    .expect("session");
    (f, s)
}

#[test]
fn start_and_confirm_effects_are_stable() {
    let (f, s) = cod();
    let mut rng = StdRng::seed_from_u64(1);
    let (s, start) = step(&f, &s, Event::Start, t0(), &mut rng);
    insta::assert_json_snapshot!("cod_start", start);
    let (s, confirm) = step(
        &f,
        &s,
        Event::Reply {
            id: "confirm".to_owned(),
        },
        t0() + Duration::minutes(1),
        &mut rng,
    );
    insta::assert_json_snapshot!("cod_confirm", confirm);
    let (_, typed) = step(
        &f,
        &s,
        Event::Text {
            body: " 123 456 ".to_owned(),
        },
        t0() + Duration::minutes(2),
        &mut rng,
    );
    assert_eq!(
        typed,
        vec![Effect::VerifyOtp {
            code: "123456".to_owned()
        }]
    );
}

#[test]
fn session_records_flow_id_version_and_hash() {
    let (f, s) = cod();
    assert_eq!(s.flow_id.as_str(), "cod_confirmation");
    assert_eq!(s.flow_version, "1");
    assert_eq!(s.flow_hash.len(), 64);
    assert_eq!(s.flow_hash, f.hash());
}

#[test]
fn missing_required_variable_is_refused() {
    let f = flow("cod_confirmation");
    let err = new_session(&f, vars(&[("order_id", "A-1")]), "en", t0());
    assert_eq!(err, Err(StartError::MissingVar("customer_name".to_owned())));
}

#[test]
fn blank_required_variables_are_as_missing_as_absent_ones() {
    let f = flow("cod_confirmation");
    for blank in [Value::from(""), Value::from(" \n\t "), Value::Null] {
        let mut given = vars(&[("customer_name", "Asha"), ("order_id", "A-1")]);
        given.insert("total".to_owned(), blank);
        let err = new_session(&f, given, "en", t0());
        assert_eq!(err, Err(StartError::MissingVar("total".to_owned())));
    }
    let mut given = vars(&[("customer_name", "Asha"), ("order_id", "A-1")]);
    given.insert("total".to_owned(), Value::from(499));
    assert!(new_session(&f, given, "en", t0()).is_ok());
}

/// The state a quick-reply tap with this payload and label leads the COD summary to.
fn after_quick_reply(payload: &str, label: &str) -> String {
    let (f, s) = cod();
    let mut rng = StdRng::seed_from_u64(1);
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let event = Event::QuickReply {
        payload: payload.to_owned(),
        label: label.to_owned(),
    };
    let (s, _) = step(&f, &s, event, t0(), &mut rng);
    s.state.as_str().to_owned()
}

#[test]
fn a_quick_reply_answers_by_payload_else_by_label() {
    // The payload names the choice, whatever the label says.
    assert_eq!(after_quick_reply("confirm", "Cancel"), "send_code");
    assert_eq!(after_quick_reply("cancel", "Confirm"), "cancelled");
    // No payload of ours: the label, like typed text, against titles and synonyms.
    assert_eq!(after_quick_reply("Confirm", "Confirm"), "send_code");
    assert_eq!(after_quick_reply("x", "  confirm ORDER! "), "send_code");
    assert_eq!(after_quick_reply("No", "No"), "cancelled");
    // Neither: re-prompted, still waiting.
    assert_eq!(after_quick_reply("later", "Later"), "summary");
}

#[test]
fn stale_timers_and_events_after_completion_are_ignored() {
    let (f, s) = cod();
    let mut rng = StdRng::seed_from_u64(1);
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let seq = s.timer.as_ref().map(|t| t.seq).unwrap_or_default();
    let (same, fx) = step(
        &f,
        &s,
        Event::TimerFired {
            id: STATE_TIMER.to_owned(),
            seq: seq + 1,
        },
        t0(),
        &mut rng,
    );
    assert!(fx.is_empty());
    assert_eq!(same, s);
    let (done, fx) = step(
        &f,
        &s,
        Event::Text {
            body: "Cancel".to_owned(),
        },
        t0(),
        &mut rng,
    );
    assert_eq!(done.outcome.as_deref(), Some("cancelled"));
    assert!(fx.iter().any(|e| matches!(e, Effect::CancelTimer { .. })));
    let (after, fx) = step(
        &f,
        &done,
        Event::Reply {
            id: "confirm".to_owned(),
        },
        t0(),
        &mut rng,
    );
    assert!(fx.is_empty());
    assert_eq!(after, done);
}

#[test]
fn transaction_code_is_bound_to_amount_currency_and_payee() {
    let f = flow("transaction_authorization");
    let s = new_session(
        &f,
        vars(&[("amount", "10.00"), ("currency", "EUR"), ("payee", "Shop")]),
        "en",
        t0(),
    )
    .expect("session");
    let (_, fx) = step(&f, &s, Event::Start, t0(), &mut StdRng::seed_from_u64(2));
    let issue = fx.iter().find_map(|e| match e {
        Effect::IssueOtp(r) => Some(r.clone()),
        _ => None,
    });
    let issue = issue.expect("an OTP is issued");
    assert_eq!(issue.lifetime_secs, 300);
    assert_eq!(issue.max_attempts, 3);
    assert_eq!(
        issue.bound,
        [("amount", "10.00"), ("currency", "EUR"), ("payee", "Shop")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    );
    assert_eq!(
        issue.template.map(|t| t.category),
        Some(crate::flow::model::TemplateCategory::Authentication)
    );
}

#[test]
fn hook_answers_fill_only_declared_hook_variables_and_pick_a_branch() {
    let f = flow("account_recovery");
    let mut rng = StdRng::seed_from_u64(3);
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let (s, fx) = step(
        &f,
        &s,
        Event::Text {
            body: "asha".to_owned(),
        },
        t0(),
        &mut rng,
    );
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::CallHook { hook, .. } if hook == "lookup_account")));
    let mut fields = serde_json::Map::new();
    fields.insert("found".to_owned(), Value::Bool(true));
    fields.insert("phone".to_owned(), Value::from("+15550001111"));
    fields.insert("secret".to_owned(), Value::from("not declared"));
    let (s, fx) = step(
        &f,
        &s,
        Event::HookOk {
            hook: "lookup_account".to_owned(),
            fields,
        },
        t0(),
        &mut rng,
    );
    assert_eq!(s.state.as_str(), "send_code");
    assert!(!s.vars.contains_key("secret"));
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::IssueOtp(r) if r.send_to.as_deref() == Some("+15550001111"))));
    // An answer from a hook the state is not waiting for changes nothing.
    let (same, fx) = step(
        &f,
        &s,
        Event::HookError {
            hook: "lookup_account".to_owned(),
            reason: "late".to_owned(),
        },
        t0(),
        &mut rng,
    );
    assert!(fx.is_empty());
    assert_eq!(same, s);
}

#[test]
fn keywords_match_as_whole_words() {
    let f = flow("account_recovery");
    assert!(keyword_matches(&f, "I FORGOT my password!"));
    assert!(keyword_matches(&f, "i'm locked   out"));
    assert!(!keyword_matches(&f, "unforgotten"));
    assert!(!keyword_matches(&f, "locked"));
}

#[test]
fn reverse_mode_issues_without_sending_and_reads_codes_inside_text() {
    let f = flow("reverse_verification");
    let mut rng = StdRng::seed_from_u64(4);
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let (s, fx) = step(&f, &s, Event::Start, t0(), &mut rng);
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::IssueOtp(r) if r.reverse && !r.deliver)));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Send(_))));
    let (_, fx) = step(
        &f,
        &s,
        Event::Text {
            body: "Verify me: 481516".to_owned(),
        },
        t0(),
        &mut rng,
    );
    assert_eq!(
        fx,
        vec![Effect::VerifyOtp {
            code: "481516".to_owned()
        }]
    );
}

#[test]
fn codes_typed_in_any_digit_script_reach_the_ledger_as_ascii() {
    let (f, s) = cod();
    let mut rng = StdRng::seed_from_u64(3);
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let confirm = Event::Reply {
        id: "confirm".to_owned(),
    };
    let (s, _) = step(&f, &s, confirm, t0(), &mut rng);
    for typed in [
        "１２３４５６",
        "١٢٣-٤٥٦",
        "\u{200F}۱۲۳۴۵۶\u{200F}",
        "१२३ ४५६",
        "๑๒๓.๔๕๖",
    ] {
        let body = typed.to_owned();
        let (next, effects) = step(&f, &s, Event::Text { body }, t0(), &mut rng);
        assert_eq!(
            effects,
            vec![Effect::VerifyOtp {
                code: "123456".to_owned()
            }],
            "{typed:?}"
        );
        assert_eq!(next.retries, 0, "{typed:?} was re-prompted");
    }
}

#[test]
fn a_failed_code_sent_to_another_number_changes_nothing_in_the_chat() {
    let f = flow("signup_verification");
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let mut rng = StdRng::seed_from_u64(4);
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let failed = |elsewhere| Event::DeliveryFailed {
        reason: "WhatsApp error 131026".to_owned(),
        elsewhere,
    };
    let (same, effects) = step(&f, &s, failed(true), t0(), &mut rng);
    assert_eq!((same, effects), (s.clone(), vec![]));
    // The same failure in the chat itself takes the flow's delivery-failure path.
    let (moved, _) = step(&f, &s, failed(false), t0(), &mut rng);
    assert_eq!(moved.state.as_str(), "undeliverable");
}

#[test]
fn resend_tells_the_customer_only_once_the_new_code_is_issued() {
    let (f, s) = cod();
    let mut rng = StdRng::seed_from_u64(3);
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let confirm = Event::Reply {
        id: "confirm".to_owned(),
    };
    let (s, _) = step(&f, &s, confirm, t0(), &mut rng);
    let later = t0() + Duration::minutes(2);
    let resend = Event::Text {
        body: "RESEND".to_owned(),
    };
    let (asked, fx) = step(&f, &s, resend, later, &mut rng);
    // Only the request for a code: the rules may still refuse it (cooldown).
    assert!(
        matches!(fx.as_slice(), [Effect::IssueOtp(r)] if r.resend),
        "{fx:?}"
    );
    let wait = Event::OtpResendTooSoon { wait_secs: 40 };
    let (refused, fx) = step(&f, &asked, wait, later, &mut rng);
    let texts: Vec<String> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Send(m) => Some(m.body.text().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        ["Please wait 40 seconds before asking for a new code."]
    );
    assert_eq!(refused.resends, 0, "a refused resend does not count");
    assert_eq!(
        refused.entered_at, s.entered_at,
        "the old code keeps its time"
    );
    // Issued: now the prompt again, and the new code's full lifetime.
    let (issued, fx) = step(&f, &asked, Event::OtpResent, later, &mut rng);
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Send(m) if m.message_id == "enter_code")));
    assert!(fx.iter().any(|e| matches!(e, Effect::SetTimer { .. })));
    assert_eq!(issued.entered_at, later);
    assert_eq!(issued.resends, 1);
}

/// A flow whose `ask` state has buttons and its own `reprompt` text.
const CUSTOM_REPROMPT: &str = r#"
id = "custom_reprompt"
version = "1"
on_retries_exhausted = "done"

[start]
state = "ask"
keywords = ["go on"]

[messages.question]
en = "Shall we go on?"

[messages.again]
en = "Please tap Yes or No."

[states.ask]
kind = "ask"
message = "question"
reprompt = "again"
buttons = [
  { id = "yes", title = "Yes", goto = "done" },
  { id = "no", title = "No", goto = "done" },
]
timeout = "1h"
on_timeout = "done"

[states.done]
kind = "end"
outcome = "done"
"#;

#[test]
fn a_custom_reprompt_shows_the_choices_again() {
    let f = parse_flow("custom_reprompt.toml", CUSTOM_REPROMPT).expect("valid flow");
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let mut rng = StdRng::seed_from_u64(9);
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let (_, effects) = step(
        &f,
        &s,
        Event::Text {
            body: "maybe".to_owned(),
        },
        t0() + Duration::minutes(1),
        &mut rng,
    );
    let sent: Vec<&OutboundMessage> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1, "{effects:?}");
    assert_eq!(sent[0].message_id, "again");
    let MessageBody::Buttons { text, buttons } = &sent[0].body else {
        panic!("the custom reprompt lost its buttons: {:?}", sent[0].body);
    };
    assert_eq!(text, "Please tap Yes or No.");
    let ids: Vec<&str> = buttons.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["yes", "no"]);
}

#[test]
fn notify_events_go_to_the_flows_own_callback_url() {
    let text = CUSTOM_REPROMPT
        .replace(
            "on_retries_exhausted = \"done\"\n",
            "on_retries_exhausted = \"done\"\ncallback_url = \"https://shop.example/waotp\"\n",
        )
        .replace(
            "[messages.question]",
            "[interrupts.agent]\nwords = [\"agent\"]\nnotify = \"agent_requested\"\n\n[messages.question]",
        );
    let f = parse_flow("custom_reprompt.toml", &text).expect("valid flow");
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let mut rng = StdRng::seed_from_u64(9);
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let (_, effects) = step(
        &f,
        &s,
        Event::Text {
            body: "Agent!".to_owned(),
        },
        t0() + Duration::minutes(1),
        &mut rng,
    );
    let notified: Vec<(&str, Option<&str>)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::NotifyMerchant {
                event,
                callback_url,
                ..
            } => Some((event.as_str(), callback_url.as_deref())),
            _ => None,
        })
        .collect();
    assert_eq!(
        notified,
        [("agent_requested", Some("https://shop.example/waotp"))]
    );
}

/// A flow written here, checked like a bundled one.
fn inline_flow(id: &str, body: &str) -> Flow {
    let text = format!("id = \"{id}\"\nversion = \"1\"\non_retries_exhausted = \"done\"\n{body}");
    parse_flow(&format!("{id}.toml"), &text).expect("valid flow")
}

/// Fires the session's pending timer at its time, after a round trip through the session's
/// stored form (as a restart between the two would).
fn fire_timer(f: &Flow, s: &SessionState, rng: &mut StdRng) -> (SessionState, Vec<Effect>) {
    let stored = serde_json::to_string(s).expect("session serialises");
    let s: SessionState = serde_json::from_str(&stored).expect("session reads back");
    let timer = s.timer.clone().expect("a pending timer");
    step(
        f,
        &s,
        Event::TimerFired {
            id: timer.id,
            seq: timer.seq,
        },
        timer.at,
        rng,
    )
}

fn sent(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send(m) => Some(m.message_id.clone()),
            _ => None,
        })
        .collect()
}

const READBACK: &str = r#"
[start]
state = "ask_new"
keywords = ["change"]

[vars.number]
source = "customer"

[messages.ask_new]
en = "Your new number?"

[messages.readback]
en = "You typed {{number}}. Right?"

[messages.give_up]
en = "Let us stop here."

[states.ask_new]
kind = "ask"
message = "ask_new"
on_text = "readback"
save_as = "number"
timeout = "1h"
on_timeout = "done"
max_visits = 3
on_max_visits = "give_up"

[states.readback]
kind = "ask"
message = "readback"
buttons = [
  { id = "yes", title = "Yes", goto = "done" },
  { id = "no", title = "No", goto = "ask_new" },
]
timeout = "1h"
on_timeout = "done"

[states.give_up]
kind = "end"
message = "give_up"
outcome = "gave_up"

[states.done]
kind = "end"
outcome = "done"
"#;

#[test]
fn max_visits_sends_the_fourth_entry_to_on_max_visits() {
    let f = inline_flow("readback", READBACK);
    let mut rng = StdRng::seed_from_u64(7);
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let (mut s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    for round in 1..=3u32 {
        assert_eq!(s.state.as_str(), "ask_new");
        assert_eq!(s.visits.get("ask_new"), Some(&round));
        let text = Event::Text {
            body: format!("+9198765432{round:02}"),
        };
        let (next, _) = step(&f, &s, text, t0(), &mut rng);
        assert_eq!(next.state.as_str(), "readback");
        // The count is part of the stored session.
        let stored = serde_json::to_string(&next).expect("serialises");
        let next: SessionState = serde_json::from_str(&stored).expect("reads back");
        let no = Event::Reply {
            id: "no".to_owned(),
        };
        let (after, fx) = step(&f, &next, no, t0(), &mut rng);
        s = after;
        if round == 3 {
            assert_eq!(sent(&fx), ["give_up"]);
        }
    }
    assert_eq!(s.status, SessionStatus::Completed);
    assert_eq!(s.outcome.as_deref(), Some("gave_up"));
    assert_eq!(s.visits.get("ask_new"), Some(&3));
    // States without max_visits are not counted.
    assert!(!s.visits.contains_key("readback"));
}

#[test]
fn a_loop_of_say_states_bounded_by_max_visits_runs_exactly_that_often() {
    let f = inline_flow(
        "tick",
        r#"
[start]
state = "tick"
keywords = ["tick"]

[messages.tick]
en = "tick"

[states.tick]
kind = "say"
message = "tick"
next = "tock"
max_visits = 4
on_max_visits = "done"

[states.tock]
kind = "say"
message = "tick"
next = "tick"

[states.done]
kind = "end"
outcome = "done"
"#,
    );
    let mut rng = StdRng::seed_from_u64(7);
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let (s, fx) = step(&f, &s, Event::Start, t0(), &mut rng);
    assert_eq!(sent(&fx).len(), 8, "{fx:?}");
    assert_eq!(s.outcome.as_deref(), Some("done"));
}

const DEADLINE: &str = r#"
[start]
state = "first"
keywords = ["deadline"]
deadline = "1h"
on_deadline = "late"
deadline_reminders = ["-15m"]
deadline_reminder = "hurry"

[messages.first]
en = "First question?"

[messages.second]
en = "Second question?"

[messages.hurry]
en = "15 minutes left."

[messages.late]
en = "Too late."

[states.first]
kind = "ask"
message = "first"
on_text = "second"
reminders = ["10m"]
timeout = "2h"
on_timeout = "slow"

[states.second]
kind = "ask"
message = "second"
on_text = "done"
timeout = "5m"
on_timeout = "slow"

[states.slow]
kind = "end"
outcome = "slow"

[states.late]
kind = "end"
message = "late"
outcome = "expired"

[states.done]
kind = "end"
outcome = "done"
"#;

#[test]
fn the_deadline_and_its_reminder_fire_whatever_state_waits_and_the_earlier_timer_wins() {
    let f = inline_flow("deadline", DEADLINE);
    let mut rng = StdRng::seed_from_u64(7);
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    assert_eq!(s.deadline_at, Some(t0() + Duration::hours(1)));
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    // The state's own reminder at 10m comes first.
    assert_eq!(
        s.timer.as_ref().map(|t| t.at),
        Some(t0() + Duration::minutes(10))
    );
    let (s, fx) = fire_timer(&f, &s, &mut rng);
    assert_eq!(sent(&fx), ["first"]);
    // Then the deadline reminder at 45m, before the state's 2h timeout.
    assert_eq!(
        s.timer.as_ref().map(|t| t.at),
        Some(t0() + Duration::minutes(45))
    );
    let (s, fx) = fire_timer(&f, &s, &mut rng);
    assert_eq!(sent(&fx), ["hurry"]);
    assert_eq!(s.state.as_str(), "first");
    assert_eq!(
        s.timer.as_ref().map(|t| t.at),
        Some(t0() + Duration::hours(1))
    );
    let (s, fx) = fire_timer(&f, &s, &mut rng);
    assert_eq!(sent(&fx), ["late"]);
    assert_eq!(s.outcome.as_deref(), Some("expired"));

    // In a state whose own timeout comes first, that timeout wins; the deadline counts from
    // the session's start, not from the state's entry.
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let answer = Event::Text {
        body: "one".to_owned(),
    };
    let (s, _) = step(&f, &s, answer, t0() + Duration::minutes(30), &mut rng);
    assert_eq!(s.state.as_str(), "second");
    assert_eq!(
        s.timer.as_ref().map(|t| t.at),
        Some(t0() + Duration::minutes(35))
    );
    let (s, _) = fire_timer(&f, &s, &mut rng);
    assert_eq!(s.outcome.as_deref(), Some("slow"));

    // Entered at 58m, the deadline at 1h comes before the state's 5m timeout (the reminder
    // time has passed meanwhile: it goes out first, at once).
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let answer = Event::Text {
        body: "one".to_owned(),
    };
    let (s, _) = step(&f, &s, answer, t0() + Duration::minutes(58), &mut rng);
    assert_eq!(
        s.timer.as_ref().map(|t| t.at),
        Some(t0() + Duration::minutes(45))
    );
    let (s, fx) = fire_timer(&f, &s, &mut rng);
    assert_eq!(sent(&fx), ["hurry"]);
    assert_eq!(
        s.timer.as_ref().map(|t| t.at),
        Some(t0() + Duration::hours(1))
    );
    let (s, _) = fire_timer(&f, &s, &mut rng);
    assert_eq!(s.outcome.as_deref(), Some("expired"));
}

#[test]
fn an_ask_state_without_timeout_waits_for_the_deadline() {
    let f = inline_flow(
        "patient",
        r#"
[start]
state = "ask"
keywords = ["patient"]
deadline = "3d"
on_deadline = "done"

[messages.ask]
en = "Whenever you like."

[states.ask]
kind = "ask"
message = "ask"
on_text = "done"

[states.done]
kind = "end"
outcome = "done"
"#,
    );
    let mut rng = StdRng::seed_from_u64(7);
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    assert_eq!(
        s.timer.as_ref().map(|t| t.at),
        Some(t0() + Duration::days(3))
    );
    let (s, _) = fire_timer(&f, &s, &mut rng);
    assert_eq!(s.outcome.as_deref(), Some("done"));
}

#[test]
fn once_passed_the_deadline_leaves_the_states_after_it_their_own_timers() {
    let f = inline_flow(
        "after",
        r#"
[start]
state = "ask"
keywords = ["after"]
deadline = "1h"
on_deadline = "last_chance"

[messages.ask]
en = "Anything?"

[states.ask]
kind = "ask"
message = "ask"
on_text = "done"

[states.last_chance]
kind = "ask"
message = "ask"
on_text = "done"
timeout = "10m"
on_timeout = "done"

[states.done]
kind = "end"
outcome = "done"
"#,
    );
    let mut rng = StdRng::seed_from_u64(7);
    let s = new_session(&f, BTreeMap::new(), "en", t0()).expect("session");
    let (s, _) = step(&f, &s, Event::Start, t0(), &mut rng);
    let (s, _) = fire_timer(&f, &s, &mut rng);
    assert_eq!(s.state.as_str(), "last_chance");
    assert_eq!(s.deadline_at, None);
    assert_eq!(
        s.timer.as_ref().map(|t| t.at),
        Some(t0() + Duration::hours(1) + Duration::minutes(10))
    );
    let (s, _) = fire_timer(&f, &s, &mut rng);
    assert_eq!(s.outcome.as_deref(), Some("done"));
}
