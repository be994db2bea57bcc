//! The runtime: inbound events, timers and hook answers drive sessions through the flow engine,
//! one customer at a time.
//!
//! [`Inbox`] is the door the webhook and the sandbox use: it records an event once in the store
//! and queues it for its customer at the number it was sent to (the queue key is
//! [`crate::tenants::Scope::customer_key`], so one customer's conversations with two numbers run
//! independently). Events recorded but unhandled when the process stopped are replayed, in
//! order, before the server accepts new ones. Timers are polled from the store and queued the
//! same way, so everything that happens to one customer at one number happens in order.

pub mod commands;
pub mod core;
pub mod flows;
pub mod inbound;
pub mod merchants;
mod notices;
pub mod ordering;
pub mod session_object;
mod stats;
pub mod timers;

pub use self::core::{session_json, Runtime, RuntimeConfig, RuntimeError};

use crate::domain::InboundEvent;
use crate::flow::engine::Event;
use crate::metrics::Metrics;
use crate::store::{DueTimer, LockKey, Recorded, Storage, StoreError};
use crate::tenants::{Scope, Tenants};
use ordering::{CustomerQueues, Handler};
use std::sync::Arc;
use std::time::Duration;

/// Dedupe records are kept this long: WhatsApp retries a delivery for up to 7 days.
pub const DEDUPE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Work for one customer, handled in order.
#[derive(Debug, Clone)]
pub enum Work {
    /// A recorded inbound event.
    Inbound { seq: u64, event: Box<InboundEvent> },
    /// A session timer came due.
    Timer(DueTimer),
    /// An event for a session (a hook's answer).
    Session { session_id: String, event: Event },
}

/// Records inbound events once and queues work per customer.
#[derive(Debug)]
pub struct Inbox {
    storage: Storage,
    metrics: Arc<Metrics>,
    queues: CustomerQueues<String, Work>,
    runtime_tenants: crate::tenants::TenantsHandle,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // The release hook holds the queues, whose handler holds the store: unhook to let go.
        self.storage.inbound.on_durable(None);
    }
}

impl Inbox {
    /// An inbox whose work runs on `handle` through `runtime`.
    pub fn new(
        metrics: Arc<Metrics>,
        runtime: Arc<Runtime>,
        handle: tokio::runtime::Handle,
    ) -> Inbox {
        let tenants = runtime.tenants().clone();
        let storage = runtime.storage().clone();
        let handler = work_handler(runtime, metrics.clone());
        let queues = CustomerQueues::new(handle, handler);
        let release = queues.clone();
        let hook_tenants = tenants.clone();
        storage
            .inbound
            .on_durable(Some(Arc::new(move |seq, event: InboundEvent| {
                release.submit(
                    queue_key(&hook_tenants.current(), &event),
                    Work::Inbound {
                        seq,
                        event: Box::new(event),
                    },
                );
            })));
        Inbox {
            queues,
            storage,
            metrics,
            runtime_tenants: tenants,
        }
    }

    /// Records `event`; once it is on disk (await [`Inbox::durable`] before acknowledging) it
    /// is queued behind its customer's earlier events, in the order recorded.
    pub async fn accept(&self, event: InboundEvent, now: i64) -> Result<Recorded, StoreError> {
        // Only a shared database keeps whose event it is (its handler reads the customer's
        // pending events); the embedded engine's queues are filled by the release hook.
        let customer = if self.storage.shared {
            queue_key(&self.runtime_tenants.current(), &event)
        } else {
            String::new()
        };
        let recorded = self.storage.inbound.record(&event, &customer, now).await?;
        match recorded {
            Recorded::New { .. } => {
                self.metrics
                    .events_recorded
                    .get_or_create(&crate::metrics::KindLabel { kind: event.kind() })
                    .inc();
                self.metrics.inbound_pending.inc();
            }
            Recorded::Duplicate => {
                self.metrics.events_deduplicated.inc();
            }
        }
        Ok(recorded)
    }

