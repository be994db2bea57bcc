//! Offline simulation of one session: the real engine with a fake clock, an in-memory OTP
//! ledger and hooks answered by hand. Used by `waotp chat` and `waotp test`.
//!
//! No network, no database, no wall clock. The OTP ledger here is a stand-in behind a narrow
//! trait; the production rules (keyed hashing, per-customer limits) live in `otp/`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;

use super::engine::{
    self, Effect, Event, OutboundMessage, SessionState, SessionStatus, StartError,
};
use super::load::Flow;

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
    /// The code's lifetime passed.
    Expired,
    /// No attempts left.
    Locked,
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
        length: u32,
        lifetime: Duration,
        attempts: u32,
        now: DateTime<Utc>,
        rng: &mut dyn RngCore,
    ) -> String;

    /// Checks a typed code.
    fn verify(&mut self, session: &str, attempt: &str, now: DateTime<Utc>) -> Verdict;
}

#[derive(Debug)]
struct IssuedCode {
    purpose: String,
    code: String,
    expires: DateTime<Utc>,
    attempts_left: u32,
    used: bool,
}

/// A [`CodeLedger`] in memory: plain codes, counted attempts, expiry by the given clock.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    codes: HashMap<String, IssuedCode>,
}

impl CodeLedger for MemoryLedger {
    fn issue(
        &mut self,
        session: &str,
        purpose: &str,
        length: u32,
        lifetime: Duration,
        attempts: u32,
        now: DateTime<Utc>,
        rng: &mut dyn RngCore,
    ) -> String {
        let code: String = (0..length)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        let attempts_left = match self.codes.get(session) {
            Some(old) if old.purpose == purpose && !old.used => old.attempts_left,
            _ => attempts,
        };
        self.codes.insert(
            session.to_owned(),
            IssuedCode {
                purpose: purpose.to_owned(),
                code: code.clone(),
                expires: now + lifetime,
                attempts_left,
                used: false,
            },
        );
        code
    }

    fn verify(&mut self, session: &str, attempt: &str, now: DateTime<Utc>) -> Verdict {
        let Some(c) = self.codes.get_mut(session) else {
            return Verdict::Expired;
        };
        if c.used || now >= c.expires {
            return Verdict::Expired;
        }
        if c.attempts_left == 0 {
            return Verdict::Locked;
        }
        if c.code == attempt {
            c.used = true;
            return Verdict::Correct;
        }
        c.attempts_left -= 1;
        if c.attempts_left == 0 {
            Verdict::Locked
        } else {
            Verdict::Wrong {
                left: c.attempts_left,
            }
        }
    }
}

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
pub struct Simulation<'f, L: CodeLedger = MemoryLedger> {
    flow: &'f Flow,
    session: SessionState,
    now: DateTime<Utc>,
    rng: StdRng,
    ledger: L,
    timer: Option<(String, DateTime<Utc>, u64)>,
    pending_hook: Option<String>,
    last_code: Option<String>,
    output: Vec<Output>,
}

/// Simulated sessions start at a fixed, readable time.
fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

const SESSION_ID: &str = "sim";

impl<'f> Simulation<'f, MemoryLedger> {
    /// Starts a session of `flow` with an in-memory ledger and a seeded random source.
    pub fn start(
        flow: &'f Flow,
        vars: BTreeMap<String, Value>,
        lang: &str,
        seed: u64,
    ) -> Result<Self, StartError> {
        Self::with_ledger(flow, vars, lang, seed, MemoryLedger::default())
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
                let code = self.ledger.issue(
                    SESSION_ID,
                    &req.purpose,
                    req.length,
                    Duration::seconds(req.lifetime_secs),
                    req.max_attempts,
                    self.now,
                    &mut self.rng,
                );
                self.last_code = Some(code.clone());
                self.output.push(Output::Code {
                    code,
                    template: req.template.map(|t| t.name),
                    to: req.send_to.filter(|s| !s.is_empty()),
                    delivered: req.deliver,
                    reverse: req.reverse,
                });
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

    /// Checks a code as the merchant's `/check` call would.
    pub fn check_via_api(&mut self, code: &str) {
        let event = match self.ledger.verify(SESSION_ID, code, self.now) {
            Verdict::Correct => Event::OtpCorrect,
            Verdict::Wrong { left } => Event::OtpWrong {
                attempts_left: left,
            },
            Verdict::Expired => Event::OtpExpired,
            Verdict::Locked => Event::OtpLocked,
        };
        self.apply(event);
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
