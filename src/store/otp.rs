//! The OTP ledger: SPEC §9 state in sled, changed only by single atomic transactions.
//!
//! This is the only OTP code that knows sled. It keeps, in trees prefixed `otp_`, each
//! session's current [`OtpRecord`] (the keyed digest, never the code), each customer's recent
//! sends and wrong attempts, the service-wide hourly send count and the sealed copy of a code
//! awaiting delivery. Every state-changing call reads what it needs, asks the pure rules in
//! `crate::otp::rules`, and writes the result plus its audit entry in one sled transaction,
//! so two concurrent guesses can never both take the last attempt and a crash leaves either
//! all of a change or none of it.
//!
//! Durability: calls do not flush. The caller group-commits with `Db::flush_async().await`
//! before acknowledging anything that depends on the change (a webhook `200`, an API answer),
//! which covers every write since the previous flush.

use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::audit::{append_in, AuditEntry, AuditKind};
use crate::otp::code::{generate, InvalidCodeLength};
use crate::otp::limits::{CustomerActivity, GlobalSends};
use crate::otp::rules::{
    decide_issue, decide_resend, decide_verify, CodeStatus, IssueRefusal, IssueRequest,
    VerifyOutcome,
};
use crate::otp::seal::SealError;
use crate::otp::{CodeSealer, CustomerNumber, OtpCode, OtpKey, OtpRecord, OtpSubject, SealedCode};

const CODES_TREE: &str = "otp_codes";
const CUSTOMERS_TREE: &str = "otp_customers";
const GLOBAL_TREE: &str = "otp_global";
const OUTGOING_TREE: &str = "otp_outgoing";
const GLOBAL_SENDS_KEY: &[u8] = b"sends";

