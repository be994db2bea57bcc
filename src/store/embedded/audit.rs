//! The append-only audit log of OTP activity, in the sled tree `audit`.
//!
//! This module owns the audit record format and the tree: every issue, resend, send, check,
//! withdrawal and limit breach, with time, session, flow, purpose, masked customer, outcome and
//! reason. It never stores a code, a digest or a full phone number, and offers no way to edit
//! or delete an entry. Keys come from `generate_id` (big-endian), so they sort by append order.

use super::redo::{LoggedTree, Redo, TxTree};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::otp::{CustomerNumber, OtpRecord};

/// Name of the sled tree holding the audit log.
pub const AUDIT_TREE: &str = "audit";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A first code for a session was issued or refused.
    Issue,
    /// A replacement code was issued or refused.
    Resend,
    /// WhatsApp accepted the message carrying a code.
    Send,
    /// An attempt was checked.
    Check,
    /// A customer or service-wide limit refused an issue or check.
    LimitBreach,
    /// The runtime withdrew a session's code.
    Retire,
}

/// One audit record. Fields are read-only: entries are written once and never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    at: DateTime<Utc>,
    kind: AuditKind,
    session_id: String,
    flow: String,
    purpose: String,
    /// Last 4 digits only.
    customer: Option<String>,
    outcome: String,
    reason: Option<String>,
}

impl AuditEntry {
    /// A record of `kind` for a session; add what is known with the `with_` methods.
    pub fn new(at: DateTime<Utc>, kind: AuditKind, session_id: &str, outcome: &str) -> Self {
        Self {
            at,
            kind,
            session_id: session_id.to_owned(),
            flow: String::new(),
            purpose: String::new(),
            customer: None,
            outcome: outcome.to_owned(),
            reason: None,
        }
    }

    pub fn with_flow(mut self, flow: &str) -> Self {
        flow.clone_into(&mut self.flow);
        self
    }

    pub fn with_purpose(mut self, purpose: &str) -> Self {
        purpose.clone_into(&mut self.purpose);
        self
    }

    /// The customer, stored masked to the last 4 digits (see docs/durability.md).
    pub fn with_customer(mut self, customer: &CustomerNumber) -> Self {
        self.customer = Some(customer.masked());
        self
    }

    /// The flow, purpose and customer of the session's record, when there is one.
    pub fn with_record(self, record: Option<&OtpRecord>) -> Self {
        match record {
            Some(r) => self
                .with_flow(r.flow())
                .with_purpose(r.purpose())
                .with_customer(r.customer()),
            None => self,
        }
    }

    /// WhatsApp accepted the message carrying the session's code number `generation`.
    pub fn code_sent(
        record: Option<&OtpRecord>,
        at: DateTime<Utc>,
        session_id: &str,
        generation: u32,
    ) -> Self {
        Self::new(at, AuditKind::Send, session_id, "accepted")
            .with_record(record)
            .with_reason(format!("code {generation}"))
    }

    /// A free-text reason (never put a code or secret here).
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }
    pub fn kind(&self) -> AuditKind {
        self.kind
    }
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
    pub fn flow(&self) -> &str {
        &self.flow
    }
    pub fn purpose(&self) -> &str {
        &self.purpose
    }
    pub fn customer(&self) -> Option<&str> {
        self.customer.as_deref()
    }
    pub fn outcome(&self) -> &str {
        &self.outcome
    }
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// A failure reading or writing the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log storage failed: {0}")]
    Database(String),
    #[error("audit entry {id} is unreadable: {source}")]
    Corrupt {
        id: u64,
        #[source]
        source: serde_json::Error,
    },
}

impl From<sled::Error> for AuditError {
    fn from(e: sled::Error) -> AuditError {
        AuditError::Database(e.to_string())
    }
}

/// The audit log tree.
#[derive(Debug, Clone)]
pub struct AuditLog {
    db: sled::Db,
    tree: LoggedTree,
}

impl AuditLog {
    /// The audit tree of `db`, written through `redo` (the store's: reads then see the
    /// entries still in memory).
    pub fn open(db: &sled::Db, redo: Redo) -> Result<Self, AuditError> {
        Ok(Self {
            db: db.clone(),
            tree: LoggedTree::open(db, AUDIT_TREE, redo)?,
        })
    }

