//! Durable timers: reminders, step timeouts and code expiry are stored with their session
//! steps; a background loop queues each due timer behind its customer's other work. A stale
//! or repeated timer does nothing: the engine compares its sequence number, and a timer whose
//! key is no longer the session's is dropped. After a restart, overdue timers fire at once.

use super::core::{Runtime, RuntimeError};
use super::{Inbox, Work};
use crate::flow::engine::Event;
use crate::store::{DueTimer, StepWrite};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

impl Runtime {
    /// Fires one due timer (called in the customer's order).
    pub(super) async fn fire_timer(&self, timer: &DueTimer) -> Result<(), RuntimeError> {
        let _guard = self.lock(&timer.timer.session_id).await?;
        let record = self.storage.sessions.get(&timer.timer.session_id).await?;
        let Some(mut record) =
            record.filter(|r| r.is_active() && r.timer_key.as_ref() == Some(&timer.timer))
        else {
            self.storage.timers.drop_timer(&timer.timer).await?;
            self.storage.engine.durable().await?;
            return Ok(());
        };
        let flow = self.flow_of(&record).await?;
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

/// How long a claimed timer stays this instance's if it stops before firing it.
const TIMER_LEASE: Duration = crate::store::CLAIM_LEASE;

/// Claims due timers every `every` (or when the store says one may be due) and queues them
/// behind their customers' other work, until the process ends. The store hands each timer to
/// one claim: a timer already queued is not queued again.
pub async fn run_timers(runtime: Arc<Runtime>, inbox: Arc<Inbox>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let storage = runtime.storage().clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = storage.wakeups.timers.notified() => {}
        }
        let now = Utc::now();
        // The backlog only, and at most a batch of it: a million idle sessions should cost
        // nothing between polls.
        match storage.timers.due_count(now, 512).await {
            Ok(n) => {
                runtime.metrics.timers_due.set(n as i64);
            }
            Err(e) => tracing::error!(error = %e, "counting due timers failed"),
        }
        let due = match storage.timers.claim_due_timers(now, 512, TIMER_LEASE).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "reading due timers failed");
                continue;
            }
        };
        for timer in due {
            let customer = match runtime
                .storage()
                .sessions
                .get(&timer.timer.session_id)
                .await
            {
                Ok(Some(r)) => runtime.scope_of(&r).customer_key(&r.customer),
                _ => String::new(),
            };
            inbox.submit(&customer, Work::Timer(timer));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::CLAIM_LEASE;
    use chrono::Utc;

    /// A timer's claim is not renewed while the timer waits behind its customer's other work:
    /// past the lease another instance may claim and fire it too. The second firing must do
    /// nothing.
    #[tokio::test]
    async fn a_timer_claimed_twice_fires_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::store::Storage::embedded(dir.path(), None, |_| {}).expect("store");
        let runtime = crate::runtime::test_runtime(storage);
        let vars = [
            ("customer_name", "Asha"),
            ("order_id", "A-1"),
            ("total", "₹5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
        .collect();
        let started = runtime
            .start(
                &runtime.default_scope(),
                "cod_confirmation",
                "+919876543210",
                vars,
                None,
                None,
            )
            .await
            .expect("start");
        let id = started.record.id.clone();
        let storage = runtime.storage().clone();
        let later = Utc::now() + chrono::Duration::days(2);
        let due = storage
            .timers
            .claim_due_timers(later, 10, CLAIM_LEASE)
            .await
            .expect("claim");
        assert_eq!(due.len(), 1, "the reminder");
        // Two holders of the same timer, one after the other under the session's lock.
        runtime.fire_timer(&due[0]).await.expect("first firing");
        let fired = storage.sessions.get(&id).await.expect("get").expect("kept");
        assert!(fired.step > started.record.step, "the first firing steps");
        let queued = storage.outbox.depth().await.expect("depth");
        runtime.fire_timer(&due[0]).await.expect("second firing");
        let again = storage.sessions.get(&id).await.expect("get").expect("kept");
        assert_eq!(again.step, fired.step, "the second firing does nothing");
        assert_eq!(again.timer_key, fired.timer_key, "the next timer is kept");
        assert_eq!(storage.outbox.depth().await.expect("depth"), queued);
    }
}
