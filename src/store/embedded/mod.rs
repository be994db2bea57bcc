//! The embedded engine: sessions, timers, outbox, OTP records and stats on sled; inbound events
//! in an append-only journal beside it (`inbound/`), which is what the webhook's hot path needs.
//! One process owns the directory (sled's lock says so); it implements the storage contract
//! ([`crate::store::Storage`]) for that process alone.
//!
//! Writes are applied to sled in memory at once. Those of the sessions, outbox, timers, stats
//! and OTP ledger trees are also logged, as redo records, to the inbound journal
//! ([`redo`]): [`Store::logged`] makes them durable with the journal's group `fdatasync` — the
//! same one the webhook's events share — and sled is flushed in the background, once a second,
//! by the journal's checkpoint. A start re-applies the records sled had not flushed before it
//! opens anything else. [`Store::durable`] is the older, stronger wait: a group-committed sled
//! flush, for writes to trees that are not logged. Both group-commit: concurrent requests share
//! one flush instead of paying for one each.

pub mod audit;
mod claims;
mod commit;
mod dedupe;
mod engine;
mod locks;

pub mod idempotency;
pub mod inbound;
mod journal;
pub mod listing;
pub mod otp;
mod overlay;
pub mod redo;
pub mod sessions;
pub mod stats;
pub mod templates;

pub use commit::FlushReport;
use commit::GroupCommit;
pub use engine::Embedded;
pub use inbound::InboundLog;
pub use redo::Redo;
pub use sessions::SessionStore;

use super::{Cursor, DueTimer, StoreError, TimerRef};
use std::path::Path;
use std::sync::Arc;

/// sled's page cache. sled's resident memory is several times this plus its page table, so it
/// is kept small: measured under a sustained 2,000 events/s, 16 MiB levels off near 100 MiB
/// resident where 64 MiB passed 200 MiB, at no measurable cost in throughput.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// How often sled is flushed in the background. The defaults are what the server runs with;
/// other values are for tests and tools (say, a child process that must crash with nothing
/// flushed but the journal).
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// The journal's checkpoint (a sled flush, then the handled marks and the redo position);
    /// `None`: only when asked ([`InboundLog::checkpoint_now`], shutdown).
    pub checkpoint_every: Option<std::time::Duration>,
    /// sled's own timer flush, in milliseconds (default: every second). It also compacts sled's
    /// log, and syncs its file. It may write ahead of the journal: a start re-applies only the
    /// redo records after the last one sled itself recovered, so that is harmless.
    pub sled_flush_every_ms: Option<u64>,
    /// The journal's current segment is closed once it holds this many bytes or is this old
    /// (whether or not it holds webhook events), so the checkpoint can delete it once settled.
    pub segment_bytes: u64,
    pub segment_age: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            checkpoint_every: Some(std::time::Duration::from_secs(1)),
            // sled's flusher is also what compacts its log: without it the file only grows.
            sled_flush_every_ms: Some(1000),
            segment_bytes: inbound::SEGMENT_BYTES,
            segment_age: inbound::SEGMENT_AGE,
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        StoreError::Database(e.to_string())
    }
}

/// The open database and its group committer.
#[derive(Debug)]
pub struct Store {
    // Field order matters: the committer (which holds a database handle on its thread) is
    // dropped and joined before the database itself.
    commit: GroupCommit,
    inbound: InboundLog,
    sessions: SessionStore,
    stats: stats::StatsStore,
    templates: templates::TemplateStatusStore,
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the database in `dir`, sealing records with the OTP key kept in
    /// `dir` (created on first use). `observe` sees every group flush.
    pub fn open(
        dir: &Path,
        observe: impl Fn(FlushReport) + Send + 'static,
    ) -> Result<Store, StoreError> {
        Store::open_with_key(dir, observe, None)
    }

    /// Like [`Store::open`], with the configured OTP key (`WAOTP_OTP_KEY`) when there is one.
    pub fn open_with_key(
        dir: &Path,
        observe: impl Fn(FlushReport) + Send + 'static,
        configured_key: Option<&secrecy::SecretString>,
    ) -> Result<Store, StoreError> {
        Store::open_with_options(dir, observe, configured_key, StoreOptions::default())
    }

