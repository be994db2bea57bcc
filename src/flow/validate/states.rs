//! Per-state checks: which fields each kind needs and may use, references, timers, guards,
//! WhatsApp interactive limits and OTP ranges (docs/otp-rules.md).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Checker, MAX_BUTTONS, MAX_BUTTON_TITLE, MAX_LIST_ROWS, MAX_ROW_DESCRIPTION, MAX_ROW_TITLE,
};
use crate::flow::duration::parse_duration;
use crate::flow::guard::Guard;
use crate::flow::located::Located;
use crate::flow::model::{LocalText, State, StateKind, TemplateCategory, VarSource};
use crate::flow::words::normalize;

pub(super) fn check_states(cx: &mut Checker<'_>) {
    for (id, state) in &cx.file.states {
        check_fields(cx, id, state);
        check_refs(cx, id, state);
        check_timer(cx, id, state);
        check_branches(cx, id, state);
        check_choices(cx, id, state);
        if state.kind.get() == &StateKind::Otp {
            check_otp(cx, id, state);
        }
    }
}

/// The optional fields of a state and the kinds that use them; a field written on a state of
/// another kind is an error. The flow guide's state tables are generated from this list.
pub const STATE_FIELDS: &[(&str, &[StateKind])] = {
    use StateKind::{Ask, End, Hook, Otp, Say};
    &[
        ("message", &[Ask, Say, Otp, End]),
        ("template", &[Ask, Say, Otp, End]),
        ("buttons", &[Ask]),
        ("list", &[Ask]),
        ("on_text", &[Ask]),
        ("save_as", &[Ask]),
        ("next", &[Say, Otp, Hook]),
        ("branches", &[Say, Hook]),
        ("hook", &[Hook]),
        ("on_error", &[Hook]),
        ("otp", &[Otp]),
        ("on_locked", &[Otp]),
        ("on_expired", &[Otp]),
        ("timeout", &[Ask, Hook]),
        ("on_timeout", &[Ask]),
        ("reminders", &[Ask, Otp]),
        ("reminder", &[Ask, Otp]),
        ("reminder_template", &[Ask, Otp]),
        ("reprompt", &[Ask, Otp]),
        ("on_retries_exhausted", &[Ask, Otp]),
        ("max_retries", &[Ask, Otp]),
        ("max_visits", &[Ask, Say, Otp, Hook]),
        ("on_max_visits", &[Ask, Say, Otp, Hook]),
        ("outcome", &[End]),
        ("callback_url", &[End]),
    ]
};

fn check_fields(cx: &mut Checker<'_>, id: &str, s: &State) {
    use StateKind::Otp;
    let kind = *s.kind.get();
    let span = |l: Option<&Located<String>>| l.map(Located::span);
    // (field, where it is written if present)
    let written: [(&str, Option<std::ops::Range<usize>>); 24] = [
        ("message", span(s.message.as_ref())),
        ("template", span(s.template.as_ref())),
        ("buttons", s.buttons.first().map(|b| b.id.span())),
        ("list", s.list.as_ref().map(|l| l.button.span())),
        ("on_text", span(s.on_text.as_ref())),
        ("save_as", span(s.save_as.as_ref())),
        ("next", span(s.next.as_ref())),
        ("branches", s.branches.first().map(|b| b.goto.span())),
        ("hook", span(s.hook.as_ref())),
        ("on_error", span(s.on_error.as_ref())),
        ("on_locked", span(s.on_locked.as_ref())),
        ("on_expired", span(s.on_expired.as_ref())),
        ("timeout", span(s.timeout.as_ref())),
        ("on_timeout", span(s.on_timeout.as_ref())),
        ("reminders", s.reminders.first().map(Located::span)),
        ("reminder", span(s.reminder.as_ref())),
        ("reminder_template", span(s.reminder_template.as_ref())),
        ("reprompt", span(s.reprompt.as_ref())),
        (
            "on_retries_exhausted",
            span(s.on_retries_exhausted.as_ref()),
        ),
        ("max_retries", s.max_retries.as_ref().map(Located::span)),
        ("max_visits", s.max_visits.as_ref().map(Located::span)),
        ("on_max_visits", span(s.on_max_visits.as_ref())),
        ("outcome", span(s.outcome.as_ref())),
        ("callback_url", span(s.callback_url.as_ref())),
    ];
    let optional = written.into_iter().map(|(field, at)| {
        let kinds = STATE_FIELDS
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(&[][..], |(_, k)| *k);
        (field, at, kinds)
    });
    for (field, at, kinds) in optional {
        if let Some(at) = at {
            if !kinds.contains(&kind) {
                cx.error(
                    at,
                    format!(
                        "`{field}` is not used by `{}` states (state `{id}`)",
                        kind.as_str()
                    ),
                );
            }
        }
    }
    if s.otp.is_some() && kind != Otp {
        cx.error(
            s.kind.span(),
            format!("state `{id}` has an [otp] table but is not `kind = \"otp\"`"),
        );
    }
    use StateKind::{Ask, End, Hook, Say};
    let missing = |cx: &mut Checker<'_>, field: &str| {
        cx.error(
            s.kind.span(),
            format!("`{}` state `{id}` needs `{field}`", kind.as_str()),
        );
    };
    match kind {
        Ask => {
            if s.message.is_none() {
                missing(cx, "message");
            }
            if s.buttons.is_empty() && s.list.is_none() && s.on_text.is_none() {
                missing(cx, "buttons, a list or on_text");
            }
            if let (Some(save), None) = (&s.save_as, &s.on_text) {
                cx.error(
                    save.span(),
                    format!("`save_as` needs `on_text` (state `{id}`)"),
                );
            }
        }
        Say => {
            if s.message.is_none() {
                missing(cx, "message");
            }
        }
        Otp => {
            for (field, present) in [
                ("otp", s.otp.is_some()),
                ("next", s.next.is_some()),
                ("on_locked", s.on_locked.is_some()),
                ("on_expired", s.on_expired.is_some()),
            ] {
                if !present {
                    missing(cx, field);
                }
            }
        }
        Hook => {
            if s.hook.is_none() {
                missing(cx, "hook");
            }
            if s.on_error.is_none() {
                missing(cx, "on_error");
            }
        }
        End => {
            if s.outcome.is_none() {
                missing(cx, "outcome");
            }
        }
    }
    if matches!(kind, Say | Hook) && s.next.is_some() != s.branches.is_empty() {
        missing(cx, "exactly one of next or branches");
    }
}

