//! Durable timers: reminders, step timeouts and code expiry are stored with their session
//! steps; a background loop queues each due timer behind its customer's other work. A stale
//! or repeated timer does nothing: the engine compares its sequence number, and a timer whose
//! key is no longer the session's is dropped. After a restart, overdue timers fire at once.

use super::core::{Runtime, RuntimeError};
use super::{Inbox, Work};
use crate::flow::engine::Event;
use crate::store::{DueTimer, StepWrite, TimerRef};
use chrono::Utc;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl Runtime {
    /// Fires one due timer (called in the customer's order).
    pub(super) async fn fire_timer(&self, timer: &DueTimer) -> Result<(), RuntimeError> {
        let _guard = self.lock(&timer.timer.session_id).await;
        let record = self.sessions().get(&timer.timer.session_id)?;
        let Some(mut record) =
            record.filter(|r| r.is_active() && r.timer_key.as_ref() == Some(&timer.timer))
        else {
            self.sessions().drop_timer(&timer.timer)?;
            self.store.logged().await?;
            return Ok(());
        };
        let flow = self.flow_of(&record)?;
        record.timer_key = None;
        let write = StepWrite {
            timer_remove: Some(timer.timer.clone()),
            ..StepWrite::default()
        };
        let event = Event::TimerFired {
            id: timer.timer.timer_id.clone(),
            seq: timer.seq,
        };
        self.step(&mut record, &flow, event, Utc::now(), write)
            .await?;
        Ok(())
    }
}

/// Polls for due timers every `every` and queues them, until the process ends.
pub async fn run_timers(runtime: Arc<Runtime>, inbox: Arc<Inbox>, every: Duration) {
    // Timers queued and not yet fired, so a slow customer queue is not fed the same timer twice.
    let queued: Arc<Mutex<HashSet<TimerRef>>> = Arc::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due = match runtime.sessions().due_timers(Utc::now(), 512) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "reading due timers failed");
                continue;
            }
        };
        // The backlog only: counting every pending timer would scan them all, and a million
        // idle sessions should cost nothing between polls.
        runtime.metrics.timers_due.set(due.len() as i64);
        let mut set = queued.lock().unwrap_or_else(|p| p.into_inner());
        // Forget timers that are gone from the store (fired or replaced).
        let still: HashSet<TimerRef> = due.iter().map(|t| t.timer.clone()).collect();
        set.retain(|k| still.contains(k));
        for timer in due {
            if !set.insert(timer.timer.clone()) {
                continue;
            }
            let customer = match runtime.sessions().get(&timer.timer.session_id) {
                Ok(Some(r)) => runtime.scope_of(&r).customer_key(&r.customer),
                _ => String::new(),
            };
            inbox.submit(&customer, Work::Timer(timer));
        }
    }
}
