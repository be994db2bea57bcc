//! The 24-hour window over every path of a flow: WhatsApp delivers a free-form message only
//! within 24 hours of the customer's last message, and only templates after that. For each state
//! this finds how old the customer's last message can be when the state is entered — unknown for
//! a session started over the API, zero after an answer in the chat, growing with every wait that
//! ends without the customer (a timeout, a reminder, a code's lifetime, a code checked on the
//! merchant's site, a hook, the session's deadline) — and refuses each message that can then go
//! out without a template, deadline reminders included.
//!
//! A fixpoint over the state graph: ages only grow and saturate at "24 hours or more", so loops
//! end. Pure.

use std::collections::{BTreeMap, VecDeque};

use super::Checker;
use crate::flow::duration::{parse_deadline_reminder, parse_duration};
use crate::flow::located::Located;
use crate::flow::model::{FlowFile, OtpCheck, State, StateKind};

/// The window, in seconds.
const WINDOW: i64 = 86_400;
/// The engine's defaults for waits a state leaves unset. An `ask` state without `timeout`
/// (allowed under a deadline, which bounds it) is taken to wait a day at most.
const DEFAULT_ASK_TIMEOUT: i64 = 86_400;
const DEFAULT_OTP_LIFETIME: i64 = 600;
const DEFAULT_HOOK_TIMEOUT: i64 = 60;

/// How old the customer's last message can be: under 24 hours, or possibly 24 hours or more
/// (with why, for the error message).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Age {
    Within(i64),
    Closed(String),
}

impl Age {
    fn rank(&self) -> i64 {
        match self {
            Age::Within(secs) => *secs,
            Age::Closed(_) => WINDOW,
        }
    }

    /// The age after a wait of `secs`; `why` names the wait if it is what closes the window.
    fn after(&self, secs: i64, why: impl FnOnce() -> String) -> Age {
        match self {
            Age::Within(a) if a + secs < WINDOW => Age::Within(a + secs),
            Age::Within(_) => Age::Closed(why()),
            closed @ Age::Closed(_) => closed.clone(),
        }
    }
}

fn seconds(l: Option<&Located<String>>, default: i64) -> i64 {
    l.and_then(|l| parse_duration(l.as_str()).ok())
        .map_or(default, |d| d.num_seconds())
}

/// How long a session can stay in a state before it moves on without the customer.
fn longest_wait(s: &State) -> i64 {
    match s.kind.get() {
        StateKind::Ask => seconds(s.timeout.as_ref(), DEFAULT_ASK_TIMEOUT),
        StateKind::Otp => lifetime(s),
        StateKind::Hook => seconds(s.timeout.as_ref(), DEFAULT_HOOK_TIMEOUT),
        StateKind::Say | StateKind::End => 0,
    }
}

fn lifetime(s: &State) -> i64 {
    seconds(
        s.otp.as_ref().and_then(|o| o.lifetime.as_ref()),
        DEFAULT_OTP_LIFETIME,
    )
}

