//! Flow test scripts (`flows/tests/*.toml`): scripted conversations with expectations, run on the
//! simulator. A script names its flow and holds cases; each case is a list of steps.
//!
//! Reads nothing itself; the caller passes the script text. Must not reach the network.

use std::collections::BTreeMap;

use chrono::Duration;
use serde::Deserialize;
use serde_json::Value;

use super::duration::parse_duration;
use super::engine::Event;
use super::load::FlowSet;
use super::simulate::{Output, Simulation};
use super::transcript::{describe, visible_in_chat};

/// A script file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Flow id under test.
    pub flow: String,
    /// The cases.
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

/// One scripted conversation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Name shown in reports.
    pub name: String,
    /// Variables given at start (as the API would).
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    /// Session language (default: the flow's `default_language`, as for a session started
    /// without one).
    #[serde(default)]
    pub lang: Option<String>,
    /// Random seed (codes, event ids).
    #[serde(default)]
    pub seed: Option<u64>,
    /// The customer message that starts a keyword-started flow (checked against its keywords).
    #[serde(default)]
    pub trigger: Option<String>,
    /// Another case of this script whose customer-visible chat must be identical (codes aside).
    #[serde(default)]
    pub same_chat_as: Option<String>,
    /// Codes sent to this chat's number in the minute before the case (to reach its limits).
    #[serde(default)]
    pub codes_before: u32,
    /// Wrong codes typed from this chat's number in the minute before the case.
    #[serde(default)]
    pub wrong_codes_before: u32,
    /// The steps.
    pub steps: Vec<Step>,
}

/// One step: at most one action, then expectations about what it produced.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The customer types this.
    #[serde(default)]
    pub say: Option<String>,
    /// The customer taps this button or list row id.
    #[serde(default)]
    pub tap: Option<String>,
    /// The customer types the last issued code (`true`) or a wrong one (`false`).
    #[serde(default)]
    pub code: Option<bool>,
    /// The merchant's site checks the last code (`true`) or a wrong one (`false`) over the API.
    #[serde(default)]
    pub api_check: Option<bool>,
    /// The merchant cancels over the API.
    #[serde(default)]
    pub api_cancel: bool,
    /// WhatsApp reports the last message as undeliverable.
    #[serde(default)]
    pub fail: bool,
    /// WhatsApp reports the last code as undeliverable (wherever it was sent).
    #[serde(default)]
    pub fail_code: bool,
    /// The clock moves on (e.g. `10m`).
    #[serde(default)]
    pub wait: Option<String>,
    /// The hook answered successfully with `answer`.
    #[serde(default)]
    pub hook: Option<String>,
    /// JSON object fields of the hook's answer.
    #[serde(default)]
    pub answer: Option<toml::Table>,
    /// The hook failed.
    #[serde(default)]
    pub hook_error: Option<String>,
    /// Substrings that must appear in what the bot did in this step.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Substrings that must not appear.
    #[serde(default)]
    pub absent: Vec<String>,
    /// State the session must be in afterwards.
    #[serde(default)]
    pub state: Option<String>,
    /// Outcome the session must have ended with.
    #[serde(default)]
    pub outcome: Option<String>,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// What went wrong; empty when it passed.
    pub failures: Vec<String>,
}

/// Why a script could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// Not a valid script file.
    #[error("{0}")]
    Parse(String),
    /// Names a flow that is not loaded.
    #[error("unknown flow `{0}`")]
    UnknownFlow(String),
}

/// Runs every case of a script against `flows`.
pub fn run_script(flows: &FlowSet, text: &str) -> Result<Vec<CaseResult>, ScriptError> {
    let script: Script = toml::from_str(text).map_err(|e| ScriptError::Parse(e.to_string()))?;
    let flow = flows
        .get(&script.flow)
        .ok_or_else(|| ScriptError::UnknownFlow(script.flow.clone()))?;
    let mut chats: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut results = Vec::new();
    for case in &script.cases {
        let (mut failures, chat) = run_case(flow, case);
        if let Some(other) = &case.same_chat_as {
            match chats.get(other) {
                Some(theirs) if *theirs != chat => {
                    failures.push(chat_difference(other, &chat, theirs))
                }
                Some(_) => {}
                None => failures.push(format!("`same_chat_as`: no earlier case named `{other}`")),
            }
        }
        chats.insert(case.name.clone(), chat);
        results.push(CaseResult {
            name: case.name.clone(),
            failures,
        });
    }
    Ok(results)
}

/// Where two customer-visible chats part: the first line that differs, then both chats.
fn chat_difference(other: &str, this: &[String], that: &[String]) -> String {
    let n = this.iter().zip(that).take_while(|(a, b)| a == b).count();
    let line = |chat: &[String]| {
        chat.get(n)
            .map_or_else(|| "(nothing more)".to_owned(), |l| format!("`{l}`"))
    };
    format!(
        "customer-visible chat differs from case `{other}` at message {}: {} here, {} there\n  this chat:\n{}\n  that chat:\n{}",
        n + 1,
        line(this),
        line(that),
        indent(&this.join("\n")),
        indent(&that.join("\n"))
    )
}

