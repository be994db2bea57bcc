//! The OTP ledger: the state behind docs/otp-rules.md in the store, changed only by single
//! atomic transactions.
//!
//! This is the only OTP code that knows sled. It keeps, in trees prefixed `otp_`, each
//! session's current [`OtpRecord`] (the keyed digest, never the code), each number's recent
//! sends, wrong attempts and codes received at others' request — per merchant (key
//! `merchant \x1f number`), so that attempts at one merchant never lock a customer out at
//! another — the service-wide hourly send count, each merchant's own hourly count, and the
//! sealed copy of a code awaiting delivery. Sends and wrong attempts are written
//! under the number that asked for the code (the session's own), never under a third party's
//! number the code went to; that number only counts the code against its third-party cap. Every state-changing call reads what it needs, asks the pure rules in
//! `crate::otp::rules`, and writes their answer plus its audit entry in one transaction
//! ([`Redo::transact`]: the ledger's transactions run one at a time and commit as one redo
//! record), so two concurrent guesses can never both take the last attempt and a crash leaves
//! all of a change or none of it.
//!
//! How the runtime uses it: an OTP step calls [`OtpLedger::issue`] with the step's key and
//! queues an outbox entry for the returned generation; the outbox worker takes the code from
//! [`OtpLedger::code_for_sending`] and, once WhatsApp accepts the message, calls
//! [`OtpLedger::confirm_sent`], which deletes the sealed copy. Text from the chat goes through
//! `otp::normalize_attempt` and then [`OtpLedger::verify`], exactly like `/check`. A session
//! that ends calls [`OtpLedger::consume`]; a background task calls `sweep`.
//!
//! Durability: calls do not wait for the disk. The caller waits for the journal
//! (`Store::logged`) before acknowledging anything that depends on a change (a webhook `200`,
//! an API answer, a chat reply); one `fdatasync` covers every record written before it.

use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use super::audit::{append_in, AuditEntry, AuditKind, AUDIT_TREE};
use crate::otp::code::{generate, InvalidCodeLength};
use crate::otp::limits::{CustomerActivity, GlobalSends};
#[cfg(test)]
use crate::otp::rules::IssueRefusal;
use crate::otp::rules::{
    decide_issue, decide_merchant_ceiling, decide_resend, decide_verify, CodeStatus, IssueRequest,
    VerifyOutcome,
};
use crate::otp::seal::SealError;
use crate::otp::{CodeSealer, CustomerNumber, OtpCode, OtpKey, OtpRecord, OtpSubject, SealedCode};

mod issued;
mod sweep;
mod tx;
use super::redo::{LoggedTree, Redo};
pub(crate) use issued::{Decided, OTP_LOG};
pub use issued::{IssueKind, IssueOutcome, Issued, IssuedCode};
use tx::{get, put, read};

const CODES_TREE: &str = "otp_codes";
const CUSTOMERS_TREE: &str = "otp_customers";
const GLOBAL_TREE: &str = "otp_global";
const OUTGOING_TREE: &str = "otp_outgoing";
const GLOBAL_SENDS_KEY: &[u8] = b"sends";
/// Present once per-customer records are kept per merchant (older stores are moved once).
const SCOPED_KEY: &[u8] = b"\0customers-scoped";

