//! The project's own words for what arrives from WhatsApp and from the merchant.
//!
//! Everything past the webhook speaks these types, never Meta's JSON. Identifiers are newtypes
//! with a private field and a `parse`, so an empty or absurd id cannot exist past the boundary;
//! [`PhoneNumber`] is the one type for a phone number, whoever wrote it. This module does no I/O
//! and knows nothing of HTTP or storage.

mod phone;

pub use phone::{PhoneError, PhoneNumber};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest identifier we accept from the outside. Meta's ids are far shorter; anything longer is
/// garbage or an attack on our key space.
const MAX_ID_LEN: usize = 512;

/// Why an identifier from the outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("{0} is longer than {MAX_ID_LEN} bytes")]
    TooLong(&'static str),
    #[error("{0} contains control characters")]
    Control(&'static str),
}

fn check_id(kind: &'static str, raw: &str) -> Result<(), IdError> {
    if raw.trim().is_empty() {
        return Err(IdError::Empty(kind));
    }
    if raw.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(kind));
    }
    if raw.chars().any(char::is_control) {
        return Err(IdError::Control(kind));
    }
    Ok(())
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Accepts any non-empty, printable id of sane length.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                check_id($kind, &raw)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

opaque_id!(
    /// A WhatsApp message id (`wamid.…`), ours or the customer's.
    MessageId,
    "message id"
);

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

opaque_id!(
    /// The customer's WhatsApp id: the phone number's digits as WhatsApp reports them (`wa_id`,
    /// `from`, `recipient_id`) or, for a customer who chose a username and did not share their
    /// number, their business-scoped user id (`from_user_id`, `recipient_user_id`; see
    /// [`is_user_id`]). A customer is known by their number whenever WhatsApp gives it. Its
    /// `Debug` and `Display` are masked so that logging one can never leak a phone number; use
    /// [`WaId::as_str`] where the full value is truly needed.
    WaId,
    "WhatsApp id"
);

impl WaId {
    /// Whether this customer is known only by a business-scoped user id.
    pub fn is_user_id(&self) -> bool {
        is_user_id(&self.0)
    }
}

/// Longest business-scoped user id accepted (Meta: a country code, a period and up to 128
/// alphanumeric characters; a parent id adds `ENT.`).
const MAX_USER_ID_LEN: usize = 140;

/// Whether `id` is a business-scoped user id (`US.13491208655302741918`, or a parent id
/// `US.ENT.11815799212886844830`) rather than a phone number: two capital letters, a period,
/// then letters, digits and periods. Phone numbers are digits, sometimes after a `+`.
pub fn is_user_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() > 3
        && bytes.len() <= MAX_USER_ID_LEN
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2] == b'.'
        && bytes[3..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.')
        && bytes[3..].iter().any(u8::is_ascii_alphanumeric)
}

/// How a customer is written for the merchant and in the session object: `+` and the digits of
/// their phone number (E.164), or their business-scoped user id as WhatsApp gave it.
pub fn customer_address(customer: &str) -> String {
    if is_user_id(customer) {
        customer.to_owned()
    } else {
        format!("+{}", customer.trim_start_matches('+'))
    }
}

impl fmt::Debug for WaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WaId({})", crate::telemetry::Masked(&self.0))
    }
}

impl fmt::Display for WaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::telemetry::Masked(&self.0).fmt(f)
    }
}

/// One thing WhatsApp told us, in our terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum InboundEvent {
    Message(InboundMessage),
    Status(DeliveryStatus),
}

impl InboundEvent {
    /// The customer this event belongs to: events of one customer are handled in order.
    pub fn customer(&self) -> &WaId {
        match self {
            InboundEvent::Message(m) => &m.from,
            InboundEvent::Status(s) => &s.recipient,
        }
    }

    /// The key under which a repeated delivery of this event is recognised: the message id for a
    /// message, the (message id, status) pair for a status.
    pub fn dedupe_key(&self) -> String {
        match self {
            InboundEvent::Message(m) => format!("m\u{0}{}", m.id.as_str()),
            InboundEvent::Status(s) => {
                format!("s\u{0}{}\u{0}{}", s.message_id.as_str(), s.status.as_str())
            }
        }
    }

