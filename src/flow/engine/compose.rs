//! Composing outbound messages: message texts in the session's language with variables filled
//! in, buttons and lists, and the template that stands in outside the 24-hour window.

use rand::RngCore;

use super::run::Run;
use super::types::{Choice, Effect, MessageBody, OutboundMessage, TemplateRef};
use crate::flow::model::{State, StateKind};
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
                    title: b.title.as_str().to_owned(),
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
                    title: r.title.as_str().to_owned(),
                    description: r.description.as_ref().map(|d| d.as_str().to_owned()),
                })
                .collect();
            return Some(MessageBody::List {
                text,
                button: list.button.as_str().to_owned(),
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

    pub(super) fn builtin(&mut self, id: &str, text: String) {
        self.fx.push(Effect::Send(OutboundMessage {
            message_id: id.to_owned(),
            body: MessageBody::Text { text },
            template: None,
        }));
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
        let default = self
            .flow
            .default_language
            .as_ref()
            .map_or("en", |l| l.as_str());
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
