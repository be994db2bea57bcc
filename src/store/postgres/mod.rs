//! The PostgreSQL engine (`WAOTP_DATABASE_URL=postgres://…`): everything stateful in one
//! database that several waotp instances share behind any load balancer. sled is not opened.
//!
//! What it owns: the connection pools, the schema (embedded, versioned migrations applied at
//! start: [`migrate`]), and the queries of inbound events, sessions and their steps, timers, the
//! outbox and what a step writes beside them, plus the multi-instance parts — advisory locks
//! ([`locks`]), claims with `FOR UPDATE SKIP LOCKED` and a lease, and the `LISTEN/NOTIFY`
//! wake-up ([`listen`]). It must not know flows, HTTP or WhatsApp: it stores what the runtime
//! hands it. The OTP ledger, stats, templates and audit live beside it (`otp`, `stats`,
//! `templates`, `audit`).
//!
//! Every write the runtime acknowledges is committed when the call returns: there is no group
//! commit to wait for, a `200` after `record` is already durable.
//!
//! Two pools: one for queries, and small ones for locks (see [`locks`]). A lock holds its
//! connection for the whole step it guards, so lock holders must never be able to starve the
//! queries the step itself runs. Pool sizes come from the URL's query (`pool_size`,
//! `lock_pool_size`), which are stripped before the rest reaches the driver.
//!
//! The connection is not encrypted: TLS to the database is not offered yet, so the server
//! should be on loopback, a Unix socket or a private network.

pub mod audit;
mod events;
mod idempotency;
pub mod listen;
mod listing;
pub mod locks;
pub mod migrate;
pub mod otp;
mod outbox;
mod sessions;
pub mod stats;
mod storage;
pub mod templates;
mod timers;

use super::{StoreError, Wakeups};
use crate::otp::RecordSealer;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::sync::Arc;
use std::time::Duration;

pub use locks::{LockClass, PgLockGuard, PgLocks};

/// Query connections per instance unless the URL says otherwise (`?pool_size=`).
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Connections per lock class unless the URL says otherwise (`?lock_pool_size=`).
pub const DEFAULT_LOCK_POOL_SIZE: usize = 8;
/// How long a call waits for a free connection before it fails (and the caller answers 5xx).
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the engine connects and claims.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub pool_size: usize,
    pub lock_pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: DEFAULT_POOL_SIZE,
            lock_pool_size: DEFAULT_LOCK_POOL_SIZE,
        }
    }
}

/// Where the engine connects, for messages: host(s), port and database, never the password.
#[derive(Debug, Clone)]
pub struct Target(String);

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Target {
    fn of(config: &tokio_postgres::Config) -> Target {
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres");
        Target(format!("{}:{port}/{db}", hosts.join(",")))
    }
}

/// The database URL split into the driver's configuration and our own settings.
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, PgOptions), StoreError> {
    let mut options = PgOptions::default();
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let size = |what: &str| {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    db_error(format!(
                        "WAOTP_DATABASE_URL: {what} must be a positive number, not {value:?}"
                    ))
                })
        };
        match name {
            "pool_size" => options.pool_size = size(name)?,
            "lock_pool_size" => options.lock_pool_size = size(name)?,
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    // The driver's own message never repeats the URL, so no password can leak through it.
    let config = rest
        .parse::<tokio_postgres::Config>()
        .map_err(|e| db_error(format!("WAOTP_DATABASE_URL is not usable: {e}")))?;
    Ok((config, options))
}

/// A store error for a failed query.
pub(crate) fn query_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    db_error(format!("{what}: {e}"))
}

/// A store error with this message.
pub(crate) fn db_error(message: String) -> StoreError {
    StoreError::Database(message)
}

/// A pool of `size` connections to `config`.
fn pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    pool_recycled(config, size, RecyclingMethod::Verified)
}

/// A pool whose connections are checked with `recycling` before being handed out again.
fn pool_recycled(
    config: &tokio_postgres::Config,
    size: usize,
    recycling: RecyclingMethod,
) -> Result<Pool, StoreError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| db_error(format!("cannot build the connection pool: {e}")))?;
    let manager = Manager::from_connect(
        config.clone(),
        ConnectOn { runtime },
        ManagerConfig {
            recycling_method: recycling,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| db_error(format!("cannot build the connection pool: {e}")))
}

/// Opens a pool's connections on the runtime the pool was built on, whichever task asks.
///
/// A connection's socket belongs to the runtime it was opened on, and its task runs there. The
/// web server's workers each run a single-thread runtime of their own: a connection opened on
/// one would only make progress while that worker is free (whoever is using it), and would die
/// when the worker stops at shutdown, while the runtime still needs the database.
struct ConnectOn {
    runtime: tokio::runtime::Handle,
}

impl deadpool_postgres::Connect for ConnectOn {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let config = config.clone();
        Box::pin(async move {
            let opened = self.runtime.spawn(open_connection(config.clone())).await;
            match opened {
                Ok(result) => result,
                // The pool's runtime is shutting down: this caller's own will do.
                Err(_) => open_connection(config).await,
            }
        })
    }
}

/// Opens a connection and spawns the task that drives it on the current runtime.
async fn open_connection(
    config: tokio_postgres::Config,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection ended");
        }
    });
    Ok((client, task))
}