    /// The business phone number id the event was addressed to (`metadata.phone_number_id`).
    pub fn phone_number_id(&self) -> Option<&str> {
        match self {
            InboundEvent::Message(m) => m.phone_number_id.as_deref(),
            InboundEvent::Status(s) => s.phone_number_id.as_deref(),
        }
    }

    /// Unix seconds WhatsApp stamped on the event.
    pub fn timestamp(&self) -> i64 {
        match self {
            InboundEvent::Message(m) => m.timestamp,
            InboundEvent::Status(s) => s.timestamp,
        }
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            InboundEvent::Message(m) => m.content.kind(),
            InboundEvent::Status(_) => "status",
        }
    }
}

/// A message a customer sent to the business.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub id: MessageId,
    /// The customer: their number (`from`) when WhatsApp shares it, else their business-scoped
    /// user id (`from_user_id`).
    pub from: WaId,
    /// Business-scoped user id (`from_user_id` / the contact's `user_id`), when WhatsApp sends
    /// one.
    pub user_id: Option<String>,
    pub profile_name: Option<String>,
    /// Unix seconds.
    pub timestamp: i64,
    /// The business phone number id the message was sent to.
    pub phone_number_id: Option<String>,
    pub context: Option<ReplyContext>,
    pub content: MessageContent,
    /// Errors WhatsApp attached to the message (e.g. 131051 for an unsupported type).
    pub errors: Vec<ErrorInfo>,
}

/// What an inbound message answers or how it was forwarded.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReplyContext {
    /// The message this one replies to — for interactive replies, the message whose button was
    /// tapped, which is how a reply is routed to the right session.
    pub message_id: Option<MessageId>,
    pub from: Option<String>,
    pub forwarded: bool,
    pub frequently_forwarded: bool,
}

/// The body of an inbound message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    Text {
        body: String,
    },
    /// A tap on an interactive reply button we sent.
    ButtonReply {
        id: String,
        title: String,
    },
    /// A row chosen from an interactive list we sent.
    ListReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// A tap on a template's quick-reply button.
    QuickReply {
        payload: String,
        text: String,
    },
    /// A completed WhatsApp Flow form.
    FlowReply {
        name: Option<String>,
        body: Option<String>,
        response_json: String,
    },
    Media {
        kind: MediaKind,
        media_id: String,
        mime_type: Option<String>,
        caption: Option<String>,
        filename: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    },
    Contacts {
        names: Vec<String>,
    },
    Reaction {
        message_id: Option<MessageId>,
        /// `None` when the customer removed their reaction.
        emoji: Option<String>,
    },
    Order {
        catalog_id: Option<String>,
        items: usize,
        text: Option<String>,
    },
    /// A notice from WhatsApp itself, e.g. the customer changed number.
    System {
        kind: Option<String>,
        body: Option<String>,
        new_wa_id: Option<String>,
    },
    /// The customer deleted a message they had sent.
    Revoked {
        original_message_id: Option<MessageId>,
    },
    /// The customer edited a message they had sent; `text` is the new text when it is text.
    Edited {
        original_message_id: Option<MessageId>,
        text: Option<String>,
    },
    /// A type WhatsApp could not deliver to us or that we do not model; acknowledged so that a
    /// flow can answer "please reply with text".
    Unsupported {
        kind: String,
    },
}

