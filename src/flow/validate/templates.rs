//! Checks of templates: their quick-reply buttons (how many, and that each names a choice of
//! every state that sends the template, so that a tap always answers that state), and their
//! content against WhatsApp's published rules for registering a template — name, lengths,
//! placeholders (examples, order, adjacency, none at the start or end of the body), buttons
//! (counts and kinds) and what each category may hold — so a template the flow file describes
//! is not refused at registration or at its first send.

use std::collections::BTreeSet;
use std::ops::Range;

use super::Checker;
use crate::flow::located::Located;
use crate::flow::model::{StateKind, Template, TemplateCategory};
use crate::flow::render::placeholders;
use crate::flow::template_content::{
    self as content, CODE_EXPIRATION_MINUTES, MAX_BODY, MAX_BUTTON_TEXT, MAX_FOOTER, MAX_HEADER,
    MAX_NAME, MAX_TEMPLATE_BUTTONS, MAX_URL, MAX_URL_BUTTONS,
};

/// Quick-reply buttons one WhatsApp template may have.
pub const MAX_QUICK_REPLIES: usize = 10;

pub(super) fn check_templates(cx: &mut Checker<'_>) {
    let file = cx.file;
    for (name, tpl) in &file.templates {
        check_content(cx, name, tpl);
    }
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

/// The span of the placeholder at byte `offset` (of `{{`) of `text`, written at `written`; the
/// whole string when it was not written verbatim between two quotes.
fn placeholder_span(text: &str, written: &Range<usize>, offset: usize) -> Range<usize> {
    if written.len() == text.len() + 2 {
        let close = text
            .get(offset..)
            .and_then(|t| t.find("}}"))
            .map_or(text.len(), |c| offset + c + 2);
        written.start + 1 + offset..written.start + 1 + close
    } else {
        written.clone()
    }
}

fn check_content(cx: &mut Checker<'_>, name: &str, tpl: &Template) {
    let file = cx.file;
    let n = tpl.name.as_str();
    if n.is_empty()
        || n.chars().count() > MAX_NAME
        || !n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        cx.error(
            tpl.name.span(),
            format!(
                "template name `{n}` must be 1 to {MAX_NAME} lowercase letters, digits and `_`"
            ),
        );
    }
    for m in [&tpl.body, &tpl.header, &tpl.footer].into_iter().flatten() {
        cx.message_ref(m);
    }
    let auth = tpl.category.get() == &TemplateCategory::Authentication;
    if auth {
        check_authentication(cx, name, tpl);
        return;
    }
    for (key, set) in [
        (
            "add_security_recommendation",
            tpl.add_security_recommendation.as_ref().map(Located::span),
        ),
        (
            "code_expiration_minutes",
            tpl.code_expiration_minutes.as_ref().map(Located::span),
        ),
        (
            "android",
            tpl.android.as_ref().map(|a| a.package_name.span()),
        ),
    ] {
        if let Some(span) = set {
            cx.error(
                span,
                format!(
                    "`{key}` is only for authentication templates; template `{name}` is not one"
                ),
            );
        }
    }
    if let Some(l) = tpl.languages.first() {
        cx.error(
            l.span(),
            format!("template `{name}`: `languages` is only for authentication templates; the languages of this one are those of its `body` message"),
        );
    }
    let Some(body) = &tpl.body else {
        let extra = [&tpl.header, &tpl.footer]
            .into_iter()
            .flatten()
            .map(Located::span)
            .chain(tpl.url_buttons.iter().map(|b| b.title.span()))
            .next();
        if let Some(span) = extra {
            cx.error(
                span,
                format!("template `{name}` has content but no `body`: name the message that is its body"),
            );
        }
        return;
    };
    let Some(texts) = file.messages.get(body.as_str()) else {
        return;
    };
    if let Some(l) = &tpl.language {
        if !texts.contains_key(l.as_str()) {
            cx.error(
                l.span(),
                format!(
                    "template `{name}` has no language `{}`: its body message `{}` has no text in it",
                    l.as_str(),
                    body.as_str()
                ),
            );
        }
    }
    // Every language must send the same variables in the same order: waotp sends one list.
    let expected = content::body_vars(file, tpl).unwrap_or_default();
    let mut used: BTreeSet<String> = BTreeSet::new();
    for (lang, text) in texts {
        let t = text.as_str();
        let (positional, vars) = content::positional(t);
        let found = placeholders(t);
        if vars != expected {
            cx.error(
                text.span(),
                format!(
                    "template `{name}` in `{lang}` has the placeholders {{{{{}}}}}, but its other languages have {{{{{}}}}} in that order; every language must use the same variables in the same order",
                    vars.join("}}, {{"),
                    expected.join("}}, {{")
                ),
            );
        }
        let len = positional.chars().count();
        if len > MAX_BODY {
            cx.error(
                text.span(),
                format!("the body of template `{name}` in `{lang}` is {len} characters; WhatsApp allows at most {MAX_BODY}"),
            );
        }
        let trimmed = t.trim();
        if trimmed.starts_with("{{") {
            let at = found.first().map_or(0, |(o, _)| *o);
            cx.error(
                placeholder_span(t, &text.span(), at),
                format!("the body of template `{name}` must not start with a placeholder: WhatsApp refuses such templates; put words before it"),
            );
        }
        if trimmed.ends_with("}}") {
            let at = found.last().map_or(0, |(o, _)| *o);
            cx.error(
                placeholder_span(t, &text.span(), at),
                format!("the body of template `{name}` must not end with a placeholder: WhatsApp refuses such templates; put words or punctuation after it"),
            );
        }
        for pair in found.windows(2) {
            let (a, b) = (pair[0].0, pair[1].0);
            let end_a = t
                .get(a..)
                .and_then(|r| r.find("}}"))
                .map_or(a, |c| a + c + 2);
            if t.get(end_a..b)
                .is_some_and(|between| between.trim().is_empty())
            {
                cx.error(
                    placeholder_span(t, &text.span(), b),
                    format!("placeholders `{{{{{}}}}}` and `{{{{{}}}}}` of template `{name}` are next to each other: WhatsApp refuses templates without text between placeholders", pair[0].1, pair[1].1),
                );
            }
        }
        for (offset, var) in found {
            if used.insert(var.to_owned()) && content::example(file, tpl, var).is_none() {
                cx.error(
                    placeholder_span(t, &text.span(), offset),
                    format!("placeholder `{{{{{var}}}}}` of template `{name}` needs an example value for WhatsApp's review: add `example = \"…\"` to `[vars.{var}]` or `examples.{var}` to the template"),
                );
            }
        }
    }
    if let Some(first) = tpl.parameters.first() {
        let written: Vec<&str> = tpl.parameters.iter().map(|p| p.as_str()).collect();
        let derived: Vec<String> = expected.iter().map(|v| format!("{{{{{v}}}}}")).collect();
        if written != derived {
            cx.error(
                first.span(),
                format!(
                    "template `{name}` takes its parameters from its body, {}; drop `parameters` or list exactly those",
                    if derived.is_empty() { "which has none".to_owned() } else { derived.join(", ") }
                ),
            );
        }
    }
    // WhatsApp allows one header placeholder, but waotp sends body parameters only.
    check_side_text(
        cx,
        name,
        "header",
        tpl.header.as_ref(),
        MAX_HEADER,
        "waotp fills in body placeholders only",
    );
    check_side_text(
        cx,
        name,
        "footer",
        tpl.footer.as_ref(),
        MAX_FOOTER,
        "WhatsApp's rule",
    );
    for (key, ex) in &tpl.examples {
        if !used.contains(key) {
            let hint = super::did_you_mean(key, used.iter().map(String::as_str));
            cx.error(
                ex.span(),
                format!(
                    "example for `{key}`, which no placeholder of template `{name}` uses{hint}"
                ),
            );
        }
    }
    check_buttons(cx, name, tpl);
}

