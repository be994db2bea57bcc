//! The flows' templates against the WhatsApp Business Account: what the flows need (one entry
//! per template name and language, shared by every flow that uses it), what the account holds,
//! and the verdict for each — the same comparison behind `waotp templates check/push` and the
//! server's start-up check.
//!
//! [`cli`] is the `waotp templates` command; [`status`] is the server's check at start and its
//! handling of template status webhooks. The Graph calls themselves are
//! [`crate::whatsapp::templates`].

pub mod cli;
pub mod status;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::flow::template_content::{specs, TemplateSpec};
use crate::flow::FlowSet;
use crate::whatsapp::templates::RemoteTemplate;

/// One template in one language that the flows need.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The spec, with content when some flow gives it.
    pub spec: TemplateSpec,
    /// Every flow that sends it.
    pub flows: Vec<String>,
}

/// The templates `flows` need, one per name and language; or, when two flows give different
/// content for the same name and language, every such clash.
pub fn wanted(flows: &FlowSet) -> Result<Vec<Wanted>, Vec<String>> {
    let mut by_key: BTreeMap<(String, String), Wanted> = BTreeMap::new();
    let mut clashes = Vec::new();
    for flow in flows.iter() {
        for spec in specs(flow.file()) {
            let key = (spec.name.clone(), spec.language.clone());
            match by_key.get_mut(&key) {
                None => {
                    by_key.insert(
                        key,
                        Wanted {
                            flows: vec![spec.flow.clone()],
                            spec,
                        },
                    );
                }
                Some(w) => {
                    if !w.flows.contains(&spec.flow) {
                        w.flows.push(spec.flow.clone());
                    }
                    let same = w.spec.category == spec.category
                        && (w.spec.components.is_none()
                            || spec.components.is_none()
                            || w.spec.components == spec.components);
                    if !same {
                        clashes.push(format!(
                            "template `{}` in `{}` has different content in flows `{}` and `{}`",
                            spec.name, spec.language, w.spec.flow, spec.flow
                        ));
                    } else if w.spec.components.is_none() {
                        w.spec.components = spec.components;
                    }
                }
            }
        }
    }
    if clashes.is_empty() {
        Ok(by_key.into_values().collect())
    } else {
        Err(clashes)
    }
}

/// A template's status after Meta's `message_template_status_update` event `event`, given the
/// status waotp knew (`previous`). Most events name the new status; some do not:
/// `FLAGGED` (negative feedback, at risk of being disabled) and `LOCKED` / `UNLOCKED` (whether
/// it can be edited) leave it as it was — a flagged template is still approved and sendable —
/// while `REINSTATED` and `UNARCHIVED` make it sendable again, that is `APPROVED`.
pub fn status_after(event: &str, previous: Option<&str>) -> String {
    let event = event.to_ascii_uppercase();
    match event.as_str() {
        "FLAGGED" => previous.unwrap_or("APPROVED").to_owned(),
        "LOCKED" | "UNLOCKED" => previous.unwrap_or("UNKNOWN").to_owned(),
        "REINSTATED" | "UNARCHIVED" => "APPROVED".to_owned(),
        _ => event,
    }
}

/// Where one needed template stands at WhatsApp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The account has no template of that name and language.
    Missing,
    /// Under review (or in appeal): sends will work once approved.
    Pending,
    Approved,
    /// With Meta's `rejected_reason`.
    Rejected(String),
    Paused,
    Disabled,
    /// The account's template differs from the flow file in this field.
    Different(String),
    /// Any other status Meta reports (`PENDING_DELETION`, `DELETED`, `LIMIT_EXCEEDED`, …).
    Other(String),
}

impl Standing {
    /// Whether a flow sending this template cannot run.
    pub fn blocks(&self) -> bool {
        !matches!(self, Standing::Pending | Standing::Approved)
    }

    /// The standing of a template whose status Meta reports as `status`.
    pub fn from_status(status: &str, reason: Option<&str>) -> Standing {
        match status.to_ascii_uppercase().as_str() {
            "APPROVED" => Standing::Approved,
            "PENDING" | "IN_APPEAL" => Standing::Pending,
            "REJECTED" => Standing::Rejected(reason.unwrap_or("NONE").to_owned()),
            "PAUSED" => Standing::Paused,
            "DISABLED" => Standing::Disabled,
            other => Standing::Other(other.to_ascii_lowercase()),
        }
    }
}

impl fmt::Display for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Standing::Missing => f.write_str("missing"),
            Standing::Pending => f.write_str("pending"),
            Standing::Approved => f.write_str("approved"),
            Standing::Rejected(reason) => write!(f, "rejected ({reason})"),
            Standing::Paused => f.write_str("paused"),
            Standing::Disabled => f.write_str("disabled"),
            Standing::Different(field) => write!(f, "different: {field}"),
            Standing::Other(status) => f.write_str(status),
        }
    }
}

