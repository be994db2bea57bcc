//! Meta's inbound webhook JSON, turned into [`InboundEvent`]s and [`TemplateUpdate`]s.
//!
//! This is the only code that knows the shape of WhatsApp's webhook bodies. It is strict about
//! the envelope (not JSON, or not a `whatsapp_business_account` object with an `entry` list, is a
//! [`PayloadError`]) and lenient about everything inside it: unknown `field`s, message types and
//! extra fields are acknowledged and ignored, and a single malformed item is skipped with a
//! reason instead of failing the whole delivery — WhatsApp would otherwise retry it for a week.
//!
//! A customer who chose a WhatsApp username may not share their number: their messages then
//! carry `from_user_id` (their business-scoped user id) and no `from`, their contact card a
//! `user_id` and no `wa_id`, and statuses of messages sent to them `recipient_user_id` and no
//! `recipient_id`. Such a customer is identified by that user id; anyone whose number is given
//! is identified by the number.

use crate::domain::{
    DeliveryStatus, ErrorInfo, InboundEvent, InboundMessage, MediaKind, MessageContent, MessageId,
    ReplyContext, StatusKind, WaId,
};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Why a signed body was refused with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a WhatsApp webhook envelope: {0}")]
    NotEnvelope(String),
}

/// Everything one POST carried.
#[derive(Debug, Default)]
pub struct ParsedWebhook {
    pub events: Vec<InboundEvent>,
    /// Changes whose `field` we do not act on (account, call updates…).
    pub ignored_changes: usize,
    /// `message_template_status_update` and `message_template_quality_update` changes.
    pub templates: Vec<TemplateUpdate>,
    /// Items that could not be read, with the reason; acknowledged all the same.
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    object: String,
    #[serde(borrow)]
    entry: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
// Field order matters: serde also reads a struct from a JSON array, field by field, and the
// first field decides how a hostile `"entry": [[[…]]]` fails. `changes` first makes it a
// malformed envelope (400) at serde_json's depth limit; a raw `id` first would swallow any depth.
struct Entry<'a> {
    #[serde(default, borrow)]
    changes: Vec<Change<'a>>,
    /// Unix seconds of the entry, which names a template change among its repeats.
    #[serde(default)]
    time: Option<i64>,
    /// The WhatsApp Business Account the entry is about (read for template changes only).
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
}

/// What WhatsApp reported about one of the account's message templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateUpdate {
    /// The WhatsApp Business Account the template belongs to: the entry's `id`.
    pub waba_id: Option<String>,
    /// Meta's template id (a number in the JSON, kept as text).
    pub template_id: String,
    pub name: String,
    pub language: String,
    /// The entry's `time` (Unix seconds), 0 when absent.
    pub time: i64,
    pub change: TemplateChange,
}

/// The change itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateChange {
    /// `message_template_status_update`: `event` is what happened (`APPROVED`, `REJECTED`,
    /// `PAUSED`, `DISABLED`, `FLAGGED`, `REINSTATED`, `PENDING_DELETION`, …; not always a
    /// status: see [`crate::templates::status_after`]), `reason` Meta's reason (`NONE` when it
    /// gave none, absent or `null` for a deletion), and what else Meta says of it.
    Status {
        event: String,
        reason: Option<String>,
        notes: StatusNotes,
    },
    /// `message_template_quality_update`.
    Quality { previous: String, new: String },
}

/// What Meta adds to a status change, each only for some events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusNotes {
    /// `rejection_info.reason`: why a template was rejected (`INVALID_FORMAT` rejections).
    pub rejection_detail: Option<String>,
    /// `rejection_info.recommendation`: how to fix it.
    pub rejection_recommendation: Option<String>,
    /// `other_info.title`: `FIRST_PAUSE`, `SECOND_PAUSE`, `RATE_LIMITING_PAUSE`, `UNPAUSE`,
    /// `DISABLED`.
    pub title: Option<String>,
    /// `other_info.description`: Meta's sentence on the pause or unpause.
    pub description: Option<String>,
    /// `disable_info.disable_date`: Unix seconds of the (coming) disabling.
    pub disable_date: Option<i64>,
}

