//! Wiring: opens the store, replays unhandled events, binds the listener and starts the HTTP
//! server; on SIGINT/SIGTERM drains (see [`crate::shutdown`]) and flushes the store.
//!
//! [`Application::build`] binds before returning (port 0 works) so that tests and the CLI learn
//! the real address. Nothing here holds business rules.

use crate::api::health::HealthState;
use crate::api::sessions::ApiState;
use crate::config::Settings;
use crate::merchant::MerchantClient;
use crate::metrics::Metrics;
use crate::otp::OtpPolicy;
use crate::outbox::{Outbox, SandboxRecorder};
use crate::runtime::merchants::MerchantRuntimes;
use crate::runtime::{self, Inbox, Runtime, RuntimeConfig};
use crate::store::embedded::Embedded;
use crate::store::{Storage, Store, StoreOptions};
use crate::tenants::Tenants;
use crate::webhook::{signature::SignatureVerifier, WebhookState};
use crate::whatsapp::{GraphApi, GraphTimeouts};
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
/// How often, on a shared database, events left unhandled are looked for …
const STALE_EVENTS_EVERY: Duration = Duration::from_secs(2);
/// … and how long one must have waited to be taken over (an instance handles its own events
/// within milliseconds; one still pending after this was most likely left by a dead one).
const STALE_EVENTS_AFTER: Duration = Duration::from_secs(5);
/// How often due timers are looked for.
const TIMER_POLL: Duration = Duration::from_millis(200);
/// How often the merchants' flow files are checked for changes.
const FLOW_POLL: Duration = Duration::from_secs(2);
/// Time allowed to receive a request's head (method, path and headers).
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Timeout of merchant callbacks and hooks.
const MERCHANT_TIMEOUT: Duration = Duration::from_secs(10);
/// What a customer who matches no session and no keyword is told.
const DEFAULT_REPLY: &str =
    "Hi! This number sends verification codes. There is nothing waiting for you right now.";

/// A start-up failure caused by configuration (exit code 2) rather than the environment.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigurationError(pub String);

/// A built, bound server, not yet running.
pub struct Application {
    address: SocketAddr,
    server: Server,
    /// The embedded engine's handles (tests inspect them); `None` on PostgreSQL.
    store: Option<Arc<Store>>,
    storage: Storage,
    background: Vec<tokio::task::JoinHandle<()>>,
    sandbox_key: Option<String>,
    /// What a SIGTERM/SIGINT drains.
    draining: crate::shutdown::Draining,
    tenants: TenantsReload,
}

/// Puts a new tenants registry in place while the server runs (a reload of the tenants file):
/// the webhook routes by the new numbers at once, and each merchant's flows, URLs and OTP limits
/// are rebuilt ([`Runtime::on_tenants_changed`]). A removed number stops receiving: its events
/// are acknowledged and ignored like any unknown number's, and its sessions, which no customer
/// message reaches any more, run on until their timers end them.
#[derive(Debug, Clone)]
pub struct TenantsReload {
    tenants: crate::tenants::TenantsHandle,
    runtime: Arc<Runtime>,
}

impl TenantsReload {
    /// Replaces the registry. The error names each merchant whose new flows did not load (it
    /// keeps its previous flows; every message is `file:line:col`).
    pub fn apply(&self, tenants: Tenants) -> Result<(), String> {
        // The merchants' flows first: an event routed by the new registry finds its merchant.
        let rebuilt = self.runtime.on_tenants_changed(&tenants);
        self.tenants.replace(tenants);
        rebuilt
    }