/// A failure of the ledger itself (not a refusal by the rules).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("OTP storage failed: {0}")]
    Database(String),
    #[error("stored OTP data in {tree} is unreadable: {source}")]
    Corrupt {
        tree: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid OTP policy: {0}")]
    InvalidPolicy(#[from] InvalidCodeLength),
    #[error("the sealed OTP code cannot be opened: {0}")]
    Seal(#[from] SealError),
}

impl From<sled::Error> for LedgerError {
    fn from(e: sled::Error) -> LedgerError {
        LedgerError::Database(e.to_string())
    }
}

impl From<crate::store::StoreError> for LedgerError {
    fn from(e: crate::store::StoreError) -> LedgerError {
        LedgerError::Database(e.to_string())
    }
}

/// The sealed copy of the session's current code, kept until WhatsApp accepts its message.
#[derive(Serialize, Deserialize)]
struct Outgoing {
    generation: u32,
    sealed: SealedCode,
}

/// The OTP state of every session and customer.
pub struct OtpLedger {
    codes: LoggedTree,
    customers: LoggedTree,
    global: LoggedTree,
    outgoing: LoggedTree,
    audit: LoggedTree,
    /// Logs the writes of the ledger's transactions ([`super::redo`]).
    redo: Redo,
    /// Taken by every transaction: they run one at a time.
    turn: std::sync::Mutex<()>,
    /// Where audit entries get their ids.
    db: sled::Db,
    key: OtpKey,
    sealer: CodeSealer,
    /// The merchant of requests and records that name none (records written before merchants
    /// existed, callers of the single-merchant setup).
    default_merchant: std::sync::RwLock<String>,
}

impl std::fmt::Debug for OtpLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpLedger").finish_non_exhaustive()
    }
}

impl OtpLedger {
    /// The key codes are digested and sealed with.
    pub(crate) fn key(&self) -> &OtpKey {
        &self.key
    }

    pub fn open(db: &sled::Db, key: OtpKey) -> Result<Self, LedgerError> {
        Ok(Self {
            codes: LoggedTree::open(db, CODES_TREE, Redo::none())?,
            customers: LoggedTree::open(db, CUSTOMERS_TREE, Redo::none())?,
            global: LoggedTree::open(db, GLOBAL_TREE, Redo::none())?,
            outgoing: LoggedTree::open(db, OUTGOING_TREE, Redo::none())?,
            audit: LoggedTree::open(db, AUDIT_TREE, Redo::none())?,
            redo: Redo::none(),
            turn: std::sync::Mutex::new(()),
            db: db.clone(),
            sealer: CodeSealer::new(&key),
            key,
            default_merchant: std::sync::RwLock::new(crate::tenants::DEFAULT_MERCHANT.to_owned()),
        })
    }

    /// Logs every write of the ledger through `redo` (the [`super::Store`]'s), so that
    /// [`super::Store::logged`] makes them durable; without it they need a sled flush
    /// ([`super::Store::durable`]).
    pub fn logged(self, redo: Redo) -> Self {
        Self {
            codes: self.codes.with_redo(redo.clone()),
            customers: self.customers.with_redo(redo.clone()),
            global: self.global.with_redo(redo.clone()),
            outgoing: self.outgoing.with_redo(redo.clone()),
            audit: self.audit.with_redo(redo.clone()),
            redo,
            ..self
        }
    }

    /// Names the merchant of requests and records that name none, and moves the per-customer
    /// records of a store written before merchants existed under it (once: an upgrade keeps
    /// every limit in force). Returns how many records moved.
    pub fn adopt_default_merchant(&self, merchant: &str) -> Result<usize, LedgerError> {
        *self
            .default_merchant
            .write()
            .unwrap_or_else(|p| p.into_inner()) = merchant.to_owned();
        if self.global.contains_key(SCOPED_KEY)? {
            return Ok(0);
        }
        let mut moved = 0;
        for item in self.customers.iter() {
            let (key, value) = item?;
            if key.contains(&(crate::tenants::SCOPE_SEPARATOR as u8)) {
                continue;
            }
            let number = String::from_utf8_lossy(&key).into_owned();
            let mut batch = super::redo::Batch::default();
            batch.insert(self.activity_key(merchant, &number).into_bytes(), value);
            batch.remove(key);
            self.customers.apply_batch(batch)?;
            moved += 1;
        }
        self.global.insert(SCOPED_KEY, &[])?;
        Ok(moved)
    }

    /// The key of `number`'s activity at `merchant` (empty: the default merchant).
    fn activity_key(&self, merchant: &str, number: &str) -> String {
        let sep = crate::tenants::SCOPE_SEPARATOR;
        if merchant.is_empty() {
            let default = self
                .default_merchant
                .read()
                .unwrap_or_else(|p| p.into_inner());
            format!("{default}{sep}{number}")
        } else {
            format!("{merchant}{sep}{number}")
        }
    }

