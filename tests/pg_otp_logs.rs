//! Logs of the PostgreSQL OTP ledger at the most verbose level the settings allow, the database
//! driver's own lines included: no code, no key, no full customer number. (A test binary of its
//! own: it installs the process-wide subscriber.) Skipped, with a notice, without
//! `WAOTP_TEST_DATABASE_URL`.

mod pg_support;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Runtime};
use tokio_postgres::NoTls;

use waotp::otp::policy::OtpPolicy;
use waotp::otp::{normalize_attempt, CustomerNumber, IssueRequest, OtpSubject};
use waotp::store::postgres::otp::{shared_key, PgOtpLedger};
use waotp::store::{IssueKind, IssueOutcome};

const MIGRATION: &str = include_str!("../src/store/postgres/migrations/0002_otp.sql");

/// A writer sharing one buffer, to capture log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("in range")
}

fn pool(url: &str) -> Pool {
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url.to_owned());
    config
        .create_pool(Some(Runtime::Tokio1), NoTls)
        .expect("pool")
}

#[tokio::test]
async fn no_code_key_or_full_number_in_logs_at_any_level() {
    let logs = Captured::default();
    let writer = logs.clone();
    // As the server installs it (`telemetry::init`), `log` records of the driver included.
    tracing_subscriber::fmt()
        .with_env_filter(waotp::telemetry::filter("trace"))
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");
    let Some(db) = pg_support::fresh_database("logs").await else {
        return;
    };
    let pool = pool(&db.url);
    let client = pool.get().await.expect("connect");
    client.batch_execute(MIGRATION).await.expect("migration");
    let key = shared_key(&pool, None).await.expect("key");
    let stored: Vec<u8> = client
        .query_one("SELECT key FROM otp_key", &[])
        .await
        .expect("key row")
        .get(0);
    drop(client);
    let ledger = PgOtpLedger::new(pool, key);

    let customer = CustomerNumber::parse("+919876543210").expect("valid");
    let subject = OtpSubject::new("s1", "signup");
    let policy = OtpPolicy {
        code_length: 10,
        ..OtpPolicy::default()
    };
    let req = IssueRequest {
        subject: &subject,
        flow: "signup_verification",
        customer: &customer,
        requester: &customer,
        merchant: "",
        decoy: false,
        policy: &policy,
    };
    let IssueOutcome::Issued(issued) = ledger
        .issue(req, IssueKind::First, "step-1", t(0))
        .await
        .expect("ledger works")
    else {
        panic!("granted")
    };
    let (sending, generation) = ledger
        .code_for_sending("s1")
        .await
        .expect("read")
        .expect("sealed copy");
    ledger
        .confirm_sent("s1", generation, t(1))
        .await
        .expect("sent");
    let attempt = normalize_attempt(issued.code.expose()).expect("digits");
    ledger
        .verify(&subject, &attempt, t(2))
        .await
        .expect("checked");

    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
    assert!(
        text.contains("otp issued") && text.contains("otp checked"),
        "control: the ledger's lines were captured: {text}"
    );
    assert!(
        text.contains("tokio_postgres"),
        "control: the driver's lines were captured"
    );
    assert!(text.contains("…3210"), "customers appear masked");
    assert!(
        !text.contains("9876543210"),
        "a full number reached the logs"
    );
    for code in [&issued.code, &sending] {
        assert!(!text.contains(code.expose()), "a code reached the logs");
    }
    assert!(
        !text.contains(&hex::encode(&stored)),
        "the key reached the logs"
    );
    assert!(
        !text.contains(
            &format!("{:?}", &stored[..8])
                .trim_end_matches(']')
                .to_owned()
        ),
        "the key's bytes reached the logs"
    );
}
