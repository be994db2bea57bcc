//! The server's watch on its templates: the check at start (each sending merchant's flows'
//! templates against its WhatsApp Business Account, every status stored, a warning for every
//! flow whose templates are not approved, or a refusal to start naming the merchant with
//! `WAOTP_REQUIRE_APPROVED_TEMPLATES`), and the status and quality changes WhatsApp reports by
//! webhook — stored durably under the account the webhook's entry names, exported as metrics
//! and sent to the merchants of that account (their callback URL and secret) as signed
//! `template.status_updated` / `template.quality_updated` callbacks.
//!
//! The outbox reads the stored statuses before each template send (see
//! [`crate::store::TemplateStatuses`]): a template known to be paused or disabled in the sending
//! merchant's account is not sent, and the session takes its delivery-failure path with the
//! reason `template_paused` or `template_disabled`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::Notify;

use super::{compare, status_after, wanted, Standing};
use crate::config::Settings;
use crate::flow::FlowSet;
use crate::metrics::Metrics;
use crate::store::TemplateStatus;
use crate::store::{OutboxEntry, OutboxPayload, StepWrite};
use crate::store::{Storage, StoreError};
use crate::tenants::{Merchant, Tenants, TenantsHandle, DEFAULT_MERCHANT};
use crate::webhook::payload::{TemplateChange, TemplateUpdate};
use crate::whatsapp::templates::TemplateClient;
use secrecy::SecretString;

/// The start-up check's Graph calls wait at most this long each.
const START_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// What the check at start needs of one merchant: its flows, its WhatsApp Business Account and
/// the access token of its first number that has one.
#[derive(Debug)]
pub struct MerchantTemplates {
    pub merchant: String,
    pub waba_id: Option<String>,
    pub token: Option<SecretString>,
    pub flows: FlowSet,
}

impl MerchantTemplates {
    /// Every merchant of `tenants`, with the flows `flows_of` gives for it.
    pub fn of(tenants: &Tenants, flows_of: impl Fn(&str) -> FlowSet) -> Vec<MerchantTemplates> {
        tenants
            .merchants()
            .iter()
            .map(|m| MerchantTemplates {
                merchant: m.id.clone(),
                waba_id: m.waba_id.clone(),
                token: m.numbers.iter().find_map(|n| n.access_token.clone()),
                flows: flows_of(&m.id),
            })
            .collect()
    }
}

/// Checks every sending merchant's flows' templates against its WhatsApp Business Account at
/// start (a merchant with a `waba_id` and a number with an access token). Returns the refusal
/// message, naming each merchant concerned, when `WAOTP_REQUIRE_APPROVED_TEMPLATES` is set and
/// a flow's template is not approved (or an account cannot be read); otherwise logs a warning
/// for each such flow.
pub async fn check_at_start(
    settings: &Settings,
    merchants: &[MerchantTemplates],
    storage: &Storage,
    metrics: &Metrics,
) -> Result<(), String> {
    let mut refusals = Vec::new();
    for m in merchants {
        let (Some(waba), Some(token)) = (&m.waba_id, &m.token) else {
            continue;
        };
        if let Err(problem) = check_merchant(settings, m, waba, token, storage, metrics).await? {
            refusals.push(format!("merchant `{}`: {problem}", m.merchant));
        }
    }
    storage.engine.durable().await.map_err(|e| e.to_string())?;
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals.join("\n"))
    }
}