fn check_side_text(
    cx: &mut Checker<'_>,
    name: &str,
    what: &str,
    message: Option<&Located<String>>,
    max: usize,
    why: &str,
) {
    let file = cx.file;
    let Some(texts) = message.and_then(|m| file.messages.get(m.as_str())) else {
        return;
    };
    for (lang, text) in texts {
        let t = text.as_str();
        let len = t.chars().count();
        if len > max {
            cx.error(
                text.span(),
                format!("the {what} of template `{name}` in `{lang}` is {len} characters; WhatsApp allows at most {max}"),
            );
        }
        if let Some((offset, _)) = placeholders(t).first() {
            cx.error(
                placeholder_span(t, &text.span(), *offset),
                format!("the {what} of template `{name}` may have no placeholder ({why})"),
            );
        }
        // Meta: no Markdown special characters in a text header, which is one line.
        if what == "header" {
            if let Some(c) = t
                .chars()
                .find(|c| matches!(c, '\n' | '\r' | '*' | '_' | '~' | '`'))
            {
                let shown = match c {
                    '\n' | '\r' => "a line break".to_owned(),
                    c => format!("the Markdown character `{c}`"),
                };
                cx.error(
                    text.span(),
                    format!("the header of template `{name}` in `{lang}` has {shown}: WhatsApp takes a text header as one plain line"),
                );
            }
        }
    }
}