    /// The registry in place now.
    pub fn current(&self) -> Arc<Tenants> {
        self.tenants.current()
    }
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// The single-merchant setup of the environment: opens the store, replays what the last
    /// run left unhandled and binds `settings.listen`.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // Sandbox mode without keys gets one, printed at start.
        let mut api_keys = settings.api_keys.clone();
        let mut sandbox_key = None;
        if settings.sandbox() && api_keys.is_empty() && settings.tenants.is_none() {
            let mut bytes = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            let key = format!("sandbox_{}", hex::encode(bytes));
            api_keys.push(secrecy::SecretString::from(key.clone()));
            sandbox_key = Some(key);
        }
        let tenants = crate::tenants::load(&settings, &api_keys).map_err(ConfigurationError)?;
        Application::build_inner(settings, tenants, sandbox_key).await
    }

    /// Like [`Application::build`], serving the merchants and numbers of `tenants` (a tenants
    /// file) instead of the environment's single merchant.
    pub async fn build_with_tenants(
        settings: Settings,
        tenants: Tenants,
    ) -> anyhow::Result<Application> {
        Application::build_inner(settings, tenants, None).await
    }

    async fn build_inner(
        settings: Settings,
        tenants: Tenants,
        sandbox_key: Option<String>,
    ) -> anyhow::Result<Application> {
        let otp_base = OtpPolicy {
            global_sends_per_hour: settings.otp_sends_per_hour,
            allowed_prefixes: settings.otp_allowed_prefixes.clone(),
            ..OtpPolicy::default()
        };
        // Outside sandbox mode a flow URL naming an unset variable (`{WAOTP_HOOK_BASE_URL}`) is
        // a configuration error; the sandbox starts without one, and such calls fail.
        let merchants = MerchantRuntimes::load(&tenants, &otp_base).map_err(ConfigurationError)?;
        let metrics = Arc::new(Metrics::new());
        let (storage, store) = open_storage(&settings, &metrics).await?;
        metrics.storage_engine(storage.engine.name());
        let sandbox_sealer = storage.otp.code_sealer();
        let default_scope = tenants.default_scope();
        // Records and limits written without a merchant are the default merchant's (on every
        // engine: the ledger keeps the name for requests that give none).
        let mut moved = storage
            .otp
            .adopt_default_merchant(&default_scope.merchant)
            .await
            .context("moving OTP limits into the default merchant")?;
        // A store written before merchants existed: its customers' conversations and windows
        // belong to the default scope (once; nothing to do afterwards). Only an embedded store
        // can be that old.
        if !storage.shared {
            moved += storage
                .sessions
                .adopt_unscoped_keys(&default_scope)
                .await
                .context("moving customer keys into the default scope")?;
        }
        if moved > 0 {
            tracing::info!(keys = moved, scope = %default_scope, "customer records of an older version moved into the default scope");
        }
        let tenants = crate::tenants::TenantsHandle::new(tenants);
        let runtime = Arc::new(Runtime::new(
            storage.clone(),
            merchants,
            metrics.clone(),
            RuntimeConfig {
                default_reply: DEFAULT_REPLY.to_owned(),
                otp_base,
            },
            tenants.clone(),
        ));
        let tenants_handle = tenants.clone();
        let inbox = Arc::new(Inbox::new(
            metrics.clone(),
            runtime.clone(),
            tokio::runtime::Handle::current(),
        ));
        let replayed = inbox
            .replay_pending()
            .await
            .context("replaying unhandled events")?;
        if replayed > 0 {
            tracing::info!(
                events = replayed,
                "replaying events left unhandled by the last run"
            );
        }
        if !settings.sandbox() {
            use crate::templates::status::{check_at_start, MerchantTemplates};
            let registry = tenants.current();
            // Statuses stored before accounts were kept are the default merchant's account's.
            let default_scope = registry.default_scope();
            if let Some(waba) = registry
                .merchant(&default_scope.merchant)
                .and_then(|m| m.waba_id.as_deref())
                .filter(|_| !storage.shared)
            {
                storage
                    .templates
                    .adopt_unowned(waba)
                    .await
                    .context("giving stored template statuses their account")?;
            }
            let merchants = MerchantTemplates::of(&registry, |m| runtime.flows_of(m).current());
            check_at_start(&settings, &merchants, &storage, &metrics)
                .await
                .map_err(ConfigurationError)?;
        }
        if settings.access_token.is_some() && settings.phone_number_id.is_none() {
            return Err(ConfigurationError(
                "missing required setting: WAOTP_PHONE_NUMBER_ID".into(),
            )
            .into());
        }
        // Numbers without a token record their messages here.
        let recorder = Arc::new(SandboxRecorder::new(
            storage.sessions.clone(),
            sandbox_sealer,
        ));
        let sandbox = if settings.sandbox() {
            tracing::warn!("no access token: running in sandbox mode, nothing is sent to WhatsApp");
            Some(recorder.clone())
        } else {
            None
        };
        let graph = GraphApi::new(&settings.graph_url, GraphTimeouts::default())
            .map_err(|e| ConfigurationError(format!("WAOTP_GRAPH_URL: {e}")))?;
        let merchant = MerchantClient::new(settings.callback_secret.clone(), MERCHANT_TIMEOUT)
            .context("building the merchant HTTP client")?;
        let outbox = Arc::new(
            Outbox::new(
                runtime.clone(),
                inbox.clone(),
                graph,
                recorder,
                merchant,
                settings.in_doubt_wait,
            )
            .map_err(|e| ConfigurationError(format!("WAOTP_GRAPH_URL: {e}")))?,
        );
        let api = ApiState {
            runtime: runtime.clone(),
            inbox: inbox.clone(),
            metrics: metrics.clone(),
            api_keys: Arc::new(crate::api::auth::ApiKeys::new(
                tenants.clone(),
                crate::api::rate::KeyRate {
                    per_second: f64::from(settings.api_rate),
                    burst: f64::from(settings.api_burst),
                },
            )),
            sandbox,
            in_flight: Default::default(),
        };
        if settings.app_secret.is_none() {
            tracing::warn!("no WAOTP_APP_SECRET: every webhook POST will be refused with 401");
        }

        let template_watch = Arc::new(crate::templates::status::TemplateWatch::new(
            storage.clone(),
            metrics.clone(),
            tenants.clone(),
            runtime.outbox_wake.clone(),
        ));
        let webhook = WebhookState {
            verifier: settings
                .app_secret
                .as_ref()
                .map(|s| SignatureVerifier::new(s.expose_secret().as_bytes())),
            verify_token: settings.verify_token.clone(),
            inbox: inbox.clone(),
            metrics: metrics.clone(),
            tenants,
            unverified: Arc::new(crate::webhook::intake::UnverifiedBudget::new(
                settings.webhook_buffer_bytes,
            )),
            templates: template_watch,
        };
        // One set of dashboard logins for every worker.
        let dashboard = web::Data::new(crate::api::dashboard::access::DashboardAccess::default());
        let ready = Arc::new(AtomicBool::new(false));
        let stopping = Arc::new(AtomicBool::new(false));
        let health = HealthState {
            engine: runtime.storage().engine.clone(),
            metrics: metrics.clone(),
            ready: ready.clone(),
            stopping: stopping.clone(),
        };

        let listener = TcpListener::bind(&settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let address = listener.local_addr()?;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(crate::request_deadline::body_deadline))
                .wrap(from_fn(trace_request))
                .app_data(web::Data::new(webhook.clone()))
                .app_data(web::Data::new(health.clone()))
                .app_data(web::Data::new(api.clone()))
                .app_data(dashboard.clone())
                .app_data(web::PayloadConfig::new(crate::api::error::MAX_BODY_BYTES))
                .configure(crate::webhook::routes)
                .configure(crate::api::health::routes)
                .configure(crate::api::routes::v1)
                .configure(crate::api::dashboard::routes)
                .default_service(web::to(crate::api::error::route_not_found))
        })
        // A client gets this long to send its request head and, once answered, to hang up;
        // the body has its own deadline (`request_deadline`). Without these a slow client
        // would hold its connection open for as long as it keeps trickling bytes.
        .client_request_timeout(HEAD_DEADLINE)
        .client_disconnect_timeout(Duration::from_secs(1))
        .listen(listener)?
        // The stop is ours (`shutdown`): SIGINT drains like SIGTERM.
        .disable_signals()
        .shutdown_timeout(settings.drain.as_secs())
        .run();
        let mut background = vec![
            tokio::spawn(runtime::purge_forever(
                runtime.clone(),
                settings.retention,
                PURGE_EVERY,
            )),
            tokio::spawn(runtime::timers::run_timers(
                runtime.clone(),
                inbox.clone(),
                TIMER_POLL,
            )),
            tokio::spawn(runtime.clone().watch_flows(FLOW_POLL)),
            // A changed tenants file: each merchant's flows, URLs and limits are rebuilt, then
            // the new registry routes; the outbox rebuilds its numbers' clients when it sees it.
            tokio::spawn({
                let runtime = runtime.clone();
                crate::tenants::watch(
                    tenants_handle.clone(),
                    settings.clone(),
                    FLOW_POLL,
                    move |tenants| {
                        if let Err(error) = runtime.on_tenants_changed(tenants) {
                            tracing::error!(%error, "a merchant's flows did not load; it keeps its previous flows");
                        }
                    },
                )
            }),
        ];
        if storage.shared {
            background.push(tokio::spawn(runtime::adopt_stale_forever(
                inbox.clone(),
                STALE_EVENTS_EVERY,
                STALE_EVENTS_AFTER,
            )));
        }
        let draining = crate::shutdown::Draining {
            stopping,
            dispatcher: tokio::spawn(outbox.clone().run()),
            outbox,
            inbox,
            timeout: settings.drain,
        };
        let tenants = TenantsReload {
            tenants: tenants_handle,
            runtime: runtime.clone(),
        };
        ready.store(true, Ordering::Release);
        tracing::info!(%address, sandbox = settings.sandbox(), "listening");
        if let Some(key) = &sandbox_key {
            tracing::warn!("sandbox API key (WAOTP_API_KEYS is unset): {key}");
        }
        Ok(Application {
            address,
            server,
            store,
            storage: runtime.storage().clone(),
            background,
            sandbox_key,
            draining,
            tenants,
        })
    }

    /// Where a reload of the tenants file puts the new registry.
    pub fn tenants(&self) -> TenantsReload {
        self.tenants.clone()
    }

    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The API key generated for sandbox mode, when `WAOTP_API_KEYS` was unset.
    pub fn sandbox_key(&self) -> Option<&str> {
        self.sandbox_key.as_deref()
    }

    /// The storage the server works through.
    pub fn storage(&self) -> crate::store::Storage {
        self.storage.clone()
    }

    /// The embedded engine's open store (tests inspect it; the server owns it); `None` when
    /// the server runs on PostgreSQL.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.clone()
    }

    /// Serves until SIGINT/SIGTERM (or the server is stopped), drains, then flushes the
    /// database.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut server = self.server;
        let handle = server.handle();
        let signal = tokio::select! {
            served = &mut server => {
                served.context("running the HTTP server")?;
                None
            }
            signal = crate::shutdown::signal() => Some(signal),
        };
        // Timers, purges and flow reloads start no new work from here on.
        for task in &self.background {
            task.abort();
        }
        match signal {
            Some(signal) => {
                self.draining.run(&mut server, handle, signal).await;
            }
            None => self.draining.outbox.stop_dispatching(),
        }
        self.storage
            .engine
            .flush()
            .await
            .context("flushing the database at shutdown")?;
        tracing::info!("stopped; database flushed");
        Ok(())
    }
}