fn check_refs(cx: &mut Checker<'_>, id: &str, s: &State) {
    let targets = [
        &s.on_text,
        &s.next,
        &s.on_error,
        &s.on_locked,
        &s.on_expired,
        &s.on_timeout,
        &s.on_retries_exhausted,
        &s.on_max_visits,
    ];
    for t in targets.into_iter().flatten() {
        cx.state_ref(t);
    }
    for m in [&s.message, &s.reminder, &s.reprompt].into_iter().flatten() {
        cx.message_ref(m);
    }
    if let Some(otp) = &s.otp {
        if let Some(m) = &otp.wrong_code {
            cx.message_ref(m);
        }
        for v in otp.bind.iter().chain(otp.send_to.as_ref()) {
            cx.var_ref(v);
        }
    }
    for t in [&s.template, &s.reminder_template].into_iter().flatten() {
        cx.reference("template", t, cx.file.templates.keys());
    }
    if let Some(h) = &s.hook {
        cx.reference("hook", h, cx.file.hooks.keys());
    }
    if let Some(v) = &s.save_as {
        let source = cx.file.vars.get(v.as_str()).map(|d| *d.source.get());
        if cx.var_ref(v) && source != Some(VarSource::Customer) {
            cx.error(
                v.span(),
                format!(
                    "`save_as` variable `{}` must be declared with `source = \"customer\"`",
                    v.as_str()
                ),
            );
        }
    }
    for b in &s.buttons {
        cx.state_ref(&b.goto);
    }
    for r in s.list.iter().flat_map(|l| &l.rows) {
        cx.state_ref(&r.goto);
    }
    for b in &s.branches {
        cx.state_ref(&b.goto);
    }
    if s.kind.get().is_waiting() && s.kind.get() != &StateKind::Hook {
        let own = s.on_retries_exhausted.is_some();
        if !own && cx.file.on_retries_exhausted.is_none() {
            cx.error(
                s.kind.span(),
                format!("waiting state `{id}` needs `on_retries_exhausted` (here or at the top of the file) so repeated unusable answers end somewhere"),
            );
        }
    }
}

