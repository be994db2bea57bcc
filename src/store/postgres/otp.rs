//! The OTP ledger in PostgreSQL: the same state and rules as the embedded ledger, shared by
//! every instance on one database.
//!
//! Tables (migration `0002_otp.sql`): `otp_codes` (each session's current [`OtpRecord`]: the
//! keyed digest, never the code), `otp_customers` (a number's recent sends and wrong attempts per
//! merchant), `otp_hourly_sends` (the service's and each merchant's send count of the current
//! hour), `otp_outgoing` (the sealed copy of a code awaiting delivery) and `otp_audit`.
//!
//! Every state-changing call is one transaction: it locks what it reads (the session's record —
//! with an advisory lock while it may not exist yet —, the customers' rows, the hourly counters),
//! asks the pure rules in `crate::otp::rules`, and writes their answer plus its audit row before
//! committing. The hourly counters are incremented first (an upsert `… SET n = n + 1 RETURNING
//! n`) and the rules then see the count before this send; a refusal rolls the increments back to
//! a savepoint and commits only its audit row. So two instances can never both take the last
//! send of an hour or the last attempt of a code, and a crash leaves all of a change or none of
//! it. Locks are always taken in one order (session, customers sorted by number, service
//! counter, merchant counter, sealed copy); a transaction that still loses a deadlock or a
//! serialization race is retried from the start.
//!
//! A committed call is durable: there is nothing to flush. The code's digits never reach the
//! database: they are hashed and sealed with `crate::otp` before any query runs. Without a
//! configured key, the instances share one stored in the database ([`shared_key`]).

use std::future::Future;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use futures_util::future::try_join5;
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use secrecy::SecretString;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;

use super::audit::append_in;
use crate::otp::code::generate;
use crate::otp::limits::{delta, CustomerActivity, GlobalSends};
use crate::otp::rules::{
    decide_issue, decide_merchant_ceiling, decide_resend, decide_verify, CodeStatus, IssueRequest,
    VerifyOutcome,
};
use crate::otp::{
    CodeSealer, CustomerNumber, OtpCode, OtpDigest, OtpKey, OtpRecord, OtpSubject, SealedCode,
};
use crate::store::embedded::otp::Decided;
use crate::store::{
    AuditEntry, AuditKind, IssueKind, IssueOutcome, IssuedCode, LedgerError, OtpStore,
};

/// The counter of the whole deployment in `otp_hourly_sends`.
const SERVICE_SCOPE: &str = "service";

/// The sealed copy of the session's current code, kept until WhatsApp accepts its message.
#[derive(Serialize, Deserialize)]
struct Outgoing {
    generation: u32,
    sealed: SealedCode,
}

/// A failure inside a transaction: a database error may be a lost race worth a retry.
enum TxError {
    Db(tokio_postgres::Error),
    Ledger(LedgerError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl From<LedgerError> for TxError {
    fn from(e: LedgerError) -> Self {
        Self::Ledger(e)
    }
}

impl From<deadpool_postgres::PoolError> for TxError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Ledger(storage(e))
    }
}

/// A database failure as the ledger reports it (the message names no code or key).
fn storage(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Database(e.to_string())
}

/// How many times a transaction that lost a deadlock or serialization race is tried again.
const RETRIES: usize = 8;

/// Runs `attempt` until it succeeds, fails for good, or loses [`RETRIES`] races in a row.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, LedgerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(TxError::Db(e)) if tries < RETRIES && is_lost_race(&e) => {
                tries += 1;
                tracing::debug!(error = %e, "otp transaction lost a race; retrying");
            }
            Err(TxError::Db(e)) => return Err(storage(e)),
            Err(TxError::Ledger(e)) => return Err(e),
        }
    }
}

