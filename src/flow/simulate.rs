//! Offline simulation of one session: the real engine with a fake clock, the production OTP
//! rules with their state in memory, and hooks answered by hand. Used by `waotp chat` and
//! `waotp test`.
//!
//! No network, no database, no wall clock: the same pure engine and the same pure OTP rules
//! (`crate::otp::rules`) as the server, which keeps that state in its store instead.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

use super::engine::{
    self, Effect, Event, OutboundMessage, SessionState, SessionStatus, StartError,
};
use super::load::Flow;
use crate::otp::limits::GlobalSends;
use crate::otp::rules::{decide_issue, decide_verify, IssueRequest};
use crate::otp::{
    self, CustomerActivity, CustomerNumber, IssueRefusal, OtpKey, OtpPolicy, OtpRecord, OtpSubject,
    VerifyOutcome,
};

/// What checking a code against the ledger found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right code; it is used up.
    Correct,
    /// Wrong code.
    Wrong {
        /// Attempts left.
        left: u32,
    },
    /// The code's lifetime passed (or it was used or withdrawn).
    Expired,
    /// No attempts left (or the customer is blocked by the OTP limits).
    Locked,
}

/// Why the ledger issued no code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A new code was asked for too soon after the last one.
    TooSoon {
        /// Seconds to wait.
        wait_secs: u64,
    },
    /// A per-customer or service-wide limit refused it.
    Limited,
    /// The session's code is out of attempts.
    Locked,
}

/// A code the simulated ledger issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCode {
    /// The digits.
    pub code: String,
    /// A third party's code the rules withheld (its target's cap or country): never sent.
    pub withheld: bool,
}

/// Who a simulated code is for.
#[derive(Debug, Clone, Copy)]
pub struct SimTarget<'a> {
    /// Another number the code goes to (`send_to`), when not the chat's own.
    pub to: Option<&'a str>,
    /// A code that is never sent (`deliver = false`).
    pub decoy: bool,
}

/// Issues and checks codes for simulated sessions.
pub trait CodeLedger {
    /// Issues a code for `session`, replacing any earlier one; wrong attempts carry over when the
    /// purpose stays the same (a resend).
    #[allow(clippy::too_many_arguments)]
    fn issue(
        &mut self,
        session: &str,
        purpose: &str,
        target: SimTarget<'_>,
        length: u32,
        lifetime: Duration,
        attempts: u32,
        now: DateTime<Utc>,
        rng: &mut StdRng,
    ) -> Result<SimCode, Refusal>;

    /// Checks a typed code.
    fn verify(&mut self, session: &str, attempt: &str, now: DateTime<Utc>) -> Verdict;
}

/// The production OTP rules (`crate::otp::rules`: keyed digests, attempt counting, resend
/// cooldown, per-customer and third-party limits) with their state in memory instead of the store.
#[derive(Debug)]
pub struct RulesLedger {
    key: OtpKey,
    customer: CustomerNumber,
    records: HashMap<String, (OtpRecord, OtpSubject)>,
    activity: HashMap<CustomerNumber, CustomerActivity>,
    global: GlobalSends,
}

impl RulesLedger {
    /// A ledger with a random key, for the one simulated customer.
    pub fn new(rng: &mut StdRng) -> Self {
        Self {
            key: OtpKey::generate(rng),
            customer: CustomerNumber::from_wa_id(SIM_CUSTOMER)
                .unwrap_or_else(|_| unreachable!("valid number")),
            records: HashMap::new(),
            activity: HashMap::new(),
            global: GlobalSends::default(),
        }
    }

    /// Gives the simulated chat's number a history: `sent` codes sent to it and `wrong` wrong
    /// guesses made from it, all at `at`.
    pub fn with_history(mut self, sent: u32, wrong: u32, at: DateTime<Utc>) -> Self {
        let activity = self.activity.entry(self.customer.clone()).or_default();
        for _ in 0..sent {
            activity.record_send(at);
        }
        for _ in 0..wrong {
            activity.record_wrong_attempt(at);
        }
        self
    }