/// Where a state can go by itself, and how old the customer's last message is on arrival.
fn moves<'s>(id: &str, s: &'s State, age: &Age) -> Vec<(&'s str, Age)> {
    let fresh = Age::Within(0);
    let mut out: Vec<(&str, Age)> = Vec::new();
    let mut add = |targets: Vec<&'s str>, age: Age| {
        out.extend(targets.into_iter().map(|t| (t, age.clone())));
    };
    let all = |l: &'s Option<Located<String>>| l.iter().map(|l| l.as_str()).collect::<Vec<_>>();
    let waited =
        |secs: i64, what: &str| age.after(secs, || format!("after {what} of state `{id}`"));
    match s.kind.get() {
        StateKind::Ask => {
            // Taps, typed answers and unusable answers all come from the customer.
            let mut answered: Vec<&str> = s.buttons.iter().map(|b| b.goto.as_str()).collect();
            answered.extend(s.list.iter().flat_map(|l| &l.rows).map(|r| r.goto.as_str()));
            answered.extend(all(&s.on_text));
            answered.extend(all(&s.on_retries_exhausted));
            add(answered, fresh.clone());
            let timeout = seconds(s.timeout.as_ref(), DEFAULT_ASK_TIMEOUT);
            add(all(&s.on_timeout), waited(timeout, "the timeout"));
        }
        StateKind::Say => {
            let mut next = all(&s.next);
            next.extend(s.branches.iter().map(|b| b.goto.as_str()));
            add(next, age.clone());
        }
        StateKind::Otp => {
            let otp = s.otp.as_ref();
            let reverse = otp.is_some_and(|o| o.reverse);
            let check = otp
                .and_then(|o| o.check.as_ref())
                .map_or(OtpCheck::Chat, |c| *c.get());
            let life = lifetime(s);
            // A code typed in the chat is a customer message; one checked on the merchant's
            // site may come at any time of its lifetime, the customer silent in the chat.
            let checked = if reverse || check == OtpCheck::Chat {
                fresh.clone()
            } else {
                waited(life, "a code checked over the API")
            };
            let mut decided = all(&s.next);
            decided.extend(all(&s.on_locked));
            add(decided, checked);
            add(all(&s.on_expired), waited(life, "the code's lifetime"));
            add(all(&s.on_retries_exhausted), fresh.clone());
        }
        StateKind::Hook => {
            let timeout = seconds(s.timeout.as_ref(), DEFAULT_HOOK_TIMEOUT);
            let mut answered = all(&s.next);
            answered.extend(s.branches.iter().map(|b| b.goto.as_str()));
            answered.extend(all(&s.on_error));
            add(answered, waited(timeout, "waiting for the hook"));
        }
        StateKind::End => {}
    }
    out
}

/// How many times each state with `max_visits` has been entered on a path, in file order.
type Counts = Vec<u32>;

/// Where arrivals land once `max_visits` is applied. The analysis follows visit counts so that
/// a loop of waits bounded by `max_visits` (a hook tried again, a question asked again) ages
/// the customer's last message only as often as it can run; when the combinations of counts
/// would be too many to follow, it counts nothing and treats every such loop as endless.
struct Visits<'f> {
    /// The states with `max_visits`: id, limit, `on_max_visits`.
    counted: Vec<(&'f str, u32, Option<&'f str>)>,
    track: bool,
}

/// Most combinations of visit counts the analysis follows.
const MAX_COUNT_COMBINATIONS: u64 = 4096;

impl<'f> Visits<'f> {
    fn new(file: &'f FlowFile) -> Self {
        let counted: Vec<(&str, u32, Option<&str>)> = file
            .states
            .iter()
            .filter_map(|(id, s)| {
                let max = s.max_visits.as_ref()?;
                Some((
                    id.as_str(),
                    *max.get(),
                    s.on_max_visits.as_ref().map(|t| t.as_str()),
                ))
            })
            .collect();
        let combinations = counted
            .iter()
            .fold(1u64, |n, (_, max, _)| n.saturating_mul(u64::from(*max) + 1));
        Visits {
            counted,
            track: combinations <= MAX_COUNT_COMBINATIONS,
        }
    }

    fn start(&self) -> Counts {
        if self.track {
            vec![0; self.counted.len()]
        } else {
            Vec::new()
        }
    }

