//! Whole-flow checks on the state graph: unreachable states, states with no way to an end,
//! and loops made only of states that do not wait (which would spin forever).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::Checker;
use crate::flow::model::{FlowFile, State, StateKind};

/// Every state a state can move to by itself (not counting flow-wide interrupts).
pub fn own_targets(s: &State) -> Vec<&str> {
    let mut out: Vec<&str> = [
        &s.on_text,
        &s.next,
        &s.on_error,
        &s.on_locked,
        &s.on_expired,
        &s.on_timeout,
        &s.on_retries_exhausted,
    ]
    .into_iter()
    .flatten()
    .map(|l| l.as_str())
    .collect();
    out.extend(s.buttons.iter().map(|b| b.goto.as_str()));
    out.extend(s.list.iter().flat_map(|l| &l.rows).map(|r| r.goto.as_str()));
    out.extend(s.branches.iter().map(|b| b.goto.as_str()));
    out
}

/// Targets shared by every waiting state: interrupts, delivery failure, retries exhausted.
fn global_targets(file: &FlowFile) -> Vec<&str> {
    file.interrupts
        .values()
        .filter_map(|i| i.goto.as_ref())
        .chain(&file.on_delivery_failure)
        .chain(&file.on_retries_exhausted)
        .map(|l| l.as_str())
        .collect()
}

fn edges(file: &FlowFile) -> BTreeMap<&str, Vec<&str>> {
    let global = global_targets(file);
    file.states
        .iter()
        .map(|(id, s)| {
            let mut t = own_targets(s);
            if s.kind.get().is_waiting() {
                t.extend(global.iter().copied());
            }
            t.retain(|t| file.states.contains_key(*t));
            (id.as_str(), t)
        })
        .collect()
}

pub(super) fn check_graph(cx: &mut Checker<'_>) {
    let file = cx.file;
    let edges = edges(file);
    let start = file.start.state.as_str();
    let reachable = closure([start], &edges);
    for (id, s) in &file.states {
        if !reachable.contains(id.as_str()) {
            cx.error(
                s.kind.span(),
                format!("state `{id}` is unreachable from the start state `{start}`"),
            );
        }
    }
    // Reverse reachability from the end states: who can still finish?
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
    for (id, s) in &file.states {
        if reachable.contains(id.as_str()) && !can_finish.contains(id.as_str()) {
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

fn check_spin_loops(cx: &mut Checker<'_>) {
    let file = cx.file;
    // Only `say` states move on without waiting.
    let say: BTreeMap<&str, Vec<&str>> = file
        .states
        .iter()
        .filter(|(_, s)| s.kind.get() == &StateKind::Say)
        .map(|(id, s)| {
            let next = own_targets(s)
                .into_iter()
                .filter(|t| {
                    file.states
                        .get(*t)
                        .is_some_and(|n| n.kind.get() == &StateKind::Say)
                })
                .collect();
            (id.as_str(), next)
        })
        .collect();
    let mut reported = BTreeSet::new();
    for &root in say.keys() {
        if reported.contains(root) {
            continue;
        }
        if let Some(cycle) = find_cycle(root, &say) {
            if cycle.first() == Some(&root) {
                reported.extend(cycle.iter().copied());
                let span = file.states.get(root).map_or(0..0, |s| s.kind.span());
                cx.error(
                    span,
                    format!(
                        "states {} form a loop that never waits for anything",
                        cycle
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(" → ")
                    ),
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