    /// Like [`Store::open_with_key`], with chosen background flushes.
    pub fn open_with_options(
        dir: &Path,
        observe: impl Fn(FlushReport) + Send + 'static,
        configured_key: Option<&secrecy::SecretString>,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(e.to_string()))?;
        let key = crate::otp::OtpKey::load_or_create(dir, configured_key)
            .map_err(|e| StoreError::Key(e.to_string()))?;
        let sealer = Arc::new(crate::otp::RecordSealer::new(&key));
        let config = sled::Config::new()
            .path(dir)
            // Durability comes from the journal and our explicit flushes; sled's own timer
            // flush only adds writes, so it is kept infrequent.
            .flush_every_ms(options.sled_flush_every_ms)
            // sled's default page cache is 1 GiB; sessions are small and mostly idle, so a
            // bounded cache keeps resident memory flat however many sessions are on disk.
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput);
        let db = open_waiting_for_lock(&config)?;
        // Opening the journal replays the logged writes sled had not flushed, before any other
        // tree is read.
        let inbound = InboundLog::open(
            &db,
            sealer.clone(),
            &dir.join("inbound"),
            options.checkpoint_every,
            (options.segment_bytes, options.segment_age),
        )?;
        let redo = inbound.redo();
        Ok(Store {
            commit: GroupCommit::start(db.clone(), Some(inbound.handled_marks()), observe),
            sessions: SessionStore::open(&db, sealer, redo.clone())?,
            stats: stats::StatsStore::open(&db, redo)?,
            inbound,
            templates: templates::TemplateStatusStore::open(&db)?,
            db,
        })
    }

    /// The inbound event log and its deduplication records.
    pub fn inbound(&self) -> &InboundLog {
        &self.inbound
    }

    /// Sessions, timers, outbox and delivery links.
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// Funnel aggregates per flow and hour.
    pub fn stats(&self) -> &stats::StatsStore {
        &self.stats
    }

    /// What WhatsApp last said about each message template.
    pub fn templates(&self) -> &templates::TemplateStatusStore {
        &self.templates
    }

    /// The underlying database, for sibling store modules that keep their own trees.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The handle that logs writes to the journal, for store handles opened beside the
    /// [`Store`] (the OTP ledger: [`otp::OtpLedger::logged`]).
    pub fn redo(&self) -> Redo {
        self.inbound.redo()
    }

    /// Resolves once every logged write ([`redo`]) and inbound event made before the call is
    /// on disk: one journal `fdatasync`, shared with every request waiting meanwhile. Writes
    /// to trees that are not logged need [`Store::durable`].
    pub async fn logged(&self) -> Result<(), StoreError> {
        self.inbound.durable().await
    }

    /// Resolves once everything written to sled before the call is on disk (a sled flush,
    /// group-committed): for writes that are not logged. (Inbound events have their own
    /// journal: [`InboundLog::durable`].)
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.commit
            .durable()
            .await
            .map_err(|e| StoreError::Flush(e.to_string()))
    }

    /// A synchronous flush, for shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.inbound.checkpoint_now()?;
        Ok(())
    }

    /// Whether the database answers reads.
    pub fn healthy(&self) -> bool {
        self.db.get(b"\0health").is_ok() && self.inbound.healthy()
    }

    /// Bytes the database and the inbound journal occupy on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.inbound.size_on_disk()
    }
}

/// Opens sled, waiting up to two seconds for the directory lock: a store dropped a moment ago
/// may still be closing its files on sled's IO threads. Another live process keeps the lock,
/// and the error then says so.
fn open_waiting_for_lock(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let mut tries = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if tries < 40 && e.to_string().contains("could not acquire lock") =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_background_checkpoint_moves_logged_writes_into_sled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), |_| {}).expect("open");
        let tree = redo::LoggedTree::open(store.db(), "runtime", store.redo()).expect("tree");
        tree.insert(b"\0moved", &b"v"[..]).expect("insert");
        // Held in memory first: sled has it only once a checkpoint ran.
        let raw = store.db().open_tree("runtime").expect("tree");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while raw.get(b"\0moved").expect("get").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint moved the write into sled"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            tree.get(b"\0moved").expect("get").as_deref(),
            Some(&b"v"[..])
        );
    }

    #[tokio::test]
    async fn reopens_after_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), |_| {}).expect("open");
            store.db().insert(b"k", b"v").expect("insert");
            store.durable().await.expect("durable");
            assert!(store.healthy());
        }
        let store = Store::open(dir.path(), |_| {}).expect("reopen");
        assert_eq!(
            store.db().get(b"k").expect("get").as_deref(),
            Some(&b"v"[..])
        );
    }
}