    /// The key of a merchant's own hourly send count.
    fn merchant_sends_key(&self, merchant: &str) -> Vec<u8> {
        let mut key = GLOBAL_SENDS_KEY.to_vec();
        key.push(crate::tenants::SCOPE_SEPARATOR as u8);
        key.extend_from_slice(self.activity_key(merchant, "").as_bytes());
        key
    }

    /// Issues a code of `kind` with digits from the OS CSPRNG. `step` names the flow step
    /// asking (e.g. the id of the inbound event being handled): calling again with the same
    /// step returns [`IssueOutcome::AlreadyIssued`] instead of a second code, so the runtime
    /// may replay a step after a crash. `Err(_)` is a storage failure.
    pub fn issue(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<IssueOutcome, LedgerError> {
        self.issue_with(req, kind, step, now, &mut OsRng)
    }

    /// [`issue`](Self::issue) with a chosen random source.
    pub fn issue_with<R: RngCore + CryptoRng + ?Sized>(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        step: &str,
        now: DateTime<Utc>,
        rng: &mut R,
    ) -> Result<IssueOutcome, LedgerError> {
        let session_id = req.subject.session_id();
        let code = generate(req.policy.code_length, rng)?;
        let digest = self.key.digest(req.subject, &code);
        let sealed = (kind != IssueKind::Reverse).then(|| self.sealer.seal(session_id, &code, rng));
        let resend = kind == IssueKind::Resend;
        let audit_kind = if resend {
            AuditKind::Resend
        } else {
            AuditKind::Issue
        };
        let trees = [
            &self.codes,
            &self.customers,
            &self.global,
            &self.outgoing,
            &self.audit,
        ];
        let requester_key = self.activity_key(req.merchant, req.requester.as_str());
        let target_key = self.activity_key(req.merchant, req.customer.as_str());
        let merchant_sends_key = self.merchant_sends_key(req.merchant);
        let decided: Result<Decided, LedgerError> = self.redo.transact(
            &self.turn,
            trees,
            |[codes, customers, global, outgoing, audit]| {
                let prev: Option<OtpRecord> = get(codes, CODES_TREE, session_id)?;
                if let Some(p) = prev.as_ref().filter(|p| p.issue_step() == Some(step)) {
                    return Ok(Decided::Replayed(IssuedCode::of(p)));
                }
                let activity: CustomerActivity =
                    get(customers, CUSTOMERS_TREE, &requester_key)?.unwrap_or_default();
                let target: CustomerActivity = if req.is_third_party() {
                    get(customers, CUSTOMERS_TREE, &target_key)?.unwrap_or_default()
                } else {
                    activity.clone()
                };
                let sends: GlobalSends =
                    get(global, GLOBAL_TREE, GLOBAL_SENDS_KEY)?.unwrap_or_default();
                let merchant_sends: GlobalSends =
                    get(global, GLOBAL_TREE, &merchant_sends_key)?.unwrap_or_default();
                let entry = |kind, outcome| {
                    AuditEntry::new(now, kind, session_id, outcome)
                        .with_flow(req.flow)
                        .with_purpose(req.subject.purpose())
                        .with_customer(req.customer)
                };
                let decide = if resend { decide_resend } else { decide_issue };
                let decided = decide(
                    req,
                    prev.as_ref(),
                    &activity,
                    &target,
                    &sends,
                    digest.clone(),
                    now,
                )
                .and_then(|grant| {
                    let merchant = decide_merchant_ceiling(req.policy, &merchant_sends, now)?;
                    Ok((grant, merchant))
                });
                match decided {
                    Ok((mut grant, merchant_sends)) => {
                        grant.record.set_issue_step(step);
                        put(codes, session_id, &grant.record);
                        put(customers, &requester_key, &grant.activity);
                        if let Some(target) = &grant.target_activity {
                            put(customers, &target_key, target);
                        }
                        put(global, GLOBAL_SENDS_KEY, &grant.global);
                        put(global, &merchant_sends_key, &merchant_sends);
                        let generation = grant.record.codes_sent();
                        match sealed.as_ref().filter(|_| !grant.withheld) {
                            Some(sealed) => {
                                let sealed = sealed.clone();
                                put(outgoing, session_id, &Outgoing { generation, sealed });
                            }
                            None => {
                                outgoing.remove(session_id.as_bytes());
                            }
                        }
                        let reason = match (grant.withheld, grant.replaced) {
                            (true, _) => "withheld: third-party limit or country",
                            (false, true) => "replaced previous code",
                            (false, false) => "new code",
                        };
                        append_in(
                            audit,
                            &self.db,
                            &entry(audit_kind, "issued").with_reason(reason),
                        )?;
                        let mut info = IssuedCode::of(&grant.record);
                        info.withheld = grant.withheld;
                        Ok(Decided::Granted(info))
                    }
                    Err(refusal) => {
                        let refused = if refusal.is_limit_breach() {
                            entry(AuditKind::LimitBreach, "refused")
                        } else {
                            entry(audit_kind, "refused")
                        };
                        append_in(audit, &self.db, &refused.with_reason(refusal.as_str()))?;
                        Ok(Decided::Refused(refusal))
                    }
                }
            },
        );
        Ok(decided?.outcome(&req, code))
    }

    /// Checks one attempt, typed in chat, sent to `/check` or sent by the customer in a
    /// reverse flow: counts it atomically, uses the code up when right, and drops the sealed
    /// copy once the code can no longer be used.
    pub fn verify(
        &self,
        subject: &OtpSubject,
        attempt: &OtpCode,
        now: DateTime<Utc>,
    ) -> Result<VerifyOutcome, LedgerError> {
        self.verify_step(subject, attempt, now, None)
    }

    /// [`verify`](Self::verify) on behalf of the flow step `step`: calling again with the same
    /// step returns the first call's verdict and changes nothing, so the runtime may replay a
    /// step after a crash without spending a second attempt.
    pub fn verify_step(
        &self,
        subject: &OtpSubject,
        attempt: &OtpCode,
        now: DateTime<Utc>,
        step: Option<&str>,
    ) -> Result<VerifyOutcome, LedgerError> {
        let session_id = subject.session_id();
        let trees = [&self.codes, &self.customers, &self.outgoing, &self.audit];
        let result: Result<_, LedgerError> =
            self.redo
                .transact(&self.turn, trees, |[codes, customers, outgoing, audit]| {
                    let record: Option<OtpRecord> = get(codes, CODES_TREE, session_id)?;
                    let replayed = step
                        .zip(record.as_ref())
                        .and_then(|(s, r)| r.replayed_check(s));
                    if let Some(outcome) = replayed {
                        return Ok(outcome);
                    }
                    // Guesses are charged to the chat that made them, never to a third party's
                    // number the code went to: nobody can lock someone else out by guessing
                    // badly.
                    let requester_key = record
                        .as_ref()
                        .map(|r| self.activity_key(r.merchant(), r.requester().as_str()));
                    let activity: CustomerActivity = match &requester_key {
                        Some(key) => get(customers, CUSTOMERS_TREE, key)?.unwrap_or_default(),
                        None => CustomerActivity::default(),
                    };
                    let decision = decide_verify(record.as_ref(), &activity, now, |stored| {
                        self.key.verify(subject, attempt, stored)
                    });
                    if let (Some(next), Some(key)) = (&decision.record, &requester_key) {
                        let mut next = next.clone();
                        if let Some(step) = step {
                            next.set_check_step(step, decision.outcome);
                        }
                        put(codes, session_id, &next);
                        if let Some(activity) = &decision.activity {
                            put(customers, key, activity);
                        }
                        if next.status() != CodeStatus::Active {
                            outgoing.remove(session_id.as_bytes());
                        }
                    }
                    let outcome = decision.outcome;
                    let kind = match outcome {
                        VerifyOutcome::CustomerBlocked { .. } => AuditKind::LimitBreach,
                        _ => AuditKind::Check,
                    };
                    let mut entry = AuditEntry::new(now, kind, session_id, outcome.as_str())
                        .with_record(record.as_ref())
                        .with_purpose(subject.purpose());
                    if let VerifyOutcome::Wrong { attempts_left } = outcome {
                        entry = entry.with_reason(format!("{attempts_left} attempts left"));
                    }
                    append_in(audit, &self.db, &entry)?;
                    Ok(outcome)
                });
        let outcome = result?;
        tracing::info!(target: issued::OTP_LOG, session_id, outcome = outcome.as_str(), "otp checked");
        Ok(outcome)
    }

    /// Withdraws the session's code (session ended, cancelled, expired) and drops its sealed
    /// copy, so it is never verified or sent afterwards. Idempotent.
    pub fn consume(
        &self,
        session_id: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), LedgerError> {
        let trees = [&self.codes, &self.outgoing, &self.audit];
        self.redo
            .transact(&self.turn, trees, |[codes, outgoing, audit]| {
                outgoing.remove(session_id.as_bytes());
                let record: Option<OtpRecord> = get(codes, CODES_TREE, session_id)?;
                if let Some(record) = record.filter(|r| r.status() == CodeStatus::Active) {
                    put(codes, session_id, &record.retired());
                    let entry = AuditEntry::new(now, AuditKind::Retire, session_id, "retired")
                        .with_record(Some(&record));
                    append_in(audit, &self.db, &entry.with_reason(reason))?;
                }
                Ok(())
            })
    }

    /// The session's current code and its generation, for the outbox to send; `None` once it
    /// was sent, used or withdrawn.
    pub fn code_for_sending(
        &self,
        session_id: &str,
    ) -> Result<Option<(OtpCode, u32)>, LedgerError> {
        let Some(outgoing) = read::<Outgoing>(&self.outgoing, OUTGOING_TREE, session_id)? else {
            return Ok(None);
        };
        let code = self.sealer.open(session_id, &outgoing.sealed)?;
        Ok(Some((code, outgoing.generation)))
    }

    /// Records that WhatsApp accepted the message carrying code `generation` and deletes that
    /// code's sealed copy; a newer code's copy (after a resend) is left alone.
    pub fn confirm_sent(
        &self,
        session_id: &str,
        generation: u32,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let trees = [&self.codes, &self.outgoing, &self.audit];
        self.redo
            .transact(&self.turn, trees, |[codes, outgoing, audit]| {
                let current: Option<Outgoing> = get(outgoing, OUTGOING_TREE, session_id)?;
                if current.is_some_and(|o| o.generation == generation) {
                    outgoing.remove(session_id.as_bytes());
                }
                let record: Option<OtpRecord> = get(codes, CODES_TREE, session_id)?;
                let entry = AuditEntry::code_sent(record.as_ref(), now, session_id, generation);
                append_in(audit, &self.db, &entry)?;
                Ok(())
            })
    }

    /// The session's stored record (its digest, never the code), e.g. for attempts left.
    pub fn record(&self, session_id: &str) -> Result<Option<OtpRecord>, LedgerError> {
        read(&self.codes, CODES_TREE, session_id)
    }

    /// A customer's sends and wrong attempts of the last 24 hours at the default merchant
    /// (admin and tests).
    pub fn customer_activity(
        &self,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError> {
        self.merchant_customer_activity("", customer)
    }

    /// A customer's sends and wrong attempts of the last 24 hours at `merchant`.
    pub fn merchant_customer_activity(
        &self,
        merchant: &str,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError> {
        let key = self.activity_key(merchant, customer.as_str());
        Ok(read(&self.customers, CUSTOMERS_TREE, &key)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod durability_tests;
#[cfg(test)]
mod leak_tests;
#[cfg(test)]
mod merchant_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
