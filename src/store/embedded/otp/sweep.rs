//! Background clean-up of ledger entries that no rule needs any more.
//!
//! Owns only deletion of stale entries (the database must not grow without bound; retention in
//! docs/durability.md);
//! it never changes a live record, so it cannot weaken any limit still in force.

use chrono::{DateTime, Utc};

use super::tx::decode;
use super::{LedgerError, OtpLedger, CODES_TREE, CUSTOMERS_TREE};
use crate::otp::limits::{delta, CustomerActivity};
use crate::otp::OtpRecord;

impl OtpLedger {
    /// Deletes what no rule needs any more: session records whose code expired more than
    /// `retention` ago, and customers with no send or wrong attempt in the last 24 hours.
    /// Returns how many entries went. Run it in the background; `retention` must outlast every
    /// session, since a deleted record lets a still-running session start over with a fresh
    /// attempt count. Each deletion is a compare-and-swap, so a record changed meanwhile stays.
    pub fn sweep(
        &self,
        now: DateTime<Utc>,
        retention: std::time::Duration,
    ) -> Result<usize, LedgerError> {
        let cutoff = now - delta(retention);
        let mut removed = 0;
        for item in self.codes.iter() {
            let (key, value) = item?;
            let record: OtpRecord = decode(CODES_TREE, &value)?;
            if record.expires_at() >= cutoff {
                continue;
            }
            // Between transactions, never inside one.
            let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
            if self.codes.remove_if(&key, &value)? {
                self.outgoing.remove(&key)?;
                removed += 1;
            }
        }
        for item in self.customers.iter() {
            let (key, value) = item?;
            let activity: CustomerActivity = decode(CUSTOMERS_TREE, &value)?;
            if !activity.is_idle(now) {
                continue;
            }
            let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
            if self.customers.remove_if(&key, &value)? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}
