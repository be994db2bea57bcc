//! What the merchant asks of the runtime: start a session, cancel it, check a code.
//!
//! Each runs as one locked, durable session step; the HTTP layer only translates.

use super::core::{Runtime, RuntimeError};
use crate::domain::PhoneNumber;
use crate::flow::engine::{self, ApiCheckRefusal, Event, StartError as EngineStartError};
use crate::flow::model::VarSource;
use crate::flow::render::{placeholders, render, value_text};
use crate::otp::{normalize_attempt, IssueRefusal, VerifyOutcome};
use crate::store::IdempotentStart;
use crate::store::{SessionRecord, StepWrite};
use crate::whatsapp::limits::{template_parameter_max, template_text};
use chrono::Utc;
use rand::RngCore;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

/// Why a session could not be started; each maps to one API error code.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no flow `{0}`")]
    UnknownFlow(String),
    #[error("flow `{0}` is not started through the API")]
    NotApiStarted(String),
    #[error("missing required variable `{0}`")]
    MissingVar(String),
    #[error("variable `{name}` {reason}")]
    InvalidVar { name: String, reason: String },
    #[error("`{raw}` is not a possible E.164 phone number such as +919876543210: {why}")]
    InvalidPhone {
        raw: String,
        why: crate::domain::PhoneError,
    },
    #[error("the customer already has an active `{flow}` session ({id})")]
    SessionActive { flow: String, id: String },
    #[error("this flow needs the business number of the sending number (WAOTP_BUSINESS_NUMBER, or the number's business_number in the tenants file) for its wa.me link")]
    BusinessNumberUnset,
    /// An anti-abuse limit refused the first code of a session started through the API: no
    /// session was created and the customer was sent nothing.
    #[error("{}", refusal_text(*.0))]
    OtpRefused(IssueRefusal),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

fn refusal_text(refusal: IssueRefusal) -> String {
    // Rounded up like the answer's `retry_after`, so that both name the same wait.
    let wait = |d: std::time::Duration| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1);
    match refusal {
        IssueRefusal::CountryNotAllowed => {
            "codes are not sent to this number's country or prefix (WAOTP_OTP_ALLOWED_PREFIXES)"
                .into()
        }
        IssueRefusal::CustomerRateLimited { retry_after } => format!(
            "this customer was sent too many codes; try again in {} s",
            wait(retry_after)
        ),
        IssueRefusal::CustomerBlocked { retry_after } => format!(
            "this customer typed too many wrong codes in 24 hours; try again in {} s",
            wait(retry_after)
        ),
        IssueRefusal::GlobalCeiling { retry_after } => format!(
            "the service's hourly ceiling of codes is reached; try again in {} s",
            wait(retry_after)
        ),
        other => format!("no code can be issued ({})", other.as_str()),
    }
}

/// A started session and, for reverse-OTP flows, the code and link for the customer.
#[derive(Debug)]
pub struct Started {
    pub record: SessionRecord,
    pub reverse: Option<(String, String)>,
}

/// Why a `/check` was refused without looking at the code.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The string is not a code (4 to 10 digits, separators aside): nothing is counted and
    /// the customer is told nothing.
    #[error("a code is 4 to 10 digits")]
    NotACode,
    /// The session's code may not be checked over the API.
    #[error(transparent)]
    NotHere(#[from] ApiCheckRefusal),
    /// The session has ended: nothing is counted.
    #[error("session {id} has ended (outcome `{}`)", outcome.as_deref().unwrap_or("none"))]
    Completed { id: String, outcome: Option<String> },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The result of a `/check`.
#[derive(Debug)]
pub struct Checked {
    pub valid: bool,
    pub attempts_left: u32,
    pub record: SessionRecord,
}

/// Refuses API variables that would make one of the flow's templates unsendable: WhatsApp
/// rejects an empty template parameter and one longer than its limit (after whitespace is
/// collapsed, as every template parameter is sent). Only parameters filled entirely from API
/// variables are known at start; the rest are checked when sent.
fn check_template_vars(
    flow: &crate::flow::Flow,
    vars: &BTreeMap<String, Value>,
) -> Result<(), StartError> {
    let file = flow.file();
    let from_api = |name: &str| {
        file.vars
            .get(name)
            .is_some_and(|d| d.source.get() == &VarSource::Api)
    };
    for template in file.templates.values() {
        let max = template_parameter_max(!template.quick_replies.is_empty());
        for parameter in &template.parameters {
            let names: Vec<&str> = placeholders(parameter.as_str())
                .into_iter()
                .map(|(_, name)| name)
                .collect();
            let Some(first) = names.first() else { continue };
            if !names.iter().all(|n| from_api(n)) {
                continue;
            }
            let text = template_text(&render(parameter.as_str(), vars));
            if text.is_empty() {
                return Err(StartError::MissingVar((*first).to_owned()));
            }
            let len = text.chars().count();
            if len > max {
                // The longest variable of the parameter is the one to shorten.
                let name = names
                    .iter()
                    .max_by_key(|n| value_text(vars.get(**n)).chars().count())
                    .unwrap_or(first);
                return Err(StartError::InvalidVar {
                    name: (*name).to_owned(),
                    reason: format!(
                        "makes template `{}` parameter {len} characters long (spaces collapsed); WhatsApp allows {max}",
                        template.name.as_str()
                    ),
                });
            }
        }
    }
    Ok(())
}

fn new_session_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("ses_{}", hex::encode(bytes))
}