    /// The states (with their counts) an arrival at `target` can end up entering.
    fn arrive(&self, target: &'f str, counts: Counts) -> Vec<(&'f str, Counts)> {
        let mut out = Vec::new();
        let mut todo = vec![(target, counts)];
        // Each used-up state passes on at most once per arrival in a validated flow (it has no
        // loop of used-up states); the budget keeps an invalid one finite.
        let mut budget = self.counted.len() + 1;
        while let Some((target, mut counts)) = todo.pop() {
            let Some(i) = self.counted.iter().position(|(id, _, _)| *id == target) else {
                out.push((target, counts));
                continue;
            };
            let (_, max, instead) = self.counted[i];
            if budget == 0 {
                continue;
            }
            budget -= 1;
            if !self.track {
                // Not counted: entered, or already used up.
                out.push((target, counts.clone()));
                todo.extend(instead.map(|t| (t, counts)));
            } else if counts[i] >= max {
                todo.extend(instead.map(|t| (t, counts)));
            } else {
                counts[i] += 1;
                out.push((target, counts));
            }
        }
        out
    }
}

/// Arrival ages by state and visit counts.
type Seen<'f> = BTreeMap<(&'f str, Counts), Age>;

/// Spreads arrival ages from `seeds` along every move until nothing gets older.
fn spread<'f>(
    file: &'f FlowFile,
    visits: &Visits<'f>,
    seen: &mut Seen<'f>,
    seeds: Vec<(&'f str, Counts, Age)>,
    cap: Option<i64>,
) {
    // Interrupt words and answers that exhaust the retries come from the customer.
    let customer: Vec<&str> = file
        .interrupts
        .values()
        .filter_map(|i| i.goto.as_ref())
        .chain(&file.on_retries_exhausted)
        .map(|l| l.as_str())
        .collect();
    let mut queue: VecDeque<(&str, Counts, Age)> = seeds.into_iter().collect();
    while let Some((target, counts, arrival)) = queue.pop_front() {
        let arrival = match cap {
            Some(cap) if arrival.rank() > cap => Age::Within(cap),
            _ => arrival,
        };
        for (target, counts) in visits.arrive(target, counts) {
            let Some((id, s)) = file.states.get_key_value(target) else {
                continue;
            };
            let key = (id.as_str(), counts);
            let older = seen
                .get(&key)
                .map_or(true, |known| arrival.rank() > known.rank());
            if !older {
                continue;
            }
            seen.insert(key.clone(), arrival.clone());
            let counts = key.1;
            queue.extend(
                moves(id, s, &arrival)
                    .into_iter()
                    .map(|(t, age)| (t, counts.clone(), age)),
            );
            if s.kind.get().is_waiting() {
                queue.extend(
                    customer
                        .iter()
                        .map(|t| (*t, counts.clone(), Age::Within(0))),
                );
            }
        }
    }
}

/// The oldest arrival age of each state, whatever its counts.
fn by_state<'f>(seen: &Seen<'f>) -> BTreeMap<&'f str, Age> {
    let mut ages: BTreeMap<&str, Age> = BTreeMap::new();
    for ((id, _), age) in seen {
        let older = ages.get(id).map_or(true, |known| age.rank() > known.rank());
        if older {
            ages.insert(id, age.clone());
        }
    }
    ages
}

