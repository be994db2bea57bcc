//! The pure flow engine: `(flow, session, event, now, rng) → (session', effects)`.
//!
//! It never performs I/O, never reads the clock and keeps no global state: the runtime, `waotp
//! chat` and `waotp test` all call [`step`] and carry out the returned [`Effect`]s themselves.
//! It relies on the flow having passed validation; on a flow that did not, it degrades to doing
//! nothing rather than panicking.

mod compose;
mod deadline;
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
use crate::flow::model::OtpCheck;
use crate::flow::words::words;

/// Errors creating a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// A variable declared `required` was not given, or given as null, empty or only spaces.
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
    // An empty or blank value says nothing a message could show, and WhatsApp refuses an empty
    // template parameter: it is as missing as an absent one.
    let blank = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    };
    if let Some((name, _)) = file
        .vars
        .iter()
        .find(|(name, decl)| decl.required && blank(vars.get(*name)))
    {
        return Err(StartError::MissingVar(name.clone()));
    }
    let state = StateId::parse(file.start.state.as_str()).map_err(|_| StartError::BadStart)?;
    let deadline_at = file
        .start
        .deadline
        .as_ref()
        .and_then(|d| crate::flow::duration::parse_duration(d.as_str()).ok())
        .and_then(|d| now.checked_add_signed(d));
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
        deadline_at,
        deadline_reminders_sent: 0,
        visits: BTreeMap::new(),
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
/// a merchant's API cancel always produces (see docs/http-api.md).
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

/// Why the merchant's `/check` may not verify a session's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiCheckRefusal {
    /// The state's code is typed in the chat only (`check = "chat"`).
    #[error("this session's code is checked in the WhatsApp chat only (check = \"chat\")")]
    ChatOnly,
    /// A reverse-OTP code proves the customer's number only when it arrives from that number.
    #[error("a reverse-OTP code is verified only by the customer's own WhatsApp message")]
    Reverse,
    /// The session is not in a state that waits for a code (it waits for a button, a timer or
    /// a hook), so no code can be right or wrong now.
    #[error("the session is not waiting for a code now; read its `state`")]
    NoCode,
}

impl ApiCheckRefusal {
    /// Stable reason code for API answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ChatOnly => "check_in_chat",
            Self::Reverse => "reverse_otp",
            Self::NoCode => "no_code_pending",
        }
    }
}

/// Whether the merchant's `/check` may verify `session`'s code now: not when the session is in
/// a state that does not wait for a code, nor when the waiting OTP state takes codes in the
/// chat only, nor for a reverse-OTP code. Refused checks count no attempt and change nothing.
pub fn api_check_allowed(flow: &Flow, session: &SessionState) -> Result<(), ApiCheckRefusal> {
    let otp = flow
        .file()
        .states
        .get(session.state.as_str())
        .filter(|s| *s.kind.get() == crate::flow::model::StateKind::Otp)
        .and_then(|s| s.otp.as_ref());
    let Some(otp) = otp else {
        return Err(ApiCheckRefusal::NoCode);
    };
    if otp.reverse {
        return Err(ApiCheckRefusal::Reverse);
    }
    match otp.check.as_ref().map_or(OtpCheck::Chat, |c| *c.get()) {
        OtpCheck::Chat => Err(ApiCheckRefusal::ChatOnly),
        OtpCheck::Api | OtpCheck::Both => Ok(()),
    }
}

/// Whether a customer's message should start `flow`: one of its `[start] keywords` appears in
/// it as whole words (case and punctuation ignored), so "I forgot my password" matches `forgot`.
pub fn keyword_matches(flow: &Flow, text: &str) -> bool {
    said_matches(flow, &words(text))
}

/// [`keyword_matches`] for a message already split into its [`words`].
pub fn said_matches(flow: &Flow, said: &[String]) -> bool {
    flow.keyword_words().iter().any(|k| contains_words(said, k))
}

/// Whether `keyword` appears in `text` as whole words, as [`keyword_matches`] reads it.
pub fn keyword_in(keyword: &str, text: &str) -> bool {
    contains_words(&words(text), &words(keyword))
}

fn contains_words(said: &[String], keyword: &[String]) -> bool {
    !keyword.is_empty() && said.windows(keyword.len()).any(|w| w == keyword)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lang_tests;
