//! Checks of templates' quick-reply buttons: how many a template may have, and that each names
//! a choice of every state that sends the template, so that a tap always answers that state.

use std::collections::BTreeSet;

use super::Checker;
use crate::flow::model::{StateKind, TemplateCategory};

/// Quick-reply buttons one WhatsApp template may have.
pub const MAX_QUICK_REPLIES: usize = 10;

pub(super) fn check_templates(cx: &mut Checker<'_>) {
    let file = cx.file;
    for (name, tpl) in &file.templates {
        let Some(first) = tpl.quick_replies.first() else {
            continue;
        };
        if tpl.category.get() == &TemplateCategory::Authentication {
            cx.error(
                first.span(),
                format!("template `{name}` is an authentication template, whose only button is the copy-code button: it cannot have `quick_replies`"),
            );
        }
        if tpl.quick_replies.len() > MAX_QUICK_REPLIES {
            cx.error(
                tpl.quick_replies[MAX_QUICK_REPLIES].span(),
                format!(
                    "template `{name}` has {} quick replies; WhatsApp allows at most {MAX_QUICK_REPLIES}",
                    tpl.quick_replies.len()
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for q in &tpl.quick_replies {
            if !seen.insert(q.as_str()) {
                cx.error(
                    q.span(),
                    format!(
                        "quick reply `{}` appears twice in template `{name}`",
                        q.as_str()
                    ),
                );
            }
        }
    }
    for (id, s) in &file.states {
        for t in [&s.template, &s.reminder_template].into_iter().flatten() {
            let Some(tpl) = file.templates.get(t.as_str()) else {
                continue;
            };
            if tpl.quick_replies.is_empty() {
                continue;
            }
            if s.kind.get() != &StateKind::Ask {
                cx.error(
                    t.span(),
                    format!("template `{}` has quick replies, which only an `ask` state can answer; state `{id}` is not one", t.as_str()),
                );
                continue;
            }
            let choices: BTreeSet<&str> = s
                .buttons
                .iter()
                .map(|b| b.id.as_str())
                .chain(s.list.iter().flat_map(|l| &l.rows).map(|r| r.id.as_str()))
                .collect();
            for q in &tpl.quick_replies {
                if !choices.contains(q.as_str()) {
                    let hint = super::did_you_mean(q.as_str(), choices.iter().copied());
                    cx.error(
                        q.span(),
                        format!(
                            "quick reply `{}` of template `{}` is not a button or list row of state `{id}`, which sends it{hint}",
                            q.as_str(),
                            t.as_str()
                        ),
                    );
                }
            }
        }
    }
}
