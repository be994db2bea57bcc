//! What waotp sends to WhatsApp, in its own words, and how each kind becomes Meta's JSON.
//!
//! Owns [`Outgoing`] (one message) and [`SendRequest`] (a message with its recipient). Every
//! limit in `limits` is checked in [`SendRequest::graph_body`], before any network call, so a
//! message that Meta would refuse is refused here with a typed error.
//!
//! A recipient is a phone number, sent as `to`, or — for a customer who did not share their
//! number — a business-scoped user id, sent as `recipient` with no `to` (Meta's Messages API).
//! Authentication templates (one-tap, zero-tap, copy-code) cannot go to a user id: Meta answers
//! 131062, so such a request is refused here ([`MessageError::NeedsPhoneNumber`]).
//! `Debug` output hides the recipient's number and the one-time code. No I/O here.

use std::fmt;

use serde_json::{json, Value};

use super::limits::*;
use crate::domain::{is_user_id, MessageId};
use crate::telemetry::Masked;

/// A reply button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub id: String,
    pub title: String,
}

/// A row of a list message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
}

/// A titled group of rows; a list with one section may leave the title out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub title: Option<String>,
    pub rows: Vec<Row>,
}

/// One message to a customer.
#[derive(Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text {
        body: String,
    },
    /// Text with up to three reply buttons.
    Buttons {
        body: String,
        buttons: Vec<Button>,
    },
    /// Text with a menu of up to ten rows, opened by `button`.
    List {
        body: String,
        button: String,
        sections: Vec<Section>,
    },
    /// An approved template with positional body parameters (sent as [`template_text`]) and,
    /// for its quick-reply buttons in order, the payload a tap on each returns.
    Template {
        name: String,
        language: String,
        body_parameters: Vec<String>,
        quick_replies: Vec<String>,
    },
    /// An authentication template with a copy-code button: Meta wants the code twice, as the
    /// body parameter and as the URL button's parameter.
    AuthenticationCode {
        name: String,
        language: String,
        code: String,
    },
}

impl Outgoing {
    pub fn text(body: impl Into<String>) -> Outgoing {
        Outgoing::Text { body: body.into() }
    }

    /// A list with one untitled section.
    pub fn list(body: impl Into<String>, button: impl Into<String>, rows: Vec<Row>) -> Outgoing {
        Outgoing::List {
            body: body.into(),
            button: button.into(),
            sections: vec![Section { title: None, rows }],
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Outgoing::Text { .. } => "text",
            Outgoing::Buttons { .. } => "buttons",
            Outgoing::List { .. } => "list",
            Outgoing::Template { .. } => "template",
            Outgoing::AuthenticationCode { .. } => "authentication",
        }
    }
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outgoing::Text { body } => f.debug_struct("Text").field("body", body).finish(),
            Outgoing::Buttons { body, buttons } => f
                .debug_struct("Buttons")
                .field("body", body)
                .field("buttons", buttons)
                .finish(),
            Outgoing::List {
                body,
                button,
                sections,
            } => f
                .debug_struct("List")
                .field("body", body)
                .field("button", button)
                .field("sections", sections)
                .finish(),
            Outgoing::Template {
                name,
                language,
                body_parameters,
                quick_replies,
            } => f
                .debug_struct("Template")
                .field("name", name)
                .field("language", language)
                .field("body_parameters", body_parameters)
                .field("quick_replies", quick_replies)
                .finish(),
            // The code is a live credential until it expires.
            Outgoing::AuthenticationCode { name, language, .. } => f
                .debug_struct("AuthenticationCode")
                .field("name", name)
                .field("language", language)
                .field("code", &"<redacted>")
                .finish(),
        }
    }
}

/// A message with its recipient, ready for the Graph API.
#[derive(Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// The customer's number (digits, or `+` and digits: E.164), or their business-scoped user
    /// id when WhatsApp did not give their number.
    pub to: String,
    pub message: Outgoing,
    /// The customer message this one answers (shown quoted in the chat).
    pub reply_to: Option<MessageId>,
    /// Echoed back by WhatsApp in status webhooks (`biz_opaque_callback_data`), so a status can be
    /// matched to the outbox entry that caused it.
    pub tracker: Option<String>,
}

impl SendRequest {
    pub fn new(to: impl Into<String>, message: Outgoing) -> SendRequest {
        SendRequest {
            to: to.into(),
            message,
            reply_to: None,
            tracker: None,
        }
    }

    /// Meta's JSON for this request, or why WhatsApp would refuse it.
    pub fn graph_body(&self) -> Result<Value, MessageError> {
        let to_user_id = is_user_id(&self.to);
        if to_user_id {
            if matches!(self.message, Outgoing::AuthenticationCode { .. }) {
                return Err(MessageError::NeedsPhoneNumber);
            }
        } else {
            check_recipient(&self.to)?;
        }
        if let Some(tracker) = &self.tracker {
            check_len("tracker", tracker, TRACKER_MAX)?;
        }
        let (kind, content) = message_content(&self.message)?;
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "type": kind,
            kind: content,
        });
        body[if to_user_id { "recipient" } else { "to" }] = json!(self.to);
        if let Some(reply_to) = &self.reply_to {
            body["context"] = json!({ "message_id": reply_to.as_str() });
        }
        if let Some(tracker) = &self.tracker {
            body["biz_opaque_callback_data"] = json!(tracker);
        }
        Ok(body)
    }
}

impl fmt::Debug for SendRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendRequest")
            .field("to", &Masked(&self.to))
            .field("message", &self.message)
            .field("reply_to", &self.reply_to)
            .field("tracker", &self.tracker)
            .finish()
    }
}

