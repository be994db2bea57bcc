//! Composing outbound messages: message texts in the session's language with variables filled
//! in, buttons and lists, and the template that stands in outside the 24-hour window.

use rand::RngCore;
use serde_json::Value;

use super::run::Run;
use super::types::{Choice, Effect, MessageBody, OutboundMessage, TemplateRef};
use crate::flow::builtin_texts::text_for;
use crate::flow::located::Located;
use crate::flow::model::{LocalText, State, StateKind};
use crate::flow::render::render;

impl<R: RngCore + ?Sized> Run<'_, R> {
    /// The state's message with its buttons or list, as first sent.
    pub(super) fn send_prompt(&mut self, state: &State) {
        let Some(id) = &state.message else { return };
        if let Some(body) = self.prompt_body(state) {
            let template = state
                .template
                .as_ref()
                .and_then(|t| self.template(t.as_str()));
            self.fx.push(Effect::Send(OutboundMessage {
                message_id: id.as_str().to_owned(),
                body,
                template,
            }));
        }
    }

    pub(super) fn prompt_body(&self, state: &State) -> Option<MessageBody> {
        let text = state
            .message
            .as_ref()
            .map(|m| self.text_of(m.as_str()))
            .unwrap_or_default();
        if !state.buttons.is_empty() {
            let buttons = state
                .buttons
                .iter()
                .map(|b| Choice {
                    id: b.id.as_str().to_owned(),
                    title: self.local(&b.title),
                    description: None,
                })
                .collect();
            return Some(MessageBody::Buttons { text, buttons });
        }
        if let Some(list) = &state.list {
            let rows = list
                .rows
                .iter()
                .map(|r| Choice {
                    id: r.id.as_str().to_owned(),
                    title: self.local(&r.title),
                    description: r.description.as_ref().map(|d| self.local(d)),
                })
                .collect();
            return Some(MessageBody::List {
                text,
                button: self.local(&list.button),
                rows,
            });
        }
        state.message.as_ref().map(|_| MessageBody::Text { text })
    }

    /// Sends message `id` as plain text (the state's template goes with its own message only).
    /// Sends message `id` with a given template for outside the 24-hour window.
    pub(super) fn send_with_template(&mut self, id: &str, template: Option<&str>) {
        let body = MessageBody::Text {
            text: self.text_of(id),
        };
        let template = template.and_then(|t| self.template(t));
        self.fx.push(Effect::Send(OutboundMessage {
            message_id: id.to_owned(),
            body,
            template,
        }));
    }

    pub(super) fn send(&mut self, id: &str, state: &State) {
        let body = MessageBody::Text {
            text: self.text_of(id),
        };
        let own = state.message.as_ref().is_some_and(|m| m.as_str() == id)
            && state.kind.get() != &StateKind::Otp;
        let template = if own {
            state
                .template
                .as_ref()
                .and_then(|t| self.template(t.as_str()))
        } else {
            None
        };
        self.fx.push(Effect::Send(OutboundMessage {
            message_id: id.to_owned(),
            body,
            template,
        }));
    }

    /// Sends built-in text `id` (see [`crate::flow::builtin_texts`]) in the session's language.
    pub(super) fn builtin(&mut self, id: &str, params: &[(&str, Value)]) {
        let text = self.builtin_text(id, params);
        self.fx.push(Effect::Send(OutboundMessage {
            message_id: id.to_owned(),
            body: MessageBody::Text { text },
            template: None,
        }));
    }

    /// Built-in text `id` in the session's language (the flow's `[texts]` first), rendered with
    /// the session's variables and the engine's `params`.
    pub(super) fn builtin_text(&self, id: &str, params: &[(&str, Value)]) -> String {
        let text = text_for(self.flow, id, &self.s.lang);
        if params.is_empty() {
            return render(text, &self.s.vars);
        }
        let mut vars = self.s.vars.clone();
        for (name, value) in params {
            vars.insert((*name).to_owned(), value.clone());
        }
        render(text, &vars)
    }

    /// A title, row description or list button in the session's language.
    fn local(&self, text: &Located<LocalText>) -> String {
        text.in_language(&self.s.lang, self.default_language())
            .to_owned()
    }

    fn default_language(&self) -> &str {
        self.flow.default_language()
    }

    /// A re-prompt: never templated, it answers a message the customer has just sent.
    pub(super) fn push_reprompt(&mut self, message_id: String, body: MessageBody) {
        self.fx.push(Effect::Send(OutboundMessage {
            message_id,
            body,
            template: None,
        }));
    }

    /// Message text in the session's language, else the default language, rendered.
    pub(super) fn text_of(&self, id: &str) -> String {
        let Some(texts) = self.flow.messages.get(id) else {
            return String::new();
        };
        let default = self.default_language();
        let text = texts
            .get(&self.s.lang)
            .or_else(|| texts.get(default))
            .or_else(|| texts.values().next());
        text.map(|t| render(t.as_str(), &self.s.vars))
            .unwrap_or_default()
    }

    pub(super) fn template(&self, id: &str) -> Option<TemplateRef> {
        let t = self.flow.templates.get(id)?;
        Some(TemplateRef {
            name: t.name.as_str().to_owned(),
            language: crate::flow::template_content::send_language(self.flow, t, &self.s.lang),
            category: *t.category.get(),
            parameters: t
                .parameters
                .iter()
                .map(|p| render(p.as_str(), &self.s.vars))
                .collect(),
            quick_replies: t
                .quick_replies
                .iter()
                .map(|q| q.as_str().to_owned())
                .collect(),
        })
    }
}