pub(super) fn check_window(cx: &mut Checker<'_>) {
    let file = cx.file;
    let start_age = if file.start.api {
        Age::Closed("an API-started session begins before the customer has written".to_owned())
    } else {
        Age::Within(0)
    };
    let deadline = file
        .start
        .deadline
        .as_ref()
        .and_then(|d| parse_duration(d.as_str()).ok())
        .map(|d| d.num_seconds());
    let cap = deadline.filter(|d| *d < WINDOW && !file.start.api && ends_at_deadline(file));
    let visits = Visits::new(file);
    let mut seen: Seen<'_> = BTreeMap::new();
    spread(
        file,
        &visits,
        &mut seen,
        vec![(file.start.state.as_str(), visits.start(), start_age)],
        cap,
    );
    // Branches taken from whichever state waits (a late delivery failure, the deadline) are
    // entered as late as the latest of them; what they lead to can wait again, so repeat
    // until no age grows.
    loop {
        let before = seen.clone();
        let mut seeds = Vec::new();
        // A delivery failure can be reported at any time a state waits.
        if let Some(target) = &file.on_delivery_failure {
            let late = while_waiting(file, &seen, deadline, None, |id| {
                format!("after a delivery failure reported late in state `{id}`")
            });
            seeds.extend(late.into_iter().map(|(c, age)| (target.as_str(), c, age)));
        }
        if let (Some(target), Some(length)) = (&file.start.on_deadline, deadline) {
            let late = while_waiting(file, &seen, deadline, Some(length), |id| {
                format!("at the deadline, waiting in state `{id}`")
            });
            seeds.extend(late.into_iter().map(|(c, age)| (target.as_str(), c, age)));
        }
        spread(file, &visits, &mut seen, seeds, cap);
        if seen == before {
            break;
        }
    }
    if let Some(length) = deadline {
        check_deadline_reminders(cx, &seen, length);
    }
    let ages = by_state(&seen);

    for (id, s) in &file.states {
        let Some(age) = ages.get(id.as_str()) else {
            continue;
        };
        let kind = *s.kind.get();
        if let (Some(m), Age::Closed(why)) = (&s.message, age) {
            // An otp state's template carries the code, never its prompt.
            if s.template.is_none() || kind == StateKind::Otp {
                let fix = if kind == StateKind::Otp {
                    "reach this otp state only from the customer's answers, or drop its prompt (the code's template is what the customer gets)"
                } else {
                    "give the state a `template` (or move the text into one)"
                };
                cx.error(
                    m.span(),
                    format!("message `{}` can go out 24 hours or more after the customer last wrote ({why}), when WhatsApp accepts only templates: {fix}", m.as_str()),
                );
            }
        }
        check_reminders(cx, id, s, age);
    }
}

