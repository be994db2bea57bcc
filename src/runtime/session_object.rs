//! The session object: what the merchant API answers and every callback carries about a
//! session. One typed shape, serialized from here and described from here (its JSON Schema is
//! part of the OpenAPI description), so the two cannot drift.

use crate::store::SessionRecord;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Whether the session still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Waiting for the customer, a timer or a hook.
    Active,
    /// Ended; `outcome` says how.
    Completed,
}

/// A session as the merchant sees it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SessionObject {
    /// `ses_` and 24 hex digits.
    pub id: String,
    pub flow: String,
    /// The exact version of the flow file the session runs on.
    pub flow_version: String,
    /// The customer: E.164 with `+`, or a business-scoped user id (no `+`) for a customer who
    /// shares no phone number.
    pub to: String,
    pub status: SessionStatus,
    /// The flow's outcome once completed (e.g. `verified`, `cancelled`, `locked`, `expired`);
    /// `null` while active.
    pub outcome: Option<String>,
    /// The flow state the session is in.
    pub state: String,
    /// The phone number id of the merchant's number the conversation is with; absent for a
    /// session started before numbers were recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub vars: BTreeMap<String, Value>,
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    #[schemars(extend("format" = "date-time"))]
    pub updated_at: String,
    /// WhatsApp's reason, when the session took its flow's delivery-failure branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_failure: Option<String>,
    /// The anti-abuse limit that last refused the session a code: `country_not_allowed`,
    /// `customer_rate_limited`, `customer_blocked` or `global_ceiling`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["country_not_allowed", "customer_rate_limited", "customer_blocked", "global_ceiling"]))]
    pub otp_refused: Option<String>,
}

impl From<&SessionRecord> for SessionObject {
    fn from(r: &SessionRecord) -> SessionObject {
        SessionObject {
            id: r.id.clone(),
            flow: r.engine.flow_id.as_str().to_owned(),
            flow_version: r.engine.flow_version.clone(),
            to: r.to.clone(),
            status: if r.is_active() {
                SessionStatus::Active
            } else {
                SessionStatus::Completed
            },
            outcome: r.engine.outcome.clone(),
            state: r.engine.state.as_str().to_owned(),
            from: (!r.number.is_empty()).then(|| r.number.clone()),
            vars: r
                .engine
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            created_at: r.created_at.to_rfc3339(),
            updated_at: r.updated_at.to_rfc3339(),
            delivery_failure: r.engine.delivery_failure.clone(),
            otp_refused: r.otp_refused.clone(),
        }
    }
}

/// The session object as JSON.
pub fn session_json(r: &SessionRecord) -> Value {
    serde_json::to_value(SessionObject::from(r)).unwrap_or_default()
}
