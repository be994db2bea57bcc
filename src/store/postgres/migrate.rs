//! The schema's versioned migrations, embedded in the binary and applied at start.
//!
//! A hand-written runner rather than a migration framework keeps the dependency tree small:
//! the files in `migrations/` are applied in version order, each recorded in
//! `waotp_schema_migrations(version, name, applied_at)`. Everything runs in one transaction that
//! first takes a transaction-scoped advisory lock, so two instances starting together apply each
//! migration once (the second waits, then finds nothing to do), and a failed migration leaves
//! the database as it was. A database that records a version this binary does not know was
//! written by a newer waotp: it is refused rather than used with a schema we cannot read.
//!
//! A migration is never edited once released; a change is a new file.

use super::locks::LockClass;
use crate::store::StoreError;

/// A schema version this binary carries.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core",
        sql: include_str!("migrations/0001_core.sql"),
    },
    Migration {
        version: 2,
        name: "otp",
        sql: include_str!("migrations/0002_otp.sql"),
    },
];

/// The newest version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the schema up to [`latest`]; returns the versions this call applied.
pub async fn apply(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, StoreError> {
    let fail = |what: &str, e: tokio_postgres::Error| super::query_error(what, e);
    let tx = client
        .transaction()
        .await
        .map_err(|e| fail("cannot start the migration", e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, 0)",
        &[&LockClass::Migrations.id()],
    )
    .await
    .map_err(|e| fail("cannot take the migration lock", e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS waotp_schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(|e| fail("cannot create waotp_schema_migrations", e))?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM waotp_schema_migrations",
            &[],
        )
        .await
        .map_err(|e| fail("cannot read the schema version", e))?
        .get(0);
    if current > latest() {
        return Err(super::db_error(format!(
            "the database schema is at version {current}, newer than this waotp knows \
             (up to {}): it was written by a newer release; run that release or newer",
            latest()
        )));
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await.map_err(|e| {
            super::db_error(format!("migration {:04}_{} failed: {e}", m.version, m.name))
        })?;
        tx.execute(
            "INSERT INTO waotp_schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(|e| fail("cannot record a migration", e))?;
        applied.push(m.version);
    }
    tx.commit()
        .await
        .map_err(|e| fail("cannot commit the migrations", e))?;
    if !applied.is_empty() {
        tracing::info!(versions = ?applied, "database schema migrated");
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_named_like_their_files() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "version {} out of order", m.version);
            assert!(!m.sql.trim().is_empty(), "{} is empty", m.name);
            last = m.version;
        }
        assert_eq!(latest(), last);
    }
}
