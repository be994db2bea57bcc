//! The loader and validator never panic, whatever the text: random edits of the bundled flows
//! either load (and then start and run) or produce positioned diagnostics inside the file.

use std::collections::BTreeMap;

use chrono::Utc;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use waotp::flow::engine::{self, Event};
use waotp::flow::parse_flow;

const NAMES: [&str; 7] = [
    "cod_confirmation.toml",
    "signup_verification.toml",
    "password_reset.toml",
    "transaction_authorization.toml",
    "account_recovery.toml",
    "support_identity.toml",
    "reverse_verification.toml",
];

const FLOWS: [&str; 7] = [
    include_str!("../flows/cod_confirmation.toml"),
    include_str!("../flows/signup_verification.toml"),
    include_str!("../flows/password_reset.toml"),
    include_str!("../flows/transaction_authorization.toml"),
    include_str!("../flows/account_recovery.toml"),
    include_str!("../flows/support_identity.toml"),
    include_str!("../flows/reverse_verification.toml"),
];

fn char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn edited_flows_never_panic(which in 0usize..7, at in 0usize..8000, cut in 0usize..40, insert in "[ -~\\n]{0,12}|🙂") {
        let text = FLOWS[which];
        let start = char_boundary(text, at);
        let end = char_boundary(text, start + cut).max(start);
        let edited = format!("{}{}{}", &text[..start], insert, &text[end..]);
        let lines = edited.lines().count().max(1);
        match parse_flow(NAMES[which], &edited) {
            Ok(flow) => {
                let vars = flow.file().vars.keys().map(|k| (k.clone(), serde_json::Value::from("x"))).collect::<BTreeMap<_, _>>();
                if let Ok(session) = engine::new_session(&flow, vars, "en", Utc::now()) {
                    let mut rng = StdRng::seed_from_u64(0);
                    let (s, _) = engine::step(&flow, &session, Event::Start, Utc::now(), &mut rng);
                    let _ = engine::step(&flow, &s, Event::Text { body: "cancel".to_owned() }, Utc::now(), &mut rng);
                }
            }
            Err(diags) => {
                prop_assert!(!diags.is_empty());
                for d in diags {
                    prop_assert!(d.line >= 1 && d.line <= lines + 1, "{d} outside {lines} lines");
                    prop_assert!(d.col >= 1);
                }
            }
        }
    }
}

#[test]
fn unedited_flows_load_under_their_names() {
    for (name, text) in NAMES.iter().zip(FLOWS) {
        assert!(parse_flow(name, text).is_ok(), "{name}");
    }
}