fn check_buttons(cx: &mut Checker<'_>, name: &str, tpl: &Template) {
    let total = tpl.quick_replies.len() + tpl.url_buttons.len();
    if total > MAX_TEMPLATE_BUTTONS {
        let span = tpl
            .url_buttons
            .first()
            .map_or_else(|| tpl.name.span(), |b| b.title.span());
        cx.error(
            span,
            format!("template `{name}` has {total} buttons; WhatsApp allows at most {MAX_TEMPLATE_BUTTONS}"),
        );
    }
    if let Some(extra) = tpl.url_buttons.get(MAX_URL_BUTTONS) {
        cx.error(
            extra.title.span(),
            format!(
                "template `{name}` has {} URL buttons; WhatsApp allows at most {MAX_URL_BUTTONS}",
                tpl.url_buttons.len()
            ),
        );
    }
    for q in &tpl.quick_replies {
        let titles = content::quick_reply_choice_title(cx.file, name, q.as_str())
            .map(|t| t.variants())
            .unwrap_or_default();
        for (lang, title) in titles {
            let n = title.as_str().chars().count();
            if n > MAX_BUTTON_TEXT {
                let lang = lang.map(|l| format!(" (`{l}`)")).unwrap_or_default();
                cx.error(
                    q.span(),
                    format!("quick reply `{}` of template `{name}` has a {n}-character title{lang}; WhatsApp allows at most {MAX_BUTTON_TEXT}", q.as_str()),
                );
            }
        }
    }
    for b in &tpl.url_buttons {
        let n = b.title.as_str().chars().count();
        if n == 0 || n > MAX_BUTTON_TEXT {
            cx.error(
                b.title.span(),
                format!("URL button titles of template `{name}` must be 1 to {MAX_BUTTON_TEXT} characters; this one is {n}"),
            );
        }
        let url = b.url.as_str();
        if !url.starts_with("https://") && !url.starts_with("http://") {
            cx.error(
                b.url.span(),
                format!(
                    "URL button `{}` of template `{name}` needs an http(s) URL",
                    b.title.as_str()
                ),
            );
        }
        if url.chars().count() > MAX_URL {
            cx.error(b.url.span(), format!("URL button `{}` of template `{name}` has a URL longer than {MAX_URL} characters", b.title.as_str()));
        }
        // WhatsApp allows one placeholder at the end of the URL, but waotp sends body
        // parameters only.
        if let Some((offset, _)) = placeholders(url).first() {
            cx.error(
                placeholder_span(url, &b.url.span(), *offset),
                format!("URL button `{}` of template `{name}` may have no placeholder (waotp fills in body placeholders only)", b.title.as_str()),
            );
        }
    }
}

fn check_authentication(cx: &mut Checker<'_>, name: &str, tpl: &Template) {
    let fixed = "an authentication template's content is fixed by WhatsApp (the code, an optional security recommendation and expiry, and a copy-code or autofill button)";
    for (key, span) in [
        ("body", tpl.body.as_ref().map(Located::span)),
        ("header", tpl.header.as_ref().map(Located::span)),
        ("footer", tpl.footer.as_ref().map(Located::span)),
        (
            "url_buttons",
            tpl.url_buttons.first().map(|b| b.title.span()),
        ),
    ] {
        if let Some(span) = span {
            cx.error(
                span,
                format!("template `{name}` cannot have `{key}`: {fixed}"),
            );
        }
    }
    if let Some(m) = &tpl.code_expiration_minutes {
        if !CODE_EXPIRATION_MINUTES.contains(m.get()) {
            cx.error(
                m.span(),
                format!(
                    "`code_expiration_minutes` must be {} to {} (WhatsApp's range)",
                    CODE_EXPIRATION_MINUTES.start(),
                    CODE_EXPIRATION_MINUTES.end()
                ),
            );
        }
    }
    if let Some(app) = &tpl.android {
        let package = app.package_name.as_str();
        let valid_package = package.split('.').count() >= 2
            && package.split('.').all(|part| {
                part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !valid_package {
            cx.error(
                app.package_name.span(),
                format!("`{package}` is not an Android package name (like `com.shop.app`)"),
            );
        }
        if app.signature_hash.as_str().chars().count() != 11 {
            cx.error(
                app.signature_hash.span(),
                "`signature_hash` must be the app's 11-character signing key hash",
            );
        }
    }
    let mut seen = BTreeSet::new();
    for l in &tpl.languages {
        if !seen.insert(l.as_str()) {
            cx.error(
                l.span(),
                format!(
                    "language `{}` appears twice in template `{name}`",
                    l.as_str()
                ),
            );
        }
    }
}
