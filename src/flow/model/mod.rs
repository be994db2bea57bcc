//! The flow file format: the serde types a merchant's TOML flow file is read into.
//!
//! Files are designed for hand editing: one flat table per state, message, template, hook and
//! interrupt, referring to each other by name. Every name and setting keeps its position
//! (`Located`) so the validator can point at it. This module only describes the format; it must
//! not check cross-references (that is `validate`) or run anything (that is `engine`).

mod state;
mod text;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

pub use self::state::{Branch, Button, ListMenu, ListRow, OtpCheck, OtpSettings, State, StateKind};
pub use self::text::LocalText;

use super::located::Located;

/// A whole flow file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowFile {
    /// Flow id, e.g. `cod_confirmation`: lowercase letters, digits and `_`. Must match the file name.
    pub id: Located<String>,
    /// Free-form version label. A running session stays on the exact file it started with (its
    /// SHA-256 is recorded), whatever the label.
    pub version: Located<String>,
    /// What the flow is for, for people reading the file.
    #[serde(default)]
    pub description: Option<String>,
    /// The language of a session started without one (`lang`), and of any text missing in the
    /// session's language (default `en`): `default_language = "hi"`.
    #[serde(default)]
    pub default_language: Option<Located<String>>,
    /// How sessions of this flow start.
    pub start: Start,
    /// Callback URL for outcomes; overrides `WAOTP_CALLBACK_URL` (an end state may override it
    /// again); may name `{ENV_VAR}`s like hook URLs.
    #[serde(default)]
    pub callback_url: Option<Located<String>>,
    /// State entered when WhatsApp reports a message of the session as failed, or when a code
    /// cannot be sent at all (an invalid number, or a chat whose customer shared no phone number
    /// and the `otp` state has no `send_to`); not for a code sent to another number with
    /// `send_to`: the chat must not learn that, so the session just keeps waiting.
    #[serde(default)]
    pub on_delivery_failure: Option<Located<String>>,
    /// State entered when a customer keeps answering something the flow cannot use; a state's
    /// own `on_retries_exhausted` wins.
    #[serde(default)]
    pub on_retries_exhausted: Option<Located<String>>,
    /// Variables the flow uses in messages, guards and hooks.
    #[serde(default)]
    pub vars: BTreeMap<String, VarDecl>,
    /// Message texts by id, then by language code: `[messages.summary] en = "Hi
    /// {{customer_name}} 👋"`. `{{attempts_left}}` is built in.
    #[serde(default)]
    pub messages: BTreeMap<String, BTreeMap<String, Located<String>>>,
    /// The flow's own wording of built-in texts (re-prompts, wrong code, resend notices…), by
    /// text id, then by language code: `[texts.wrong_code] hi = "…"`. Texts not given here come
    /// from the translations waotp ships (listed in the flow guide).
    #[serde(default)]
    pub texts: BTreeMap<String, BTreeMap<String, Located<String>>>,
    /// WhatsApp templates, sent instead of free-form text outside the 24-hour window.
    #[serde(default)]
    pub templates: BTreeMap<String, Template>,
    /// Merchant URLs the flow calls.
    #[serde(default)]
    pub hooks: BTreeMap<String, Hook>,
    /// Words that work in every waiting state, e.g. `cancel`, `stop`, `agent`.
    #[serde(default)]
    pub interrupts: BTreeMap<String, Interrupt>,
    /// The states of the flow by id.
    pub states: BTreeMap<String, State>,
}

impl FlowFile {
    /// The language of a session started without one, and the fallback of every text:
    /// `default_language`, else `en`.
    pub fn default_language(&self) -> &str {
        self.default_language.as_ref().map_or("en", |l| l.as_str())
    }
}

/// `[start]`: where a session begins and who may begin it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// The first state.
    pub state: Located<String>,
    /// Whether the merchant API (`POST /v1/sessions`) may start it.
    #[serde(default)]
    pub api: bool,
    /// Customer messages that start it: a keyword matches when its words appear in the message
    /// as whole words, in order, case and punctuation ignored (`forgot` matches "I forgot my
    /// password", not "unforgotten"). No two flows may share one, and no interrupt word of
    /// another flow may contain one, or typing it after that flow's session ended would start
    /// this one.
    #[serde(default)]
    pub keywords: Vec<Located<String>>,
    /// How long a session may run at most, counted from its start (e.g. `24h`, at most 30
    /// days): once it passes, the session goes to `on_deadline` whatever state it waits in.
    /// A state's own `timeout` that comes earlier still wins.
    #[serde(default)]
    pub deadline: Option<Located<String>>,
    /// State entered when `deadline` passes.
    #[serde(default)]
    pub on_deadline: Option<Located<String>>,
    /// When `deadline_reminder` is sent while the session waits: `-1h` is one hour before the
    /// deadline, `20h` is 20 hours after the start.
    #[serde(default)]
    pub deadline_reminders: Vec<Located<String>>,
    /// Message sent at each of `deadline_reminders`.
    #[serde(default)]
    pub deadline_reminder: Option<Located<String>>,
    /// Template sent instead of `deadline_reminder` outside the 24-hour window.
    #[serde(default)]
    pub deadline_reminder_template: Option<Located<String>>,
}

/// Where a variable's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VarSource {
    /// Given by the merchant when starting the session.
    Api,
    /// Filled from a hook's JSON answer (same field name).
    Hook,
    /// Filled from what the customer typed (`save_as` in an `ask` state).
    Customer,
}

/// `[vars.NAME]`: a declared variable.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VarDecl {
    /// Where the value comes from.
    pub source: Located<VarSource>,
    /// For `api` variables: starting without it is refused with `missing_var`.
    #[serde(default)]
    pub required: bool,
    /// A realistic value, shown to WhatsApp's reviewers as the example of every template
    /// placeholder filled from this variable (a template's own `examples` win).
    #[serde(default)]
    pub example: Option<Located<String>>,
}

