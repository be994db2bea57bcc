//! Checks of message texts and template parameters: languages, placeholders, body lengths,
//! and that a code only ever travels inside an authentication template.

use std::ops::Range;

use super::{Checker, BUILTIN_VARS, MAX_INTERACTIVE_BODY, MAX_TEXT_BODY};
use crate::flow::model::StateKind;
use crate::flow::render::placeholders;

pub(super) fn check_texts(cx: &mut Checker<'_>) {
    let file = cx.file;
    let default = cx.default_language();
    // Messages shown with buttons or a list (a state's message and its reprompt) are
    // interactive bodies, which have a lower limit.
    let interactive: Vec<&str> = file
        .states
        .values()
        .filter(|s| s.kind.get() == &StateKind::Ask && (!s.buttons.is_empty() || s.list.is_some()))
        .flat_map(|s| s.message.iter().chain(&s.reprompt).map(|m| m.as_str()))
        .collect();
    for (id, texts) in &file.messages {
        if !texts.contains_key(default) {
            let span = texts.values().next().map_or(0..0, |t| t.span());
            cx.error(
                span,
                format!("message `{id}` has no text in the default language `{default}`"),
            );
        }
        let max = if interactive.contains(&id.as_str()) {
            MAX_INTERACTIVE_BODY
        } else {
            MAX_TEXT_BODY
        };
        for text in texts.values() {
            let n = text.as_str().chars().count();
            if n > max {
                cx.error(
                    text.span(),
                    format!("message `{id}` is {n} characters; WhatsApp allows at most {max} here"),
                );
            }
            if n == 0 {
                cx.error(text.span(), format!("message `{id}` is empty"));
            }
            check_placeholders(cx, text.as_str(), text.span(), false);
        }
    }
    for tpl in file.templates.values() {
        for p in &tpl.parameters {
            check_placeholders(cx, p.as_str(), p.span(), true);
        }
    }
}

fn check_placeholders(cx: &mut Checker<'_>, text: &str, written: Range<usize>, in_template: bool) {
    // A one-line string without escapes is written as its text between two quotes, so a
    // placeholder's position is known exactly; otherwise point at the string's opening quote.
    let exact = written.len() == text.len() + 2;
    for (offset, name) in placeholders(text) {
        let span = if exact {
            written.start + 1 + offset..written.start + 1 + offset + name.len() + 4
        } else {
            written.clone()
        };
        if name == "code" {
            let message = if in_template {
                "`{{code}}` must not be listed: waotp adds the code to authentication templates itself"
            } else {
                "a code must not be put into a free-form message: send it with an authentication template (the otp state's `template`)"
            };
            cx.error(span, message);
        } else if !cx.file.vars.contains_key(name) && !BUILTIN_VARS.contains(&name) {
            let hint = super::did_you_mean(
                name,
                cx.file
                    .vars
                    .keys()
                    .map(String::as_str)
                    .chain(BUILTIN_VARS.iter().copied()),
            );
            cx.error(span, format!("undeclared variable `{name}`{hint}"));
        }
    }
}
