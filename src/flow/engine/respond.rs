//! How the engine answers the customer: matching typed text and taps to choices, codes, resends,
//! interrupts and re-prompts with a bounded retry count.

use rand::RngCore;

use super::run::Run;
use super::types::{Effect, MessageBody, OtpRequest};
use crate::flow::duration::parse_duration;
use crate::flow::located::Located;
use crate::flow::model::{OtpCheck, State, StateKind};
use crate::flow::words::normalize;

/// Unusable answers re-prompted before giving up, unless a state says otherwise.
const DEFAULT_MAX_RETRIES: u32 = 3;
/// New codes a customer may ask for in one OTP state, unless the flow says otherwise.
const DEFAULT_MAX_RESENDS: u32 = 2;

impl<R: RngCore + ?Sized> Run<'_, R> {
    pub(super) fn text(&mut self, state: &State, body: &str) {
        let typed = normalize(body);
        let interrupt = self
            .flow
            .interrupts
            .iter()
            .find(|(_, i)| i.words.iter().any(|w| normalize(w.as_str()) == typed))
            .map(|(name, _)| name.clone());
        if let Some(name) = interrupt {
            self.interrupt_named(&name);
            return;
        }
        match state.kind.get() {
            StateKind::Ask => {
                if let Some(target) = choice_named(state, &typed) {
                    self.enter(target);
                } else if let Some(target) = &state.on_text {
                    if let Some(var) = &state.save_as {
                        self.s
                            .vars
                            .insert(var.as_str().to_owned(), body.trim().into());
                    }
                    self.enter(target.as_str());
                } else {
                    self.reprompt(state);
                }
            }
            StateKind::Otp => self.code_typed(state, body, &typed),
            StateKind::Hook => {
                // The answer is on its way; say so once rather than re-prompting.
                if self.s.retries == 0 {
                    self.s.retries = 1;
                    self.builtin("busy", "One moment, please…".to_owned());
                }
            }
            StateKind::Say | StateKind::End => {}
        }
    }

    fn code_typed(&mut self, state: &State, body: &str, typed: &str) {
        let Some(otp) = &state.otp else { return };
        if otp
            .resend_words
            .iter()
            .any(|w| normalize(w.as_str()) == typed)
        {
            self.resend(state);
            return;
        }
        let length = otp.length.as_ref().map_or(6, |l| *l.get()) as usize;
        let check = otp.check.as_ref().map_or(OtpCheck::Chat, |c| *c.get());
        let code = find_code(body, length);
        match (code, check) {
            (Some(_), OtpCheck::Api) if !otp.reverse => {
                self.builtin(
                    "use_site",
                    "Please enter the code on the website where you asked for it.".to_owned(),
                );
            }
            (Some(code), _) => self.fx.push(Effect::VerifyOtp { code }),
            (None, _) => self.reprompt(state),
        }
    }

    pub(super) fn reply(&mut self, state: &State, id: &str) {
        match choice_with_id(state, id) {
            Some(t) if state.kind.get() == &StateKind::Ask => self.enter(t),
            _ if state.kind.get() == &StateKind::Otp && id == "resend" => self.resend(state),
            _ => self.reprompt(state),
        }
    }

    /// A tap on a template's quick-reply button: its payload is a choice's id when the send
    /// set one; otherwise (a template sent without payloads) WhatsApp echoes the button's
    /// label, which is matched like typed text against the choices' titles and synonyms.
    pub(super) fn quick_reply(&mut self, state: &State, payload: &str, label: &str) {
        if choice_with_id(state, payload).is_none() && state.kind.get() == &StateKind::Ask {
            if let Some(target) = choice_named(state, &normalize(label)) {
                self.enter(target);
                return;
            }
        }
        self.reply(state, payload);
    }

    /// Applies the interrupt called `name`; false when the flow has none by that name.
    pub(super) fn interrupt_named(&mut self, name: &str) -> bool {
        let Some(interrupt) = self.flow.interrupts.get(name) else {
            return false;
        };
        let state = self.state();
        if let (Some(m), Some(state)) = (&interrupt.message, state) {
            self.send(m.as_str(), state);
        }
        if let Some(event) = &interrupt.notify {
            self.notify(event.as_str());
        }
        if let Some(goto) = &interrupt.goto {
            self.enter(goto.as_str());
        }
        true
    }

    /// Answers an unusable reply: a hint and the choices again, until the retry budget is spent.
    pub(super) fn reprompt(&mut self, state: &State) {
        self.s.retries += 1;
        let max = state
            .max_retries
            .as_ref()
            .map_or(DEFAULT_MAX_RETRIES, |m| *m.get());
        if self.s.retries > max {
            let target = state
                .on_retries_exhausted
                .as_ref()
                .or(self.flow.on_retries_exhausted.as_ref());
            self.goto(target.map(|t| t.as_str()));
            return;
        }
        // The state's own reprompt text or a built-in hint; either way the choices come again,
        // so a customer who typed something unusable can still tap.
        let (message_id, text) = match &state.reprompt {
            Some(m) => (m.as_str().to_owned(), self.text_of(m.as_str())),
            None => ("reprompt".to_owned(), builtin_hint(state)),
        };
        let body = match self.prompt_body(state) {
            Some(MessageBody::Buttons { buttons, .. }) => MessageBody::Buttons { text, buttons },
            Some(MessageBody::List { button, rows, .. }) => {
                MessageBody::List { text, button, rows }
            }
            _ => MessageBody::Text { text },
        };
        self.push_reprompt(message_id, body);
    }

    pub(super) fn wrong_code(&mut self, state: &State, attempts_left: u32) {
        match state.otp.as_ref().and_then(|o| o.wrong_code.as_ref()) {
            Some(m) => self.send(m.as_str(), state),
            None => self.builtin(
                "wrong_code",
                format!("That code is not right. {attempts_left} attempt(s) left."),
            ),
        }
    }

    pub(super) fn resend(&mut self, state: &State) {
        let max = state
            .otp
            .as_ref()
            .and_then(|o| o.max_resends.as_ref())
            .map_or(DEFAULT_MAX_RESENDS, |m| *m.get());
        if self.s.resends >= max {
            self.builtin(
                "no_resend",
                "No more new codes can be sent for this request.".to_owned(),
            );
            return;
        }
        self.s.resends += 1;
        // The prompt waits for `OtpResent`: the OTP rules may refuse the code (cooldown), and
        // then the customer hears only why, not "we sent you a code".
        self.issue_otp(state, true);
    }

    /// The new code asked for is on its way: the prompt again, and the code's full lifetime.
    pub(super) fn code_resent(&mut self, state: &State) {
        if let Some(m) = &state.message {
            self.send(m.as_str(), state);
        }
        self.s.entered_at = self.now;
        self.s.reminders_sent = 0;
        self.cancel_timer();
        self.set_timer(state);
    }

    pub(super) fn issue_otp(&mut self, state: &State, resend: bool) {
        let Some(otp) = &state.otp else { return };
        let lifetime = otp
            .lifetime
            .as_ref()
            .and_then(|l| parse_duration(l.as_str()).ok())
            .map_or(600, |d| d.num_seconds());
        let request = OtpRequest {
            purpose: format!("{}/{}", self.flow_id, self.s.state),
            length: otp.length.as_ref().map_or(6, |l| *l.get()),
            lifetime_secs: lifetime,
            max_attempts: otp.attempts.as_ref().map_or(5, |a| *a.get()),
            check: otp.check.as_ref().map_or(OtpCheck::Chat, |c| *c.get()),
            reverse: otp.reverse,
            deliver: otp.deliver.unwrap_or(true) && !otp.reverse,
            send_to: otp.send_to.as_ref().map(|v| self.var_text(v.as_str())),
            bound: otp
                .bind
                .iter()
                .map(|v| (v.as_str().to_owned(), self.var_text(v.as_str())))
                .collect(),
            template: state
                .template
                .as_ref()
                .and_then(|t| self.template(t.as_str())),
            resend,
        };
        self.fx.push(Effect::IssueOtp(request));
    }
}

