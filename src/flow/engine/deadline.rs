//! The session's deadline (`[start] deadline`): when it and its reminders are due, and what
//! happens then. It shares the session's one timer with the waiting state's own reminders and
//! timeout: the timer is set for whichever comes first, and the deadline's progress (its
//! absolute time and the reminders already sent) lives in the session, so it survives
//! restarts exactly like the state's.

use chrono::{DateTime, Utc};
use rand::RngCore;

use super::run::Run;
use crate::flow::duration::{parse_deadline_reminder, parse_duration};
use crate::flow::model::State;

/// What the deadline asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeadlineDue {
    /// Send the next deadline reminder.
    Reminder,
    /// The deadline passed: go to `on_deadline`.
    End,
}

impl<R: RngCore + ?Sized> Run<'_, R> {
    /// The deadline's next reminder or end and when it is due; `None` without a deadline.
    pub(super) fn deadline_due(&self) -> Option<(DateTime<Utc>, DeadlineDue)> {
        let at = self.s.deadline_at?;
        let start = &self.flow.start;
        let length = start
            .deadline
            .as_ref()
            .and_then(|d| parse_duration(d.as_str()).ok())?;
        let started = at.checked_sub_signed(length)?;
        let mut reminders: Vec<DateTime<Utc>> = start
            .deadline_reminders
            .iter()
            .filter_map(|r| parse_deadline_reminder(r.as_str(), length).ok())
            .filter_map(|offset| started.checked_add_signed(offset))
            .collect();
        reminders.sort();
        Some(
            match reminders.get(self.s.deadline_reminders_sent as usize) {
                Some(reminder) => (*reminder, DeadlineDue::Reminder),
                None => (at, DeadlineDue::End),
            },
        )
    }

    /// The deadline's timer fired while the session waits in `state`.
    pub(super) fn deadline_fired(&mut self, state: &State, due: DeadlineDue) {
        match due {
            DeadlineDue::Reminder => {
                self.s.deadline_reminders_sent += 1;
                let start = &self.flow.start;
                if let Some(m) = &start.deadline_reminder {
                    let template = start
                        .deadline_reminder_template
                        .as_ref()
                        .map(|t| t.as_str());
                    self.send_with_template(m.as_str(), template);
                }
                self.set_timer(state);
            }
            DeadlineDue::End => {
                // Passed once and for all: the states after `on_deadline` keep their own timers.
                self.s.deadline_at = None;
                let target = self.flow.start.on_deadline.as_ref().map(|t| t.as_str());
                self.goto(target);
            }
        }
    }
}