    fn activity_of(&self, number: &CustomerNumber) -> CustomerActivity {
        self.activity.get(number).cloned().unwrap_or_default()
    }
}

impl CodeLedger for RulesLedger {
    fn issue(
        &mut self,
        session: &str,
        purpose: &str,
        target: SimTarget<'_>,
        length: u32,
        lifetime: Duration,
        attempts: u32,
        now: DateTime<Utc>,
        rng: &mut StdRng,
    ) -> Result<SimCode, Refusal> {
        let policy = OtpPolicy {
            code_length: u8::try_from(length).unwrap_or(6),
            lifetime: lifetime.to_std().unwrap_or_default(),
            max_attempts: u8::try_from(attempts).unwrap_or(5),
            ..OtpPolicy::default()
        };
        let code = otp::generate(policy.code_length, rng).map_err(|_| Refusal::Limited)?;
        let subject = OtpSubject::new(session, purpose);
        let digest = self.key.digest(&subject, &code);
        let prev = self
            .records
            .get(session)
            .filter(|(r, _)| r.purpose() == purpose)
            .map(|(r, _)| r);
        let recipient = match target.to.filter(|_| !target.decoy) {
            Some(to) => CustomerNumber::parse(to).map_err(|_| Refusal::Limited)?,
            None => self.customer.clone(),
        };
        let req = IssueRequest {
            subject: &subject,
            flow: "simulation",
            customer: &recipient,
            requester: &self.customer,
            merchant: "",
            decoy: target.decoy,
            policy: &policy,
        };
        let mine = self.activity_of(&self.customer);
        let theirs = self.activity_of(&recipient);
        match decide_issue(req, prev, &mine, &theirs, &self.global, digest, now) {
            Ok(grant) => {
                self.activity.insert(self.customer.clone(), grant.activity);
                if let Some(theirs) = grant.target_activity {
                    self.activity.insert(recipient, theirs);
                }
                self.global = grant.global;
                self.records
                    .insert(session.to_owned(), (grant.record, subject));
                Ok(SimCode {
                    code: code.expose().to_owned(),
                    withheld: grant.withheld,
                })
            }
            Err(IssueRefusal::Cooldown { retry_after }) => Err(Refusal::TooSoon {
                wait_secs: retry_after.as_secs().max(1),
            }),
            Err(IssueRefusal::Locked) => Err(Refusal::Locked),
            Err(_) => Err(Refusal::Limited),
        }
    }

    fn verify(&mut self, session: &str, attempt: &str, now: DateTime<Utc>) -> Verdict {
        let Some((record, subject)) = self.records.get(session).cloned() else {
            return Verdict::Expired;
        };
        let Some(attempt) = otp::normalize_attempt(attempt) else {
            return Verdict::Wrong {
                left: u32::from(record.attempts_left()),
            };
        };
        let key = &self.key;
        let activity = self.activity_of(record.requester());
        let decision = decide_verify(Some(&record), &activity, now, |stored| {
            key.verify(&subject, &attempt, stored)
        });
        if let Some(next) = decision.record {
            self.records.insert(session.to_owned(), (next, subject));
        }
        if let Some(activity) = decision.activity {
            self.activity.insert(record.requester().clone(), activity);
        }
        match decision.outcome {
            VerifyOutcome::Correct => Verdict::Correct,
            VerifyOutcome::Wrong { attempts_left: 0 }
            | VerifyOutcome::Locked
            | VerifyOutcome::CustomerBlocked { .. } => Verdict::Locked,
            VerifyOutcome::Wrong { attempts_left } => Verdict::Wrong {
                left: u32::from(attempts_left),
            },
            VerifyOutcome::Expired | VerifyOutcome::NotIssued | VerifyOutcome::Consumed => {
                Verdict::Expired
            }
        }
    }
}

/// The number simulated sessions run for.
const SIM_CUSTOMER: &str = "15550000000";