/// What the engine says to an unusable answer when the state has no `reprompt` of its own.
fn builtin_hint(state: &State) -> String {
    match state.kind.get() {
        StateKind::Otp => {
            let length = state
                .otp
                .as_ref()
                .and_then(|o| o.length.as_ref())
                .map_or(6, |l| *l.get());
            format!("Please type the {length}-digit code we sent you.")
        }
        _ if !state.buttons.is_empty() || state.list.is_some() => {
            "Sorry, I didn't get that. Please choose one of the options.".to_owned()
        }
        _ => "Sorry, I didn't get that. Please try again.".to_owned(),
    }
}

/// A state's choices, buttons first and then list rows, as the words that stand for each
/// (title, id, synonyms) and the state it leads to.
fn choices(state: &State) -> impl Iterator<Item = (ChoiceWords<'_>, &str)> {
    let buttons = state
        .buttons
        .iter()
        .map(|b| ((&b.id, &b.title, b.synonyms.as_slice()), b.goto.as_str()));
    let rows = state
        .list
        .iter()
        .flat_map(|l| &l.rows)
        .map(|r| ((&r.id, &r.title, r.synonyms.as_slice()), r.goto.as_str()));
    buttons.chain(rows)
}

type ChoiceWords<'s> = (
    &'s Located<String>,
    &'s Located<String>,
    &'s [Located<String>],
);

/// The state a button or list row with this exact id leads to.
fn choice_with_id<'s>(state: &'s State, id: &str) -> Option<&'s str> {
    choices(state)
        .find(|((choice_id, _, _), _)| choice_id.as_str() == id)
        .map(|(_, goto)| goto)
}

/// The state a button or list row leads to whose title, id or a synonym is `typed` (already
/// normalised): case, spacing and surrounding punctuation do not matter.
fn choice_named<'s>(state: &'s State, typed: &str) -> Option<&'s str> {
    choices(state)
        .find(|((id, title, synonyms), _)| {
            [*title, *id]
                .into_iter()
                .chain(synonyms.iter())
                .any(|w| normalize(w.as_str()) == typed)
        })
        .map(|(_, goto)| goto)
}

/// The code in a customer's message, read exactly as `/check` reads one (see
/// [`crate::otp::find_attempt`]); only its ASCII digits leave here.
pub(super) fn find_code(body: &str, length: usize) -> Option<String> {
    crate::otp::find_attempt(body, length).map(|code| code.expose().to_owned())
}