fn check_timer(cx: &mut Checker<'_>, id: &str, s: &State) {
    let durations = s
        .timeout
        .iter()
        .chain(&s.reminders)
        .chain(s.otp.iter().flat_map(|o| &o.lifetime));
    for d in durations {
        if let Err(e) = parse_duration(d.as_str()) {
            cx.error(d.span(), e);
        }
    }
    if s.kind.get() == &StateKind::Ask {
        match (&s.timeout, &s.on_timeout) {
            // The flow's deadline ends the wait.
            (None, None) if cx.file.start.deadline.is_some() => {}
            (None, None) => cx.error(
                s.kind.span(),
                format!("waiting state `{id}` has no timer: add `timeout` and `on_timeout` (or a `deadline` in [start])"),
            ),
            (Some(t), None) => cx.error(
                t.span(),
                format!("`timeout` in state `{id}` needs `on_timeout`"),
            ),
            (None, Some(t)) => cx.error(
                t.span(),
                format!("`on_timeout` in state `{id}` needs `timeout`"),
            ),
            (Some(_), Some(_)) => {}
        }
    }
}

fn check_branches(cx: &mut Checker<'_>, id: &str, s: &State) {
    for (i, b) in s.branches.iter().enumerate() {
        let last = i + 1 == s.branches.len();
        match (&b.when, last) {
            (Some(w), _) => match Guard::parse(w.as_str()) {
                Ok(g) => {
                    if !cx.file.vars.contains_key(g.var())
                        && !super::BUILTIN_VARS.contains(&g.var())
                    {
                        let hint =
                            super::did_you_mean(g.var(), cx.file.vars.keys().map(String::as_str));
                        cx.error(
                            w.span(),
                            format!("guard uses undeclared variable `{}`{hint}", g.var()),
                        );
                    }
                    if last {
                        cx.error(w.span(), format!("branches of state `{id}` have no else: end them with a branch without `when`"));
                    }
                }
                Err(e) => cx.error(w.span(), e),
            },
            (None, false) => cx.error(
                b.goto.span(),
                format!("a branch without `when` must be the last one (state `{id}`)"),
            ),
            (None, true) => {}
        }
    }
}

fn check_choices(cx: &mut Checker<'_>, id: &str, s: &State) {
    if s.buttons.len() > MAX_BUTTONS {
        let span = s.buttons[MAX_BUTTONS].id.span();
        cx.error(
            span,
            format!(
                "state `{id}` has {} buttons; WhatsApp allows at most {MAX_BUTTONS} (use a list)",
                s.buttons.len()
            ),
        );
    }
    if !s.buttons.is_empty() && s.list.is_some() {
        cx.error(
            s.kind.span(),
            format!("state `{id}` has both buttons and a list; WhatsApp sends one or the other"),
        );
    }
    let mut seen = BTreeSet::new();
    let too_long = |cx: &mut Checker<'_>, t: &Located<LocalText>, max: usize, what: &str| {
        check_local_text(cx, t, max, what);
    };
    for b in &s.buttons {
        too_long(cx, &b.title, MAX_BUTTON_TITLE, "button title");
        if !seen.insert(b.id.as_str()) {
            cx.error(
                b.id.span(),
                format!("duplicate choice id `{}` in state `{id}`", b.id.as_str()),
            );
        }
    }
    check_words_of_choices(cx, id, s);
    if let Some(list) = &s.list {
        too_long(cx, &list.button, MAX_BUTTON_TITLE, "list button");
        if list.rows.len() > MAX_LIST_ROWS {
            cx.error(
                list.rows[MAX_LIST_ROWS].id.span(),
                format!(
                    "list of state `{id}` has {} rows; WhatsApp allows at most {MAX_LIST_ROWS}",
                    list.rows.len()
                ),
            );
        }
        if list.rows.is_empty() {
            cx.error(
                list.button.span(),
                format!("list of state `{id}` has no rows"),
            );
        }
        for r in &list.rows {
            too_long(cx, &r.title, MAX_ROW_TITLE, "list row title");
            if let Some(d) = &r.description {
                too_long(cx, d, MAX_ROW_DESCRIPTION, "list row description");
            }
            if !seen.insert(r.id.as_str()) {
                cx.error(
                    r.id.span(),
                    format!("duplicate choice id `{}` in state `{id}`", r.id.as_str()),
                );
            }
        }
    }
}

