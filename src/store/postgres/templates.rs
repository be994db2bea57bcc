//! What WhatsApp last said about each message template, in PostgreSQL: the table
//! `template_status`, one row per account (`''`: any account), name and language, holding the
//! embedded engine's [`TemplateStatus`] as JSON.
//!
//! The rules of reading are the embedded engine's (an account's own record, else one of any
//! account; without an account, the most recent of any). Any instance may receive the status
//! webhook, and every instance sends: reads therefore go to the database, through a copy of the
//! (small) table that lives at most [`FRESH_FOR`] — a pause written by another instance stops
//! this one's sends within that time, and a template send costs no query most of the time. A
//! write refreshes this instance's copy at once. If the database cannot be read, the last copy
//! is used (with a warning) rather than failing the send.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::Mutex;
use tokio_postgres::types::Json;

use crate::store::{StoreError, TemplateStatus, TemplateStatuses};

/// How long a copy of the table is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// `(account or "", name, language)`.
type Key = (String, String, String);

fn key_of(s: &TemplateStatus) -> Key {
    (
        s.waba.clone().unwrap_or_default(),
        s.name.clone(),
        s.language.clone(),
    )
}

fn database(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The table and this instance's short-lived copy of it.
pub struct PgTemplateStatuses {
    pool: Pool,
    copy: Mutex<Option<(Instant, BTreeMap<Key, TemplateStatus>)>>,
}

impl std::fmt::Debug for PgTemplateStatuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTemplateStatuses").finish_non_exhaustive()
    }
}

impl PgTemplateStatuses {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            copy: Mutex::new(None),
        }
    }

    async fn load(&self) -> Result<BTreeMap<Key, TemplateStatus>, StoreError> {
        let client = self.pool.get().await.map_err(database)?;
        let rows = client
            .query("SELECT status FROM template_status", &[])
            .await
            .map_err(database)?;
        let mut all = BTreeMap::new();
        for row in rows {
            let value: serde_json::Value = row.get(0);
            // A record this version cannot read is left for a later one, not fatal.
            if let Ok(status) = serde_json::from_value::<TemplateStatus>(value) {
                all.insert(key_of(&status), status);
            }
        }
        Ok(all)
    }

    /// Every record, read again when the copy is older than [`FRESH_FOR`].
    async fn snapshot(&self) -> BTreeMap<Key, TemplateStatus> {
        let mut copy = self.copy.lock().await;
        if let Some((read_at, all)) = copy.as_ref() {
            if read_at.elapsed() < FRESH_FOR {
                return all.clone();
            }
        }
        match self.load().await {
            Ok(all) => {
                *copy = Some((Instant::now(), all.clone()));
                all
            }
            Err(e) => {
                tracing::warn!(error = %e, "template statuses unreadable; using the last copy");
                copy.as_ref()
                    .map(|(_, all)| all.clone())
                    .unwrap_or_default()
            }
        }
    }

    /// Forgets the copy, so the next read goes to the database.
    async fn invalidate(&self) {
        *self.copy.lock().await = None;
    }

    /// The status of `name` in `language` that applies to a merchant of account `waba`: the
    /// account's own record, else a record of any account. For a merchant without an account
    /// (`None`), the most recent record of any account.
    pub async fn get(
        &self,
        waba: Option<&str>,
        name: &str,
        language: &str,
    ) -> Option<TemplateStatus> {
        pick(&self.snapshot().await, waba, name, language)
    }

    /// The record of exactly this account (`None`: the record of any account), if any.
    pub async fn get_exact(
        &self,
        waba: Option<&str>,
        name: &str,
        language: &str,
    ) -> Option<TemplateStatus> {
        let key = (
            waba.unwrap_or_default().to_owned(),
            name.to_owned(),
            language.to_owned(),
        );
        self.snapshot().await.remove(&key)
    }

    /// Every stored status, by account, name then language.
    pub async fn all(&self) -> Vec<TemplateStatus> {
        self.snapshot().await.into_values().collect()
    }

    /// The statuses that apply to a merchant of account `waba` (see [`Self::get`]), one per
    /// template and language, by name then language.
    pub async fn of_account(&self, waba: Option<&str>) -> Vec<TemplateStatus> {
        let all = self.snapshot().await;
        let pairs: std::collections::BTreeSet<(&str, &str)> = all
            .keys()
            .filter(|(w, _, _)| waba.is_none() || w.is_empty() || Some(w.as_str()) == waba)
            .map(|(_, n, l)| (n.as_str(), l.as_str()))
            .collect();
        pairs
            .into_iter()
            .filter_map(|(n, l)| pick(&all, waba, n, l))
            .collect()
    }

    /// Stores `status` (durable on return); returns the record it replaced.
    pub async fn put(&self, status: TemplateStatus) -> Result<Option<TemplateStatus>, StoreError> {
        let (waba, name, language) = key_of(&status);
        let mut client = self.pool.get().await.map_err(database)?;
        let tx = client.transaction().await.map_err(database)?;
        let old = tx
            .query_opt(
                "SELECT status FROM template_status
                 WHERE waba = $1 AND name = $2 AND language = $3 FOR UPDATE",
                &[&waba, &name, &language],
            )
            .await
            .map_err(database)?
            .and_then(|row| serde_json::from_value(row.get(0)).ok());
        tx.execute(
            "INSERT INTO template_status (waba, name, language, status, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (waba, name, language)
             DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at",
            &[&waba, &name, &language, &Json(&status), &status.updated_at],
        )
        .await
        .map_err(database)?;
        tx.commit().await.map_err(database)?;
        self.invalidate().await;
        Ok(old)
    }

    /// Gives the records of any account to account `waba`: each becomes that account's record
    /// unless the account has one of its own for the template (then it is dropped). Returns how
    /// many records moved.
    pub async fn adopt_unowned(&self, waba: &str) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await.map_err(database)?;
        let tx = client.transaction().await.map_err(database)?;
        let rows = tx
            .query(
                "DELETE FROM template_status WHERE waba = '' RETURNING status",
                &[],
            )
            .await
            .map_err(database)?;
        let mut moved = 0;
        for row in rows {
            let Ok(mut status) = serde_json::from_value::<TemplateStatus>(row.get(0)) else {
                continue;
            };
            status.waba = Some(waba.to_owned());
            moved += tx
                .execute(
                    "INSERT INTO template_status (waba, name, language, status, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (waba, name, language) DO NOTHING",
                    &[
                        &waba,
                        &status.name,
                        &status.language,
                        &Json(&status),
                        &status.updated_at,
                    ],
                )
                .await
                .map_err(database)? as usize;
        }
        tx.commit().await.map_err(database)?;
        self.invalidate().await;
        Ok(moved)
    }
}