/// One merchant's check: `Err` for a storage failure, `Ok(Err(problem))` for what refuses the
/// start under `WAOTP_REQUIRE_APPROVED_TEMPLATES` (only warned about otherwise).
async fn check_merchant(
    settings: &Settings,
    m: &MerchantTemplates,
    waba: &str,
    token: &SecretString,
    storage: &Storage,
    metrics: &Metrics,
) -> Result<Result<(), String>, String> {
    let require = settings.require_approved_templates;
    let merchant = m.merchant.as_str();
    let refuse_or_warn = |message: String| {
        if require {
            Ok(Err(message))
        } else {
            tracing::warn!(merchant, "{message}");
            Ok(Ok(()))
        }
    };
    let needed = match wanted(&m.flows) {
        Ok(w) => w,
        Err(clashes) => return refuse_or_warn(clashes.join("; ")),
    };
    let client = match TemplateClient::new(
        &settings.graph_url,
        waba,
        token.clone(),
        START_CHECK_TIMEOUT,
    ) {
        Ok(c) => c,
        Err(e) => return refuse_or_warn(e.to_string()),
    };
    let remote = match client.list().await {
        Ok(r) => r,
        Err(e) => {
            return refuse_or_warn(format!(
                "cannot check the flows' templates in WhatsApp Business Account {waba}: {e}"
            ))
        }
    };
    let now = Utc::now();
    let verdicts = compare(needed, &remote);
    for v in &verdicts {
        if let Some(r) = &v.remote {
            let previous = storage
                .templates
                .get_exact(Some(waba), &r.name, &r.language)
                .await;
            let status = TemplateStatus {
                waba: Some(waba.to_owned()),
                name: r.name.clone(),
                language: r.language.clone(),
                template_id: r.id.clone(),
                status: r.status.to_ascii_uppercase(),
                reason: r.rejected_reason.clone(),
                quality: r
                    .quality()
                    .or_else(|| previous.as_ref().and_then(|p| p.quality.clone())),
                updated_at: now,
            };
            if let Some(quality) = &status.quality {
                metrics.template_state(
                    true,
                    Some(waba),
                    &status.name,
                    &status.language,
                    quality,
                    previous.as_ref().and_then(|p| p.quality.as_deref()),
                );
            }
            metrics.template_state(
                false,
                Some(waba),
                &status.name,
                &status.language,
                &status.status,
                previous.as_ref().map(|p| p.status.as_str()),
            );
            if previous
                .as_ref()
                .map(|p| (&p.status, &p.reason, &p.quality))
                != Some((&status.status, &status.reason, &status.quality))
            {
                storage
                    .templates
                    .put(status)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    // Every flow whose templates are not all approved, with what stands in its way.
    let mut by_flow: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for v in &verdicts {
        if v.standing != Standing::Approved {
            for flow in &v.wanted.flows {
                by_flow.entry(flow).or_default().push(format!(
                    "{} [{}]: {}",
                    v.wanted.spec.name, v.wanted.spec.language, v.standing
                ));
            }
        }
    }
    let mut problems = Vec::new();
    for (flow, templates) in &by_flow {
        let templates = templates.join("; ");
        if !require {
            tracing::warn!(merchant, flow, %templates, "a template of this flow is not approved by WhatsApp; sends of it will fail until it is (see `waotp templates check`)");
        }
        problems.push(format!("flow `{flow}`: {templates}"));
    }
    if require && !problems.is_empty() {
        return Ok(Err(format!(
            "WAOTP_REQUIRE_APPROVED_TEMPLATES is set and templates are not approved ({}); run `waotp templates push` and `waotp templates check`",
            problems.join(" | ")
        )));
    }
    Ok(Ok(()))
}

/// Applies template changes reported by webhook.
#[derive(Debug)]
pub struct TemplateWatch {
    storage: Storage,
    metrics: Arc<Metrics>,
    /// The merchants, for whose account a change is and where its callbacks go.
    tenants: TenantsHandle,
    outbox_wake: Arc<Notify>,
}

impl TemplateWatch {
    pub fn new(
        storage: Storage,
        metrics: Arc<Metrics>,
        tenants: TenantsHandle,
        outbox_wake: Arc<Notify>,
    ) -> TemplateWatch {
        TemplateWatch {
            storage,
            metrics,
            tenants,
            outbox_wake,
        }
    }

    /// Stores one change and queues its callback to each merchant of the template's account
    /// (not yet durable: the caller flushes with [`TemplateWatch::durable`] before
    /// acknowledging the webhook).
    pub async fn apply(
        &self,
        update: &TemplateUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let waba = update.waba_id.as_deref();
        let templates = &self.storage.templates;
        // This account's record, else one of any account (written before accounts were kept).
        let previous = match templates
            .get_exact(waba, &update.name, &update.language)
            .await
        {
            Some(p) => Some(p),
            None => {
                templates
                    .get_exact(None, &update.name, &update.language)
                    .await
            }
        };
        let mut status = previous.clone().unwrap_or_else(|| TemplateStatus {
            waba: None,
            name: update.name.clone(),
            language: update.language.clone(),
            template_id: update.template_id.clone(),
            status: "UNKNOWN".to_owned(),
            reason: None,
            quality: None,
            updated_at: now,
        });
        status.waba = update.waba_id.clone();
        status.template_id = update.template_id.clone();
        status.updated_at = now;
        let (kind, mut template) = match &update.change {
            TemplateChange::Status {
                event,
                reason,
                notes,
            } => {
                let previous_status = previous.as_ref().map(|p| p.status.as_str());
                status.status = status_after(event, previous_status);
                status.reason = reason.clone();
                self.metrics.template_state(
                    false,
                    waba,
                    &status.name,
                    &status.language,
                    &status.status,
                    previous_status,
                );
                if matches!(
                    event.as_str(),
                    "PAUSED" | "DISABLED" | "REJECTED" | "FLAGGED"
                ) {
                    tracing::warn!(waba = ?waba, template = %status.name, language = %status.language, event = %event, status = %status.status, reason = ?reason, "WhatsApp reported a problem with a template: sends of it fail while it is paused, disabled or rejected");
                } else {
                    tracing::info!(waba = ?waba, template = %status.name, language = %status.language, event = %event, status = %status.status, "WhatsApp changed a template's status");
                }
                let mut t = json!({
                    "event": event.to_ascii_lowercase(),
                    "status": status.status.to_ascii_lowercase(),
                    "previous_status": previous_status.map(str::to_ascii_lowercase),
                    "reason": reason,
                });
                if let Some(detail) = &notes.rejection_detail {
                    t["rejection_detail"] = json!(detail);
                }
                if let Some(recommendation) = &notes.rejection_recommendation {
                    t["rejection_recommendation"] = json!(recommendation);
                }
                if notes.title.is_some() || notes.description.is_some() {
                    t["pause"] = json!({ "title": notes.title, "description": notes.description });
                }
                if let Some(date) = notes.disable_date {
                    t["disable_date"] = json!(date);
                }
                ("status_updated", t)
            }
            TemplateChange::Quality {
                previous: before,
                new,
            } => {
                status.quality = Some(new.clone());
                self.metrics.template_state(
                    true,
                    waba,
                    &status.name,
                    &status.language,
                    new,
                    Some(before.as_str()).filter(|b| !b.is_empty()),
                );
                tracing::info!(waba = ?waba, template = %status.name, language = %status.language, quality = %new, "WhatsApp changed a template's quality score");
                (
                    "quality_updated",
                    json!({
                        "previous_quality_score": before.to_ascii_lowercase(),
                        "new_quality_score": new.to_ascii_lowercase(),
                    }),
                )
            }
        };
        self.storage.templates.put(status.clone()).await?;
        template["id"] = json!(status.template_id);
        template["name"] = json!(status.name);
        template["language"] = json!(status.language);
        template["waba_id"] = json!(status.waba);
        // The same change delivered twice by WhatsApp gets the same event id.
        let event = match &update.change {
            TemplateChange::Status { event, .. } => event.to_ascii_lowercase(),
            TemplateChange::Quality { new, .. } => new.to_ascii_lowercase(),
        };
        let event_id = format!("tpl_{}_{kind}_{event}_{}", status.template_id, update.time);
        let body = json!({
            "id": event_id,
            "type": format!("template.{kind}"),
            "created_at": now.to_rfc3339(),
            "template": template,
        });
        let tenants = self.tenants.current();
        let outbox = owners(&tenants, waba)
            .into_iter()
            .filter_map(|m| {
                let url = m.callback_url.as_deref().filter(|u| !u.trim().is_empty())?;
                // The default merchant's entry keeps the id it had before merchants existed.
                let entry_id = if m.id == DEFAULT_MERCHANT {
                    format!("template:{event_id}")
                } else {
                    format!("template:{}:{event_id}", m.id)
                };
                Some(
                    OutboxEntry::pending(
                        entry_id,
                        None,
                        String::new(),
                        OutboxPayload::Callback {
                            url: url.to_owned(),
                            event_id: event_id.clone(),
                            body: body.clone(),
                        },
                        now,
                    )
                    .from_scope(&m.scope(m.first_number())),
                )
            })
            .collect::<Vec<_>>();
        if outbox.is_empty() {
            return Ok(());
        }
        self.storage
            .sessions
            .apply_step(StepWrite {
                outbox,
                ..StepWrite::default()
            })
            .await
    }

    /// Flushes what [`TemplateWatch::apply`] wrote and wakes the outbox for its callbacks.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.storage.engine.durable().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }
}

/// The merchants a change of account `waba`'s template is for: those whose `waba_id` it is;
/// when none is, those without a `waba_id` (a single merchant that never named its account).
fn owners<'t>(tenants: &'t Tenants, waba: Option<&str>) -> Vec<&'t Arc<Merchant>> {
    let named: Vec<_> = tenants
        .merchants()
        .iter()
        .filter(|m| waba.is_some() && m.waba_id.as_deref() == waba)
        .collect();
    if !named.is_empty() {
        return named;
    }
    tenants
        .merchants()
        .iter()
        .filter(|m| m.waba_id.is_none())
        .collect()
}
