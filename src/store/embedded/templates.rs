//! What WhatsApp last said about each message template: its status (`APPROVED`, `PAUSED`,
//! `DISABLED`, …, with Meta's reason) and quality score, by WhatsApp Business Account (WABA),
//! template name and language. Two merchants with two accounts may each have a template of the
//! same name: a pause at one account says nothing of the other's.
//!
//! A record without an account (written before accounts were kept, or from a webhook that named
//! none) stands for "any account": it applies to every merchant that has no record of its own
//! account for the template. At start the server gives such records to the default merchant's
//! account when it has one ([`TemplateStatusStore::adopt_unowned`]). A merchant without a
//! `waba_id` reads the most recent record of the template from any account.
//!
//! Written by the start-up check and by `message_template_status_update` /
//! `message_template_quality_update` webhooks, in the sled tree `template-status`, so it
//! survives a restart; read by the outbox before every template send, from an in-memory copy
//! kept in step with the tree (a read lock, no I/O).

use std::collections::BTreeMap;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;

const TREE: &str = "template-status";

/// One template in one language, as WhatsApp last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStatus {
    /// The WhatsApp Business Account the template belongs to; `None`: any account (a record
    /// written before accounts were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waba: Option<String>,
    pub name: String,
    pub language: String,
    /// Meta's template id, when known.
    #[serde(default)]
    pub template_id: String,
    /// Meta's status, upper case: `APPROVED`, `PENDING`, `REJECTED`, `PAUSED`, `DISABLED`, …
    pub status: String,
    /// Meta's reason for the last status change (`NONE` when it gave none).
    #[serde(default)]
    pub reason: Option<String>,
    /// Meta's quality score: `GREEN`, `YELLOW`, `RED` or `UNKNOWN`.
    #[serde(default)]
    pub quality: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl TemplateStatus {
    /// Why a send of this template cannot go, when WhatsApp would refuse it: `template_paused`
    /// or `template_disabled`.
    pub fn blocked_reason(&self) -> Option<&'static str> {
        match self.status.as_str() {
            "PAUSED" => Some("template_paused"),
            "DISABLED" => Some("template_disabled"),
            _ => None,
        }
    }
}

/// `(account or "", name, language)`: the cache's key.
type Key = (String, String, String);

fn cache_key(s: &TemplateStatus) -> Key {
    (
        s.waba.clone().unwrap_or_default(),
        s.name.clone(),
        s.language.clone(),
    )
}

/// The stored statuses.
#[derive(Debug)]
pub struct TemplateStatusStore {
    tree: sled::Tree,
    cache: RwLock<BTreeMap<Key, TemplateStatus>>,
}

/// The tree's key: `name NUL language` for a record of any account (as older versions wrote
/// them), `account NUL name NUL language` otherwise.
fn key(waba: Option<&str>, name: &str, language: &str) -> Vec<u8> {
    let mut k = Vec::new();
    if let Some(w) = waba {
        k.extend_from_slice(w.as_bytes());
        k.push(0);
    }
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(language.as_bytes());
    k
}

impl TemplateStatusStore {
    pub fn open(db: &sled::Db) -> Result<TemplateStatusStore, StoreError> {
        let tree = db.open_tree(TREE)?;
        let mut cache = BTreeMap::new();
        for item in tree.iter() {
            let (_, value) = item?;
            // A record this version cannot read is left for a later one, not fatal.
            if let Ok(s) = serde_json::from_slice::<TemplateStatus>(&value) {
                cache.insert(cache_key(&s), s);
            }
        }
        Ok(TemplateStatusStore {
            tree,
            cache: RwLock::new(cache),
        })
    }