/// The storage engine the settings name: PostgreSQL when `WAOTP_DATABASE_URL` is set (the data
/// directory is then not touched), else the embedded engine in `WAOTP_DATA_DIR`. Returns the
/// embedded engine's own handles beside it, for tests.
async fn open_storage(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Storage, Option<Arc<Store>>)> {
    let key_error =
        |m: String| anyhow::Error::new(ConfigurationError(format!("WAOTP_OTP_KEY: {m}")));
    if let Some(url) = &settings.database_url {
        let storage = Storage::postgres(url.expose(), settings.otp_key.as_ref())
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Key(m) => key_error(m),
                // The engine's messages name host, port and database, never the password.
                other => anyhow::Error::new(other)
                    .context(format!("opening the PostgreSQL database {}", url.masked())),
            })?;
        tracing::info!(engine = "postgres", database = %url.masked(), "storage engine");
        return Ok((storage, None));
    }
    let flush_metrics = metrics.clone();
    let embedded = Embedded::open(
        &settings.data_dir,
        move |report| {
            flush_metrics
                .flush_batch_size
                .observe(report.waiters as f64);
            flush_metrics.flush_seconds.observe(report.seconds);
        },
        settings.otp_key.as_ref(),
        StoreOptions::default(),
    )
    .map_err(|e| match e {
        crate::store::StoreError::Key(m) => key_error(m),
        other => anyhow::Error::new(other).context(format!(
            "opening the database in {}",
            settings.data_dir.display()
        )),
    })?;
    tracing::info!(engine = "embedded", data_dir = %settings.data_dir.display(), "storage engine");
    Ok((embedded.storage(), Some(embedded.store().clone())))
}

/// A span per request naming method, path and request id, and the `X-Request-Id` header on
/// every answer (see [`crate::request_id`]). The query string is left out on purpose: the
/// webhook handshake carries the verify token there; so is a one-time dashboard link's token,
/// which is a login.
async fn trace_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = crate::request_id::of(req.headers());
    let span = tracing::info_span!("http", method = %req.method(), path = %logged_path(req.path()), request_id = %id);
    let started = Instant::now();
    // Handlers' errors arrive here as responses; only a middleware's own error passes by.
    let mut res = next.call(req).instrument(span.clone()).await?;
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
        res.headers_mut().insert(crate::request_id::HEADER, value);
    }
    tracing::debug!(
        parent: &span,
        status = res.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    Ok(res)
}

/// `path` as logged: without the token of a one-time dashboard link.
fn logged_path(path: &str) -> &str {
    const ONCE: &str = "/dashboard/once/";
    if path.starts_with(ONCE) {
        "/dashboard/once/…"
    } else {
        path
    }
}