impl MessageContent {
    pub fn kind(&self) -> &'static str {
        match self {
            MessageContent::Text { .. } => "text",
            MessageContent::ButtonReply { .. } => "button_reply",
            MessageContent::ListReply { .. } => "list_reply",
            MessageContent::QuickReply { .. } => "quick_reply",
            MessageContent::FlowReply { .. } => "flow_reply",
            MessageContent::Media { .. } => "media",
            MessageContent::Location { .. } => "location",
            MessageContent::Contacts { .. } => "contacts",
            MessageContent::Reaction { .. } => "reaction",
            MessageContent::Order { .. } => "order",
            MessageContent::System { .. } => "system",
            MessageContent::Revoked { .. } => "revoked",
            MessageContent::Edited { .. } => "edited",
            MessageContent::Unsupported { .. } => "unsupported",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Voice,
    Document,
    Sticker,
}

/// WhatsApp's report on a message we sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    pub message_id: MessageId,
    /// The customer: their number (`recipient_id`) when WhatsApp gives it, else their
    /// business-scoped user id (`recipient_user_id`).
    pub recipient: WaId,
    pub recipient_user_id: Option<String>,
    pub status: StatusKind,
    /// Unix seconds.
    pub timestamp: i64,
    pub errors: Vec<ErrorInfo>,
    /// The tracker we attached when sending (`biz_opaque_callback_data`).
    pub callback_data: Option<String>,
    /// The business phone number id that sent the message (absent in records of earlier
    /// versions).
    #[serde(default)]
    pub phone_number_id: Option<String>,
}

/// Delivery states, in the order a message moves through them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    Sent,
    Delivered,
    Read,
    Played,
    Failed,
    /// A status name this version does not know; kept verbatim.
    Other(String),
}

impl StatusKind {
    pub fn parse(raw: &str) -> StatusKind {
        match raw {
            "sent" => StatusKind::Sent,
            "delivered" => StatusKind::Delivered,
            "read" => StatusKind::Read,
            "played" => StatusKind::Played,
            "failed" => StatusKind::Failed,
            other => StatusKind::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StatusKind::Sent => "sent",
            StatusKind::Delivered => "delivered",
            StatusKind::Read => "read",
            StatusKind::Played => "played",
            StatusKind::Failed => "failed",
            StatusKind::Other(s) => s,
        }
    }
}

/// An error WhatsApp attached to a message or status, keyed by Meta's numeric code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: i64,
    pub title: Option<String>,
    pub message: Option<String>,
    pub details: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_empty_long_and_control() {
        assert_eq!(MessageId::parse(""), Err(IdError::Empty("message id")));
        assert_eq!(WaId::parse("  "), Err(IdError::Empty("WhatsApp id")));
        assert!(MessageId::parse("x".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(MessageId::parse("wamid.a\nb").is_err());
        assert!(MessageId::parse("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQz==").is_ok());
    }

    #[test]
    fn wa_id_never_prints_the_full_number() {
        let id = WaId::parse("972987654321").expect("valid");
        assert_eq!(id.to_string(), "********4321");
        assert!(!format!("{id:?}").contains("97298765"));
        assert_eq!(id.as_str(), "972987654321");
    }

    #[test]
    fn user_ids_are_told_from_phone_numbers() {
        for id in [
            "US.13491208655302741918",
            "BR.1502576394655843",
            "US.ENT.11815799212886844830",
        ] {
            assert!(is_user_id(id), "{id}");
            assert_eq!(customer_address(id), id);
        }
        for id in [
            "14155550101",
            "+14155550101",
            "",
            "US.",
            "us.123",
            "U.123",
            "US-123",
        ] {
            assert!(!is_user_id(id), "{id}");
        }
        assert_eq!(customer_address("14155550101"), "+14155550101");
        assert_eq!(customer_address("+14155550101"), "+14155550101");
    }

    #[test]
    fn dedupe_keys_separate_messages_from_statuses() {
        let status = |kind: &str| {
            InboundEvent::Status(DeliveryStatus {
                message_id: MessageId::parse("wamid.1").expect("valid"),
                recipient: WaId::parse("1555").expect("valid"),
                recipient_user_id: None,
                status: StatusKind::parse(kind),
                timestamp: 1,
                errors: vec![],
                callback_data: None,
                phone_number_id: None,
            })
        };
        assert_ne!(status("sent").dedupe_key(), status("read").dedupe_key());
        assert_eq!(status("sent").dedupe_key(), status("sent").dedupe_key());
    }
}
