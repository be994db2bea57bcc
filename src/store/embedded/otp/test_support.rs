//! Shared helpers for the ledger tests: a fixed key, a fixed clock origin, one customer.

use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use secrecy::SecretString;

use std::sync::atomic::{AtomicU64, Ordering};

use super::{IssueKind, IssueOutcome, Issued, OtpLedger};
use crate::otp::policy::OtpPolicy;
use crate::otp::rules::{IssueRefusal, IssueRequest, VerifyOutcome};
use crate::otp::{normalize_attempt, CustomerNumber, OtpCode, OtpKey, OtpSubject};

pub(super) const KEY_HEX: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

pub(super) fn key() -> OtpKey {
    OtpKey::from_configured(&SecretString::from(KEY_HEX.to_string())).expect("valid key")
}

pub(super) fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("in range")
}

pub(super) fn customer() -> CustomerNumber {
    CustomerNumber::parse("+919876543210").expect("valid")
}

pub(super) fn subject(session: &str) -> OtpSubject {
    OtpSubject::new(session, "signup")
}

pub(super) fn issue(
    ledger: &OtpLedger,
    session: &str,
    policy: &OtpPolicy,
    kind: IssueKind,
    now: DateTime<Utc>,
) -> Result<Issued, IssueRefusal> {
    let subject = subject(session);
    let customer = customer();
    let req = IssueRequest {
        subject: &subject,
        flow: "signup_verification",
        customer: &customer,
        requester: &customer,
        merchant: "",
        decoy: false,
        policy,
    };
    // Every call is a new step; replays are tested with the ledger directly.
    let step = format!("step-{}", STEPS.fetch_add(1, Ordering::Relaxed));
    match ledger
        .issue_with(req, kind, &step, now, &mut OsRng)
        .expect("ledger works")
    {
        IssueOutcome::Issued(issued) => Ok(issued),
        IssueOutcome::Refused(refusal) => Err(refusal),
        IssueOutcome::AlreadyIssued(info) => panic!("unexpected replay: {info:?}"),
    }
}

static STEPS: AtomicU64 = AtomicU64::new(0);

pub(super) fn check(
    ledger: &OtpLedger,
    session: &str,
    attempt: &str,
    now: DateTime<Utc>,
) -> VerifyOutcome {
    let attempt = normalize_attempt(attempt).expect("digits");
    ledger
        .verify(&subject(session), &attempt, now)
        .expect("ledger works")
}

/// A wrong guess for `code`: same length, every digit shifted.
pub(super) fn wrong_for(code: &OtpCode) -> String {
    code.expose()
        .bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect()
}

pub(super) fn temp_db() -> sled::Db {
    sled::Config::new().temporary(true).open().expect("db")
}

/// Opens the database at `path` like a restarted process would. sled's background flusher
/// may hold the previous handle's file lock for a moment after it is dropped, so retry until
/// the lock is free (with a deadline, so a real failure still fails).
pub(super) fn reopen_db(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("database did not reopen: {e}"),
        }
    }
}
