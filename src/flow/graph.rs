//! Mermaid state diagrams of flows (`waotp graph FLOW`), for authors to see their flow.
//!
//! Pure text generation from a loaded flow. Every way a state can move is drawn as an edge, and
//! reminders as an edge from the waiting state to itself (the session stays where it is). What
//! any waiting state can do (interrupts, the session's deadline and its reminders) is drawn
//! from one "any waiting state" node.

use std::fmt::Write as _;

use super::load::Flow;
use super::model::StateKind;

/// The flow as a Mermaid `stateDiagram-v2`.
pub fn mermaid(flow: &Flow) -> String {
    let f = flow.file();
    let mut out = String::from("stateDiagram-v2\n");
    let mut line = |s: String| {
        out.push_str("    ");
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("%% flow {} version {}", flow.id(), flow.version()));
    line(format!("[*] --> {}", f.start.state.as_str()));
    let default = f.default_language();
    for (id, s) in &f.states {
        let kind = s.kind.get();
        line(format!("{id} : {id} ({})", kind.as_str()));
        let mut edge = |to: &str, label: &str| {
            let label = label.replace([':', '"'], " ");
            line(format!("{id} --> {to} : {label}"));
        };
        for b in &s.buttons {
            edge(b.goto.as_str(), b.title.in_language(default, default));
        }
        for r in s.list.iter().flat_map(|l| &l.rows) {
            edge(r.goto.as_str(), r.title.in_language(default, default));
        }
        let labelled = [
            (&s.on_text, "text"),
            (
                &s.next,
                if kind == &StateKind::Otp {
                    "correct code"
                } else {
                    "next"
                },
            ),
            (&s.on_error, "error"),
            (&s.on_locked, "locked"),
            (&s.on_expired, "expired"),
            (&s.on_timeout, "timeout"),
            (&s.on_retries_exhausted, "retries exhausted"),
        ];
        for (target, label) in labelled {
            if let Some(t) = target {
                edge(t.as_str(), label);
            }
        }
        if let (Some(max), Some(instead)) = (&s.max_visits, &s.on_max_visits) {
            edge(
                instead.as_str(),
                &format!("entered after {} visits (max_visits)", max.get()),
            );
        }
        if !s.reminders.is_empty() {
            let at: Vec<&str> = s.reminders.iter().map(|r| r.as_str()).collect();
            let what = s
                .reminder
                .as_ref()
                .map_or("the message again", |m| m.as_str());
            edge(id, &format!("reminder after {} ({what})", at.join(", ")));
        }
        for b in &s.branches {
            edge(
                b.goto.as_str(),
                b.when.as_ref().map_or("else", |w| w.as_str()),
            );
        }
        if kind == &StateKind::End {
            let outcome = s.outcome.as_ref().map_or("", |o| o.as_str());
            line(format!("{id} --> [*] : {outcome}"));
        }
    }
    let globals: Vec<(String, &str)> = f
        .interrupts
        .iter()
        .filter_map(|(name, i)| {
            i.goto
                .as_ref()
                .map(|g| (format!("interrupt {name}"), g.as_str()))
        })
        .chain(
            f.on_delivery_failure
                .as_ref()
                .map(|t| ("delivery failed".to_owned(), t.as_str())),
        )
        .chain(
            f.on_retries_exhausted
                .as_ref()
                .map(|t| ("retries exhausted".to_owned(), t.as_str())),
        )
        .chain(f.start.on_deadline.as_ref().map(|t| {
            let after = f.start.deadline.as_ref().map_or("", |d| d.as_str());
            (format!("deadline {after} after the start"), t.as_str())
        }))
        .collect();
    let deadline_reminders = (!f.start.deadline_reminders.is_empty()).then(|| {
        let at: Vec<&str> = f
            .start
            .deadline_reminders
            .iter()
            .map(|r| r.as_str())
            .collect();
        let what = f
            .start
            .deadline_reminder
            .as_ref()
            .map_or("", |m| m.as_str());
        format!("deadline reminder at {} ({what})", at.join(", "))
    });
    if !globals.is_empty() || deadline_reminders.is_some() {
        line("state \"any waiting state\" as any_waiting_state".to_owned());
        for (label, to) in globals {
            line(format!(
                "any_waiting_state --> {to} : {}",
                label.replace([':', '"'], " ")
            ));
        }
        if let Some(label) = deadline_reminders {
            line(format!(
                "any_waiting_state --> any_waiting_state : {}",
                label.replace([':', '"'], " ")
            ));
        }
    }
    let _ = writeln!(out);
    out
}