    /// The status of `name` in `language` that applies to a merchant of account `waba`: the
    /// account's own record, else a record of any account. For a merchant without an account
    /// (`None`), the most recent record of any account.
    pub fn get(&self, waba: Option<&str>, name: &str, language: &str) -> Option<TemplateStatus> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let at = |w: &str| cache.get(&(w.to_owned(), name.to_owned(), language.to_owned()));
        match waba {
            Some(w) => at(w).or_else(|| at("")).cloned(),
            None => cache
                .values()
                .filter(|s| s.name == name && s.language == language)
                .max_by_key(|s| s.updated_at)
                .cloned(),
        }
    }

    /// The record of exactly this account (`None`: the record of any account), if any.
    pub fn get_exact(
        &self,
        waba: Option<&str>,
        name: &str,
        language: &str,
    ) -> Option<TemplateStatus> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&(
                waba.unwrap_or_default().to_owned(),
                name.to_owned(),
                language.to_owned(),
            ))
            .cloned()
    }

    /// Every stored status, by account, name then language.
    pub fn all(&self) -> Vec<TemplateStatus> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.values().cloned().collect()
    }

    /// The statuses that apply to a merchant of account `waba` (see [`Self::get`]), one per
    /// template and language, by name then language.
    pub fn of_account(&self, waba: Option<&str>) -> Vec<TemplateStatus> {
        let pairs: std::collections::BTreeSet<(String, String)> = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            cache
                .keys()
                .filter(|(w, _, _)| waba.is_none() || w.is_empty() || Some(w.as_str()) == waba)
                .map(|(_, n, l)| (n.clone(), l.clone()))
                .collect()
        };
        pairs
            .iter()
            .filter_map(|(n, l)| self.get(waba, n, l))
            .collect()
    }

    /// Stores `status` (not yet durable: the caller flushes); returns the one it replaced.
    pub fn put(&self, status: TemplateStatus) -> Result<Option<TemplateStatus>, StoreError> {
        let bytes = serde_json::to_vec(&status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        self.tree.insert(
            key(status.waba.as_deref(), &status.name, &status.language),
            bytes,
        )?;
        Ok(cache.insert(cache_key(&status), status))
    }

    /// Gives the records of any account to account `waba` (the default merchant's, at start):
    /// each becomes that account's record unless the account has a record of its own for the
    /// template. Returns how many records moved (not yet durable: the caller flushes).
    pub fn adopt_unowned(&self, waba: &str) -> Result<usize, StoreError> {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let unowned: Vec<Key> = cache.keys().filter(|k| k.0.is_empty()).cloned().collect();
        let mut moved = 0;
        for k in unowned {
            let Some(mut status) = cache.remove(&k) else {
                continue;
            };
            self.tree
                .remove(key(None, &status.name, &status.language))?;
            status.waba = Some(waba.to_owned());
            let owned = cache_key(&status);
            if cache.contains_key(&owned) {
                continue;
            }
            let bytes =
                serde_json::to_vec(&status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.tree
                .insert(key(Some(waba), &status.name, &status.language), bytes)?;
            cache.insert(owned, status);
            moved += 1;
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(waba: Option<&str>, name: &str, state: &str, at: i64) -> TemplateStatus {
        TemplateStatus {
            waba: waba.map(str::to_owned),
            name: name.into(),
            language: "en".into(),
            template_id: String::new(),
            status: state.into(),
            reason: None,
            quality: None,
            updated_at: DateTime::from_timestamp(at, 0).expect("time"),
        }
    }

    #[test]
    fn statuses_are_kept_per_account_and_unowned_ones_go_to_the_default_account() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        {
            let store = TemplateStatusStore::open(&db).expect("open");
            // As an older version wrote it: no account.
            store.put(status(None, "otp", "PAUSED", 1)).expect("put");
            store
                .put(status(None, "promo", "APPROVED", 1))
                .expect("put");
            store
                .put(status(Some("A"), "promo", "DISABLED", 2))
                .expect("put");
            store
                .put(status(Some("B"), "otp", "APPROVED", 3))
                .expect("put");
            // Any account's record applies where an account has none of its own.
            assert_eq!(
                store.get(Some("A"), "otp", "en").expect("a").status,
                "PAUSED"
            );
            assert_eq!(
                store.get(Some("B"), "otp", "en").expect("b").status,
                "APPROVED"
            );
            // Without an account: the most recent record.
            assert_eq!(
                store.get(None, "otp", "en").expect("any").status,
                "APPROVED"
            );
            assert_eq!(store.adopt_unowned("A").expect("adopt"), 1);
        }
        let store = TemplateStatusStore::open(&db).expect("reopen");
        let a = store.get_exact(Some("A"), "otp", "en").expect("adopted");
        assert_eq!(
            (a.waba.as_deref(), a.status.as_str()),
            (Some("A"), "PAUSED")
        );
        // The account's own record won over the unowned one, which is gone.
        assert_eq!(
            store.get(Some("A"), "promo", "en").expect("a").status,
            "DISABLED"
        );
        assert!(store.get_exact(None, "promo", "en").is_none());
        assert!(store.get(Some("C"), "otp", "en").is_none());
        assert_eq!(
            store
                .of_account(Some("B"))
                .iter()
                .map(|s| (s.name.as_str(), s.status.as_str()))
                .collect::<Vec<_>>(),
            vec![("otp", "APPROVED")]
        );
    }
}