#[derive(Deserialize)]
struct RawTemplateValue {
    #[serde(deserialize_with = "id_text")]
    message_template_id: String,
    message_template_name: String,
    message_template_language: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    rejection_info: Option<RawRejection>,
    #[serde(default)]
    other_info: Option<RawOtherInfo>,
    #[serde(default)]
    disable_info: Option<RawDisableInfo>,
    #[serde(default)]
    previous_quality_score: Option<String>,
    #[serde(default)]
    new_quality_score: Option<String>,
}

#[derive(Deserialize)]
struct RawRejection {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    recommendation: Option<String>,
}

#[derive(Deserialize)]
struct RawOtherInfo {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawDisableInfo {
    /// Meta documents a number and shows it quoted in its syntax: both are read.
    #[serde(default)]
    disable_date: Option<serde_json::Value>,
}

impl RawDisableInfo {
    fn unix_seconds(&self) -> Option<i64> {
        match self.disable_date.as_ref()? {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// Meta sends template ids as JSON numbers (beyond what a double holds exactly), at times as
/// strings; both are kept as their digits.
fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u64),
        Text(String),
    }
    Ok(match Id::deserialize(d)? {
        Id::Number(n) => n.to_string(),
        Id::Text(s) => s,
    })
}

/// An entry's `id` (a string of digits, at times a number) as text; `None` when empty or of
/// another type.
fn account_id(raw: &RawValue) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(raw.get()).ok()? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn template_update(field: &str, value: &RawValue, time: i64) -> Result<TemplateUpdate, String> {
    let raw: RawTemplateValue =
        serde_json::from_str(value.get()).map_err(|e| format!("unreadable {field} change: {e}"))?;
    let change = if field == "message_template_quality_update" {
        TemplateChange::Quality {
            previous: raw.previous_quality_score.unwrap_or_default(),
            new: raw
                .new_quality_score
                .ok_or_else(|| format!("{field} change without new_quality_score"))?,
        }
    } else {
        TemplateChange::Status {
            event: raw
                .event
                .ok_or_else(|| format!("{field} change without event"))?
                .to_ascii_uppercase(),
            reason: raw.reason,
            notes: StatusNotes {
                rejection_detail: raw.rejection_info.as_ref().and_then(|r| r.reason.clone()),
                rejection_recommendation: raw.rejection_info.and_then(|r| r.recommendation),
                title: raw.other_info.as_ref().and_then(|o| o.title.clone()),
                description: raw.other_info.and_then(|o| o.description),
                disable_date: raw.disable_info.and_then(|d| d.unix_seconds()),
            },
        }
    };
    Ok(TemplateUpdate {
        waba_id: None,
        template_id: raw.message_template_id,
        name: raw.message_template_name,
        language: raw.message_template_language,
        time,
        change,
    })
}

#[derive(Deserialize)]
struct Change<'a> {
    #[serde(default)]
    field: String,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct MessagesValue<'a> {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Vec<ContactCard>,
    #[serde(default, borrow)]
    messages: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    statuses: Vec<&'a RawValue>,
    #[serde(default)]
    errors: Vec<RawError>,
}

#[derive(Deserialize)]
struct Metadata {
    phone_number_id: Option<String>,
}

#[derive(Deserialize)]
struct ContactCard {
    wa_id: Option<String>,
    user_id: Option<String>,
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    code: i64,
    title: Option<String>,
    message: Option<String>,
    error_data: Option<ErrorData>,
}

#[derive(Deserialize)]
struct ErrorData {
    details: Option<String>,
}

impl From<RawError> for ErrorInfo {
    fn from(e: RawError) -> ErrorInfo {
        ErrorInfo {
            code: e.code,
            title: e.title,
            message: e.message,
            details: e.error_data.and_then(|d| d.details),
        }
    }
}