/// The PostgreSQL engine: pools, schema, and the queries of its tables.
#[derive(Clone)]
pub struct PgEngine {
    pool: Pool,
    locks: PgLocks,
    sealer: Arc<RecordSealer>,
    /// Names this instance in claims (`claimed_by`), for operators reading the tables.
    instance: Arc<str>,
    target: Target,
    /// This instance's outbox worker and timer loop, woken by other instances' steps.
    wakeups: Wakeups,
    /// Stops listening once the last clone of the engine is gone.
    _listener: Arc<listen::Listener>,
    /// The runtime's hook for events this instance records.
    release: Arc<std::sync::RwLock<Option<super::Release>>>,
}

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEngine")
            .field("target", &self.target)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// A database reached and migrated, before the engine is built on it.
struct Opened {
    config: tokio_postgres::Config,
    options: PgOptions,
    pool: Pool,
    target: Target,
}

impl Opened {
    /// Connects to `url` and applies the migrations this binary carries (refusing a database
    /// written by a newer one).
    async fn open(url: &str) -> Result<Opened, StoreError> {
        let (config, options) = parse_url(url)?;
        let target = Target::of(&config);
        let pool = pool(&config, options.pool_size)?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| db_error(format!("cannot connect to PostgreSQL at {target}: {e}")))?;
        migrate::apply(&mut client)
            .await
            .map_err(|e| db_error(format!("PostgreSQL at {target}: {e}")))?;
        drop(client);
        Ok(Opened {
            config,
            options,
            pool,
            target,
        })
    }

    fn engine(self, key: &crate::otp::OtpKey) -> Result<PgEngine, StoreError> {
        let locks = PgLocks::new(&self.config, self.options.lock_pool_size)?;
        let wakeups = Wakeups::default();
        let listener = listen::listen(
            self.config.clone(),
            vec![wakeups.outbox.clone(), wakeups.timers.clone()],
        );
        Ok(PgEngine {
            pool: self.pool,
            locks,
            sealer: Arc::new(RecordSealer::new(key)),
            instance: instance_name().into(),
            target: self.target,
            wakeups,
            _listener: Arc::new(listener),
            release: Arc::default(),
        })
    }
}

impl super::Storage {
    /// The PostgreSQL engine on `url` (`WAOTP_DATABASE_URL`): connects, applies the migrations
    /// and bundles every concern. Records are sealed with the configured OTP key, or else with
    /// the one every instance shares in the database ([`otp::shared_key`]).
    pub async fn postgres(
        url: &str,
        configured_key: Option<&secrecy::SecretString>,
    ) -> Result<super::Storage, StoreError> {
        let opened = Opened::open(url).await?;
        let key = otp::shared_key(&opened.pool, configured_key)
            .await
            .map_err(|e| StoreError::Key(e.to_string()))?;
        let engine = opened.engine(&key)?;
        let pool = engine.pool.clone();
        Ok(super::Storage {
            inbound: Arc::new(engine.clone()),
            sessions: Arc::new(engine.clone()),
            timers: Arc::new(engine.clone()),
            outbox: Arc::new(engine.clone()),
            idempotency: Arc::new(engine.clone()),
            listing: Arc::new(engine.clone()),
            otp: Arc::new(otp::PgOtpLedger::new(pool.clone(), key)),
            stats: Arc::new(stats::PgStatsStore::new(pool.clone())),
            templates: Arc::new(templates::PgTemplateStatuses::new(pool.clone())),
            audit: Arc::new(audit::PgAuditLog::new(pool)),
            locks: Arc::new(engine.clone()),
            wakeups: engine.wakeups(),
            engine: Arc::new(engine),
            // Several instances may share the database: order comes from the customer's lock.
            shared: true,
        })
    }
}

impl PgEngine {
    /// Connects to `url`, applies the migrations this binary carries (refusing a database
    /// written by a newer one) and seals records with `key`.
    pub async fn connect(url: &str, key: &crate::otp::OtpKey) -> Result<PgEngine, StoreError> {
        Opened::open(url).await?.engine(key)
    }

    /// The notifies the `LISTEN` task wakes when another instance queued work.
    pub fn wakeups(&self) -> Wakeups {
        self.wakeups.clone()
    }

    /// The query pool (for the OTP ledger, stats, templates and audit beside this engine).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The advisory locks.
    pub fn locks(&self) -> &PgLocks {
        &self.locks
    }

    /// Where the engine is connected (no password).
    pub fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            db_error(format!(
                "no connection to PostgreSQL at {}: {e}",
                self.target
            ))
        })
    }

    /// Whether the database answers a query.
    pub async fn healthy(&self) -> bool {
        match self.client().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// Bytes the database occupies (PostgreSQL's own estimate).
    pub async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map_err(|e| query_error("database size", e))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}

/// A name for this process in claims: host name when known, process id, and a random suffix
/// (two processes may share a pid namespace's numbers).
fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "waotp".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_sizes_come_from_the_url_and_do_not_reach_the_driver() {
        let (config, options) = parse_url(
            "postgres://u:secret@db.example:6543/waotp?pool_size=4&application_name=x&lock_pool_size=2",
        )
        .expect("parse");
        assert_eq!(options.pool_size, 4);
        assert_eq!(options.lock_pool_size, 2);
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(Target::of(&config).to_string(), "db.example:6543/waotp");
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let err = parse_url("postgres://u:hunter2@h/db?pool_size=0")
            .expect_err("zero pool")
            .to_string();
        assert!(err.contains("pool_size"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_url("postgres://u:hunter2@h/db?sslmode=bogus")
            .expect_err("bad option")
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
