//! The pure flow engine: `(flow, session, event, now, rng) → (session', effects)`.
//!
//! It never performs I/O, never reads the clock and keeps no global state: the runtime, `waotp
//! chat` and `waotp test` all call [`step`] and carry out the returned [`Effect`]s themselves.
//! It relies on the flow having passed validation; on a flow that did not, it degrades to doing
//! nothing rather than panicking.

mod compose;
mod respond;
mod run;
mod types;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::Value;

pub use self::types::{
    Choice, Effect, Event, MessageBody, OtpRequest, OutboundMessage, PendingTimer, SessionState,
    SessionStatus, TemplateRef, STATE_TIMER,
};
use crate::flow::ids::StateId;
use crate::flow::load::Flow;

/// Errors creating a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// A variable declared `required` was not given.
    #[error("missing required variable `{0}`")]
    MissingVar(String),
    /// The start state's id is not a valid state id (cannot happen for a validated flow).
    #[error("flow has an invalid start state")]
    BadStart,
}

/// A new session on `flow`, not yet started: apply [`Event::Start`] to send the first messages.
pub fn new_session(
    flow: &Flow,
    vars: BTreeMap<String, Value>,
    lang: &str,
    now: DateTime<Utc>,
) -> Result<SessionState, StartError> {
    let file = flow.file();
    if let Some((name, _)) = file
        .vars
        .iter()
        .find(|(name, decl)| decl.required && !vars.contains_key(*name))
    {
        return Err(StartError::MissingVar(name.clone()));
    }
    let state = StateId::parse(file.start.state.as_str()).map_err(|_| StartError::BadStart)?;
    Ok(SessionState {
        flow_id: flow.id().clone(),
        flow_version: flow.version().to_owned(),
        flow_hash: flow.hash().to_owned(),
        state,
        status: SessionStatus::New,
        outcome: None,
        vars,
        lang: lang.to_owned(),
        entered_at: now,
        retries: 0,
        reminders_sent: 0,
        resends: 0,
        timer: None,
        timer_seq: 0,
        delivery_failure: None,
    })
}

/// Applies one event. Returns the new session and what the runtime must do, in order.
pub fn step<R: RngCore + ?Sized>(
    flow: &Flow,
    session: &SessionState,
    event: Event,
    now: DateTime<Utc>,
    rng: &mut R,
) -> (SessionState, Vec<Effect>) {
    run::Run::new(flow.file(), flow.id().as_str(), session.clone(), now, rng).apply(event)
}

/// Outcomes a session of `flow` can end with: its end states' outcomes plus `cancelled`, which
/// a merchant's API cancel always produces (SPEC §4).
pub fn possible_outcomes(flow: &Flow) -> Vec<String> {
    let mut out: Vec<String> = flow
        .file()
        .states
        .values()
        .filter_map(|s| s.outcome.as_ref().map(|o| o.as_str().to_owned()))
        .chain(["cancelled".to_owned()])
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a customer's message should start `flow`: one of its `[start] keywords` appears in
/// it as whole words (case and punctuation ignored), so "I forgot my password" matches `forgot`.
pub fn keyword_matches(flow: &Flow, text: &str) -> bool {
    let words = |t: &str| -> Vec<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let said = words(text);
    flow.file().start.keywords.iter().any(|k| {
        let k = words(k.as_str());
        !k.is_empty() && said.windows(k.len()).any(|w| w == k.as_slice())
    })
}

#[cfg(test)]
mod tests;