/// Whether a session always ends once its deadline passes: no waiting state follows
/// `on_deadline`. Then, in a session the customer's message started, nothing is ever sent
/// later than the deadline after that message: a deadline under 24 hours bounds every age,
/// however many waits (a loop bounded by `max_visits`, say) come before it.
fn ends_at_deadline(file: &FlowFile) -> bool {
    let Some(target) = &file.start.on_deadline else {
        return false;
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut queue = vec![target.as_str()];
    while let Some(id) = queue.pop() {
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let Some(s) = file.states.get(id) else {
            continue;
        };
        if s.kind.get().is_waiting() {
            return false;
        }
        if s.kind.get() == &StateKind::Say {
            queue.extend(s.next.iter().map(|n| n.as_str()));
            queue.extend(s.branches.iter().map(|b| b.goto.as_str()));
        }
        queue.extend(s.on_max_visits.iter().map(|n| n.as_str()));
    }
    true
}

/// How old the customer's last message can be at a moment `at` seconds after the session's
/// start (`None`: any moment) while a state waits, for each waiting state and the visit
/// counts it is seen with. When the customer's message started the session, it is never older
/// than `at`.
fn while_waiting(
    file: &FlowFile,
    seen: &Seen<'_>,
    deadline: Option<i64>,
    at: Option<i64>,
    why: impl Fn(&str) -> String,
) -> Vec<(Counts, Age)> {
    seen.iter()
        .filter_map(|((id, counts), age)| {
            let s = file.states.get(*id)?;
            if !s.kind.get().is_waiting() {
                return None;
            }
            let mut wait = longest_wait(s);
            for bound in [deadline, at].into_iter().flatten() {
                wait = wait.min(bound);
            }
            let late = age.after(wait, || why(id));
            let late = match at {
                Some(at) if !file.start.api && at < WINDOW && late.rank() > at => Age::Within(at),
                _ => late,
            };
            Some((counts.clone(), late))
        })
        .collect()
}

/// Deadline reminders go out while any state waits, each at its time after the start.
fn check_deadline_reminders(cx: &mut Checker<'_>, seen: &Seen<'_>, length: i64) {
    let start = &cx.file.start;
    let (Some(m), None) = (&start.deadline_reminder, &start.deadline_reminder_template) else {
        return;
    };
    for r in &start.deadline_reminders {
        let Ok(offset) = parse_deadline_reminder(r.as_str(), chrono::Duration::seconds(length))
        else {
            continue;
        };
        let late = while_waiting(
            cx.file,
            seen,
            Some(length),
            Some(offset.num_seconds()),
            |id| {
                format!(
                    "at the {} deadline reminder, waiting in state `{id}`",
                    r.as_str()
                )
            },
        )
        .into_iter()
        .map(|(_, age)| age)
        .max_by_key(Age::rank);
        if let Some(Age::Closed(why)) = late {
            cx.error(
                m.span(),
                format!("deadline reminder `{}` can go out 24 hours or more after the customer last wrote ({why}), when WhatsApp accepts only templates: add a `deadline_reminder_template`", m.as_str()),
            );
            return;
        }
    }
}

/// Reminders go out while the customer is silent: each one's age is the state's plus its offset.
fn check_reminders(cx: &mut Checker<'_>, id: &str, s: &State, age: &Age) {
    if s.reminder_template.is_some() {
        return;
    }
    let wait = longest_wait(s);
    for r in &s.reminders {
        let Ok(offset) = parse_duration(r.as_str()).map(|d| d.num_seconds()) else {
            continue;
        };
        if offset >= wait {
            continue;
        }
        let Age::Closed(why) = age.after(offset, || {
            format!("after the {} reminder of state `{id}`", r.as_str())
        }) else {
            continue;
        };
        match (&s.reminder, &s.template) {
            (Some(m), _) => cx.error(
                m.span(),
                format!("reminder `{}` can go out 24 hours or more after the customer last wrote ({why}), when WhatsApp accepts only templates: add a `reminder_template` (or drop `reminder` to resend the templated message)", m.as_str()),
            ),
            // The state's own message is sent again, with the state's template if it has one.
            (None, None) if s.message.is_some() && *s.kind.get() != StateKind::Otp => cx.error(
                r.span(),
                format!("reminder `{}` resends the state's message 24 hours or more after the customer last wrote ({why}), when WhatsApp accepts only templates: give the state a `template` or add a `reminder_template`", r.as_str()),
            ),
            _ => {}
        }
        // One error per reminder field is enough.
        return;
    }
}

#[cfg(test)]
mod tests {
    use crate::flow::load::parse_flow;

    /// A hook tried `tries` times, each wait up to 11 hours, then an end with a free-form text.
    fn retried_hook(tries: u32) -> Vec<String> {
        let text = format!(
            r#"
id = "retry"
version = "1"
on_retries_exhausted = "done"

[start]
state = "ask"
keywords = ["retry"]

[hooks.lookup]
url = "https://shop.example/lookup"

[messages.ask]
en = "Which account?"

[messages.sorry]
en = "Sorry, not now."

[states.ask]
kind = "ask"
message = "ask"
on_text = "lookup"
timeout = "1h"
on_timeout = "done"

[states.lookup]
kind = "hook"
hook = "lookup"
timeout = "11h"
next = "done"
on_error = "lookup"
max_visits = {tries}
on_max_visits = "unavailable"

[states.unavailable]
kind = "end"
message = "sorry"
outcome = "unavailable"

[states.done]
kind = "end"
outcome = "done"
"#
        );
        match parse_flow("retry.toml", &text) {
            Ok(_) => Vec::new(),
            Err(diags) => diags.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn a_loop_of_waits_bounded_by_max_visits_ages_the_window_only_as_often_as_it_runs() {
        // Two tries of up to 11 hours: 22 hours at most since the customer's answer.
        assert_eq!(retried_hook(2), Vec::<String>::new());
        // Three: up to 33 hours, so the end's text may need a template.
        let errors = retried_hook(3);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("message `sorry` can go out 24 hours or more after the customer last wrote (after waiting for the hook of state `lookup`)"),
            "{errors:?}"
        );
    }
}