impl Runtime {
    /// Starts `flow` (one of `scope`'s merchant's flows) for the customer `to` (E.164), talking
    /// from `scope`'s number, and applies its first step, which also records `idempotency` (the
    /// caller has looked the key up and found it unused). "One active session per customer per
    /// flow" holds per number: the same customer may have the flow running with two numbers.
    pub async fn start(
        &self,
        scope: &crate::tenants::Scope,
        flow_id: &str,
        to: &str,
        vars: BTreeMap<String, Value>,
        lang: Option<&str>,
        idempotency: Option<IdempotentStart>,
    ) -> Result<Started, StartError> {
        let customer = PhoneNumber::parse(to).map_err(|why| StartError::InvalidPhone {
            raw: to.to_owned(),
            why,
        })?;
        let customer = customer.digits();
        let flow = self
            .flows_of(&scope.merchant)
            .get(flow_id)
            .ok_or_else(|| StartError::UnknownFlow(flow_id.to_owned()))?;
        if !flow.starts_by_api() {
            return Err(StartError::NotApiStarted(flow_id.to_owned()));
        }
        check_template_vars(&flow, &vars)?;
        // "One active session per customer per flow" is decided under one lock per customer and
        // flow, so two concurrent starts cannot both create a session.
        let key = scope.customer_key(customer);
        let _guard = self
            .lock_start(&key, flow_id)
            .await
            .map_err(RuntimeError::from)?;
        if let Some(id) = self
            .storage
            .sessions
            .active(&key, flow_id)
            .await
            .map_err(RuntimeError::from)?
        {
            return Err(StartError::SessionActive {
                flow: flow_id.to_owned(),
                id,
            });
        }
        let (record, reverse) = self
            .open_session(scope, &flow, customer, vars, lang, idempotency, None)
            .await?;
        Ok(Started { record, reverse })
    }

