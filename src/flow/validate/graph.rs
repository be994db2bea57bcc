//! Whole-flow checks on the state graph: unreachable states, states with no way to an end,
//! and loops that would spin forever: made only of states that do not wait, with no state
//! whose `max_visits` counts each round. One mistake is
//! reported once: the states behind an unreachable one, and a state cut off from the end only
//! by a reference to a missing state, add no error of their own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::Checker;
use crate::flow::located::Located;
use crate::flow::model::{FlowFile, State, StateKind};

/// Every state reference a state makes itself (not counting flow-wide interrupts), where it is
/// written.
fn own_target_refs(s: &State) -> Vec<&Located<String>> {
    let mut out: Vec<&Located<String>> = [
        &s.on_text,
        &s.next,
        &s.on_error,
        &s.on_locked,
        &s.on_expired,
        &s.on_timeout,
        &s.on_retries_exhausted,
        &s.on_max_visits,
    ]
    .into_iter()
    .flatten()
    .collect();
    out.extend(s.buttons.iter().map(|b| &b.goto));
    out.extend(s.list.iter().flat_map(|l| &l.rows).map(|r| &r.goto));
    out.extend(s.branches.iter().map(|b| &b.goto));
    out
}

/// Every state a state can move to by itself (not counting flow-wide interrupts).
pub fn own_targets(s: &State) -> Vec<&str> {
    own_target_refs(s)
        .into_iter()
        .map(Located::as_str)
        .collect()
}

/// Targets shared by every waiting state: interrupts, delivery failure, retries exhausted,
/// the session's deadline.
fn global_target_refs(file: &FlowFile) -> Vec<&Located<String>> {
    file.interrupts
        .values()
        .filter_map(|i| i.goto.as_ref())
        .chain(&file.on_delivery_failure)
        .chain(&file.on_retries_exhausted)
        .chain(&file.start.on_deadline)
        .collect()
}

/// Every reference a state makes, its own and (for waiting states) the flow-wide ones.
fn target_refs<'f>(file: &'f FlowFile, s: &'f State) -> Vec<&'f Located<String>> {
    let mut t = own_target_refs(s);
    if s.kind.get().is_waiting() {
        t.extend(global_target_refs(file));
    }
    t
}

fn edges(file: &FlowFile) -> BTreeMap<&str, Vec<&str>> {
    file.states
        .iter()
        .map(|(id, s)| {
            let mut t: Vec<&str> = target_refs(file, s)
                .into_iter()
                .map(Located::as_str)
                .collect();
            t.retain(|t| file.states.contains_key(*t));
            (id.as_str(), t)
        })
        .collect()
}

/// Unreachable states, each region once: a state only reachable through another unreachable
/// state is a consequence, not a second mistake. When a misspelt reference is what cuts a state
/// off (its closest state name is that state), the message names its line.
pub(super) fn check_graph(cx: &mut Checker<'_>) {
    let file = cx.file;
    let edges = edges(file);
    let start = file.start.state.as_str();
    let reachable = closure([start], &edges);
    // References to missing states (reported where they are written) from states that run.
    let dangling: Vec<&Located<String>> = std::iter::once(&file.start.state)
        .chain(
            file.states
                .iter()
                .filter(|(id, _)| reachable.contains(id.as_str()))
                .flat_map(|(_, s)| target_refs(file, s)),
        )
        .filter(|t| !file.states.contains_key(t.as_str()))
        .collect();
    let unreachable: BTreeSet<&str> = file
        .states
        .keys()
        .map(String::as_str)
        .filter(|id| !reachable.contains(id))
        .collect();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    // Heads first (no unreachable state leads to them), then whatever is left: loops.
    let entered: BTreeSet<&str> = unreachable
        .iter()
        .flat_map(|from| {
            edges
                .get(from)
                .into_iter()
                .flatten()
                .filter(move |to| *to != from)
        })
        .copied()
        .collect();
    let heads = unreachable
        .iter()
        .filter(|id| !entered.contains(*id))
        .chain(unreachable.iter())
        .copied();
    for head in heads {
        if covered.contains(head) {
            continue;
        }
        let behind = closure([head], &edges);
        let more = behind
            .iter()
            .any(|s| *s != head && unreachable.contains(s) && !covered.contains(s));
        covered.extend(behind.iter().filter(|s| unreachable.contains(*s)));
        let cause = dangling.iter().find(|t| {
            super::closest(t.as_str(), file.states.keys().map(String::as_str)) == Some(head)
        });
        let mut message = format!("state `{head}` is unreachable from the start state `{start}`");
        if let Some(t) = cause {
            let line = cx.line_of(t.span().start);
            message.push_str(&format!(" because of line {line} (`{}`)", t.as_str()));
        }
        if more {
            message.push_str("; so is every state only reachable through it");
        }
        let span = file.states.get(head).map_or(0..0, |s| s.kind.span());
        cx.error(span, message);
    }
    // Reverse reachability from the end states: who can still finish? A state that can reach a
    // missing state may be cut off from the end only by that mistake, already reported.
    let mut reverse: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, tos) in &edges {
        for to in tos {
            reverse.entry(to).or_default().push(from);
        }
    }
    let ends = file
        .states
        .iter()
        .filter(|(_, s)| s.kind.get() == &StateKind::End)
        .map(|(id, _)| id.as_str());
    let can_finish = closure(ends, &reverse);
    let leads_to_dangling = closure(
        file.states
            .iter()
            .filter(|(_, s)| {
                target_refs(file, s)
                    .iter()
                    .any(|t| !file.states.contains_key(t.as_str()))
            })
            .map(|(id, _)| id.as_str()),
        &reverse,
    );
    for (id, s) in &file.states {
        let id = id.as_str();
        if reachable.contains(id) && !can_finish.contains(id) && !leads_to_dangling.contains(id) {
            cx.error(
                s.kind.span(),
                format!("state `{id}` has no way out: no end state can be reached from it"),
            );
        }
    }
    check_spin_loops(cx);
}