/// The WhatsApp template category; authentication templates are the only ones that may carry a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateCategory {
    /// Copy-code template: the code is the body parameter and the button parameter.
    Authentication,
    /// Order and account updates.
    Utility,
    /// Anything else.
    Marketing,
}

/// `[templates.ID]`: a WhatsApp template, and what WhatsApp needs to register it.
///
/// The content is said once: `body` (and `header`, `footer`) name messages, every language of
/// the body message is a language of the template, and its `{{var}}` placeholders become
/// `{{1}}`, `{{2}}`, … in order of appearance. A template without content is still sent by name;
/// `waotp templates` reports its content as missing.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Name as registered with WhatsApp: lowercase letters, digits and `_`.
    pub name: Located<String>,
    /// Language sent when the session's language is not one of the template's; also the only
    /// language of a template without `body` or `languages`. Default: the flow's default language.
    #[serde(default)]
    pub language: Option<Located<String>>,
    /// Template category.
    pub category: Located<TemplateCategory>,
    /// Body parameters in order, with `{{var}}` placeholders. For authentication templates the
    /// code is added by waotp and must not be listed. With `body` they follow from the body's
    /// placeholders and need not be written.
    #[serde(default)]
    pub parameters: Vec<Located<String>>,
    /// The template's quick-reply buttons in order, each named by the id of the button or list
    /// row it stands for in the states that send the template. Each send sets that id as the
    /// button's payload, so a tap answers exactly that choice; the button's text is the
    /// choice's title.
    #[serde(default)]
    pub quick_replies: Vec<Located<String>>,
    /// Message whose texts are the template's body, one template language per message language.
    #[serde(default)]
    pub body: Option<Located<String>>,
    /// Message whose texts are the template's text header (no placeholder: waotp sends body
    /// parameters only).
    #[serde(default)]
    pub header: Option<Located<String>>,
    /// Message whose texts are the template's footer (no placeholders).
    #[serde(default)]
    pub footer: Option<Located<String>>,
    /// Languages of a template whose content is fixed by WhatsApp (authentication), e.g.
    /// `["en", "hi"]`.
    #[serde(default)]
    pub languages: Vec<Located<String>>,
    /// Example value of a placeholder by variable name, shown to WhatsApp's reviewers; wins
    /// over the variable's own `example`.
    #[serde(default)]
    pub examples: BTreeMap<String, Located<String>>,
    /// Buttons opening a web page, after the quick replies.
    #[serde(default)]
    pub url_buttons: Vec<UrlButton>,
    /// Authentication templates: add "For your security, do not share this code." to the body.
    #[serde(default)]
    pub add_security_recommendation: Option<Located<bool>>,
    /// Authentication templates: a footer saying the code expires in this many minutes (1–90).
    #[serde(default)]
    pub code_expiration_minutes: Option<Located<u32>>,
    /// Authentication templates: autofill the code in this Android app (one-tap, or zero-tap)
    /// instead of only offering a copy-code button.
    #[serde(default)]
    pub android: Option<AndroidApp>,
}

/// A template button opening a web page.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlButton {
    /// The button's text (at most 25 characters).
    pub title: Located<String>,
    /// A fixed `https://` URL (no placeholder: waotp sends body parameters only).
    pub url: Located<String>,
}

/// The Android app an authentication template's code is handed to.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AndroidApp {
    /// The app's package name, e.g. `com.shop.app`.
    pub package_name: Located<String>,
    /// The app's 11-character signing key hash.
    pub signature_hash: Located<String>,
    /// Zero-tap: the code reaches the app without a tap (the merchant accepted WhatsApp's
    /// zero-tap terms). Default: one-tap.
    #[serde(default)]
    pub zero_tap: bool,
}

/// `[hooks.NAME]`: a merchant URL called by `hook` states.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// URL; `{ENV_NAME}` is replaced by that environment variable when the server runs (outside
    /// sandbox mode an unset one stops the server's start, and a reload, naming the file and
    /// variable). A merchant of a tenants file names only `{WAOTP_HOOK_BASE_URL}` and
    /// `{WAOTP_CALLBACK_URL}`, its own settings.
    pub url: Located<String>,
    /// Variables sent in the request's `vars` object.
    #[serde(default)]
    pub send: Vec<Located<String>>,
}

/// How an interrupt's words are found in a customer's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InterruptMatch {
    /// The word is the whole message (case, spacing and surrounding punctuation ignored).
    #[default]
    Whole,
    /// The word also fires inside a longer message, as whole words in order, the way `[start]
    /// keywords` match ("I want an agent please" → `agent`), when the message is no answer the
    /// state can use (a choice, a resend word, a code) — and never in a free-text state, whose
    /// answer it is.
    Word,
}

/// `[interrupts.NAME]`: words that act in every waiting state.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interrupt {
    /// Words or phrases; one fires when it is the whole message (case, spacing and surrounding
    /// punctuation ignored), or with `match = "word"` also inside a longer message.
    pub words: Vec<Located<String>>,
    /// `whole` (default) or `word`: how the words are found in a message.
    #[serde(default, rename = "match")]
    pub matching: Option<Located<InterruptMatch>>,
    /// State to go to.
    #[serde(default)]
    pub goto: Option<Located<String>>,
    /// Message sent when the interrupt fires (useful when the session stays where it is).
    #[serde(default)]
    pub message: Option<Located<String>>,
    /// Event sent to the merchant as a `session.<notify>` callback (e.g. `agent_requested` →
    /// `session.agent_requested`).
    #[serde(default)]
    pub notify: Option<Located<String>>,
}
