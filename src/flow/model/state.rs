//! One `[states.ID]` table of a flow file and the small tables inside it.
//!
//! A state is a single flat table whatever its kind; which fields a kind uses is checked by the
//! validator, so a typo or a misplaced field gets a positioned message rather than a serde error.

use schemars::JsonSchema;
use serde::Deserialize;

use super::LocalText;
use crate::flow::located::Located;

/// What a state does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// Sends `message` (with buttons or a list) and waits for the customer.
    Ask,
    /// Sends `message` and moves on at once (`next` or `branches`).
    Say,
    /// Issues a one-time code and waits for it to be checked.
    Otp,
    /// Calls a merchant hook and waits for its answer.
    Hook,
    /// Ends the session with `outcome`.
    End,
}

impl StateKind {
    /// States where the session stops until something happens outside the engine.
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Ask | Self::Otp | Self::Hook)
    }

    /// The name used in flow files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ask => "ask",
            Self::Say => "say",
            Self::Otp => "otp",
            Self::Hook => "hook",
            Self::End => "end",
        }
    }
}

/// `[states.ID]`: one state; the kinds column says which kinds use a field.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// What the state does.
    pub kind: Located<StateKind>,
    /// Message sent when the state is entered (for `otp`: the prompt sent after the code).
    #[serde(default)]
    pub message: Option<Located<String>>,
    /// Template sent instead of `message` outside the 24-hour window (`ask`, `say` and `end`
    /// states; required where the message can go out 24 hours or more after the customer last
    /// wrote); for `otp` states the **authentication** template that carries the code — a code
    /// never goes into a free-form message.
    #[serde(default)]
    pub template: Option<Located<String>>,
    /// Reply buttons (at most 3) for `ask` states.
    #[serde(default)]
    pub buttons: Vec<Button>,
    /// A list menu (at most 10 rows) for `ask` states.
    #[serde(default)]
    pub list: Option<ListMenu>,
    /// For `ask` states: state to go to on any free-text answer.
    #[serde(default)]
    pub on_text: Option<Located<String>>,
    /// For `ask` states with `on_text`: variable (source `customer`) that keeps the answer.
    #[serde(default)]
    pub save_as: Option<Located<String>>,
    /// Next state (`say`; `hook` on success; `otp` on a correct code).
    #[serde(default)]
    pub next: Option<Located<String>>,
    /// Guarded alternatives to `next`; the last one must have no `when` (the else).
    #[serde(default)]
    pub branches: Vec<Branch>,
    /// For `hook` states: which hook to call.
    #[serde(default)]
    pub hook: Option<Located<String>>,
    /// For `hook` states: state for a failed call (timeout, non-2xx, not JSON).
    #[serde(default)]
    pub on_error: Option<Located<String>>,
    /// For `otp` states: the code's settings.
    #[serde(default)]
    pub otp: Option<OtpSettings>,
    /// For `otp` states: state entered when the attempts are used up.
    #[serde(default)]
    pub on_locked: Option<Located<String>>,
    /// For `otp` states: state entered when the code's lifetime passes.
    #[serde(default)]
    pub on_expired: Option<Located<String>>,
    /// Waiting time before `on_timeout` (e.g. `30m`, `1h30m`, `2d`); an `ask` state needs it
    /// (with `on_timeout`) unless the flow has a `deadline` in `[start]` (then only one reachable
    /// after `on_deadline` does), `otp` states use the code's lifetime instead, `hook` states
    /// default to 1 minute (then `on_error`).
    #[serde(default)]
    pub timeout: Option<Located<String>>,
    /// State entered when `timeout` passes.
    #[serde(default)]
    pub on_timeout: Option<Located<String>>,
    /// Times after entering the state at which `reminder` is sent while still waiting.
    #[serde(default)]
    pub reminders: Vec<Located<String>>,
    /// Message for reminders (default: the state's own message again).
    #[serde(default)]
    pub reminder: Option<Located<String>>,
    /// Template sent instead of `reminder` outside the 24-hour window.
    #[serde(default)]
    pub reminder_template: Option<Located<String>>,
    /// Message sent when the answer cannot be used, with the state's buttons or list again
    /// (default: the built-in `reprompt_choices`, `reprompt_text` or `reprompt_code` text).
    #[serde(default)]
    pub reprompt: Option<Located<String>>,
    /// How many unusable answers are re-prompted before `on_retries_exhausted` (default 3).
    #[serde(default)]
    pub max_retries: Option<Located<u32>>,
    /// State entered after `max_retries` unusable answers.
    #[serde(default)]
    pub on_retries_exhausted: Option<Located<String>>,
    /// How many times a session may enter this state (1–100); entering it once more goes to
    /// `on_max_visits` instead. Bounds loops such as "ask again, at most twice".
    #[serde(default)]
    pub max_visits: Option<Located<u32>>,
    /// State entered instead of this one once it has been entered `max_visits` times.
    #[serde(default)]
    pub on_max_visits: Option<Located<String>>,
    /// Event sent to the merchant as a `session.<notify>` callback when the state is entered
    /// (e.g. `agent_handoff` → `session.agent_handoff`).
    #[serde(default)]
    pub notify: Option<Located<String>>,
    /// For `end` states (required there): the outcome reported to the merchant.
    #[serde(default)]
    pub outcome: Option<Located<String>>,
    /// For `end` states: a callback URL overriding the flow's.
    #[serde(default)]
    pub callback_url: Option<Located<String>>,
}

