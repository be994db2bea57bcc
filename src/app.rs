//! Wiring: opens the store, replays unhandled events, binds the listener and starts the HTTP
//! server; on SIGINT/SIGTERM stops accepting, lets in-flight requests finish and flushes sled.
//!
//! [`Application::build`] binds before returning (port 0 works) so that tests and the CLI learn
//! the real address. Nothing here holds business rules.

use crate::api::health::HealthState;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::runtime::{self, Inbox};
use crate::store::Store;
use crate::webhook::{signature::SignatureVerifier, WebhookState};
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use secrecy::ExposeSecret;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How often expired dedupe records are looked for.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// A built, bound server, not yet running.
pub struct Application {
    address: SocketAddr,
    server: Server,
    store: Arc<Store>,
    purge: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the store, replays what the last run left unhandled and binds `settings.listen`.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let metrics = Arc::new(Metrics::new());
        let flush_metrics = metrics.clone();
        let store = Arc::new(
            Store::open(&settings.data_dir, move |report| {
                flush_metrics
                    .flush_batch_size
                    .observe(report.waiters as f64);
                flush_metrics.flush_seconds.observe(report.seconds);
            })
            .with_context(|| format!("opening the database in {}", settings.data_dir.display()))?,
        );
        let inbox = Arc::new(Inbox::new(
            store.clone(),
            metrics.clone(),
            tokio::runtime::Handle::current(),
        ));
        let replayed = inbox
            .replay_pending()
            .context("replaying unhandled events")?;
        if replayed > 0 {
            tracing::info!(
                events = replayed,
                "replaying events left unhandled by the last run"
            );
        }
        if settings.sandbox() {
            tracing::warn!(
                "no WAOTP_ACCESS_TOKEN: running in sandbox mode, nothing is sent to WhatsApp"
            );
        }
        if settings.app_secret.is_none() {
            tracing::warn!("no WAOTP_APP_SECRET: every webhook POST will be refused with 401");
        }

        let webhook = WebhookState {
            verifier: settings
                .app_secret
                .as_ref()
                .map(|s| SignatureVerifier::new(s.expose_secret().as_bytes())),
            verify_token: settings.verify_token.clone(),
            store: store.clone(),
            inbox,
            metrics: metrics.clone(),
        };
        let ready = Arc::new(AtomicBool::new(false));
        let health = HealthState {
            store: store.clone(),
            metrics: metrics.clone(),
            ready: ready.clone(),
        };

        let listener = TcpListener::bind(&settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let address = listener.local_addr()?;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(trace_request))
                .app_data(web::Data::new(webhook.clone()))
                .app_data(web::Data::new(health.clone()))
                .configure(crate::webhook::routes)
                .configure(crate::api::health::routes)
        })
        .listen(listener)?
        .shutdown_timeout(10)
        .run();
        let purge = tokio::spawn(runtime::purge_forever(store.clone(), metrics, PURGE_EVERY));
        ready.store(true, Ordering::Release);
        tracing::info!(%address, sandbox = settings.sandbox(), "listening");
        Ok(Application {
            address,
            server,
            store,
            purge,
        })
    }

    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The open store (tests inspect it; the server owns it).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Serves until SIGINT/SIGTERM (or the server is stopped), then flushes the database.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await.context("running the HTTP server")?;
        self.purge.abort();
        self.store
            .flush()
            .context("flushing the database at shutdown")?;
        tracing::info!("stopped; database flushed");
        Ok(())
    }
}

/// A span per request naming method and path. The query string is left out on purpose: the
/// webhook handshake carries the verify token there.
async fn trace_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let span = tracing::debug_span!("http", method = %req.method(), path = %req.path());
    let started = Instant::now();
    let res = next.call(req).instrument(span.clone()).await?;
    tracing::debug!(
        parent: &span,
        status = res.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(res)
}