/// Something the simulated bot did, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A message in this chat.
    Message(OutboundMessage),
    /// A code was issued. `to` is set when it went to another number; `delivered` is false for
    /// decoys and reverse codes.
    Code {
        /// The code (shown only by the simulator).
        code: String,
        /// Template carrying it.
        template: Option<String>,
        /// Other number it went to.
        to: Option<String>,
        /// Whether it was sent at all.
        delivered: bool,
        /// Reverse mode: returned to the merchant's API.
        reverse: bool,
    },
    /// A hook is being called and waits for an answer.
    Hook {
        /// Hook name.
        name: String,
        /// Variables sent.
        vars: BTreeMap<String, Value>,
    },
    /// The merchant was notified.
    Notify(String),
    /// The session ended.
    Completed(String),
}

/// One simulated session.
#[derive(Debug)]
pub struct Simulation<'f, L: CodeLedger = RulesLedger> {
    flow: &'f Flow,
    session: SessionState,
    now: DateTime<Utc>,
    rng: StdRng,
    ledger: L,
    timer: Option<(String, DateTime<Utc>, u64)>,
    pending_hook: Option<String>,
    last_code: Option<String>,
    // Whether the last code was sent to another number than the chat's.
    last_code_elsewhere: bool,
    output: Vec<Output>,
}

/// Simulated sessions start at a fixed, readable time.
fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

const SESSION_ID: &str = "sim";

impl<'f> Simulation<'f, RulesLedger> {
    /// Starts a session of `flow` under the production OTP rules (state in memory) and a
    /// seeded random source.
    pub fn start(
        flow: &'f Flow,
        vars: BTreeMap<String, Value>,
        lang: &str,
        seed: u64,
    ) -> Result<Self, StartError> {
        Self::with_history(flow, vars, lang, seed, 0, 0)
    }

    /// [`start`](Self::start) for a chat whose number was sent `sent` codes and made `wrong`
    /// wrong guesses in the minute before.
    pub fn with_history(
        flow: &'f Flow,
        vars: BTreeMap<String, Value>,
        lang: &str,
        seed: u64,
        sent: u32,
        wrong: u32,
    ) -> Result<Self, StartError> {
        let ledger = RulesLedger::new(&mut StdRng::seed_from_u64(seed ^ 0x5eed)).with_history(
            sent,
            wrong,
            epoch() - Duration::minutes(1),
        );
        Self::with_ledger(flow, vars, lang, seed, ledger)
    }
}

impl<'f, L: CodeLedger> Simulation<'f, L> {
    /// Starts a session with a given ledger.
    pub fn with_ledger(
        flow: &'f Flow,
        vars: BTreeMap<String, Value>,
        lang: &str,
        seed: u64,
        ledger: L,
    ) -> Result<Self, StartError> {
        let now = epoch();
        let session = engine::new_session(flow, vars, lang, now)?;
        let mut sim = Self {
            flow,
            session,
            now,
            rng: StdRng::seed_from_u64(seed),
            ledger,
            timer: None,
            pending_hook: None,
            last_code: None,
            last_code_elsewhere: false,
            output: Vec::new(),
        };
        sim.apply(Event::Start);
        Ok(sim)
    }

