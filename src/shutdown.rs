//! The graceful stop: what happens between SIGTERM (or SIGINT, the same) and the exit.
//!
//! 1. `/readyz` answers 503 at once, so a load balancer stops sending new work; for
//!    [`NOT_READY_NOTICE`] the listener still accepts, so that a health check can see the 503
//!    (actix closes idle keep-alive connections the moment it stops, so after that no one could).
//! 2. The listener stops accepting; requests in flight finish (actix's graceful stop).
//! 3. The outbox claims nothing more; sends already in flight wait for their answer and are
//!    settled, so none is left "in doubt" by the stop. Entries not yet claimed stay pending.
//! 4. Every event the webhook acknowledged, and every hook answer, is handled.
//! 5. The caller flushes the store (`Engine::flush`: the embedded engine's database and journal checkpoint) and exits 0.
//!
//! Steps 2 to 4 share one deadline, `WAOTP_DRAIN_SECONDS` after the signal. Whatever is still
//! running then is left as a crash would leave it — durable, and settled at the next start
//! (docs/durability.md) — and said so in the log. Owns the order of the stop, nothing else.

use crate::outbox::Outbox;
use crate::runtime::Inbox;
use actix_web::dev::{Server, ServerHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the drain looks whether the outbox and the inbox are done.
const POLL: Duration = Duration::from_millis(20);
/// How long `/readyz` answers 503 before the listener closes (at most half the drain timeout).
pub const NOT_READY_NOTICE: Duration = Duration::from_secs(1);

/// Waits for SIGTERM or SIGINT; returns its name.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// What the stop drains.
#[derive(Debug)]
pub struct Draining {
    /// The flag that makes `/readyz` answer 503.
    pub stopping: Arc<AtomicBool>,
    pub outbox: Arc<Outbox>,
    /// The outbox's dispatcher, which ends once told to stop.
    pub dispatcher: tokio::task::JoinHandle<()>,
    pub inbox: Arc<Inbox>,
    /// Longest time from the signal to the end of the drain.
    pub timeout: Duration,
}

impl Draining {
    /// Runs steps 1 to 4 on the running `server`; returns whether everything finished in time.
    pub async fn run(self, server: &mut Server, handle: ServerHandle, signal: &str) -> bool {
        let deadline = Instant::now() + self.timeout;
        self.stopping.store(true, Ordering::Release);
        tracing::info!(
            signal,
            drain_seconds = self.timeout.as_secs(),
            "stopping: not ready, finishing requests and sends in flight"
        );
        self.outbox.stop_dispatching();
        tokio::time::sleep(NOT_READY_NOTICE.min(self.timeout / 2)).await;
        // The command is sent now; `server` resolves once the workers are done.
        drop(handle.stop(true));
        let http = tokio::time::timeout_at(deadline, server).await.is_ok();
        let dispatcher = tokio::time::timeout_at(deadline, self.dispatcher)
            .await
            .is_ok();
        // A send that finishes may answer a hook, which is work for the inbox: wait for both
        // to be quiet together.
        let quiet =
            || async { self.outbox.deliveries_running() == 0 && self.inbox.is_idle().await };
        while !quiet().await && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let done = http && dispatcher && quiet().await;
        if !done {
            let events_handled = self.inbox.is_idle().await;
            tracing::warn!(
                requests_finished = http,
                deliveries_running = self.outbox.deliveries_running(),
                events_handled,
                "drain timeout: what is still in flight is settled at the next start"
            );
        }
        done
    }
}