/// The record that applies to account `waba` (see [`PgTemplateStatuses::get`]).
fn pick(
    all: &BTreeMap<Key, TemplateStatus>,
    waba: Option<&str>,
    name: &str,
    language: &str,
) -> Option<TemplateStatus> {
    let at = |w: &str| all.get(&(w.to_owned(), name.to_owned(), language.to_owned()));
    match waba {
        Some(w) => at(w).or_else(|| at("")).cloned(),
        None => all
            .values()
            .filter(|s| s.name == name && s.language == language)
            .max_by_key(|s| s.updated_at)
            .cloned(),
    }
}

#[async_trait::async_trait]
impl TemplateStatuses for PgTemplateStatuses {
    async fn get(&self, waba: Option<&str>, name: &str, language: &str) -> Option<TemplateStatus> {
        PgTemplateStatuses::get(self, waba, name, language).await
    }

    async fn get_exact(
        &self,
        waba: Option<&str>,
        name: &str,
        language: &str,
    ) -> Option<TemplateStatus> {
        PgTemplateStatuses::get_exact(self, waba, name, language).await
    }

    async fn all(&self) -> Vec<TemplateStatus> {
        PgTemplateStatuses::all(self).await
    }

    async fn of_account(&self, waba: Option<&str>) -> Vec<TemplateStatus> {
        PgTemplateStatuses::of_account(self, waba).await
    }

    async fn put(&self, status: TemplateStatus) -> Result<Option<TemplateStatus>, StoreError> {
        PgTemplateStatuses::put(self, status).await
    }

    async fn adopt_unowned(&self, waba: &str) -> Result<usize, StoreError> {
        PgTemplateStatuses::adopt_unowned(self, waba).await
    }
}