/// Meta sends timestamps as strings of Unix seconds; accept numbers too.
fn unix_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ts<'a> {
        Num(i64),
        Str(&'a str),
        Owned(String),
    }
    let parse = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| serde::de::Error::custom(format!("timestamp `{s}` is not Unix seconds")))
    };
    match Ts::deserialize(d)? {
        Ts::Num(n) => Ok(n),
        Ts::Str(s) => parse(s),
        Ts::Owned(s) => parse(&s),
    }
}

#[derive(Deserialize)]
struct RawMessage {
    from: Option<String>,
    id: String,
    #[serde(deserialize_with = "unix_seconds")]
    timestamp: i64,
    #[serde(rename = "type", default)]
    kind: String,
    from_user_id: Option<String>,
    context: Option<RawContext>,
    #[serde(default)]
    errors: Vec<RawError>,
    // The per-type parts, listed here rather than flattened: `flatten` makes serde buffer the
    // whole message, which costs measurably on the webhook's hot path.
    text: Option<RawText>,
    interactive: Option<RawInteractive>,
    button: Option<RawButton>,
    image: Option<RawMedia>,
    video: Option<RawMedia>,
    audio: Option<RawMedia>,
    document: Option<RawMedia>,
    sticker: Option<RawMedia>,
    location: Option<RawLocation>,
    contacts: Option<Vec<RawSharedContact>>,
    reaction: Option<RawReaction>,
    order: Option<RawOrder>,
    system: Option<RawSystem>,
    revoke: Option<RawRevoke>,
    edit: Option<Box<RawEdit>>,
    unsupported: Option<RawUnsupported>,
}

#[derive(Deserialize)]
struct RawContext {
    id: Option<String>,
    from: Option<String>,
    #[serde(default)]
    forwarded: bool,
    #[serde(default)]
    frequently_forwarded: bool,
}

#[derive(Deserialize)]
struct RawText {
    #[serde(default)]
    body: String,
}

#[derive(Deserialize)]
struct RawInteractive {
    #[serde(rename = "type", default)]
    kind: String,
    button_reply: Option<RawReply>,
    list_reply: Option<RawReply>,
    nfm_reply: Option<RawFlowReply>,
}