    /// Appends one entry on its own. Writes that change other state should instead append
    /// inside their transaction with [`append_in`], so state and audit commit together.
    pub fn append(&self, entry: &AuditEntry) -> Result<u64, AuditError> {
        let id = self.db.generate_id()?;
        self.tree.put(id.to_be_bytes(), encode(entry))?;
        Ok(id)
    }

    /// Entries with ids from `from` on, oldest first, at most `limit` of them.
    pub fn read_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>, AuditError> {
        self.tree
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                let id = decode_id(&key);
                let entry = serde_json::from_slice(&value)
                    .map_err(|source| AuditError::Corrupt { id, source })?;
                Ok((id, entry))
            })
            .collect()
    }

    /// Every entry of one session, oldest first (a full scan: for tests and admin tools).
    pub fn for_session(&self, session_id: &str) -> Result<Vec<AuditEntry>, AuditError> {
        Ok(self
            .read_from(0, usize::MAX)?
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.session_id == session_id)
            .collect())
    }
}

/// Appends `entry` to the audit tree inside a transaction that includes it, under an id from
/// `db` (ids burnt by a transaction that fails leave gaps, which is harmless: order is what
/// matters).
pub fn append_in(tree: &TxTree<'_>, db: &sled::Db, entry: &AuditEntry) -> sled::Result<()> {
    let id = db.generate_id()?;
    tree.insert(&id.to_be_bytes(), encode(entry));
    Ok(())
}

fn encode(entry: &AuditEntry) -> Vec<u8> {
    serde_json::to_vec(entry).expect("an audit entry of strings and a timestamp always serializes")
}

fn decode_id(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(session: &str, outcome: &str) -> AuditEntry {
        let customer = CustomerNumber::parse("+919876543210").expect("valid");
        AuditEntry::new(Utc::now(), AuditKind::Check, session, outcome)
            .with_flow("signup_verification")
            .with_purpose("signup")
            .with_customer(&customer)
    }

    #[test]
    fn entries_keep_append_order_and_mask_the_customer() {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let log = AuditLog::open(&db, Redo::none()).expect("open");
        let mut ids = Vec::new();
        for i in 0..300 {
            ids.push(
                log.append(&entry(&format!("s{}", i % 3), &i.to_string()))
                    .expect("append"),
            );
        }
        let read = log.read_from(0, usize::MAX).expect("read");
        let outcomes: Vec<_> = read.iter().map(|(_, e)| e.outcome().to_owned()).collect();
        let expected: Vec<_> = (0..300).map(|i| i.to_string()).collect();
        assert_eq!(
            outcomes, expected,
            "big-endian ids keep numeric order past 255"
        );
        assert_eq!(read.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
        assert_eq!(read[0].1.customer(), Some("…3210"));
        assert_eq!(log.for_session("s1").expect("scan").len(), 100);
        let from_middle = log.read_from(ids[150], 2).expect("page");
        assert_eq!(from_middle[0].1.outcome(), "150");
        assert_eq!(from_middle.len(), 2);
    }

    #[test]
    fn appends_inside_a_transaction_commit_with_it() {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let log = AuditLog::open(&db, Redo::none()).expect("open");
        let other = LoggedTree::open(&db, "other", Redo::none()).expect("tree");
        let tree = LoggedTree::open(&db, AUDIT_TREE, Redo::none()).expect("tree");
        let turn = std::sync::Mutex::new(());
        let aborted: Result<(), AuditError> =
            Redo::none().transact(&turn, [&other, &tree], |[other, audit]| {
                other.insert(b"k", b"v".to_vec());
                append_in(audit, &db, &entry("s", "x"))?;
                Err(AuditError::Database("given up".into()))
            });
        assert!(aborted.is_err());
        assert!(log.read_from(0, 10).expect("read").is_empty());
        assert!(other.get(b"k").expect("read").is_none());
        Redo::none()
            .transact(&turn, [&other, &tree], |[other, audit]| {
                other.insert(b"k", b"v".to_vec());
                append_in(audit, &db, &entry("s", "y"))
            })
            .expect("committed");
        assert_eq!(log.read_from(0, 10).expect("read").len(), 1);
        assert!(other.get(b"k").expect("read").is_some());
    }
}