    /// Resolves once every event accepted before the call is on disk.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.storage.inbound.durable().await
    }

    /// Queues every event left unhandled by the previous run, oldest first.
    pub async fn replay_pending(&self) -> Result<usize, StoreError> {
        let pending = self.storage.inbound.pending().await?;
        let n = pending.len();
        let tenants = self.runtime_tenants.current();
        for (seq, stored) in pending {
            self.metrics.inbound_pending.inc();
            self.queues.submit(
                queue_key(&tenants, &stored.event),
                Work::Inbound {
                    seq,
                    event: Box::new(stored.event),
                },
            );
        }
        Ok(n)
    }

    /// On a database other instances share: queues the events recorded at least `older_than`
    /// before `now` (Unix seconds) and still unhandled — those of an instance that stopped
    /// before handling them — and sets the pending gauge to the shared count. Each handler
    /// takes its customer's turn and skips what another instance handled meanwhile, so an
    /// event queued here and by its own instance is still handled once. Returns how many.
    pub async fn adopt_stale(&self, older_than: Duration, now: i64) -> Result<usize, StoreError> {
        if !self.storage.shared {
            return Ok(0);
        }
        let pending = self.storage.inbound.pending().await?;
        self.metrics.inbound_pending.set(pending.len() as i64);
        let cutoff = now - older_than.as_secs() as i64;
        let tenants = self.runtime_tenants.current();
        let mut n = 0;
        for (seq, stored) in pending {
            if stored.received_at > cutoff {
                continue;
            }
            n += 1;
            self.queues.submit(
                queue_key(&tenants, &stored.event),
                Work::Inbound {
                    seq,
                    event: Box::new(stored.event),
                },
            );
        }
        Ok(n)
    }

    /// Whether every recorded event is handled and no work is queued or running (at a stop,
    /// once the HTTP server has answered its last request).
    pub async fn is_idle(&self) -> bool {
        self.queues.is_idle()
            && self
                .storage
                .inbound
                .pending_count()
                .await
                .is_ok_and(|n| n == 0)
    }

    /// Queues other work (timers, hook answers) behind the customer's earlier work at the
    /// same number: `customer` is the session's `scope.customer_key(customer)`.
    pub fn submit(&self, customer: &str, work: Work) {
        self.queues.submit(customer.to_owned(), work);
    }
}

/// The queue an inbound event waits in: its customer at the number it was sent to. An event of
/// a number no longer served (recorded before a reload removed it) gets a queue of its own.
fn queue_key(tenants: &Tenants, event: &InboundEvent) -> String {
    let customer = event.customer();
    match tenants.scope_of(event.phone_number_id()) {
        Some(scope) => scope.customer_key(customer.as_str()),
        None => Scope::new("", event.phone_number_id().unwrap_or_default())
            .customer_key(customer.as_str()),
    }
}

/// Runs each piece of work through the runtime; an inbound event is marked handled afterwards
/// (a crash in between replays it, and the session's `last_inbound` makes the replay a no-op).
/// With a database other instances share, the handler of an event holds its customer's lock
/// and handles the customer's pending events up to it in order, whichever instance received
/// them, skipping those another instance handled meanwhile.
fn work_handler(runtime: Arc<Runtime>, metrics: Arc<Metrics>) -> Handler<Work> {
    Arc::new(move |work: Work| {
        let (runtime, metrics) = (runtime.clone(), metrics.clone());
        Box::pin(async move {
            match work {
                Work::Inbound { seq, event } => {
                    let storage = runtime.storage().clone();
                    if !storage.shared {
                        handle_inbound(&runtime, &metrics, seq, &event).await;
                        return;
                    }
                    let customer = queue_key(&runtime.tenants().current(), &event);
                    let _turn = match storage
                        .locks
                        .lock(LockKey::Customer(customer.clone()))
                        .await
                    {
                        Ok(guard) => guard,
                        Err(e) => {
                            tracing::error!(seq, error = %e, "cannot take the customer's turn");
                            return;
                        }
                    };
                    let pending = match storage.inbound.pending_of(&customer).await {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(seq, error = %e, "cannot read the customer's pending events");
                            return;
                        }
                    };
                    for (earlier, stored) in pending.into_iter().filter(|(s, _)| *s <= seq) {
                        if storage.inbound.is_handled(earlier).await.unwrap_or(false) {
                            continue;
                        }
                        handle_inbound(&runtime, &metrics, earlier, &stored.event).await;
                    }
                }
                Work::Timer(timer) => {
                    if let Err(e) = runtime.fire_timer(&timer).await {
                        tracing::error!(session_id = %timer.timer.session_id, error = %e, "firing a timer failed");
                        // Not fired: the next poll claims it again.
                        if let Err(e) = runtime.storage().timers.release_timer(&timer.timer).await {
                            tracing::error!(error = %e, "releasing a timer failed");
                        }
                    }
                }
                Work::Session { session_id, event } => {
                    if let Err(e) = runtime.apply_event(&session_id, event).await {
                        tracing::error!(%session_id, error = %e, "applying a session event failed");
                    }
                }
            }
        })
    })
}