#[derive(Deserialize)]
struct RawReply {
    id: String,
    #[serde(default)]
    title: String,
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawFlowReply {
    name: Option<String>,
    body: Option<String>,
    #[serde(default)]
    response_json: String,
}

#[derive(Deserialize)]
struct RawButton {
    #[serde(default)]
    payload: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct RawMedia {
    #[serde(default)]
    id: String,
    mime_type: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
    #[serde(default)]
    voice: bool,
}

#[derive(Deserialize)]
struct RawLocation {
    latitude: f64,
    longitude: f64,
    name: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize)]
struct RawSharedContact {
    name: Option<RawContactName>,
}

#[derive(Deserialize)]
struct RawContactName {
    formatted_name: Option<String>,
    first_name: Option<String>,
}

#[derive(Deserialize)]
struct RawReaction {
    message_id: Option<String>,
    emoji: Option<String>,
}

#[derive(Deserialize)]
struct RawOrder {
    catalog_id: Option<String>,
    text: Option<String>,
    #[serde(default)]
    product_items: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawSystem {
    body: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    wa_id: Option<String>,
}

#[derive(Deserialize)]
struct RawRevoke {
    original_message_id: Option<String>,
}

#[derive(Deserialize)]
struct RawEdit {
    original_message_id: Option<String>,
    message: Option<RawEditedMessage>,
}

#[derive(Deserialize)]
struct RawEditedMessage {
    text: Option<RawText>,
    image: Option<RawMedia>,
    video: Option<RawMedia>,
}

#[derive(Deserialize)]
struct RawUnsupported {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    id: String,
    status: String,
    #[serde(deserialize_with = "unix_seconds")]
    timestamp: i64,
    recipient_id: Option<String>,
    recipient_user_id: Option<String>,
    #[serde(default)]
    errors: Vec<RawError>,
    biz_opaque_callback_data: Option<String>,
}

/// Parses a verified webhook body.
pub fn parse(body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    // JSON is UTF-8. serde_json checks that only for the strings it reads, not for values it
    // skips, so the whole body is checked first: bytes we would store must be text.
    let body = std::str::from_utf8(body)
        .map_err(|e| PayloadError::NotJson(format!("body is not UTF-8: {e}")))?;
    let envelope: Envelope<'_> = serde_json::from_str(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            PayloadError::NotJson(e.to_string())
        } else {
            PayloadError::NotEnvelope(e.to_string())
        }
    })?;
    if envelope.object != "whatsapp_business_account" {
        return Err(PayloadError::NotEnvelope(format!(
            "object is `{}`, expected `whatsapp_business_account`",
            envelope.object
        )));
    }
    let mut out = ParsedWebhook::default();
    for (change, entry) in envelope
        .entry
        .iter()
        .flat_map(|e| e.changes.iter().map(move |c| (c, e)))
    {
        let time = entry.time.unwrap_or(0);
        match (change.field.as_str(), change.value) {
            ("messages", Some(value)) => read_messages_value(value, &mut out),
            (
                field @ ("message_template_status_update" | "message_template_quality_update"),
                Some(value),
            ) => match template_update(field, value, time) {
                Ok(mut update) => {
                    update.waba_id = entry.id.and_then(account_id);
                    out.templates.push(update)
                }
                Err(reason) => out.skipped.push(reason),
            },
            _ => out.ignored_changes += 1,
        }
    }
    Ok(out)
}

fn read_messages_value(value: &RawValue, out: &mut ParsedWebhook) {
    let value: MessagesValue<'_> = match serde_json::from_str(value.get()) {
        Ok(v) => v,
        Err(e) => {
            out.skipped.push(format!("messages value: {e}"));
            return;
        }
    };
    for error in value.errors {
        // Errors at the value level (e.g. 131000 on an unreadable interactive message) say what
        // WhatsApp failed to deliver; the messages themselves still follow.
        out.skipped.push(format!(
            "WhatsApp reported error {}: {}",
            error.code,
            error.title.unwrap_or_default()
        ));
    }
    let phone_number_id = value.metadata.and_then(|m| m.phone_number_id);
    for raw in value.messages {
        match serde_json::from_str::<RawMessage>(raw.get())
            .map_err(|e| e.to_string())
            .and_then(|m| message(m, &value.contacts, phone_number_id.clone()))
        {
            Ok(m) => out.events.push(InboundEvent::Message(m)),
            Err(reason) => out.skipped.push(format!("message: {reason}")),
        }
    }
    for raw in value.statuses {
        match serde_json::from_str::<RawStatus>(raw.get())
            .map_err(|e| e.to_string())
            .and_then(|s| status(s, phone_number_id.clone()))
        {
            Ok(s) => out.events.push(InboundEvent::Status(s)),
            Err(reason) => out.skipped.push(format!("status: {reason}")),
        }
    }
}