fn closure<'a>(
    roots: impl IntoIterator<Item = &'a str>,
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
) -> BTreeSet<&'a str> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut queue: VecDeque<&str> = roots.into_iter().collect();
    while let Some(s) = queue.pop_front() {
        if seen.insert(s) {
            queue.extend(edges.get(s).into_iter().flatten().copied());
        }
    }
    seen
}

/// Loops the engine would run through without waiting. Entering a state either waits (a
/// waiting state), is counted (a state with `max_visits`: at most that many times) or moves on
/// at once: a `say` state to its next state, and a used-up state with `max_visits` to its
/// `on_max_visits` state, uncounted. Only moves of the last sort can repeat without end, so a
/// loop made only of them is an error; any loop through a waiting or counted entry ends.
fn check_spin_loops(cx: &mut Checker<'_>) {
    let file = cx.file;
    let moves_on: BTreeMap<&str, Vec<&str>> = file
        .states
        .iter()
        .map(|(id, s)| {
            let targets = match (&s.on_max_visits, s.max_visits.is_some(), s.kind.get()) {
                (Some(instead), true, _) => vec![instead.as_str()],
                (_, false, StateKind::Say) => own_targets(s),
                _ => Vec::new(),
            };
            let targets = targets
                .into_iter()
                .filter(|t| file.states.contains_key(*t))
                .collect();
            (id.as_str(), targets)
        })
        .collect();
    let mut reported = BTreeSet::new();
    for &root in moves_on.keys() {
        if reported.contains(root) {
            continue;
        }
        if let Some(cycle) = find_cycle(root, &moves_on) {
            if cycle.first() == Some(&root) {
                reported.extend(cycle.iter().copied());
                let span = file.states.get(root).map_or(0..0, |s| s.kind.span());
                let names = cycle
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(" → ");
                let used_up: Vec<String> = cycle
                    .iter()
                    .filter(|id| {
                        file.states
                            .get(**id)
                            .is_some_and(|s| s.max_visits.is_some())
                    })
                    .map(|id| format!("`{id}`"))
                    .collect();
                let why = if used_up.is_empty() {
                    "; make one of them wait, or give one `max_visits` and `on_max_visits`"
                        .to_owned()
                } else {
                    format!(
                        "; once {} used up its `max_visits`, entering it goes on to `on_max_visits` uncounted, so the loop must also pass through a waiting state or another state with `max_visits`",
                        used_up.join(" and ") + if used_up.len() == 1 { " has" } else { " have" }
                    )
                };
                cx.error(
                    span,
                    format!("states {names} form a loop that never waits for anything{why}"),
                );
            }
        }
    }
}

// Depth-first search for a path from `root` back to `root`.
fn find_cycle<'a>(root: &'a str, edges: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    let mut stack = vec![(root, vec![root])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for &next in edges.get(node).into_iter().flatten() {
            if next == root {
                return Some(path);
            }
            if seen.insert(next) {
                let mut p = path.clone();
                p.push(next);
                stack.push((next, p));
            }
        }
    }
    None
}