fn to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn run_case(flow: &super::load::Flow, case: &Case) -> (Vec<String>, Vec<String>) {
    let vars = case
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect();
    let mut sim = match Simulation::with_history(
        flow,
        vars,
        case.lang.as_deref().unwrap_or(flow.default_language()),
        case.seed.unwrap_or(7),
        case.codes_before,
        case.wrong_codes_before,
    ) {
        Ok(sim) => sim,
        Err(e) => return (vec![format!("cannot start: {e}")], Vec::new()),
    };
    let mut failures = Vec::new();
    if let Some(trigger) = &case.trigger {
        if !super::engine::keyword_matches(flow, trigger) {
            failures.push(format!(
                "trigger `{trigger}` does not match the flow's keywords"
            ));
        }
    } else if !flow.file().start.api {
        failures.push("the flow is started by keywords: give the case a `trigger`".to_owned());
    }
    let mut chat = Vec::new();
    let mut last = sim.take_output();
    record(&last, &mut chat);
    for (i, step) in case.steps.iter().enumerate() {
        let n = i + 1;
        match act(&mut sim, step) {
            Ok(true) => {
                last = sim.take_output();
                record(&last, &mut chat);
            }
            Ok(false) => {}
            Err(e) => failures.push(format!("step {n}: {e}")),
        }
        let text: Vec<String> = last.iter().map(describe).collect();
        let text = text.join("\n");
        for want in &step.expect {
            if !text.contains(want.as_str()) {
                failures.push(format!(
                    "step {n}: expected `{want}` in:\n{}",
                    indent(&text)
                ));
            }
        }
        for unwanted in &step.absent {
            if text.contains(unwanted.as_str()) {
                failures.push(format!(
                    "step {n}: did not expect `{unwanted}` in:\n{}",
                    indent(&text)
                ));
            }
        }
        if let Some(state) = &step.state {
            if sim.session().state.as_str() != state {
                failures.push(format!(
                    "step {n}: expected state `{state}`, session is in `{}`",
                    sim.session().state
                ));
            }
        }
        if let Some(outcome) = &step.outcome {
            let session = sim.session();
            match session.outcome.as_deref() {
                Some(got) if got == outcome => {}
                Some(got) => failures.push(format!(
                    "step {n}: expected outcome `{outcome}`, the session ended with `{got}`"
                )),
                None => failures.push(format!(
                    "step {n}: expected outcome `{outcome}`, the session has not ended (state `{}`)",
                    session.state
                )),
            }
        }
    }
    (failures, chat)
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (nothing)".to_owned();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// Codes differ between runs, so they are masked before chats are compared.
fn record(outputs: &[Output], chat: &mut Vec<String>) {
    for o in outputs.iter().filter(|o| visible_in_chat(o)) {
        let mut line = describe(o);
        if let Output::Code { code, .. } = o {
            line = line.replace(code.as_str(), "######");
        }
        chat.push(line);
    }
}

/// Performs the step's action; `Ok(false)` when it has none (expectations then apply to the
/// previous action's output).
fn act(sim: &mut Simulation<'_>, step: &Step) -> Result<bool, String> {
    let wrong = |code: &str| -> String {
        code.chars()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    if c == '9' {
                        '0'
                    } else {
                        char::from(c as u8 + 1)
                    }
                } else {
                    c
                }
            })
            .collect()
    };
    if let Some(text) = &step.say {
        sim.apply(Event::Text { body: text.clone() });
    } else if let Some(id) = &step.tap {
        sim.apply(Event::Reply { id: id.clone() });
    } else if let Some(right) = step.code {
        let code = sim.last_code().ok_or("no code was issued")?.to_owned();
        sim.apply(Event::Text {
            body: if right { code } else { wrong(&code) },
        });
    } else if let Some(right) = step.api_check {
        let code = sim.last_code().ok_or("no code was issued")?.to_owned();
        sim.check_via_api(&if right { code } else { wrong(&code) })
            .map_err(|e| format!("`/check` refused: {e}"))?;
    } else if step.api_cancel {
        sim.apply(Event::CancelFromApi);
    } else if step.fail {
        sim.fail_last();
    } else if step.fail_code {
        sim.fail_code();
    } else if let Some(d) = &step.wait {
        let d: Duration = parse_duration(d)?;
        sim.advance(d);
    } else if let Some(hook) = &step.hook {
        let fields = step.answer.clone().unwrap_or_default();
        let fields = match to_json(&toml::Value::Table(fields)) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        sim.apply(Event::HookOk {
            hook: hook.clone(),
            fields,
        });
    } else if let Some(hook) = &step.hook_error {
        sim.apply(Event::HookError {
            hook: hook.clone(),
            reason: "timeout".to_owned(),
        });
    } else {
        return Ok(false);
    }
    Ok(true)
}
