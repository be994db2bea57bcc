//! The settings that bound a session as a whole: the `[start]` deadline with its reminders,
//! and each state's `max_visits`. Their place in the state graph (loops, reachability) and in
//! the 24-hour window is checked by `graph` and `window`; this checks the settings themselves.

use std::collections::BTreeSet;

use super::Checker;
use crate::flow::duration::{parse_deadline_reminder, parse_duration, MAX_DEADLINE_SECS};
use crate::flow::model::StateKind;

/// Most times a state may be entered in one session.
pub const MAX_VISITS: u32 = 100;

pub(super) fn check_bounds(cx: &mut Checker<'_>) {
    check_deadline(cx);
    check_after_deadline(cx);
    for (id, s) in &cx.file.states {
        match (&s.max_visits, &s.on_max_visits) {
            (Some(max), _) if !(1..=MAX_VISITS).contains(max.get()) => cx.error(
                max.span(),
                format!(
                    "`max_visits` in state `{id}` is {}; it must be 1 to {MAX_VISITS}",
                    max.get()
                ),
            ),
            (Some(max), None) if s.kind.get() != &StateKind::End => cx.error(
                max.span(),
                format!("`max_visits` in state `{id}` needs `on_max_visits`: the state entered instead once it is used up"),
            ),
            (None, Some(instead)) => cx.error(
                instead.span(),
                format!("`on_max_visits` in state `{id}` needs `max_visits`"),
            ),
            _ => {}
        }
    }
}

fn check_deadline(cx: &mut Checker<'_>) {
    let start = &cx.file.start;
    let length = match &start.deadline {
        Some(d) => match parse_duration(d.as_str()) {
            Ok(length) if length.num_seconds() <= MAX_DEADLINE_SECS => Some(length),
            Ok(_) => {
                cx.error(
                    d.span(),
                    format!(
                        "`deadline` `{}` is longer than {}d",
                        d.as_str(),
                        MAX_DEADLINE_SECS / 86_400
                    ),
                );
                None
            }
            Err(e) => {
                cx.error(d.span(), e);
                None
            }
        },
        None => None,
    };
    match (&start.deadline, &start.on_deadline) {
        (Some(d), None) => cx.error(
            d.span(),
            "`deadline` needs `on_deadline`: the state the session goes to when it passes",
        ),
        (None, Some(t)) => cx.error(t.span(), "`on_deadline` needs `deadline`"),
        (_, Some(t)) => {
            cx.state_ref(t);
        }
        (None, None) => {}
    }
    if let Some(m) = &start.deadline_reminder {
        cx.message_ref(m);
    }
    if let Some(t) = &start.deadline_reminder_template {
        cx.reference("template", t, cx.file.templates.keys());
    }
    match (start.deadline_reminders.first(), &start.deadline_reminder) {
        (Some(r), None) => cx.error(
            r.span(),
            "`deadline_reminders` needs `deadline_reminder`: the message they send",
        ),
        (None, Some(m)) => cx.error(
            m.span(),
            "`deadline_reminder` is never sent: give the times in `deadline_reminders`",
        ),
        _ => {}
    }
    if let (None, Some(t)) = (&start.deadline_reminder, &start.deadline_reminder_template) {
        cx.error(
            t.span(),
            "`deadline_reminder_template` needs `deadline_reminder`",
        );
    }
    let Some(first) = start.deadline_reminders.first() else {
        return;
    };
    let Some(length) = length else {
        if start.deadline.is_none() {
            cx.error(
                first.span(),
                "`deadline_reminders` needs a `deadline` in [start]",
            );
        }
        return;
    };
    for r in &start.deadline_reminders {
        if let Err(e) = parse_deadline_reminder(r.as_str(), length) {
            cx.error(r.span(), e);
        }
    }
}

/// An `ask` state may leave its wait to the deadline, but not one the session can reach once
/// the deadline has passed: that one would wait for ever.
fn check_after_deadline(cx: &mut Checker<'_>) {
    let file = cx.file;
    let (Some(_), Some(target)) = (&file.start.deadline, &file.start.on_deadline) else {
        return;
    };
    let global: Vec<&str> = file
        .interrupts
        .values()
        .filter_map(|i| i.goto.as_ref())
        .chain(&file.on_delivery_failure)
        .chain(&file.on_retries_exhausted)
        .map(|t| t.as_str())
        .collect();
    let mut after: BTreeSet<&str> = BTreeSet::new();
    let mut queue = vec![target.as_str()];
    while let Some(id) = queue.pop() {
        let Some((id, s)) = file.states.get_key_value(id) else {
            continue;
        };
        if !after.insert(id.as_str()) {
            continue;
        }
        queue.extend(super::graph::own_targets(s));
        if s.kind.get().is_waiting() {
            queue.extend(global.iter().copied());
        }
    }
    for id in after {
        let Some(s) = file.states.get(id) else {
            continue;
        };
        if s.kind.get() == &StateKind::Ask && s.timeout.is_none() && s.on_timeout.is_none() {
            cx.error(
                s.kind.span(),
                format!("waiting state `{id}` can be reached after the deadline (`on_deadline`), so it needs its own `timeout` and `on_timeout`"),
            );
        }
    }
}
