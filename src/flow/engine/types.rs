//! The engine's vocabulary: the session it keeps, the events it accepts and the effects it asks
//! the runtime to carry out. All serialisable so the runtime can persist them and tests can
//! snapshot them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::flow::ids::{FlowId, StateId};
use crate::flow::model::{OtpCheck, TemplateCategory};

/// The id of the one timer a session may have pending (a waiting state's reminder or timeout,
/// or the session's deadline or a deadline reminder, whichever is due first).
pub const STATE_TIMER: &str = "state";

/// Whether a session is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Created, the start event not yet applied.
    New,
    /// Waiting in a state.
    Active,
    /// Ended with an outcome; further events are ignored.
    Completed,
}

/// A pending timer as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTimer {
    /// Timer id (always [`STATE_TIMER`]: one timer serves the state's waits and the session's
    /// deadline, set for whichever comes first).
    pub id: String,
    /// When it fires.
    pub at: DateTime<Utc>,
    /// Sequence number; a fired timer with another number is stale and ignored.
    pub seq: u64,
}

/// Everything the engine needs to continue a conversation. The runtime stores it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// Flow the session runs.
    pub flow_id: FlowId,
    /// Flow version label at start.
    pub flow_version: String,
    /// SHA-256 of the flow file at start: the session stays on exactly this file.
    pub flow_hash: String,
    /// Current state.
    pub state: StateId,
    /// Running or finished.
    pub status: SessionStatus,
    /// Outcome once completed.
    pub outcome: Option<String>,
    /// Variables (API, hook answers, customer answers).
    pub vars: BTreeMap<String, Value>,
    /// Language of the messages.
    pub lang: String,
    /// When the current state was entered (timers count from here).
    pub entered_at: DateTime<Utc>,
    /// Unusable answers in the current state.
    pub retries: u32,
    /// Reminders already sent in the current state.
    pub reminders_sent: u32,
    /// New codes asked for in the current OTP state.
    pub resends: u32,
    /// The pending timer, if any.
    pub timer: Option<PendingTimer>,
    /// Last timer sequence number handed out.
    pub timer_seq: u64,
    /// When the flow's `[start] deadline` passes for this session (set at creation, so it
    /// survives restarts and flow reloads with the session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<DateTime<Utc>>,
    /// Deadline reminders already sent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deadline_reminders_sent: u32,
    /// How many times each state with `max_visits` has been entered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub visits: BTreeMap<String, u32>,
    /// Why the session took the flow's delivery-failure branch (WhatsApp's error), for the
    /// merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_failure: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Enter the start state (applied once, right after creation).
    Start,
    /// The customer typed something.
    Text {
        /// What they typed.
        body: String,
    },
    /// The customer tapped a reply button or chose a list row.
    Reply {
        /// The button or row id.
        id: String,
    },
    /// The customer tapped a quick-reply button of a template.
    QuickReply {
        /// The payload the send set: a choice's id. A template sent without payloads returns
        /// the button's label here instead.
        payload: String,
        /// The button's label, matched against the choices' titles and synonyms when the
        /// payload names none of them.
        label: String,
    },
    /// A keyword interrupt recognised by the runtime (typed interrupts are also recognised here).
    Interrupt {
        /// The interrupt's name in the flow, e.g. `cancel`.
        name: String,
    },
    /// The OTP ledger accepted the code.
    OtpCorrect,
    /// The OTP ledger rejected the code.
    OtpWrong {
        /// Attempts left for this code.
        attempts_left: u32,
    },
    /// The code's lifetime passed.
    OtpExpired,
    /// No attempts left (or the customer is blocked by the OTP limits).
    OtpLocked,
    /// The customer asked for a new code (e.g. by a button).
    OtpResendRequested,
    /// The OTP rules refused to issue a code (per-customer send or failure limits).
    OtpRefused,
    /// A new code asked for by the customer was issued (and queued for sending): only now is
    /// the customer told a code is on its way.
    OtpResent,
    /// The OTP rules refused a new code because the resend cooldown has not passed.
    OtpResendTooSoon {
        /// Seconds until a new code may be asked for.
        wait_secs: u64,
    },
    /// A timer set by this engine fired.
    TimerFired {
        /// The timer id.
        id: String,
        /// The sequence number it was set with.
        seq: u64,
    },
    /// WhatsApp reported a message of this session as failed.
    DeliveryFailed {
        /// Error text for logs and the merchant.
        reason: String,
        /// The failed message was a code sent to another number than the customer's (a third
        /// party's, e.g. an account's registered number): nothing changes in this chat.
        #[serde(default)]
        elsewhere: bool,
    },
    /// A hook answered with a 2xx JSON object.
    HookOk {
        /// The hook's name.
        hook: String,
        /// The answer's fields.
        fields: serde_json::Map<String, Value>,
    },
    /// A hook failed (timeout, non-2xx, not JSON).
    HookError {
        /// The hook's name.
        hook: String,
        /// Error text for logs.
        reason: String,
    },
    /// The merchant cancelled the session over the API.
    CancelFromApi,
}

