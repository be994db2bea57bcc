//! One application of an event: dispatch by event, moving between states, and the state timer.

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde_json::Value;

use super::types::{Effect, Event, PendingTimer, SessionState, SessionStatus, STATE_TIMER};
use crate::flow::duration::parse_duration;
use crate::flow::guard::Guard;
use crate::flow::ids::StateId;
use crate::flow::model::{Branch, FlowFile, State, StateKind, VarSource};
use crate::flow::render::value_text;

/// Hooks that never answer are treated as failed after this long unless the state says otherwise.
const DEFAULT_HOOK_TIMEOUT: i64 = 60;
/// Default code lifetime (see docs/otp-rules.md).
const DEFAULT_OTP_LIFETIME: i64 = 600;

pub(super) struct Run<'a, R: RngCore + ?Sized> {
    pub(super) flow: &'a FlowFile,
    pub(super) flow_id: &'a str,
    pub(super) s: SessionState,
    pub(super) fx: Vec<Effect>,
    pub(super) now: DateTime<Utc>,
    rng: &'a mut R,
}

impl<'a, R: RngCore + ?Sized> Run<'a, R> {
    pub(super) fn new(
        flow: &'a FlowFile,
        flow_id: &'a str,
        s: SessionState,
        now: DateTime<Utc>,
        rng: &'a mut R,
    ) -> Self {
        Self {
            flow,
            flow_id,
            s,
            fx: Vec::new(),
            now,
            rng,
        }
    }

    pub(super) fn apply(mut self, event: Event) -> (SessionState, Vec<Effect>) {
        match (self.s.status, event) {
            (SessionStatus::Completed, _) => {}
            (SessionStatus::New, Event::Start) => {
                self.s.status = SessionStatus::Active;
                let start = self.s.state.as_str().to_owned();
                self.enter(&start);
            }
            (SessionStatus::New, Event::CancelFromApi)
            | (SessionStatus::Active, Event::CancelFromApi) => {
                self.cancel_timer();
                self.complete("cancelled".to_owned(), None);
            }
            (SessionStatus::New, _) | (SessionStatus::Active, Event::Start) => {}
            (SessionStatus::Active, event) => self.active(event),
        }
        (self.s, self.fx)
    }