fn is_lost_race(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

fn decode<T: DeserializeOwned>(
    table: &'static str,
    value: serde_json::Value,
) -> Result<T, LedgerError> {
    serde_json::from_value(value).map_err(|source| LedgerError::Corrupt {
        tree: table,
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("ledger values are plain data and serialize")
}

/// The OTP key every instance on the database shares: the configured one when given (never
/// stored), otherwise the one kept in `otp_key`, created by the first instance to start.
///
/// Keeping the key in the database puts it next to the digests it protects (as the embedded
/// engine's key file sits next to sled): configure `WAOTP_OTP_KEY` in production so that a
/// copy of the database alone cannot be used to guess codes offline. Every instance must then
/// be given the same value.
pub async fn shared_key(
    pool: &Pool,
    configured: Option<&SecretString>,
) -> Result<OtpKey, LedgerError> {
    if let Some(value) = configured {
        return OtpKey::from_configured(value).map_err(storage);
    }
    let client = pool.get().await.map_err(storage)?;
    let fresh = OtpKey::generate(&mut OsRng);
    client
        .execute(
            "INSERT INTO otp_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            &[&fresh.bytes()],
        )
        .await
        .map_err(storage)?;
    let row = client
        .query_one("SELECT key FROM otp_key WHERE id = 1", &[])
        .await
        .map_err(storage)?;
    let bytes: Vec<u8> = row.get(0);
    OtpKey::from_bytes(bytes).map_err(storage)
}

/// The OTP state of every session and customer, in PostgreSQL.
pub struct PgOtpLedger {
    pool: Pool,
    key: OtpKey,
    sealer: CodeSealer,
    /// The merchant of requests and records that name none (callers of the single-merchant
    /// setup). Configuration, not state: every instance is started with the same.
    default_merchant: RwLock<String>,
}

impl std::fmt::Debug for PgOtpLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOtpLedger").finish_non_exhaustive()
    }
}

impl PgOtpLedger {
    /// The ledger on `pool`, whose database has the `0002_otp` migration applied.
    pub fn new(pool: Pool, key: OtpKey) -> Self {
        Self {
            pool,
            sealer: CodeSealer::new(&key),
            key,
            default_merchant: RwLock::new(crate::tenants::DEFAULT_MERCHANT.to_owned()),
        }
    }

    /// Names the merchant of requests and records that name none. A PostgreSQL database never
    /// held records without a merchant, so nothing moves: returns 0.
    pub fn adopt_default_merchant(&self, merchant: &str) -> Result<usize, LedgerError> {
        *self
            .default_merchant
            .write()
            .unwrap_or_else(|p| p.into_inner()) = merchant.to_owned();
        Ok(0)
    }

    /// `merchant`, or the default merchant for an empty name.
    fn merchant_of(&self, merchant: &str) -> String {
        if merchant.is_empty() {
            self.default_merchant
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        } else {
            merchant.to_owned()
        }
    }

    /// Issues a code of `kind` with digits from the OS CSPRNG; see
    /// [`issue_with`](Self::issue_with).
    pub async fn issue(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<IssueOutcome, LedgerError> {
        let prepared = self.prepare(req, kind, &mut OsRng)?;
        self.issue_prepared(req, kind, step, now, prepared).await
    }

    /// Issues a code of `kind` with a chosen random source. `step` names the flow step asking:
    /// calling again with the same step returns [`IssueOutcome::AlreadyIssued`] instead of a
    /// second code. `Err(_)` is a storage failure.
    pub async fn issue_with<R: RngCore + CryptoRng + ?Sized>(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        step: &str,
        now: DateTime<Utc>,
        rng: &mut R,
    ) -> Result<IssueOutcome, LedgerError> {
        let prepared = self.prepare(req, kind, rng)?;
        self.issue_prepared(req, kind, step, now, prepared).await
    }

    /// The code, its digest and its sealed copy, made before any query (the random source is
    /// not held across an `.await`).
    fn prepare<R: RngCore + CryptoRng + ?Sized>(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        rng: &mut R,
    ) -> Result<(OtpCode, OtpDigest, Option<SealedCode>), LedgerError> {
        let code = generate(req.policy.code_length, rng)?;
        let digest = self.key.digest(req.subject, &code);
        let session_id = req.subject.session_id();
        let sealed = (kind != IssueKind::Reverse).then(|| self.sealer.seal(session_id, &code, rng));
        Ok((code, digest, sealed))
    }

    async fn issue_prepared(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        step: &str,
        now: DateTime<Utc>,
        (code, digest, sealed): (OtpCode, OtpDigest, Option<SealedCode>),
    ) -> Result<IssueOutcome, LedgerError> {
        let decided =
            retrying(|| self.try_issue(req, kind, step, now, &digest, sealed.as_ref())).await?;
        Ok(decided.outcome(&req, code))
    }

    async fn try_issue(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        step: &str,
        now: DateTime<Utc>,
        digest: &OtpDigest,
        sealed: Option<&SealedCode>,
    ) -> Result<Decided, TxError> {
        let session_id = req.subject.session_id();
        let resend = kind == IssueKind::Resend;
        let audit_kind = if resend {
            AuditKind::Resend
        } else {
            AuditKind::Issue
        };
        let mut client = self.pool.get().await?;
        let mut tx = client.transaction().await?;
        // The session may have no row to lock yet: two first issues must still take turns. The
        // one-bigint form of the advisory lock never shares a key with the engine's two-int
        // locks (classes of customers, starts, sessions), which PostgreSQL keeps apart.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("waotp.otp.session:{session_id}")],
        )
        .await?;
        let prev = read_record(&tx, session_id, true).await?;
        if let Some(p) = prev.as_ref().filter(|p| p.issue_step() == Some(step)) {
            return Ok(Decided::Replayed(issued_code(p)));
        }
        let merchant = self.merchant_of(req.merchant);
        let third_party = req.is_third_party();
        let mut numbers = vec![req.requester.as_str()];
        if third_party {
            numbers.push(req.customer.as_str());
        }
        let activities = lock_customers(&tx, &merchant, &numbers).await?;
        let activity = activities[0].clone();
        let target = if third_party {
            activities[1].clone()
        } else {
            activity.clone()
        };
        let entry = |kind, outcome| {
            AuditEntry::new(now, kind, session_id, outcome)
                .with_flow(req.flow)
                .with_purpose(req.subject.purpose())
                .with_customer(req.customer)
        };

        // Increment first, then let the rules compare the count before this send: the counter
        // rows stay locked until commit, and a refusal takes the increments back.
        let counting = tx.savepoint("counting").await?;
        let service = count_send(&counting, SERVICE_SCOPE, now).await?;
        let merchant_scope = format!("merchant:{merchant}");
        let merchant_sends = count_send(&counting, &merchant_scope, now).await?;
        let decide = if resend { decide_resend } else { decide_issue };
        let decided = decide(
            req,
            prev.as_ref(),
            &activity,
            &target,
            &service,
            digest.clone(),
            now,
        )
        .and_then(|grant| {
            decide_merchant_ceiling(req.policy, &merchant_sends, now)?;
            Ok(grant)
        });
        let mut grant = match decided {
            Ok(grant) => grant,
            Err(refusal) => {
                counting.rollback().await?;
                let refused = if refusal.is_limit_breach() {
                    entry(AuditKind::LimitBreach, "refused")
                } else {
                    entry(audit_kind, "refused")
                };
                append_in(&tx, &refused.with_reason(refusal.as_str())).await?;
                tx.commit().await?;
                return Ok(Decided::Refused(refusal));
            }
        };
        counting.commit().await?;
        grant.record.set_issue_step(step);
        let generation = grant.record.codes_sent();
        let reason = match (grant.withheld, grant.replaced) {
            (true, _) => "withheld: third-party limit or country",
            (false, true) => "replaced previous code",
            (false, false) => "new code",
        };
        let issued = entry(audit_kind, "issued").with_reason(reason);
        let outgoing = sealed.filter(|_| !grant.withheld).map(|sealed| Outgoing {
            generation,
            sealed: sealed.clone(),
        });
        // The writes go out together (tokio-postgres pipelines statements polled at once), so
        // the hourly counters stay locked for one round trip, not five.
        let target = async {
            match &grant.target_activity {
                Some(target) => write_activity(&tx, &merchant, req.customer.as_str(), target).await,
                None => Ok(()),
            }
        };
        let sealed_copy = async {
            match &outgoing {
                Some(outgoing) => {
                    tx.execute(
                        "INSERT INTO otp_outgoing (session_id, generation, sealed)
                         VALUES ($1, $2, $3)
                         ON CONFLICT (session_id) DO UPDATE
                         SET generation = EXCLUDED.generation, sealed = EXCLUDED.sealed",
                        &[&session_id, &i64::from(generation), &encode(outgoing)],
                    )
                    .await?;
                    Ok(())
                }
                None => delete_outgoing(&tx, session_id).await,
            }
        };
        let audited = async {
            append_in(&tx, &issued).await?;
            Ok::<(), TxError>(())
        };
        try_join5(
            write_record(&tx, &grant.record),
            write_activity(&tx, &merchant, req.requester.as_str(), &grant.activity),
            target,
            sealed_copy,
            audited,
        )
        .await?;
        tx.commit().await?;
        let mut info = issued_code(&grant.record);
        info.withheld = grant.withheld;
        Ok(Decided::Granted(info))
    }

    /// Checks one attempt: counts it atomically, uses the code up when right, and drops the
    /// sealed copy once the code can no longer be used.
    pub async fn verify(
        &self,
        subject: &OtpSubject,
        attempt: &OtpCode,
        now: DateTime<Utc>,
    ) -> Result<VerifyOutcome, LedgerError> {
        self.verify_step(subject, attempt, now, None).await
    }

    /// [`verify`](Self::verify) on behalf of the flow step `step`: calling again with the same
    /// step returns the first call's verdict and changes nothing.
    pub async fn verify_step(
        &self,
        subject: &OtpSubject,
        attempt: &OtpCode,
        now: DateTime<Utc>,
        step: Option<&str>,
    ) -> Result<VerifyOutcome, LedgerError> {
        let outcome = retrying(|| self.try_verify(subject, attempt, now, step)).await?;
        tracing::info!(
            target: crate::store::embedded::otp::OTP_LOG,
            session_id = subject.session_id(),
            outcome = outcome.as_str(),
            "otp checked"
        );
        Ok(outcome)
    }

    async fn try_verify(
        &self,
        subject: &OtpSubject,
        attempt: &OtpCode,
        now: DateTime<Utc>,
        step: Option<&str>,
    ) -> Result<VerifyOutcome, TxError> {
        let session_id = subject.session_id();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let record = read_record(&tx, session_id, true).await?;
        let replayed = step
            .zip(record.as_ref())
            .and_then(|(s, r)| r.replayed_check(s));
        if let Some(outcome) = replayed {
            return Ok(outcome);
        }
        // Guesses are charged to the chat that made them, never to a third party's number the
        // code went to.
        let requester = record
            .as_ref()
            .map(|r| (self.merchant_of(r.merchant()), r.requester().as_str()));
        let activity = match &requester {
            Some((merchant, number)) => lock_customers(&tx, merchant, &[number])
                .await?
                .swap_remove(0),
            None => CustomerActivity::default(),
        };
        let decision = decide_verify(record.as_ref(), &activity, now, |stored| {
            self.key.verify(subject, attempt, stored)
        });
        if let (Some(next), Some((merchant, number))) = (&decision.record, &requester) {
            let mut next = next.clone();
            if let Some(step) = step {
                next.set_check_step(step, decision.outcome);
            }
            write_record(&tx, &next).await?;
            if let Some(activity) = &decision.activity {
                write_activity(&tx, merchant, number, activity).await?;
            }
            if next.status() != CodeStatus::Active {
                delete_outgoing(&tx, session_id).await?;
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
        append_in(&tx, &entry).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Withdraws the session's code (session ended, cancelled, expired) and drops its sealed
    /// copy, so it is never verified or sent afterwards. Idempotent.
    pub async fn consume(
        &self,
        session_id: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), LedgerError> {
        retrying(|| async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            // The record first, then its sealed copy: the order every other call locks them in.
            let record = read_record(&tx, session_id, true).await?;
            delete_outgoing(&tx, session_id).await?;
            if let Some(record) = record.filter(|r| r.status() == CodeStatus::Active) {
                write_record(&tx, &record.retired()).await?;
                let entry = AuditEntry::new(now, AuditKind::Retire, session_id, "retired")
                    .with_record(Some(&record));
                append_in(&tx, &entry.with_reason(reason)).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The session's current code and its generation, for the outbox to send; `None` once it
    /// was sent, used or withdrawn.
    pub async fn code_for_sending(
        &self,
        session_id: &str,
    ) -> Result<Option<(OtpCode, u32)>, LedgerError> {
        let client = self.pool.get().await.map_err(storage)?;
        let row = client
            .query_opt(
                "SELECT generation, sealed FROM otp_outgoing WHERE session_id = $1",
                &[&session_id],
            )
            .await
            .map_err(storage)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let outgoing: Outgoing = decode("otp_outgoing", row.get(1))?;
        let code = self.sealer.open(session_id, &outgoing.sealed)?;
        Ok(Some((code, outgoing.generation)))
    }

    /// Records that WhatsApp accepted the message carrying code `generation` and deletes that
    /// code's sealed copy; a newer code's copy (after a resend) is left alone.
    pub async fn confirm_sent(
        &self,
        session_id: &str,
        generation: u32,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        retrying(|| async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "DELETE FROM otp_outgoing WHERE session_id = $1 AND generation = $2",
                &[&session_id, &i64::from(generation)],
            )
            .await?;
            let record = read_record(&tx, session_id, false).await?;
            let entry = AuditEntry::code_sent(record.as_ref(), now, session_id, generation);
            append_in(&tx, &entry).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The session's stored record (its digest, never the code), e.g. for attempts left.
    pub async fn record(&self, session_id: &str) -> Result<Option<OtpRecord>, LedgerError> {
        let client = self.pool.get().await.map_err(storage)?;
        let row = client
            .query_opt(
                "SELECT record FROM otp_codes WHERE session_id = $1",
                &[&session_id],
            )
            .await
            .map_err(storage)?;
        row.map(|r| decode("otp_codes", r.get(0))).transpose()
    }

    /// A customer's sends and wrong attempts of the last 24 hours at the default merchant.
    pub async fn customer_activity(
        &self,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError> {
        self.merchant_customer_activity("", customer).await
    }

    /// A customer's sends and wrong attempts of the last 24 hours at `merchant`.
    pub async fn merchant_customer_activity(
        &self,
        merchant: &str,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError> {
        let client = self.pool.get().await.map_err(storage)?;
        let row = client
            .query_opt(
                "SELECT activity FROM otp_customers WHERE merchant = $1 AND number = $2",
                &[&self.merchant_of(merchant), &customer.as_str()],
            )
            .await
            .map_err(storage)?;
        Ok(row
            .map(|r| decode("otp_customers", r.get(0)))
            .transpose()?
            .unwrap_or_default())
    }

    /// Deletes what no rule needs any more: session records whose code expired more than
    /// `retention` ago (with any sealed copy), and customers with no send or wrong attempt in
    /// the last 24 hours (by the `idle_at` each write of their record keeps). Returns how many
    /// entries went.
    pub async fn sweep(
        &self,
        now: DateTime<Utc>,
        retention: std::time::Duration,
    ) -> Result<usize, LedgerError> {
        let cutoff = now - delta(retention);
        let client = self.pool.get().await.map_err(storage)?;
        let codes: i64 = client
            .query_one(
                "WITH gone AS (DELETE FROM otp_codes WHERE expires_at < $1 RETURNING session_id),
                      sealed AS (DELETE FROM otp_outgoing o USING gone
                                 WHERE o.session_id = gone.session_id)
                 SELECT count(*) FROM gone",
                &[&cutoff],
            )
            .await
            .map_err(storage)?
            .get(0);
        // A row being changed is deleted only if it is still idle once the change commits
        // (PostgreSQL evaluates the condition again on the row's new version).
        let customers = client
            .execute(
                "DELETE FROM otp_customers WHERE idle_at IS NULL OR idle_at <= $1",
                &[&now],
            )
            .await
            .map_err(storage)?;
        let removed = usize::try_from(codes).unwrap_or(0) + customers as usize;
        Ok(removed)
    }
}

/// Facts about a record's current code, without its digits.
fn issued_code(record: &OtpRecord) -> IssuedCode {
    IssuedCode {
        generation: record.codes_sent(),
        expires_at: record.expires_at(),
        next_resend_at: record.next_resend_at(),
        attempts_left: record.attempts_left(),
        withheld: false,
    }
}

/// The session's record, locked until the transaction ends when `lock`.
async fn read_record(
    tx: &Transaction<'_>,
    session_id: &str,
    lock: bool,
) -> Result<Option<OtpRecord>, TxError> {
    let sql = if lock {
        "SELECT record FROM otp_codes WHERE session_id = $1 FOR UPDATE"
    } else {
        "SELECT record FROM otp_codes WHERE session_id = $1"
    };
    let row = tx.query_opt(sql, &[&session_id]).await?;
    Ok(row.map(|r| decode("otp_codes", r.get(0))).transpose()?)
}

async fn write_record(tx: &Transaction<'_>, record: &OtpRecord) -> Result<(), TxError> {
    tx.execute(
        "INSERT INTO otp_codes (session_id, record, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (session_id) DO UPDATE
         SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at",
        &[&record.session_id(), &Json(record), &record.expires_at()],
    )
    .await?;
    Ok(())
}

/// The activity of each of `numbers` at `merchant`, in that order, each row locked until the
/// transaction ends (created empty when missing, so that there is a row to lock). Rows are
/// locked in one order whatever the caller's, so two transactions never wait on each other.
async fn lock_customers(
    tx: &Transaction<'_>,
    merchant: &str,
    numbers: &[&str],
) -> Result<Vec<CustomerActivity>, TxError> {
    let mut sorted: Vec<&str> = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let empty = encode(&CustomerActivity::default());
    let mut rows = Vec::new();
    // A row the sweep deletes between the insert and the lock is inserted again: every number
    // must have a locked row, or two transactions could both start from an empty record.
    for _ in 0..3 {
        for number in &sorted {
            tx.execute(
                "INSERT INTO otp_customers (merchant, number, activity) VALUES ($1, $2, $3)
                 ON CONFLICT (merchant, number) DO NOTHING",
                &[&merchant, number, &empty],
            )
            .await?;
        }
        rows = tx
            .query(
                "SELECT number, activity FROM otp_customers
                 WHERE merchant = $1 AND number = ANY($2) ORDER BY number FOR UPDATE",
                &[&merchant, &sorted],
            )
            .await?;
        if rows.len() == sorted.len() {
            break;
        }
    }
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let number: String = row.get(0);
        let activity: CustomerActivity = decode("otp_customers", row.get(1))?;
        found.push((number, activity));
    }
    Ok(numbers
        .iter()
        .map(|n| {
            found
                .iter()
                .find(|(number, _)| number == n)
                .map(|(_, a)| a.clone())
                .unwrap_or_default()
        })
        .collect())
}

async fn write_activity(
    tx: &Transaction<'_>,
    merchant: &str,
    number: &str,
    activity: &CustomerActivity,
) -> Result<(), TxError> {
    tx.execute(
        "INSERT INTO otp_customers (merchant, number, activity, idle_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (merchant, number)
         DO UPDATE SET activity = EXCLUDED.activity, idle_at = EXCLUDED.idle_at",
        &[&merchant, &number, &Json(activity), &activity.idle_at()],
    )
    .await?;
    Ok(())
}

/// Counts one send in `scope`'s counter of the current hour and returns the counter as it was
/// before it, for the rules to compare with their ceiling. The row stays locked until the
/// transaction (or savepoint) ends.
async fn count_send(
    tx: &Transaction<'_>,
    scope: &str,
    now: DateTime<Utc>,
) -> Result<GlobalSends, TxError> {
    let hour = now.timestamp().div_euclid(3600);
    let row = tx
        .query_one(
            "INSERT INTO otp_hourly_sends (scope, hour, n) VALUES ($1, $2, 1)
             ON CONFLICT (scope) DO UPDATE
             SET n = CASE WHEN otp_hourly_sends.hour = EXCLUDED.hour
                          THEN otp_hourly_sends.n + 1 ELSE 1 END,
                 hour = EXCLUDED.hour
             RETURNING n",
            &[&scope, &hour],
        )
        .await?;
    let counted: i64 = row.get(0);
    let before = u32::try_from(counted.saturating_sub(1)).unwrap_or(u32::MAX);
    Ok(GlobalSends::in_hour_of(now, before))
}

async fn delete_outgoing(tx: &Transaction<'_>, session_id: &str) -> Result<(), TxError> {
    tx.execute(
        "DELETE FROM otp_outgoing WHERE session_id = $1",
        &[&session_id],
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl OtpStore for PgOtpLedger {
    fn code_sealer(&self) -> CodeSealer {
        CodeSealer::new(&self.key)
    }

    async fn issue(
        &self,
        req: IssueRequest<'_>,
        kind: IssueKind,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<IssueOutcome, LedgerError> {
        PgOtpLedger::issue(self, req, kind, step, now).await
    }

    async fn verify_step(
        &self,
        subject: &OtpSubject,
        attempt: &OtpCode,
        now: DateTime<Utc>,
        step: Option<&str>,
    ) -> Result<VerifyOutcome, LedgerError> {
        PgOtpLedger::verify_step(self, subject, attempt, now, step).await
    }

    async fn consume(
        &self,
        session_id: &str,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), LedgerError> {
        PgOtpLedger::consume(self, session_id, now, reason).await
    }

    async fn code_for_sending(
        &self,
        session_id: &str,
    ) -> Result<Option<(OtpCode, u32)>, LedgerError> {
        PgOtpLedger::code_for_sending(self, session_id).await
    }

    async fn confirm_sent(
        &self,
        session_id: &str,
        generation: u32,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        PgOtpLedger::confirm_sent(self, session_id, generation, now).await
    }

    async fn record(&self, session_id: &str) -> Result<Option<OtpRecord>, LedgerError> {
        PgOtpLedger::record(self, session_id).await
    }

    async fn customer_activity(
        &self,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError> {
        PgOtpLedger::customer_activity(self, customer).await
    }

    async fn merchant_customer_activity(
        &self,
        merchant: &str,
        customer: &CustomerNumber,
    ) -> Result<CustomerActivity, LedgerError> {
        PgOtpLedger::merchant_customer_activity(self, merchant, customer).await
    }

    async fn adopt_default_merchant(&self, merchant: &str) -> Result<usize, LedgerError> {
        PgOtpLedger::adopt_default_merchant(self, merchant)
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        retention: std::time::Duration,
    ) -> Result<usize, LedgerError> {
        PgOtpLedger::sweep(self, now, retention).await
    }
}