/// A failure of the ledger itself (not a refusal by the rules).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("OTP storage failed: {0}")]
    Sled(#[from] sled::Error),
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

/// A code that was issued: the only time its digits are handed out (besides
/// [`OtpLedger::code_for_sending`]).
#[derive(Debug)]
pub struct Issued {
    /// The code, for reverse-OTP answers and the sandbox's `/otp`; never store or log it.
    pub code: OtpCode,
    /// Which code of the session this is (1 for the first, 2 after one resend…).
    pub generation: u32,
    pub expires_at: DateTime<Utc>,
    pub next_resend_at: DateTime<Utc>,
    pub attempts_left: u8,
}

/// The sealed copy of the session's current code, kept until WhatsApp accepts its message.
#[derive(Serialize, Deserialize)]
struct Outgoing {
    generation: u32,
    sealed: SealedCode,
}

/// The OTP state of every session and customer.
pub struct OtpLedger {
    codes: sled::Tree,
    customers: sled::Tree,
    global: sled::Tree,
    outgoing: sled::Tree,
    audit: sled::Tree,
    key: OtpKey,
    sealer: CodeSealer,
}

impl std::fmt::Debug for OtpLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpLedger").finish_non_exhaustive()
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<LedgerError>>;

impl OtpLedger {
    pub fn open(db: &sled::Db, key: OtpKey) -> Result<Self, LedgerError> {
        Ok(Self {
            codes: db.open_tree(CODES_TREE)?,
            customers: db.open_tree(CUSTOMERS_TREE)?,
            global: db.open_tree(GLOBAL_TREE)?,
            outgoing: db.open_tree(OUTGOING_TREE)?,
            audit: db.open_tree(super::audit::AUDIT_TREE)?,
            sealer: CodeSealer::new(&key),
            key,
        })
    }

    /// Issues the session's first code (a session whose code is unused gets resend rules).
    /// `Ok(Err(_))` is a refusal by the rules, already audited.
    pub fn issue(
        &self,
        req: IssueRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Result<Issued, IssueRefusal>, LedgerError> {
        self.issue_with(req, false, now, &mut OsRng)
    }

    /// Replaces the session's code with a new one, keeping its attempt count.
    pub fn resend(
        &self,
        req: IssueRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Result<Issued, IssueRefusal>, LedgerError> {
        self.issue_with(req, true, now, &mut OsRng)
    }

    /// [`issue`](Self::issue) or [`resend`](Self::resend) with a chosen random source (tests).
    pub fn issue_with<R: RngCore + CryptoRng + ?Sized>(
        &self,
        req: IssueRequest<'_>,
        resend: bool,
        now: DateTime<Utc>,
        rng: &mut R,
    ) -> Result<Result<Issued, IssueRefusal>, LedgerError> {
        let session_id = req.subject.session_id();
        let code = generate(req.policy.code_length, rng)?;
        let digest = self.key.digest(req.subject, &code);
        let sealed = self.sealer.seal(session_id, &code, rng);
        let kind = if resend {
            AuditKind::Resend
        } else {
            AuditKind::Issue
        };
        let trees = (
            &self.codes,
            &self.customers,
            &self.global,
            &self.outgoing,
            &self.audit,
        );
        let result = trees.transaction(|(codes, customers, global, outgoing, audit)| {
            let prev: Option<OtpRecord> = get(codes, CODES_TREE, session_id)?;
            let activity: CustomerActivity =
                get(customers, CUSTOMERS_TREE, req.customer.digits())?.unwrap_or_default();
            let sends: GlobalSends =
                get(global, GLOBAL_TREE, GLOBAL_SENDS_KEY)?.unwrap_or_default();
            let decide = if resend { decide_resend } else { decide_issue };
            let entry = |outcome| {
                AuditEntry::new(
                    now,
                    kind,
                    session_id,
                    req.flow,
                    req.subject.purpose(),
                    Some(req.customer),
                    outcome,
                )
            };
            match decide(req, prev.as_ref(), &activity, &sends, digest.clone(), now) {
                Ok(grant) => {
                    put(codes, session_id, &grant.record)?;
                    put(customers, req.customer.digits(), &grant.activity)?;
                    put(global, GLOBAL_SENDS_KEY, &grant.global)?;
                    let generation = grant.record.codes_sent();
                    put(
                        outgoing,
                        session_id,
                        &Outgoing {
                            generation,
                            sealed: sealed.clone(),
                        },
                    )?;
                    let reason = if grant.replaced {
                        "replaced previous code"
                    } else {
                        "new code"
                    };
                    append_in(audit, &entry("issued").with_reason(reason))?;
                    Ok(Ok(grant.record))
                }
                Err(refusal) => {
                    let mut refused = entry("refused").with_reason(refusal.as_str());
                    if refusal.is_limit_breach() {
                        refused = AuditEntry::new(
                            now,
                            AuditKind::LimitBreach,
                            session_id,
                            req.flow,
                            req.subject.purpose(),
                            Some(req.customer),
                            "refused",
                        )
                        .with_reason(format!(
                            "{}: {}",
                            kind_label(kind),
                            refusal.as_str()
                        ));
                    }
                    append_in(audit, &refused)?;
                    Ok(Err(refusal))
                }
            }
        });
        let outcome = unwrap_tx(result)?;
        match &outcome {
            Ok(record) => {
                tracing::info!(session_id, flow = req.flow, customer = %req.customer.masked(), generation = record.codes_sent(), "otp issued")
            }
            Err(refusal) => {
                tracing::info!(session_id, flow = req.flow, customer = %req.customer.masked(), reason = refusal.as_str(), "otp issue refused")
            }
        }
        Ok(outcome.map(|record| Issued {
            code,
            generation: record.codes_sent(),
            expires_at: record.expires_at(),
            next_resend_at: record.next_resend_at(),
            attempts_left: record.attempts_left(),
        }))
    }

    /// Checks one attempt (typed in chat or sent to `/check`): counts it atomically, uses the
    /// code up when right, and drops the sealed copy once the code can no longer be used.
    pub fn verify(
        &self,
        subject: &OtpSubject,
        attempt: &OtpCode,
        now: DateTime<Utc>,
    ) -> Result<VerifyOutcome, LedgerError> {
        let session_id = subject.session_id();
        let trees = (&self.codes, &self.customers, &self.outgoing, &self.audit);
        let result = trees.transaction(|(codes, customers, outgoing, audit)| {
            let record: Option<OtpRecord> = get(codes, CODES_TREE, session_id)?;
            let activity: CustomerActivity = match &record {
                Some(r) => {
                    get(customers, CUSTOMERS_TREE, r.customer().digits())?.unwrap_or_default()
                }
                None => CustomerActivity::default(),
            };
            let decision = decide_verify(record.as_ref(), &activity, now, |stored| {
                self.key.verify(subject, attempt, stored)
            });
            if let (Some(next), Some(r)) = (&decision.record, &record) {
                put(codes, session_id, next)?;
                if let Some(activity) = &decision.activity {
                    put(customers, r.customer().digits(), activity)?;
                }
                if next.status() != CodeStatus::Active {
                    outgoing.remove(session_id.as_bytes())?;
                }
            }
            let outcome = decision.outcome;
            let kind = match outcome {
                VerifyOutcome::CustomerBlocked { .. } => AuditKind::LimitBreach,
                _ => AuditKind::Check,
            };
            let flow = record.as_ref().map_or("", |r| r.flow());
            let entry = AuditEntry::new(
                now,
                kind,
                session_id,
                flow,
                subject.purpose(),
                record.as_ref().map(|r| r.customer()),
                outcome.as_str(),
            );
            let entry = match outcome {
                VerifyOutcome::Wrong { attempts_left } => {
                    entry.with_reason(format!("{attempts_left} attempts left"))
                }
                _ => entry,
            };
            append_in(audit, &entry)?;
            Ok(outcome)
        });
        let outcome = unwrap_tx(result)?;
        tracing::info!(session_id, outcome = outcome.as_str(), "otp checked");
        Ok(outcome)
    }

    /// Withdraws the session's code (session ended, cancelled, expired) and drops its sealed
    /// copy, so it never verifies or gets sent afterwards. Idempotent.
    pub fn consume(
        &self,
        session_id: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), LedgerError> {
        let trees = (&self.codes, &self.outgoing, &self.audit);
        let result = trees.transaction(|(codes, outgoing, audit)| {
            outgoing.remove(session_id.as_bytes())?;
            let Some(record) = get::<OtpRecord>(codes, CODES_TREE, session_id)? else {
                return Ok(());
            };
            if record.status() == CodeStatus::Active {
                put(codes, session_id, &record.retired())?;
                let entry = AuditEntry::new(
                    now,
                    AuditKind::Retire,
                    session_id,
                    record.flow(),
                    record.purpose(),
                    Some(record.customer()),
                    "retired",
                )
                .with_reason(reason);
                append_in(audit, &entry)?;
            }
            Ok(())
        });
        unwrap_tx(result)
    }

    /// The session's current code and its generation, for the outbox to send; `None` once it
    /// has been sent, used or withdrawn.
    pub fn code_for_sending(
        &self,
        session_id: &str,
    ) -> Result<Option<(OtpCode, u32)>, LedgerError> {
        let Some(bytes) = self.outgoing.get(session_id.as_bytes())? else {
            return Ok(None);
        };
        let outgoing: Outgoing = decode(OUTGOING_TREE, &bytes)?;
        let code = self.sealer.open(session_id, &outgoing.sealed)?;
        Ok(Some((code, outgoing.generation)))
    }

    /// Records that WhatsApp accepted the message with code `generation` and deletes its
    /// sealed copy. A newer code's copy (after a resend) is left alone.
    pub fn confirm_sent(
        &self,
        session_id: &str,
        generation: u32,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let trees = (&self.codes, &self.outgoing, &self.audit);
        let result = trees.transaction(|(codes, outgoing, audit)| {
            let current: Option<Outgoing> = get(outgoing, OUTGOING_TREE, session_id)?;
            if current.is_some_and(|o| o.generation == generation) {
                outgoing.remove(session_id.as_bytes())?;
            }
            let record: Option<OtpRecord> = get(codes, CODES_TREE, session_id)?;
            let (flow, purpose) = record
                .as_ref()
                .map_or(("", ""), |r| (r.flow(), r.purpose()));
            let entry = AuditEntry::new(
                now,
                AuditKind::Send,
                session_id,
                flow,
                purpose,
                record.as_ref().map(|r| r.customer()),
                "accepted",
            )
            .with_reason(format!("code {generation}"));
            append_in(audit, &entry)?;
            Ok(())
        });
        unwrap_tx(result)
    }

    /// The session's stored record (digest included, but no code), e.g. for attempts left.
    pub fn record(&self, session_id: &str) -> Result<Option<OtpRecord>, LedgerError> {
        self.codes
            .get(session_id.as_bytes())?
            .map(|bytes| decode(CODES_TREE, &bytes))
            .transpose()
    }

    /// A customer's recent sends and wrong attempts (admin and tests).
    pub fn customer_activity(
        &self,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError> {
        Ok(self
            .customers
            .get(customer.digits().as_bytes())?
            .map(|bytes| decode(CUSTOMERS_TREE, &bytes))
            .transpose()?
            .unwrap_or_default())
    }
}

fn kind_label(kind: AuditKind) -> &'static str {
    match kind {
        AuditKind::Resend => "resend",
        _ => "issue",
    }
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, LedgerError> {
    serde_json::from_slice(bytes).map_err(|source| LedgerError::Corrupt { tree, source })
}

fn get<T: DeserializeOwned>(
    tree: &TransactionalTree,
    name: &'static str,
    key: impl AsRef<[u8]>,
) -> TxResult<Option<T>> {
    match tree.get(key.as_ref())? {
        Some(bytes) => decode(name, &bytes)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

fn put<T: Serialize>(tree: &TransactionalTree, key: impl AsRef<[u8]>, value: &T) -> TxResult<()> {
    let bytes = serde_json::to_vec(value).expect("OTP records are plain data and always serialize");
    tree.insert(key.as_ref(), bytes)?;
    Ok(())
}

fn unwrap_tx<T>(result: Result<T, TransactionError<LedgerError>>) -> Result<T, LedgerError> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => LedgerError::Sled(e),
    })
}

#[cfg(test)]
#[path = "otp_tests.rs"]
mod tests;