fn message(
    mut raw: RawMessage,
    contacts: &[ContactCard],
    phone_number_id: Option<String>,
) -> Result<InboundMessage, String> {
    let card = contacts
        .iter()
        .find(|c| match (&raw.from, &raw.from_user_id) {
            (Some(from), _) => c.wa_id.as_ref() == Some(from),
            (None, Some(user_id)) => c.user_id.as_ref() == Some(user_id),
            (None, None) => false,
        })
        .or(contacts.first());
    let errors = std::mem::take(&mut raw.errors);
    let context = raw.context.take();
    let (id, from, from_user_id, timestamp) = (
        std::mem::take(&mut raw.id),
        raw.from.take(),
        raw.from_user_id.take(),
        raw.timestamp,
    );
    // The number when WhatsApp gives it, else the message's own business-scoped user id (never
    // one guessed from a contact card).
    let customer = from
        .or_else(|| from_user_id.clone())
        .ok_or("neither `from` nor `from_user_id`")?;
    let user_id = from_user_id.or_else(|| card.and_then(|c| c.user_id.clone()));
    let content = content(raw);
    Ok(InboundMessage {
        id: MessageId::parse(id).map_err(|e| e.to_string())?,
        from: WaId::parse(customer).map_err(|e| e.to_string())?,
        user_id,
        profile_name: card.and_then(|c| c.profile.as_ref()?.name.clone()),
        timestamp,
        phone_number_id,
        context: context.map(|c| ReplyContext {
            message_id: c.id.and_then(|id| MessageId::parse(id).ok()),
            from: c.from,
            forwarded: c.forwarded,
            frequently_forwarded: c.frequently_forwarded,
        }),
        content,
        errors: errors.into_iter().map(ErrorInfo::from).collect(),
    })
}

fn unsupported(kind: &str) -> MessageContent {
    MessageContent::Unsupported {
        kind: if kind.is_empty() { "unknown" } else { kind }.to_owned(),
    }
}

fn content(body: RawMessage) -> MessageContent {
    let kind = body.kind.as_str();
    let media = |kind: MediaKind, m: Option<RawMedia>| match m {
        Some(m) => MessageContent::Media {
            kind: if m.voice { MediaKind::Voice } else { kind },
            media_id: m.id,
            mime_type: m.mime_type,
            caption: m.caption,
            filename: m.filename,
        },
        None => unsupported(kind_name(kind)),
    };
    match kind {
        "text" => match body.text {
            Some(t) => MessageContent::Text { body: t.body },
            None => unsupported(kind),
        },
        "interactive" => match body.interactive {
            Some(RawInteractive {
                button_reply: Some(r),
                ..
            }) => MessageContent::ButtonReply {
                id: r.id,
                title: r.title,
            },
            Some(RawInteractive {
                list_reply: Some(r),
                ..
            }) => MessageContent::ListReply {
                id: r.id,
                title: r.title,
                description: r.description,
            },
            Some(RawInteractive {
                nfm_reply: Some(r), ..
            }) => MessageContent::FlowReply {
                name: r.name,
                body: r.body,
                response_json: r.response_json,
            },
            Some(other) if !other.kind.is_empty() => unsupported(&other.kind),
            _ => unsupported(kind),
        },
        "button" => match body.button {
            Some(b) => MessageContent::QuickReply {
                payload: b.payload,
                text: b.text,
            },
            None => unsupported(kind),
        },
        "image" => media(MediaKind::Image, body.image),
        "video" => media(MediaKind::Video, body.video),
        "audio" => media(MediaKind::Audio, body.audio),
        "document" => media(MediaKind::Document, body.document),
        "sticker" => media(MediaKind::Sticker, body.sticker),
        "location" => match body.location {
            Some(l) => MessageContent::Location {
                latitude: l.latitude,
                longitude: l.longitude,
                name: l.name,
                address: l.address,
            },
            None => unsupported(kind),
        },
        "contacts" => MessageContent::Contacts {
            names: body
                .contacts
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.name.and_then(|n| n.formatted_name.or(n.first_name)))
                .collect(),
        },
        "reaction" => match body.reaction {
            Some(r) => MessageContent::Reaction {
                message_id: r.message_id.and_then(|id| MessageId::parse(id).ok()),
                emoji: r.emoji.filter(|e| !e.is_empty()),
            },
            None => unsupported(kind),
        },
        "order" => match body.order {
            Some(o) => MessageContent::Order {
                catalog_id: o.catalog_id,
                items: o.product_items.len(),
                text: o.text.filter(|t| !t.is_empty()),
            },
            None => unsupported(kind),
        },
        "system" => match body.system {
            Some(s) => MessageContent::System {
                kind: s.kind,
                body: s.body,
                new_wa_id: s.wa_id,
            },
            None => unsupported(kind),
        },
        "revoke" => MessageContent::Revoked {
            original_message_id: body
                .revoke
                .and_then(|r| r.original_message_id)
                .and_then(|id| MessageId::parse(id).ok()),
        },
        "edit" => {
            let edit = body.edit;
            let text = edit
                .as_ref()
                .and_then(|e| e.message.as_ref())
                .and_then(|m| match (&m.text, &m.image, &m.video) {
                    (Some(t), _, _) => Some(t.body.clone()),
                    (None, Some(media), _) | (None, None, Some(media)) => media.caption.clone(),
                    _ => None,
                });
            MessageContent::Edited {
                original_message_id: edit
                    .and_then(|e| e.original_message_id)
                    .and_then(|id| MessageId::parse(id).ok()),
                text,
            }
        }
        "unsupported" => unsupported(
            body.unsupported
                .and_then(|u| u.kind)
                .as_deref()
                .unwrap_or("unsupported"),
        ),
        other => unsupported(other),
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "image",
        MediaKind::Video => "video",
        MediaKind::Audio | MediaKind::Voice => "audio",
        MediaKind::Document => "document",
        MediaKind::Sticker => "sticker",
    }
}