/// The verdict on one needed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub wanted: Wanted,
    pub standing: Standing,
    /// The account's template, when it has one.
    pub remote: Option<RemoteTemplate>,
}

impl Verdict {
    /// One line: `name [language] (flows): standing`, with a note when the content is missing.
    pub fn line(&self) -> String {
        let spec = &self.wanted.spec;
        let note = if spec.components.is_none() {
            " — content missing in the flow file"
        } else {
            ""
        };
        format!(
            "{} [{}] ({}): {}{note}",
            spec.name,
            spec.language,
            self.wanted.flows.join(", "),
            self.standing
        )
    }
}

/// Compares every needed template with the account's.
pub fn compare(wanted: Vec<Wanted>, remote: &[RemoteTemplate]) -> Vec<Verdict> {
    wanted
        .into_iter()
        .map(|w| {
            let found = remote
                .iter()
                .find(|r| r.name == w.spec.name && r.language == w.spec.language)
                .cloned();
            let standing = match &found {
                None => Standing::Missing,
                Some(r) => {
                    let status = Standing::from_status(&r.status, r.rejected_reason.as_deref());
                    match (&status, difference(&w.spec, r)) {
                        (Standing::Approved | Standing::Pending, Some(field)) => {
                            Standing::Different(field)
                        }
                        _ => status,
                    }
                }
            };
            Verdict {
                wanted: w,
                standing,
                remote: found,
            }
        })
        .collect()
}

/// The first field in which the account's template differs from the flow file's, if any.
pub fn difference(spec: &TemplateSpec, remote: &RemoteTemplate) -> Option<String> {
    if !remote.category.eq_ignore_ascii_case(spec.category) {
        return Some(format!(
            "category (WhatsApp has {}, the flow file {})",
            remote.category.to_ascii_lowercase(),
            spec.category.to_ascii_lowercase()
        ));
    }
    let ours = spec.components.as_ref()?.as_array()?;
    let component = |list: &[Value], kind: &str| -> Option<Value> {
        list.iter()
            .find(|c| {
                c["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(kind))
            })
            .cloned()
    };
    let theirs = &remote.components;
    if spec.category == "AUTHENTICATION" {
        let otp = |c: Option<Value>| {
            c.and_then(|c| c["buttons"].get(0).cloned())
                .map(|b| (b["otp_type"].clone(), b["supported_apps"].clone()))
        };
        let (a, b) = (
            otp(component(ours, "BUTTONS")),
            otp(component(theirs, "BUTTONS")),
        );
        if a.as_ref().map(|x| &x.0) != b.as_ref().map(|x| &x.0) {
            return Some("otp button type".to_owned());
        }
        let minutes = |c: Option<Value>| c.map(|c| c["code_expiration_minutes"].clone());
        let (ours_min, theirs_min) = (
            minutes(component(ours, "FOOTER")),
            minutes(component(theirs, "FOOTER")),
        );
        if theirs_min.as_ref().is_some_and(|m| !m.is_null()) && ours_min != theirs_min {
            return Some("code_expiration_minutes".to_owned());
        }
        return None;
    }
    for (kind, field) in [("HEADER", "header"), ("BODY", "body"), ("FOOTER", "footer")] {
        let text = |list: &[Value]| component(list, kind).map(|c| c["text"].clone());
        if text(ours) != text(theirs) {
            return Some(format!("{field} text"));
        }
    }
    let buttons = |list: &[Value]| -> Vec<(String, String, String)> {
        component(list, "BUTTONS")
            .and_then(|c| c["buttons"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|b| {
                let s = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
                (s("type").to_ascii_uppercase(), s("text"), s("url"))
            })
            .collect()
    };
    if buttons(ours) != buttons(theirs) {
        return Some("buttons".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::status_after;

    #[test]
    fn meta_events_that_are_not_statuses_keep_or_restore_the_status() {
        // Meta's message_template_status_update events, with the status waotp knew before.
        let cases = [
            ("FLAGGED", Some("APPROVED"), "APPROVED"),
            ("FLAGGED", None, "APPROVED"),
            ("LOCKED", Some("PAUSED"), "PAUSED"),
            ("UNLOCKED", Some("APPROVED"), "APPROVED"),
            ("REINSTATED", Some("DISABLED"), "APPROVED"),
            ("UNARCHIVED", Some("ARCHIVED"), "APPROVED"),
            ("paused", Some("APPROVED"), "PAUSED"),
            ("PENDING_DELETION", Some("APPROVED"), "PENDING_DELETION"),
            ("IN_APPEAL", Some("REJECTED"), "IN_APPEAL"),
        ];
        for (event, previous, expected) in cases {
            assert_eq!(
                status_after(event, previous),
                expected,
                "{event} after {previous:?}"
            );
        }
    }
}