    /// Creates a session for `customer` (digits) and applies `Event::Start`. Shared by the API
    /// and by customer keywords; `trigger` is the customer message whose keyword started it,
    /// with its inbound sequence number: it is marked read in the same step that answers it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open_session(
        &self,
        scope: &crate::tenants::Scope,
        flow: &crate::flow::Flow,
        customer: &str,
        vars: BTreeMap<String, Value>,
        lang: Option<&str>,
        idempotency: Option<IdempotentStart>,
        trigger: Option<(u64, &crate::domain::InboundMessage)>,
    ) -> Result<(SessionRecord, Option<(String, String)>), StartError> {
        let now = Utc::now();
        let lang = lang.unwrap_or(flow.default_language());
        let engine = engine::new_session(flow, vars, lang, now).map_err(|e| match e {
            EngineStartError::MissingVar(v) => StartError::MissingVar(v),
            other => StartError::MissingVar(other.to_string()),
        })?;
        let id = new_session_id();
        let mut record = SessionRecord {
            id: id.clone(),
            to: crate::domain::customer_address(customer),
            customer: customer.to_owned(),
            created_at: now,
            updated_at: now,
            step: 0,
            engine,
            timer_key: None,
            otp_purpose: None,
            otp_bound: Vec::new(),
            // A crash before the triggering event is marked handled replays it; it must then
            // find itself already applied, not be taken as the answer to the first question.
            // Likewise a session answers only messages recorded after it started: a replayed
            // older one must not land in it.
            last_inbound: match trigger {
                Some((seq, _)) => seq + 1,
                None => self
                    .storage
                    .inbound
                    .next_seq()
                    .await
                    .map_err(RuntimeError::from)?,
            },
            otp_refused: None,
            merchant: scope.merchant.clone(),
            number: scope.number.clone(),
        };
        self.flows_of(&scope.merchant)
            .remember(flow, self.storage.sessions.as_ref())
            .await;
        let write = StepWrite {
            activate: Some((scope.customer_key(customer), flow.id().as_str().to_owned())),
            idempotency,
            outbox: trigger
                .and_then(|(seq, m)| self.read_receipt_for(scope, seq, m, now))
                .into_iter()
                .collect(),
            ..StepWrite::default()
        };
        let _guard = self.lock(&id).await.map_err(RuntimeError::from)?;
        let started = Instant::now();
        let mut write = write;
        let report = self
            .advance(
                &mut record,
                flow,
                Event::Start,
                now,
                &mut write,
                trigger.is_none(),
            )
            .await?;
        // The merchant asked for a code that a limit refuses: it is told so (and when to come
        // back) instead of getting a session that ends at once; the customer is sent nothing.
        if trigger.is_none() {
            if let Some(refusal) = report.otp_refusal {
                return Err(StartError::OtpRefused(refusal));
            }
        }
        self.persist(&mut record, false, now, write).await?;
        self.metrics
            .step_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.session_started(flow.id().as_str());
        let reverse = match report.reverse_code {
            Some(code) => {
                let merchant = self.merchant_of(scope);
                let Some(number) = merchant.business_number(&scope.number) else {
                    return Err(StartError::BusinessNumberUnset);
                };
                let digits = number.trim_start_matches('+');
                Some((code.clone(), format!("https://wa.me/{digits}?text={code}")))
            }
            None => None,
        };
        tracing::info!(session_id = %id, flow = flow.id().as_str(), customer = %crate::telemetry::Masked(customer), "session started");
        Ok((record, reverse))
    }

    /// Cancels a session (no-op when it already ended). `None` when there is no such session.
    pub async fn cancel(&self, id: &str) -> Result<Option<SessionRecord>, RuntimeError> {
        self.apply_event(id, Event::CancelFromApi).await
    }

    /// Applies one event to a session under its lock. `None` when there is no such session.
    pub async fn apply_event(
        &self,
        id: &str,
        event: Event,
    ) -> Result<Option<SessionRecord>, RuntimeError> {
        let _guard = self.lock(id).await?;
        let Some(mut record) = self.storage.sessions.get(id).await? else {
            return Ok(None);
        };
        if !record.is_active() {
            return Ok(Some(record));
        }
        let flow = self.flow_of(&record).await?;
        let started = Instant::now();
        self.step(&mut record, &flow, event, Utc::now(), StepWrite::default())
            .await?;
        self.metrics
            .step_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Some(record))
    }

    /// Checks a code typed on the merchant's site, through the same path as a code typed in
    /// the chat. `None` when there is no such session. A string that is not a code, a state
    /// that takes codes in the chat only and a reverse-OTP code are refused before anything
    /// is counted or sent.
    pub async fn check(&self, id: &str, code: &str) -> Result<Option<Checked>, CheckError> {
        if normalize_attempt(code).is_none() {
            return Err(CheckError::NotACode);
        }
        let _guard = self.lock(id).await.map_err(RuntimeError::from)?;
        let Some(mut record) = self
            .storage
            .sessions
            .get(id)
            .await
            .map_err(RuntimeError::from)?
        else {
            return Ok(None);
        };
        if !record.is_active() {
            return Err(CheckError::Completed {
                id: record.id,
                outcome: record.engine.outcome,
            });
        }
        let flow = self.flow_of(&record).await?;
        engine::api_check_allowed(&flow, &record.engine)?;
        let now = Utc::now();
        let (event, verdict) = self.verify_attempt(&record, code, now).await?;
        self.step(&mut record, &flow, event, now, StepWrite::default())
            .await?;
        let attempts_left = match verdict {
            VerifyOutcome::Wrong { attempts_left } => u32::from(attempts_left),
            _ => self
                .storage
                .otp
                .record(&record.id)
                .await
                .map_err(RuntimeError::from)?
                .map(|r| u32::from(r.attempts_left()))
                .unwrap_or(0),
        };
        Ok(Some(Checked {
            valid: verdict == VerifyOutcome::Correct,
            attempts_left: if verdict == VerifyOutcome::Correct {
                0
            } else {
                attempts_left
            },
            record,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A start holds its start lock while it takes the new session's lock; that must never be
    /// the same lock, whatever the session id hashes to.
    #[tokio::test]
    async fn a_held_start_lock_never_blocks_a_session_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::store::Storage::embedded(dir.path(), None, |_| {}).expect("store");
        let runtime = crate::runtime::test_runtime(storage);
        let _start = runtime
            .lock_start("919876543210", "cod_confirmation")
            .await
            .expect("lock");
        // With one shared set of 256 stripes, some of 4000 ids would land on the held one.
        for i in 0..4000 {
            let id = format!("ses_{i:024x}");
            let taken = tokio::time::timeout(Duration::ZERO, runtime.lock(&id)).await;
            assert!(
                matches!(taken, Ok(Ok(_))),
                "session lock {id} blocked by the start lock"
            );
        }
    }
}