/// Handles one inbound event and marks it handled.
async fn handle_inbound(runtime: &Runtime, metrics: &Metrics, seq: u64, event: &InboundEvent) {
    tracing::debug!(seq, customer = %event.customer(), kind = event.kind(), "inbound event");
    let result = match event {
        InboundEvent::Message(m) => {
            let scope = runtime
                .tenants()
                .current()
                .scope_of(event.phone_number_id());
            match scope {
                Some(scope) => runtime.route_message(seq, m, &scope).await,
                // Recorded before a reload removed its number: nobody answers from that
                // number any more.
                None => {
                    tracing::info!(seq, "a message to a number no longer served; ignored");
                    Ok(())
                }
            }
        }
        InboundEvent::Status(s) => runtime.track_status(s).await,
    };
    if let Err(e) = result {
        tracing::error!(seq, error = %e, "handling an inbound event failed");
    }
    match runtime.storage().inbound.mark_handled(seq).await {
        Ok(()) => {
            metrics.events_handled.inc();
            metrics.inbound_pending.dec();
        }
        Err(e) => tracing::error!(seq, error = %e, "cannot mark event handled"),
    }
}

/// Every `every`, on a database other instances share, queues the events left unhandled for
/// `older_than` or more ([`Inbox::adopt_stale`]): a killed instance's events are handled by
/// the live ones without waiting for its restart. Runs until the process ends.
pub async fn adopt_stale_forever(inbox: Arc<Inbox>, every: Duration, older_than: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match inbox
            .adopt_stale(older_than, chrono::Utc::now().timestamp())
            .await
        {
            Ok(n) if n > 0 => {
                tracing::debug!(events = n, "queued events left unhandled for a while")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the events left unhandled"),
        }
    }
}

/// Removes expired dedupe records and old handled events every `every`, until the process ends.
pub async fn purge_forever(runtime: Arc<Runtime>, retention: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match purge_once(&runtime, retention).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "purged expired records"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "purging expired records failed"),
        }
    }
}

/// One purge pass: dedupe records and handled events past 7 days; the API's idempotency keys
/// past 24 hours; finished sessions, their sent outbox entries and OTP records past
/// `retention`.
pub async fn purge_once(runtime: &Runtime, retention: Duration) -> Result<usize, RuntimeError> {
    let now = chrono::Utc::now();
    let cutoff = now.timestamp() - DEDUPE_RETENTION.as_secs() as i64;
    let storage = runtime.storage();
    let mut n = storage.inbound.purge_before(cutoff).await?;
    let horizon = now - chrono::Duration::from_std(retention).unwrap_or_default();
    n += storage.sessions.purge_completed_before(horizon).await?;
    n += storage.idempotency.purge_idempotency(now).await?;
    n += storage.otp.sweep(now, retention).await?;
    runtime.metrics.records_purged.inc_by(n as u64);
    Ok(n)
}

/// A runtime on `storage` with the bundled flows and default settings, for unit tests.
#[cfg(test)]
pub(crate) fn test_runtime(storage: crate::store::Storage) -> Runtime {
    let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let vars = [("WAOTP_FLOWS_DIR".to_owned(), flows.display().to_string())];
    let settings =
        crate::config::Settings::from_vars(vars.into_iter().collect()).expect("settings");
    let tenants = crate::tenants::Tenants::from_settings(&settings, &[]);
    Runtime::new(
        storage,
        merchants::MerchantRuntimes::load(&tenants, &Default::default()).expect("flows"),
        std::sync::Arc::new(crate::metrics::Metrics::new()),
        RuntimeConfig::default(),
        crate::tenants::TenantsHandle::new(tenants),
    )
}
