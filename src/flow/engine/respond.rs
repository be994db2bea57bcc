//! How the engine answers the customer: matching typed text and taps to choices, codes, resends,
//! interrupts and re-prompts with a bounded retry count.

use rand::RngCore;

use super::contains_words;
use super::run::Run;
use super::types::{Effect, MessageBody, OtpRequest};
use crate::flow::duration::parse_duration;
use crate::flow::located::Located;
use crate::flow::model::{Interrupt, InterruptMatch, LocalText, OtpCheck, State, StateKind};
use crate::flow::words::{normalize, words};
use serde_json::Value;

/// Unusable answers re-prompted before giving up, unless a state says otherwise.
const DEFAULT_MAX_RETRIES: u32 = 3;
/// New codes a customer may ask for in one OTP state, unless the flow says otherwise.
const DEFAULT_MAX_RESENDS: u32 = 2;

impl<R: RngCore + ?Sized> Run<'_, R> {
    /// A typed message, in this order: an interrupt word that is the whole message; the
    /// state's own answers (a choice's title in any language, id or synonym; a resend word; a
    /// code); in a free-text state, the message as the answer; an interrupt with `match =
    /// "word"` whose words appear inside the message; else a re-prompt.
    pub(super) fn text(&mut self, state: &State, body: &str) {
        let typed = normalize(body);
        if let Some(name) = self.interrupt_in(body, &typed, false) {
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
                } else if !self.word_interrupt(body, &typed) {
                    self.reprompt(state);
                }
            }
            StateKind::Otp => self.code_typed(state, body, &typed),
            StateKind::Hook => {
                // The answer is on its way; say so once rather than re-prompting.
                if !self.word_interrupt(body, &typed) && self.s.retries == 0 {
                    self.s.retries = 1;
                    self.builtin("busy", &[]);
                }
            }
            StateKind::Say | StateKind::End => {}
        }
    }

    /// The interrupt a message calls for: with `inside` false, one of whose words is the whole
    /// message (whatever its `match`); with `inside` true, a `match = "word"` interrupt whose
    /// words appear in the message as whole words, in order, as `[start] keywords` do.
    fn interrupt_in(&self, body: &str, typed: &str, inside: bool) -> Option<String> {
        let by_word = |i: &Interrupt| {
            i.matching
                .as_ref()
                .is_some_and(|m| m.get() == &InterruptMatch::Word)
        };
        if inside && !self.flow.interrupts.values().any(by_word) {
            return None;
        }
        let said = if inside { words(body) } else { Vec::new() };
        self.flow
            .interrupts
            .iter()
            .find(|(_, i)| {
                let by_word = by_word(i);
                i.words.iter().any(|w| {
                    if inside {
                        by_word && contains_words(&said, &words(w.as_str()))
                    } else {
                        normalize(w.as_str()) == typed
                    }
                })
            })
            .map(|(name, _)| name.clone())
    }

    /// Applies a `match = "word"` interrupt found inside the message; false when none is.
    fn word_interrupt(&mut self, body: &str, typed: &str) -> bool {
        match self.interrupt_in(body, typed, true) {
            Some(name) => self.interrupt_named(&name),
            None => false,
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
            (Some(_), OtpCheck::Api) if !otp.reverse => self.builtin("use_site", &[]),
            (Some(code), _) => self.fx.push(Effect::VerifyOtp { code }),
            (None, _) => {
                if !self.word_interrupt(body, typed) {
                    self.reprompt(state);
                }
            }
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
            None => {
                let (id, params) = builtin_hint(state);
                ("reprompt".to_owned(), self.builtin_text(id, &params))
            }
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
                &[("attempts_left", Value::from(attempts_left))],
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
            self.builtin("no_resend", &[]);
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

/// The built-in text (and its parameters) for an unusable answer when the state has no
/// `reprompt` of its own.
fn builtin_hint(state: &State) -> (&'static str, Vec<(&'static str, Value)>) {
    match state.kind.get() {
        StateKind::Otp => {
            let length = state
                .otp
                .as_ref()
                .and_then(|o| o.length.as_ref())
                .map_or(6, |l| *l.get());
            ("reprompt_code", vec![("length", Value::from(length))])
        }
        _ if !state.buttons.is_empty() || state.list.is_some() => ("reprompt_choices", vec![]),
        _ => ("reprompt_text", vec![]),
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
    &'s Located<LocalText>,
    &'s [Located<String>],
);

/// The state a button or list row with this exact id leads to.
fn choice_with_id<'s>(state: &'s State, id: &str) -> Option<&'s str> {
    choices(state)
        .find(|((choice_id, _, _), _)| choice_id.as_str() == id)
        .map(|(_, goto)| goto)
}

/// The state a button or list row leads to whose title in any of the flow's languages, id or a
/// synonym is `typed` (already normalised): case, spacing and surrounding punctuation do not
/// matter, and a Hindi customer typing the English title is understood too.
fn choice_named<'s>(state: &'s State, typed: &str) -> Option<&'s str> {
    choices(state)
        .find(|((id, title, synonyms), _)| {
            normalize(id.as_str()) == typed
                || synonyms.iter().any(|w| normalize(w.as_str()) == typed)
                || title_is(title, typed)
        })
        .map(|(_, goto)| goto)
}

fn title_is(title: &Located<LocalText>, typed: &str) -> bool {
    match title.get() {
        LocalText::Plain(t) => normalize(t) == typed,
        LocalText::PerLanguage(texts) => texts.values().any(|t| normalize(t.as_str()) == typed),
    }
}

/// The code in a customer's message, read exactly as `/check` reads one (see
/// [`crate::otp::find_attempt`]); only its ASCII digits leave here.
pub(super) fn find_code(body: &str, length: usize) -> Option<String> {
    crate::otp::find_attempt(body, length).map(|code| code.expose().to_owned())
}
