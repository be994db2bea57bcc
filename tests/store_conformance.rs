//! The storage contract, checked once for every engine: each case is an async function over a
//! [`Storage`], run against the embedded engine (a temporary directory) and — when
//! `WAOTP_TEST_DATABASE_URL` names a server — the PostgreSQL engine (a fresh database).
//!
//! A case that closes the store (to see what survives) calls [`Backend::reopen`]: the
//! embedded engine drops every handle and opens the directory again; the PostgreSQL engine
//! opens another pool on the same database, as a restarted instance would.

#[path = "pg_support/mod.rs"]
mod pg_support;

#[path = "store_conformance/support.rs"]
mod support;

#[path = "store_conformance/events.rs"]
mod events;
#[path = "store_conformance/otp.rs"]
mod otp;
#[path = "store_conformance/reports.rs"]
mod reports;
#[path = "store_conformance/steps.rs"]
mod steps;
#[path = "store_conformance/work.rs"]
mod work;

use std::path::PathBuf;
use waotp::store::{Storage, StoreOptions};

/// One engine under test: opens its store, and opens it again over the same data.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// Opens the store (first time: empty).
    async fn open(&self) -> Storage;

    /// Closes `storage` (every handle to it) and opens the same data again.
    async fn reopen(&self, storage: Storage) -> Storage {
        storage.engine.flush().await.expect("flush before closing");
        drop(storage);
        self.open().await
    }

    /// Another claimer of the same data, open beside `storage`: PostgreSQL, a second
    /// instance on the database; embedded, a second bundle of the open engine.
    async fn another_claimer(&self, storage: &Storage) -> Storage;
}

struct Embedded {
    dir: tempfile::TempDir,
    /// The engine open now, for more claimers of it.
    open: std::sync::Mutex<std::sync::Weak<waotp::store::embedded::Embedded>>,
}

#[async_trait::async_trait]
impl Backend for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn open(&self) -> Storage {
        let dir: PathBuf = self.dir.path().to_owned();
        let engine =
            waotp::store::embedded::Embedded::open(&dir, |_| {}, None, StoreOptions::default())
                .expect("open the embedded engine");
        *self.open.lock().expect("engine") = std::sync::Arc::downgrade(&engine);
        engine.storage()
    }

    async fn another_claimer(&self, _storage: &Storage) -> Storage {
        self.open
            .lock()
            .expect("engine")
            .upgrade()
            .expect("the engine is open")
            .storage()
    }
}

/// The PostgreSQL engine on a fresh database; reopening is a new instance on the same one.
struct Postgres {
    db: pg_support::TestDatabase,
}

#[async_trait::async_trait]
impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn open(&self) -> Storage {
        Storage::postgres(&self.db.url, None)
            .await
            .expect("open the PostgreSQL engine")
    }

    async fn another_claimer(&self, _storage: &Storage) -> Storage {
        self.open().await
    }
}

/// The engines to run a case against: the embedded one always, PostgreSQL when a server is
/// configured (a fresh database per case).
pub async fn engines(case: &str) -> Vec<Box<dyn Backend>> {
    let mut engines: Vec<Box<dyn Backend>> = vec![Box::new(Embedded {
        dir: tempfile::tempdir().expect("tempdir"),
        open: Default::default(),
    })];
    // Prints the notice itself when no server is configured.
    if let Some(db) = pg_support::fresh_database(case).await {
        engines.push(Box::new(Postgres { db }));
    }
    engines
}

/// One `#[tokio::test]` per case, running it against every engine.
macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                for backend in engines(stringify!($case)).await {
                    eprintln!("{} on {}", stringify!($case), backend.name());
                    $module::$case(backend.as_ref()).await;
                }
            }
        )*
    };
}

conformance!(
    events::an_event_is_recorded_once,
    events::pending_events_come_in_order_until_handled,
    events::handled_events_are_purged_and_pending_ones_kept,
    events::pending_events_survive_reopening,
    steps::a_step_is_applied_whole,
    steps::a_completed_session_leaves_the_active_index_and_is_purged,
    steps::idempotency_keys_keep_their_first_request_and_answer,
    steps::listing_pages_through_every_session_once_newest_first,
    steps::a_listing_refuses_a_cursor_it_never_gave,
    steps::customer_records_are_kept,
    work::a_claimed_entry_is_not_claimed_again_until_settled_or_released,
    work::one_recipients_entries_are_claimed_in_order,
    work::an_entry_left_in_flight_comes_back_for_the_in_doubt_rules,
    work::a_claim_taken_over_after_its_lease_cannot_start_a_send,
    work::a_renewed_claim_outlives_its_first_lease,
    work::a_release_gives_back_only_the_claimers_own_claims,
    work::a_due_timer_is_claimed_once,
    work::timers_survive_reopening,
    work::locks_exclude_each_other_and_only_each_other,
    reports::stats_counts_add_up,
    reports::template_statuses_are_kept_per_account,
    otp::codes_are_issued_checked_and_used_once,
    otp::the_per_customer_limit_refuses_further_codes,
    otp::wrong_attempts_survive_reopening,
    otp::a_sealed_code_opens_after_reopening,
);
