//! What WhatsApp last said about each message template: its status (`APPROVED`, `PAUSED`,
//! `DISABLED`, …, with Meta's reason) and quality score, by template name and language.
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

/// The stored statuses.
#[derive(Debug)]
pub struct TemplateStatusStore {
    tree: sled::Tree,
    cache: RwLock<BTreeMap<(String, String), TemplateStatus>>,
}

fn key(name: &str, language: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
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
                cache.insert((s.name.clone(), s.language.clone()), s);
            }
        }
        Ok(TemplateStatusStore {
            tree,
            cache: RwLock::new(cache),
        })
    }

    /// The last known status of `name` in `language`.
    pub fn get(&self, name: &str, language: &str) -> Option<TemplateStatus> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.get(&(name.to_owned(), language.to_owned())).cloned()
    }

    /// Every stored status, by name then language.
    pub fn all(&self) -> Vec<TemplateStatus> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.values().cloned().collect()
    }

    /// Stores `status` (not yet durable: the caller flushes); returns the one it replaced.
    pub fn put(&self, status: TemplateStatus) -> Result<Option<TemplateStatus>, StoreError> {
        let bytes = serde_json::to_vec(&status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        self.tree
            .insert(key(&status.name, &status.language), bytes)?;
        Ok(cache.insert((status.name.clone(), status.language.clone()), status))
    }
}