    /// Applies an event and everything it leads to (code checks answer at once).
    pub fn apply(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let (session, effects) =
                engine::step(self.flow, &self.session, event, self.now, &mut self.rng);
            self.session = session;
            for effect in effects {
                if let Some(next) = self.carry_out(effect) {
                    queue.push_back(next);
                }
            }
        }
    }

    fn carry_out(&mut self, effect: Effect) -> Option<Event> {
        match effect {
            Effect::Send(m) => self.output.push(Output::Message(m)),
            Effect::IssueOtp(req) => {
                let send_to = req.send_to.clone().filter(|s| !s.is_empty());
                let issued = self.ledger.issue(
                    SESSION_ID,
                    &req.purpose,
                    SimTarget {
                        to: send_to.as_deref(),
                        decoy: !req.deliver && !req.reverse,
                    },
                    req.length,
                    Duration::seconds(req.lifetime_secs),
                    req.max_attempts,
                    self.now,
                    &mut self.rng,
                );
                let SimCode { code, withheld } = match issued {
                    Ok(code) => code,
                    Err(Refusal::TooSoon { wait_secs }) => {
                        return Some(Event::OtpResendTooSoon { wait_secs })
                    }
                    Err(Refusal::Locked) => return Some(Event::OtpLocked),
                    Err(Refusal::Limited) => return Some(Event::OtpRefused),
                };
                self.last_code = Some(code.clone());
                let delivered = req.deliver && !withheld;
                self.last_code_elsewhere = delivered && !req.reverse && send_to.is_some();
                self.output.push(Output::Code {
                    code,
                    template: req.template.map(|t| t.name),
                    to: send_to,
                    delivered,
                    reverse: req.reverse,
                });
                if req.resend {
                    return Some(Event::OtpResent);
                }
            }
            Effect::VerifyOtp { code } => {
                return Some(match self.ledger.verify(SESSION_ID, &code, self.now) {
                    Verdict::Correct => Event::OtpCorrect,
                    Verdict::Wrong { left } => Event::OtpWrong {
                        attempts_left: left,
                    },
                    Verdict::Expired => Event::OtpExpired,
                    Verdict::Locked => Event::OtpLocked,
                });
            }
            Effect::CallHook { hook, vars, .. } => {
                self.pending_hook = Some(hook.clone());
                self.output.push(Output::Hook { name: hook, vars });
            }
            Effect::SetTimer { id, at, seq } => self.timer = Some((id, at, seq)),
            Effect::CancelTimer { .. } => self.timer = None,
            Effect::Complete { outcome, .. } => {
                self.timer = None;
                self.output.push(Output::Completed(outcome));
            }
            Effect::NotifyMerchant { event, .. } => self.output.push(Output::Notify(event)),
        }
        None
    }

    /// WhatsApp reports the last message in this chat as undeliverable (`131026`).
    pub fn fail_last(&mut self) {
        self.apply(Event::DeliveryFailed {
            reason: "131026 undeliverable".to_owned(),
            elsewhere: false,
        });
    }

    /// WhatsApp reports the last code sent as undeliverable (`131026`), wherever it went.
    pub fn fail_code(&mut self) {
        self.apply(Event::DeliveryFailed {
            reason: "131026 undeliverable".to_owned(),
            elsewhere: self.last_code_elsewhere,
        });
    }

    /// Moves the fake clock forward, firing due timers in order.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some((id, at, seq)) = self.timer.clone().filter(|(_, at, _)| *at <= until) {
            self.now = self.now.max(at);
            self.timer = None;
            self.apply(Event::TimerFired { id, seq });
        }
        self.now = until;
    }

    /// Checks a code as the merchant's `/check` call would; refused like the server refuses
    /// it (a chat-only or reverse-OTP state, or a string that is not a code).
    pub fn check_via_api(&mut self, code: &str) -> Result<(), String> {
        engine::api_check_allowed(self.flow, &self.session).map_err(|e| e.to_string())?;
        if otp::normalize_attempt(code).is_none() {
            return Err("not a code: 4 to 10 digits".to_owned());
        }
        let event = match self.ledger.verify(SESSION_ID, code, self.now) {
            Verdict::Correct => Event::OtpCorrect,
            Verdict::Wrong { left } => Event::OtpWrong {
                attempts_left: left,
            },
            Verdict::Expired => Event::OtpExpired,
            Verdict::Locked => Event::OtpLocked,
        };
        self.apply(event);
        Ok(())
    }

    /// Output since the last call.
    pub fn take_output(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.output)
    }

    /// The session as the engine left it.
    pub fn session(&self) -> &SessionState {
        &self.session
    }

    /// Whether the session ended.
    pub fn is_completed(&self) -> bool {
        self.session.status == SessionStatus::Completed
    }

    /// The last code issued.
    pub fn last_code(&self) -> Option<&str> {
        self.last_code.as_deref()
    }

    /// The hook waiting for an answer.
    pub fn pending_hook(&self) -> Option<&str> {
        self.pending_hook.as_deref()
    }

    /// The fake clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Time of the pending timer.
    pub fn next_timer(&self) -> Option<DateTime<Utc>> {
        self.timer.as_ref().map(|(_, at, _)| *at)
    }
}