fn status(raw: RawStatus, phone_number_id: Option<String>) -> Result<DeliveryStatus, String> {
    Ok(DeliveryStatus {
        message_id: MessageId::parse(raw.id).map_err(|e| e.to_string())?,
        recipient: WaId::parse(
            raw.recipient_id
                .or_else(|| raw.recipient_user_id.clone())
                .ok_or("neither `recipient_id` nor `recipient_user_id`")?,
        )
        .map_err(|e| e.to_string())?,
        recipient_user_id: raw.recipient_user_id,
        status: StatusKind::parse(&raw.status),
        timestamp: raw.timestamp,
        errors: raw.errors.into_iter().map(ErrorInfo::from).collect(),
        callback_data: raw.biz_opaque_callback_data,
        phone_number_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(value: &str) -> String {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{value}}}]}}]}}"#
        )
    }

    #[test]
    fn refuses_non_json_and_foreign_envelopes() {
        assert!(matches!(parse(b"not json"), Err(PayloadError::NotJson(_))));
        assert!(matches!(
            parse(b"{\"object\":\"page\",\"entry\":[]}"),
            Err(PayloadError::NotEnvelope(_))
        ));
        assert!(matches!(
            parse(b"{\"entry\":[]}"),
            Err(PayloadError::NotEnvelope(_))
        ));
        assert!(matches!(parse(b"[1,2]"), Err(PayloadError::NotEnvelope(_))));
        assert!(matches!(
            parse(b"{\"object\":\"whatsapp_business_account\""),
            Err(PayloadError::NotJson(_))
        ));
    }

    #[test]
    fn refuses_invalid_utf8_even_where_it_would_be_skipped() {
        // Found by the fuzz smoke test: serde_json does not check strings it skips.
        let mut body = br#"{"object":"whatsapp_business_account","entry":[],"extra":"   "#.to_vec();
        body.push(0x80);
        body.extend_from_slice(br#""}"#);
        assert!(matches!(parse(&body), Err(PayloadError::NotJson(_))));
    }

    #[test]
    fn reads_text_with_escaped_unicode() {
        let body = wrap(
            r#"{"messaging_product":"whatsapp","contacts":[{"profile":{"name":"A"},"wa_id":"15551234567","user_id":"US.1"}],
            "messages":[{"from":"15551234567","id":"wamid.1","timestamp":"1700000000","type":"text","text":{"body":"caf\u00e9 \ud83d\ude00"},"brand_new_field":1}]}"#,
        );
        let parsed = parse(body.as_bytes()).expect("valid");
        let [InboundEvent::Message(m)] = parsed.events.as_slice() else {
            panic!("one message expected, got {:?}", parsed.events)
        };
        assert_eq!(
            m.content,
            MessageContent::Text {
                body: "café 😀".into()
            }
        );
        assert_eq!(m.user_id.as_deref(), Some("US.1"));
        assert_eq!(m.profile_name.as_deref(), Some("A"));
        assert_eq!(m.timestamp, 1_700_000_000);
    }

    #[test]
    fn a_malformed_item_is_skipped_not_fatal() {
        let body = wrap(
            r#"{"messages":[{"id":"wamid.no-from","timestamp":"1","type":"text"},
            {"from":"1555","id":"wamid.ok","timestamp":"1","type":"text","text":{"body":"hi"}}],
            "statuses":[{"id":"wamid.s","status":"sent","timestamp":"soon","recipient_id":"1555"}]}"#,
        );
        let parsed = parse(body.as_bytes()).expect("envelope is fine");
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.skipped.len(), 2, "{:?}", parsed.skipped);
    }

    #[test]
    fn a_customer_without_a_number_is_known_by_user_id() {
        // Shaped as Meta documents for a user who adopted a username: no `from`, no `wa_id`.
        let body = wrap(
            r#"{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
            "contacts":[{"profile":{"name":"Sheena","username":"@sheena"},"user_id":"US.13491208655302741918"}],
            "messages":[{"from_user_id":"US.13491208655302741918","id":"wamid.u1","timestamp":"1700000000","type":"text","text":{"body":"hi"}}]}"#,
        );
        let parsed = parse(body.as_bytes()).expect("valid");
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let [InboundEvent::Message(m)] = parsed.events.as_slice() else {
            panic!("one message expected, got {:?}", parsed.events)
        };
        assert_eq!(m.from.as_str(), "US.13491208655302741918");
        assert!(m.from.is_user_id());
        assert_eq!(m.user_id.as_deref(), Some("US.13491208655302741918"));
        assert_eq!(m.profile_name.as_deref(), Some("Sheena"));

        // With the number shared too, the number identifies the customer.
        let body = wrap(
            r#"{"contacts":[{"profile":{"name":"Sheena"},"wa_id":"16505551234","user_id":"US.13491208655302741918"}],
            "messages":[{"from":"16505551234","from_user_id":"US.13491208655302741918","id":"wamid.u2","timestamp":"1700000000","type":"text","text":{"body":"hi"}}]}"#,
        );
        let parsed = parse(body.as_bytes()).expect("valid");
        let [InboundEvent::Message(m)] = parsed.events.as_slice() else {
            panic!("one message expected")
        };
        assert_eq!(m.from.as_str(), "16505551234");
        assert_eq!(m.user_id.as_deref(), Some("US.13491208655302741918"));

        // Statuses of messages sent to a user id name only `recipient_user_id`.
        let body = wrap(
            r#"{"statuses":[{"id":"wamid.s1","status":"delivered","timestamp":"1700000001","recipient_user_id":"US.13491208655302741918"},
            {"id":"wamid.s2","status":"failed","timestamp":"1700000001","recipient_id":"16505551234"},
            {"id":"wamid.s3","status":"sent","timestamp":"1700000001"}]}"#,
        );
        let parsed = parse(body.as_bytes()).expect("valid");
        assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
        let recipients: Vec<&str> = parsed
            .events
            .iter()
            .map(|e| e.customer().as_str())
            .collect();
        assert_eq!(recipients, ["US.13491208655302741918", "16505551234"]);
    }

    #[test]
    fn template_status_notes_are_read_in_both_documented_forms() {
        // Meta's syntax quotes `disable_date`; its parameter table says integer. A deletion's
        // `reason` is `null`.
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","time":1739321024,"changes":[
            {"field":"message_template_status_update","value":{"event":"DISABLED","message_template_id":1689556908129832,"message_template_name":"order_confirmation","message_template_language":"en-US","reason":"NONE","message_template_category":"UTILITY","disable_info":{"disable_date":"1751234563"},"other_info":{"title":"DISABLED","description":"Your WhatsApp message template has been disabled."}}},
            {"field":"message_template_status_update","value":{"event":"PENDING_DELETION","message_template_id":1689556908129832,"message_template_name":"order_confirmation","message_template_language":"en-US","reason":null,"message_template_category":"UTILITY"}}]}]}"#;
        let parsed = parse(body.as_bytes()).expect("envelope");
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let changes: Vec<_> = parsed.templates.iter().map(|t| t.change.clone()).collect();
        assert_eq!(
            changes,
            vec![
                TemplateChange::Status {
                    event: "DISABLED".into(),
                    reason: Some("NONE".into()),
                    notes: StatusNotes {
                        title: Some("DISABLED".into()),
                        description: Some(
                            "Your WhatsApp message template has been disabled.".into()
                        ),
                        disable_date: Some(1751234563),
                        ..StatusNotes::default()
                    },
                },
                TemplateChange::Status {
                    event: "PENDING_DELETION".into(),
                    reason: None,
                    notes: StatusNotes::default(),
                },
            ]
        );
    }

    #[test]
    fn template_status_and_quality_changes_are_read_as_meta_sends_them() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","time":1751247548,"changes":[
            {"field":"message_template_status_update","value":{"event":"REJECTED","message_template_id":1689556908129835,"message_template_name":"abandoned_cart","message_template_language":"en","reason":"INVALID_FORMAT","message_template_category":"MARKETING","rejection_info":{"reason":"Parameters side by side.","recommendation":"Separate them."}}},
            {"field":"message_template_quality_update","value":{"previous_quality_score":"GREEN","new_quality_score":"YELLOW","message_template_id":"806312974732579","message_template_name":"welcome_template","message_template_language":"en_US"}},
            {"field":"message_template_status_update","value":{"message_template_name":"no_id"}}]}]}"#;
        let parsed = parse(body.as_bytes()).expect("envelope");
        assert_eq!(
            parsed.templates,
            vec![
                TemplateUpdate {
                    waba_id: Some("1".into()),
                    template_id: "1689556908129835".into(),
                    name: "abandoned_cart".into(),
                    language: "en".into(),
                    time: 1751247548,
                    change: TemplateChange::Status {
                        event: "REJECTED".into(),
                        reason: Some("INVALID_FORMAT".into()),
                        notes: StatusNotes {
                            rejection_detail: Some("Parameters side by side.".into()),
                            rejection_recommendation: Some("Separate them.".into()),
                            ..StatusNotes::default()
                        },
                    },
                },
                TemplateUpdate {
                    waba_id: Some("1".into()),
                    template_id: "806312974732579".into(),
                    name: "welcome_template".into(),
                    language: "en_US".into(),
                    time: 1751247548,
                    change: TemplateChange::Quality {
                        previous: "GREEN".into(),
                        new: "YELLOW".into(),
                    },
                },
            ]
        );
        assert_eq!(
            parsed.skipped.len(),
            1,
            "a malformed change is skipped, not fatal"
        );
        assert!(parsed.events.is_empty());
    }

    #[test]
    fn unknown_fields_and_types_are_acknowledged() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"account_update","value":{"event":"X"}},
            {"field":"messages","value":{"messages":[{"from":"1555","id":"wamid.2","timestamp":"1","type":"hologram","hologram":{}}]}}]}]}"#;
        let parsed = parse(body.as_bytes()).expect("valid");
        assert_eq!(parsed.ignored_changes, 1);
        let [InboundEvent::Message(m)] = parsed.events.as_slice() else {
            panic!("one message expected")
        };
        assert_eq!(
            m.content,
            MessageContent::Unsupported {
                kind: "hologram".into()
            }
        );
    }
}