/// A typed word picks the choice whose title, id or synonym it is (compared as the engine
/// compares them), so one word must not stand for two choices. A choice repeating its own title
/// or id among its synonyms is harmless: the word still means that one choice.
fn check_words_of_choices(cx: &mut Checker<'_>, id: &str, s: &State) {
    let buttons = s.buttons.iter().map(|b| (&b.id, &b.title, &b.synonyms));
    let rows = s
        .list
        .iter()
        .flat_map(|l| &l.rows)
        .map(|r| (&r.id, &r.title, &r.synonyms));
    let choices: Vec<_> = buttons.chain(rows).collect();
    // Ids first: a word equal to another choice's id is reported on the word, where the author
    // wrote the clash.
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    for (choice, _, _) in &choices {
        owner
            .entry(normalize(choice.as_str()))
            .or_insert(choice.as_str());
    }
    for (choice, title, synonyms) in choices {
        let choice = choice.as_str();
        let mut own = BTreeSet::new();
        // Titles in every language are typed words too.
        let titles = title.variants().into_iter().map(|(_, t)| t);
        for w in titles.chain(synonyms.iter().cloned()) {
            let word = normalize(w.as_str());
            if !own.insert(word.clone()) {
                continue;
            }
            match owner.get(&word) {
                Some(first) if *first != choice => cx.error(
                    w.span(),
                    format!(
                        "`{}` stands for choices `{first}` and `{choice}` of state `{id}`",
                        w.as_str()
                    ),
                ),
                Some(_) => {}
                None => {
                    owner.insert(word, choice);
                }
            }
        }
    }
}

/// An inline text (a title, a row description, the list button) in each of its languages:
/// within WhatsApp's limit, and, as a table by language, in every language the flow's messages
/// are written in (else that customer would get another language's title next to their own
/// message). A plain string is one text for every language: allowed, with a warning when the
/// flow's messages come in several languages.
fn check_local_text(cx: &mut Checker<'_>, t: &Located<LocalText>, max: usize, what: &str) {
    for (lang, text) in t.variants() {
        let n = text.as_str().chars().count();
        if n > max {
            let lang = lang.map_or(String::new(), |l| format!(" (`{l}`)"));
            cx.error(
                text.span(),
                format!(
                    "{what} `{}`{lang} is {n} characters; WhatsApp allows at most {max}",
                    text.as_str()
                ),
            );
        }
    }
    let languages = cx.message_languages();
    match t.get() {
        LocalText::PerLanguage(texts) => {
            let missing: Vec<&str> = languages
                .iter()
                .copied()
                .filter(|l| !texts.contains_key(*l))
                .collect();
            if !missing.is_empty() {
                let shown = t.in_language(cx.default_language(), cx.default_language());
                cx.error(
                    t.span(),
                    format!(
                        "{what} `{shown}` has no text in {}, a language of the flow's messages",
                        list(&missing)
                    ),
                );
            }
        }
        LocalText::Plain(text) if languages.len() > 1 => {
            let langs: Vec<&str> = languages.iter().copied().collect();
            cx.warning(
                t.span(),
                format!(
                    "{what} `{text}` is shown in every language, but the flow's messages are in {}: write it as a table by language, `{{ {} = \"…\" }}`",
                    list(&langs),
                    langs.join(" = \"…\", ")
                ),
            );
        }
        LocalText::Plain(_) => {}
    }
}

/// `` `hi` `` or `` `hi`, `es` ``.
fn list(langs: &[&str]) -> String {
    langs
        .iter()
        .map(|l| format!("`{l}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_otp(cx: &mut Checker<'_>, id: &str, s: &State) {
    let Some(otp) = &s.otp else { return };
    let range = |cx: &mut Checker<'_>, v: &Option<Located<u32>>, lo: u32, hi: u32, what: &str| {
        if let Some(v) = v {
            if !(lo..=hi).contains(v.get()) {
                cx.error(
                    v.span(),
                    format!("otp {what} {} is out of range {lo}–{hi}", v.get()),
                );
            }
        }
    };
    range(cx, &otp.length, 4, 10, "length");
    range(cx, &otp.attempts, 1, 10, "attempts");
    range(cx, &otp.max_resends, 0, 10, "max_resends");
    if let Some(l) = &otp.lifetime {
        if let Ok(d) = parse_duration(l.as_str()) {
            if d < chrono::Duration::minutes(1) || d > chrono::Duration::minutes(90) {
                cx.error(
                    l.span(),
                    format!("otp lifetime `{}` is out of range 1m–90m", l.as_str()),
                );
            }
        }
    }
    let sends = !otp.reverse && otp.deliver != Some(false);
    match &s.template {
        None if sends => cx.error(s.kind.span(), format!("otp state `{id}` sends a code, so it needs an authentication `template` to carry it")),
        Some(t) => {
            if let Some(tpl) = cx.file.templates.get(t.as_str()) {
                if tpl.category.get() != &TemplateCategory::Authentication {
                    cx.error(t.span(), format!("template `{}` carries a code, so its category must be `authentication`", t.as_str()));
                }
            }
        }
        None => {}
    }
}