/// One choice of a button or list message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Id WhatsApp sends back.
    pub id: String,
    /// Visible title.
    pub title: String,
    /// Second line (lists only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The free-form content of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageBody {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// Text with reply buttons.
    Buttons {
        /// The text.
        text: String,
        /// At most three buttons.
        buttons: Vec<Choice>,
    },
    /// Text with a list menu.
    List {
        /// The text.
        text: String,
        /// Label of the button that opens the list.
        button: String,
        /// The rows.
        rows: Vec<Choice>,
    },
}

impl MessageBody {
    /// The text the customer reads.
    pub fn text(&self) -> &str {
        match self {
            Self::Text { text } | Self::Buttons { text, .. } | Self::List { text, .. } => text,
        }
    }
}

/// A template to send instead, with its parameters already filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    /// Name registered with WhatsApp.
    pub name: String,
    /// Language registered with WhatsApp.
    pub language: String,
    /// Category; authentication templates get the code as body and button parameter.
    pub category: TemplateCategory,
    /// Body parameters, rendered.
    pub parameters: Vec<String>,
    /// The payload of each quick-reply button, in the template's order: the id of the choice
    /// it stands for, which a tap sends back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quick_replies: Vec<String>,
}

/// A message to send: free-form content, and the template for outside the 24-hour window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// The flow's message id (or `reprompt`, `busy`, … for built-in texts); with the session id
    /// and step it makes the outbox key that prevents double sends.
    pub message_id: String,
    /// Free-form content.
    pub body: MessageBody,
    /// Template to use when free-form messages are not allowed.
    pub template: Option<TemplateRef>,
}

/// What the runtime must do to issue a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpRequest {
    /// What the code is for (`flow/state`); part of the keyed hash.
    pub purpose: String,
    /// Digits.
    pub length: u32,
    /// Lifetime in seconds.
    pub lifetime_secs: i64,
    /// Wrong attempts allowed.
    pub max_attempts: u32,
    /// Where the code may be typed.
    pub check: OtpCheck,
    /// Reverse mode: the code goes back to the merchant (API answer) instead of the customer.
    pub reverse: bool,
    /// Whether to send the code at all (`false`: decoy that keeps answers identical).
    pub deliver: bool,
    /// Number to send it to when not the session's customer.
    pub send_to: Option<String>,
    /// Values the code is bound to (part of the keyed hash).
    pub bound: BTreeMap<String, String>,
    /// The authentication template that carries it.
    pub template: Option<TemplateRef>,
    /// Whether this replaces an earlier code (attempt counter carries over).
    pub resend: bool,
}

/// Something the runtime must do; the engine itself does nothing outside memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Send a message to the customer.
    Send(OutboundMessage),
    /// Issue (and usually send) a code.
    IssueOtp(OtpRequest),
    /// Check a code the customer typed; answer with an OTP event.
    VerifyOtp {
        /// Digits only.
        code: String,
    },
    /// Call a merchant hook; answer with `HookOk` or `HookError`.
    CallHook {
        /// Hook name.
        hook: String,
        /// URL as written (environment references not yet replaced).
        url: String,
        /// Variables to send.
        vars: BTreeMap<String, Value>,
    },
    /// Set (or replace) a timer; answer with `TimerFired` when due.
    SetTimer {
        /// Timer id.
        id: String,
        /// Due time.
        at: DateTime<Utc>,
        /// Sequence number to echo back.
        seq: u64,
    },
    /// Drop a timer.
    CancelTimer {
        /// Timer id.
        id: String,
    },
    /// The session ended.
    Complete {
        /// Outcome.
        outcome: String,
        /// Callback URL override.
        callback_url: Option<String>,
        /// Unique event id for the callback (merchants drop duplicates by it).
        event_id: String,
    },
    /// Tell the merchant something (e.g. an agent was asked for): a `session.<event>` callback.
    NotifyMerchant {
        /// Event name.
        event: String,
        /// Unique event id.
        event_id: String,
        /// The flow's callback URL, if it has its own (else the server's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        callback_url: Option<String>,
    },
}
