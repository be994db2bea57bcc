//! Checks of message texts, the flow's wording of built-in texts (`[texts]`) and template
//! parameters: languages, placeholders, body lengths, and that a code only ever travels inside an authentication template.

use std::ops::Range;

use super::{Checker, BUILTIN_VARS, MAX_INTERACTIVE_BODY, MAX_TEXT_BODY};
use crate::flow::builtin_texts::{builtin_text, BUILTIN_TEXTS};
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
            check_placeholders(cx, text.as_str(), text.span(), false, &[]);
        }
    }
    for tpl in file.templates.values() {
        for p in &tpl.parameters {
            check_placeholders(cx, p.as_str(), p.span(), true, &[]);
        }
    }
    check_builtin_overrides(cx);
}

/// `[texts.ID]`: the flow's wording of a built-in text. Its id must be one waotp says; it may
/// use that text's own placeholders besides the flow's variables; a re-prompt goes out with
/// buttons, so every override keeps to the interactive body limit.
fn check_builtin_overrides(cx: &mut Checker<'_>) {
    for (id, texts) in &cx.file.texts {
        let Some(builtin) = builtin_text(id) else {
            let span = texts.values().next().map_or(0..0, |t| t.span());
            let hint = super::did_you_mean(id, BUILTIN_TEXTS.iter().map(|t| t.id));
            cx.error(
                span,
                format!("unknown built-in text `{id}` in [texts]{hint}"),
            );
            continue;
        };
        for text in texts.values() {
            let n = text.as_str().chars().count();
            if n == 0 {
                cx.error(text.span(), format!("text `{id}` is empty"));
            } else if n > MAX_INTERACTIVE_BODY {
                cx.error(
                    text.span(),
                    format!("text `{id}` is {n} characters; WhatsApp allows at most {MAX_INTERACTIVE_BODY} here"),
                );
            }
            check_placeholders(cx, text.as_str(), text.span(), false, builtin.placeholders);
        }
    }
}

fn check_placeholders(
    cx: &mut Checker<'_>,
    text: &str,
    written: Range<usize>,
    in_template: bool,
    own: &[&str],
) {
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
        } else if !cx.file.vars.contains_key(name)
            && !BUILTIN_VARS.contains(&name)
            && !own.contains(&name)
        {
            let hint = super::did_you_mean(
                name,
                cx.file
                    .vars
                    .keys()
                    .map(String::as_str)
                    .chain(BUILTIN_VARS.iter().copied())
                    .chain(own.iter().copied()),
            );
            cx.error(span, format!("undeclared variable `{name}`{hint}"));
        }
    }
}