    pub(super) fn state(&self) -> Option<&'a State> {
        self.flow.states.get(self.s.state.as_str())
    }

    fn active(&mut self, event: Event) {
        let Some(state) = self.state() else { return };
        let kind = *state.kind.get();
        match event {
            Event::Start | Event::CancelFromApi => {}
            Event::Text { body } => self.text(state, &body),
            Event::Reply { id } => self.reply(state, &id),
            Event::QuickReply { payload, label } => self.quick_reply(state, &payload, &label),
            Event::Interrupt { name } => {
                if !self.interrupt_named(&name) {
                    self.reprompt(state);
                }
            }
            Event::OtpCorrect if kind == StateKind::Otp => {
                self.goto(state.next.as_ref().map(|n| n.as_str()))
            }
            Event::OtpWrong { attempts_left } if kind == StateKind::Otp => {
                if attempts_left == 0 {
                    self.goto(state.on_locked.as_ref().map(|n| n.as_str()));
                } else {
                    self.s
                        .vars
                        .insert("attempts_left".to_owned(), Value::from(attempts_left));
                    self.wrong_code(state, attempts_left);
                }
            }
            Event::OtpExpired if kind == StateKind::Otp => {
                self.goto(state.on_expired.as_ref().map(|n| n.as_str()))
            }
            Event::OtpLocked if kind == StateKind::Otp => {
                self.goto(state.on_locked.as_ref().map(|n| n.as_str()))
            }
            Event::OtpResendRequested if kind == StateKind::Otp => self.resend(state),
            Event::OtpRefused if kind == StateKind::Otp => {
                self.builtin("otp_refused", &[]);
                self.goto(state.on_locked.as_ref().map(|n| n.as_str()));
            }
            Event::OtpResent if kind == StateKind::Otp => self.code_resent(state),
            Event::OtpResendTooSoon { wait_secs } if kind == StateKind::Otp => {
                self.s.resends = self.s.resends.saturating_sub(1);
                self.builtin("resend_too_soon", &[("wait_secs", Value::from(wait_secs))]);
            }
            Event::TimerFired { id, seq } => self.timer_fired(state, &id, seq),
            // A code that went to someone else's number and failed tells this chat nothing
            // (had the number not existed, no code would have gone anywhere): the session keeps
            // waiting for a code nobody has, so the same limits end it as they end a decoy.
            Event::DeliveryFailed {
                elsewhere: true, ..
            } => {}
            Event::DeliveryFailed { reason, .. } => {
                let target = self.flow.on_delivery_failure.as_ref().map(|t| t.as_str());
                if target.is_some() {
                    self.s.delivery_failure = Some(reason);
                    self.goto(target);
                }
            }
            Event::HookOk { hook, fields }
                if kind == StateKind::Hook && self.is_hook(state, &hook) =>
            {
                for (name, value) in fields {
                    let declared = self
                        .flow
                        .vars
                        .get(&name)
                        .is_some_and(|d| d.source.get() == &VarSource::Hook);
                    if declared {
                        self.s.vars.insert(name, value);
                    }
                }
                let target = self.choose(state);
                self.goto(target);
            }
            Event::HookError { hook, .. }
                if kind == StateKind::Hook && self.is_hook(state, &hook) =>
            {
                self.goto(state.on_error.as_ref().map(|n| n.as_str()));
            }
            // OTP and hook answers that arrive after the session moved on are stale.
            Event::OtpCorrect
            | Event::OtpWrong { .. }
            | Event::OtpExpired
            | Event::OtpLocked
            | Event::OtpResendRequested
            | Event::OtpResent
            | Event::OtpRefused
            | Event::OtpResendTooSoon { .. }
            | Event::HookOk { .. }
            | Event::HookError { .. } => {}
        }
    }

    fn is_hook(&self, state: &State, hook: &str) -> bool {
        state.hook.as_ref().is_some_and(|h| h.as_str() == hook)
    }

    /// The target of `next` or of the first branch whose guard holds.
    pub(super) fn choose(&self, state: &'a State) -> Option<&'a str> {
        if let Some(next) = &state.next {
            return Some(next.as_str());
        }
        state
            .branches
            .iter()
            .find(|b: &&Branch| match &b.when {
                None => true,
                Some(w) => Guard::parse(w.as_str()).is_ok_and(|g| g.holds(&self.s.vars)),
            })
            .map(|b| b.goto.as_str())
    }

    pub(super) fn goto(&mut self, target: Option<&str>) {
        if let Some(t) = target {
            self.enter(t);
        }
    }

    /// Enters `target` and keeps going through states that do not wait. A state entered its
    /// `max_visits` times already gives way to its `on_max_visits` state (counted only when
    /// the state is really entered).
    pub(super) fn enter(&mut self, target: &str) {
        let mut target = target.to_owned();
        // A validated flow has no loop of non-waiting states that does not pass through a
        // counted entry, so at most every state once between two counted entries; the bound
        // only guards bad input.
        let counted: u64 = self
            .flow
            .states
            .values()
            .filter_map(|s| s.max_visits.as_ref().map(|m| u64::from(*m.get())))
            .sum();
        let steps = (counted + 1).saturating_mul(self.flow.states.len() as u64 + 1);
        for _ in 0..steps {
            let Some(state) = self.flow.states.get(&target) else {
                return;
            };
            if let Some(max) = &state.max_visits {
                let visits = self.s.visits.get(&target).copied().unwrap_or(0);
                if visits >= *max.get() {
                    match &state.on_max_visits {
                        Some(instead) => {
                            target = instead.as_str().to_owned();
                            continue;
                        }
                        None => return,
                    }
                }
                self.s.visits.insert(target.clone(), visits + 1);
            }
            let Ok(id) = StateId::parse(&target) else {
                return;
            };
            self.cancel_timer();
            self.s.state = id;
            self.s.entered_at = self.now;
            self.s.retries = 0;
            self.s.reminders_sent = 0;
            self.s.resends = 0;
            if let Some(event) = &state.notify {
                self.notify(event.as_str());
            }
            match state.kind.get() {
                StateKind::Ask => {
                    self.send_prompt(state);
                    self.set_timer(state);
                    return;
                }
                StateKind::Say => {
                    if let Some(m) = &state.message {
                        self.send(m.as_str(), state);
                    }
                    match self.choose(state) {
                        Some(next) => target = next.to_owned(),
                        None => return,
                    }
                }
                StateKind::Otp => {
                    self.issue_otp(state, false);
                    if let Some(m) = &state.message {
                        self.send(m.as_str(), state);
                    }
                    self.set_timer(state);
                    return;
                }
                StateKind::Hook => {
                    self.call_hook(state);
                    self.set_timer(state);
                    return;
                }
                StateKind::End => {
                    if let Some(m) = &state.message {
                        self.send(m.as_str(), state);
                    }
                    let outcome = state
                        .outcome
                        .as_ref()
                        .map_or("completed", |o| o.as_str())
                        .to_owned();
                    let callback = state.callback_url.as_ref().map(|c| c.as_str().to_owned());
                    self.complete(outcome, callback);
                    return;
                }
            }
        }
    }

    fn call_hook(&mut self, state: &State) {
        let Some(name) = &state.hook else { return };
        let Some(hook) = self.flow.hooks.get(name.as_str()) else {
            return;
        };
        let vars = hook
            .send
            .iter()
            .map(|v| {
                (
                    v.as_str().to_owned(),
                    self.s.vars.get(v.as_str()).cloned().unwrap_or(Value::Null),
                )
            })
            .collect();
        self.fx.push(Effect::CallHook {
            hook: name.as_str().to_owned(),
            url: hook.url.as_str().to_owned(),
            vars,
        });
    }

    pub(super) fn complete(&mut self, outcome: String, callback_url: Option<String>) {
        self.s.status = SessionStatus::Completed;
        self.s.outcome = Some(outcome.clone());
        let callback_url = callback_url.or_else(|| {
            self.flow
                .callback_url
                .as_ref()
                .map(|c| c.as_str().to_owned())
        });
        let event_id = self.event_id();
        self.fx.push(Effect::Complete {
            outcome,
            callback_url,
            event_id,
        });
    }

    /// A `session.<event>` callback to the flow's callback URL (else the server's), like the
    /// outcome's.
    pub(super) fn notify(&mut self, event: &str) {
        let event_id = self.event_id();
        let callback_url = self
            .flow
            .callback_url
            .as_ref()
            .map(|c| c.as_str().to_owned());
        self.fx.push(Effect::NotifyMerchant {
            event: event.to_owned(),
            event_id,
            callback_url,
        });
    }

    fn event_id(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// Reminder offsets (sorted) and the time after which the state gives up; an `ask` state
    /// without `timeout` (allowed when the flow's deadline bounds the wait) never gives up
    /// by itself.
    fn schedule(&self, state: &State) -> (Vec<Duration>, Option<Duration>) {
        let parse = |l: Option<&crate::flow::located::Located<String>>, default: i64| {
            l.and_then(|l| parse_duration(l.as_str()).ok())
                .unwrap_or(Duration::seconds(default))
        };
        let timeout = match state.kind.get() {
            StateKind::Otp => Some(parse(
                state.otp.as_ref().and_then(|o| o.lifetime.as_ref()),
                DEFAULT_OTP_LIFETIME,
            )),
            StateKind::Hook => Some(parse(state.timeout.as_ref(), DEFAULT_HOOK_TIMEOUT)),
            _ => state
                .timeout
                .as_ref()
                .and_then(|t| parse_duration(t.as_str()).ok()),
        };
        let mut reminders: Vec<Duration> = state
            .reminders
            .iter()
            .filter_map(|r| parse_duration(r.as_str()).ok())
            .filter(|r| timeout.map_or(true, |t| *r < t))
            .collect();
        reminders.sort();
        (reminders, timeout)
    }

    /// When the state's own next reminder or timeout is due, if it has one left.
    fn state_due(&self, state: &State) -> Option<DateTime<Utc>> {
        let (reminders, timeout) = self.schedule(state);
        reminders
            .get(self.s.reminders_sent as usize)
            .copied()
            .or(timeout)
            .map(|offset| self.s.entered_at + offset)
    }

    /// Sets the session's one timer for whichever comes first: the state's next reminder or
    /// timeout, or the deadline's next reminder or the deadline itself (the deadline on a tie).
    pub(super) fn set_timer(&mut self, state: &State) {
        let at = match (self.state_due(state), self.deadline_due()) {
            (Some(own), Some((deadline, _))) => own.min(deadline),
            (own, deadline) => match own.or(deadline.map(|(at, _)| at)) {
                Some(at) => at,
                None => return,
            },
        };
        self.s.timer_seq += 1;
        let timer = PendingTimer {
            id: STATE_TIMER.to_owned(),
            at,
            seq: self.s.timer_seq,
        };
        self.fx.push(Effect::SetTimer {
            id: timer.id.clone(),
            at: timer.at,
            seq: timer.seq,
        });
        self.s.timer = Some(timer);
    }

    pub(super) fn cancel_timer(&mut self) {
        if let Some(t) = self.s.timer.take() {
            self.fx.push(Effect::CancelTimer { id: t.id });
        }
    }

    fn timer_fired(&mut self, state: &'a State, id: &str, seq: u64) {
        let current = self
            .s
            .timer
            .as_ref()
            .is_some_and(|t| t.id == id && t.seq == seq);
        if !current {
            return;
        }
        self.s.timer = None;
        if let Some((at, due)) = self.deadline_due() {
            if self.state_due(state).map_or(true, |own| at <= own) {
                self.deadline_fired(state, due);
                return;
            }
        }
        let (reminders, _) = self.schedule(state);
        if (self.s.reminders_sent as usize) < reminders.len() {
            self.s.reminders_sent += 1;
            match (&state.reminder, state.kind.get()) {
                (Some(m), _) => {
                    let template = state.reminder_template.as_ref().map(|t| t.as_str());
                    self.send_with_template(m.as_str(), template);
                }
                (None, StateKind::Ask) => self.send_prompt(state),
                (None, _) => {
                    if let Some(m) = &state.message {
                        self.send(m.as_str(), state);
                    }
                }
            }
            self.set_timer(state);
            return;
        }
        let target = match state.kind.get() {
            StateKind::Otp => state.on_expired.as_ref(),
            StateKind::Hook => state.on_error.as_ref(),
            _ => state.on_timeout.as_ref(),
        };
        self.goto(target.map(|t| t.as_str()));
    }

    /// The value of a variable as text (for bound fields and numbers).
    pub(super) fn var_text(&self, name: &str) -> String {
        value_text(self.s.vars.get(name))
    }
}