/// Marks a customer's message as read and shows "typing…" while the answer is prepared. The
/// indicator disappears when the answer arrives or after 25 seconds.
pub fn read_receipt_body(message_id: &MessageId) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": message_id.as_str(),
        "typing_indicator": { "type": "text" },
    })
}

/// The `type` of a message and the object stored under that key.
fn message_content(message: &Outgoing) -> Result<(&'static str, Value), MessageError> {
    match message {
        Outgoing::Text { body } => {
            check_len("text", body, TEXT_MAX)?;
            // No link previews: a preview card would push the prompt itself off the screen.
            Ok(("text", json!({ "preview_url": false, "body": body })))
        }
        Outgoing::Buttons { body, buttons } => {
            check_len("body", body, INTERACTIVE_BODY_MAX)?;
            check_count("buttons", buttons.len(), BUTTONS_MAX)?;
            for b in buttons {
                check_len("button id", &b.id, BUTTON_ID_MAX)?;
                check_len("button title", &b.title, BUTTON_TITLE_MAX)?;
            }
            // WhatsApp refuses repeated ids and titles alike.
            check_unique("button id", buttons.iter().map(|b| b.id.as_str()))?;
            check_unique("button title", buttons.iter().map(|b| b.title.as_str()))?;
            let buttons: Vec<Value> = buttons
                .iter()
                .map(|b| json!({ "type": "reply", "reply": { "id": b.id, "title": b.title } }))
                .collect();
            Ok((
                "interactive",
                json!({
                    "type": "button",
                    "body": { "text": body },
                    "action": { "buttons": buttons },
                }),
            ))
        }
        Outgoing::List {
            body,
            button,
            sections,
        } => {
            check_len("body", body, INTERACTIVE_BODY_MAX)?;
            check_len("list button", button, LIST_BUTTON_MAX)?;
            check_count("sections", sections.len(), LIST_ROWS_MAX)?;
            // The ten-row limit counts rows across all sections.
            let rows = sections.iter().flat_map(|s| &s.rows);
            check_count("list rows", rows.clone().count(), LIST_ROWS_MAX)?;
            for row in rows.clone() {
                check_len("row id", &row.id, ROW_ID_MAX)?;
                check_len("row title", &row.title, ROW_TITLE_MAX)?;
                if let Some(description) = &row.description {
                    check_len("row description", description, ROW_DESCRIPTION_MAX)?;
                }
            }
            check_unique("row id", rows.map(|r| r.id.as_str()))?;
            for section in sections {
                match &section.title {
                    Some(title) => check_len("section title", title, SECTION_TITLE_MAX)?,
                    None if sections.len() > 1 => return Err(MessageError::UntitledSection),
                    None => {}
                }
            }
            let sections: Vec<Value> = sections.iter().map(section_json).collect();
            Ok((
                "interactive",
                json!({
                    "type": "list",
                    "body": { "text": body },
                    "action": { "button": button, "sections": sections },
                }),
            ))
        }
        Outgoing::Template {
            name,
            language,
            body_parameters,
            quick_replies,
        } => {
            let mut template = template_head(name, language)?;
            let mut components = Vec::new();
            if !body_parameters.is_empty() {
                let max = template_parameter_max(!quick_replies.is_empty());
                let mut parameters = Vec::with_capacity(body_parameters.len());
                for value in body_parameters {
                    let text = template_text(value);
                    check_len("template parameter", &text, max)?;
                    parameters.push(text_parameter(&text));
                }
                components.push(json!({ "type": "body", "parameters": parameters }));
            }
            if !quick_replies.is_empty() {
                check_count("quick replies", quick_replies.len(), QUICK_REPLIES_MAX)?;
                for (index, payload) in quick_replies.iter().enumerate() {
                    check_len("quick-reply payload", payload, QUICK_REPLY_PAYLOAD_MAX)?;
                    // Without a payload Meta echoes the button's label, which a flow can only
                    // guess at; with one the tap names its choice exactly.
                    components.push(json!({
                        "type": "button",
                        "sub_type": "quick_reply",
                        "index": index.to_string(),
                        "parameters": [{ "type": "payload", "payload": payload }],
                    }));
                }
            }
            if !components.is_empty() {
                template["components"] = json!(components);
            }
            Ok(("template", template))
        }
        Outgoing::AuthenticationCode {
            name,
            language,
            code,
        } => {
            let mut template = template_head(name, language)?;
            check_len("code", code, CODE_MAX)?;
            template["components"] = json!([
                { "type": "body", "parameters": [text_parameter(code)] },
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "0",
                    "parameters": [text_parameter(code)],
                },
            ]);
            Ok(("template", template))
        }
    }
}

fn section_json(section: &Section) -> Value {
    let rows: Vec<Value> = section
        .rows
        .iter()
        .map(|r| {
            let mut row = json!({ "id": r.id, "title": r.title });
            if let Some(description) = &r.description {
                row["description"] = json!(description);
            }
            row
        })
        .collect();
    let mut value = json!({ "rows": rows });
    if let Some(title) = &section.title {
        value["title"] = json!(title);
    }
    value
}

fn template_head(name: &str, language: &str) -> Result<Value, MessageError> {
    check_len("template name", name, TEMPLATE_NAME_MAX)?;
    check_len("template language", language, LANGUAGE_MAX)?;
    Ok(json!({
        "name": name,
        "language": { "policy": "deterministic", "code": language },
    }))
}

fn text_parameter(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}