/// A reply button: `{ id = "confirm", title = "Confirm", synonyms = ["yes"], goto = "send_code" }`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Button {
    /// Id WhatsApp sends back when tapped.
    pub id: Located<String>,
    /// Text on the button (at most 20 characters in each language): a string, or a table by
    /// language (`{ en = "Confirm", hi = "पुष्टि करें" }`). A typed title in any language picks it.
    pub title: Located<LocalText>,
    /// Typed words that count as tapping it, besides its titles and id (case-insensitive).
    #[serde(default)]
    pub synonyms: Vec<Located<String>>,
    /// State to go to.
    pub goto: Located<String>,
}

/// A list menu: a button that opens up to 10 rows.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMenu {
    /// Text of the button that opens the list (at most 20 characters in each language); a
    /// string or a table by language.
    pub button: Located<LocalText>,
    /// The rows.
    pub rows: Vec<ListRow>,
}

/// One row of a list menu.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRow {
    /// Id WhatsApp sends back when chosen.
    pub id: Located<String>,
    /// Row title (at most 24 characters in each language); a string or a table by language. A
    /// typed title in any language picks it.
    pub title: Located<LocalText>,
    /// Optional second line (at most 72 characters in each language); a string or a table by
    /// language.
    #[serde(default)]
    pub description: Option<Located<LocalText>>,
    /// Typed words that count as choosing it, besides its titles and id (case-insensitive).
    #[serde(default)]
    pub synonyms: Vec<Located<String>>,
    /// State to go to.
    pub goto: Located<String>,
}

/// A guarded transition: `{ when = "found == true", goto = "send_code" }`; no `when` = else.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// Condition: `var`, `not var`, `var == value` or `var != value` (value: `true`, `false`,
    /// a number or a quoted string).
    #[serde(default)]
    pub when: Option<Located<String>>,
    /// State to go to.
    pub goto: Located<String>,
}

/// Where a code may be typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OtpCheck {
    /// In this WhatsApp chat.
    #[default]
    Chat,
    /// On the merchant's site (`POST /v1/sessions/{id}/check`).
    Api,
    /// Either.
    Both,
}

/// `[states.ID.otp]`: settings of the code (ranges in docs/otp-rules.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtpSettings {
    /// Digits, 4–10 (default 6).
    #[serde(default)]
    pub length: Option<Located<u32>>,
    /// Lifetime, 1–90 minutes (default `10m`).
    #[serde(default)]
    pub lifetime: Option<Located<String>>,
    /// Wrong attempts allowed, 1–10 (default 5).
    #[serde(default)]
    pub attempts: Option<Located<u32>>,
    /// Where the code is typed (default `chat`; `/check` answers `409` for a chat-only or
    /// reverse code).
    #[serde(default)]
    pub check: Option<Located<OtpCheck>>,
    /// Reverse mode: the merchant shows the code and the customer sends it to the bot.
    #[serde(default)]
    pub reverse: bool,
    /// Variables the code is bound to (e.g. amount, currency, payee for transactions).
    #[serde(default)]
    pub bind: Vec<Located<String>>,
    /// Variable holding the number the code goes to (default: the session's customer), e.g. an
    /// account's: this chat's sends and wrong codes are charged for it, the recipient only
    /// counts it against its cap of codes asked by others.
    #[serde(default)]
    pub send_to: Option<Located<String>>,
    /// `false` issues a code without sending it (a decoy, charged exactly like a real code), so
    /// a flow can answer identically whether or not an account exists.
    #[serde(default)]
    pub deliver: Option<bool>,
    /// Words that ask for a new code.
    #[serde(default)]
    pub resend_words: Vec<Located<String>>,
    /// How many new codes may be asked for (default 2).
    #[serde(default)]
    pub max_resends: Option<Located<u32>>,
    /// Message after a wrong code (`{{attempts_left}}` is available; default: the built-in
    /// `wrong_code` text).
    #[serde(default)]
    pub wrong_code: Option<Located<String>>,
}
