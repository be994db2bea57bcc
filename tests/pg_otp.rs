//! The OTP ledger on a real PostgreSQL server: the embedded ledger's behaviour (outcomes,
//! resends, replays, audit, merchants, third parties, sweeping, no code at rest) and what only
//! several instances can break — concurrent guesses and issues on two connection pools never
//! pass a limit. Skipped, with a notice, without `WAOTP_TEST_DATABASE_URL`.

mod pg_support;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::{Pool, Runtime};
use secrecy::SecretString;
use tokio_postgres::NoTls;

use waotp::otp::policy::OtpPolicy;
use waotp::otp::{
    normalize_attempt, CustomerNumber, IssueRefusal, IssueRequest, OtpCode, OtpKey, OtpSubject,
    VerifyOutcome,
};
use waotp::store::postgres::audit::PgAuditLog;
use waotp::store::postgres::otp::{shared_key, PgOtpLedger};
use waotp::store::{AuditKind, IssueKind, IssueOutcome, Issued};

const MIGRATION: &str = include_str!("../src/store/postgres/migrations/0002_otp.sql");
const KEY_HEX: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn key() -> OtpKey {
    OtpKey::from_configured(&SecretString::from(KEY_HEX.to_string())).expect("valid key")
}

fn pool(url: &str) -> Pool {
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url.to_owned());
    config
        .create_pool(Some(Runtime::Tokio1), NoTls)
        .expect("pool")
}

/// A fresh database with the OTP tables, a ledger on it, and the database (dropped last).
async fn setup(test: &str) -> Option<(pg_support::TestDatabase, Pool, PgOtpLedger)> {
    let db = pg_support::fresh_database(test).await?;
    let pool = pool(&db.url);
    pool.get()
        .await
        .expect("connect")
        .batch_execute(MIGRATION)
        .await
        .expect("migration applies");
    let ledger = PgOtpLedger::new(pool.clone(), key());
    Some((db, pool, ledger))
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("in range")
}

fn customer() -> CustomerNumber {
    CustomerNumber::parse("+919876543210").expect("valid")
}

fn subject(session: &str) -> OtpSubject {
    OtpSubject::new(session, "signup")
}

fn wrong_for(code: &OtpCode) -> String {
    code.expose()
        .bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect()
}

async fn issue_as(
    ledger: &PgOtpLedger,
    merchant: &str,
    customer: &CustomerNumber,
    session: &str,
    policy: &OtpPolicy,
    kind: IssueKind,
    now: DateTime<Utc>,
) -> Result<Issued, IssueRefusal> {
    let subject = subject(session);
    let req = IssueRequest {
        subject: &subject,
        flow: "signup_verification",
        customer,
        requester: customer,
        merchant,
        decoy: false,
        policy,
    };
    let step = format!("{session}:{}", now.timestamp());
    match ledger
        .issue(req, kind, &step, now)
        .await
        .expect("ledger works")
    {
        IssueOutcome::Issued(issued) => Ok(issued),
        IssueOutcome::Refused(refusal) => Err(refusal),
        IssueOutcome::AlreadyIssued(info) => panic!("unexpected replay: {info:?}"),
    }
}

async fn issue(
    ledger: &PgOtpLedger,
    session: &str,
    policy: &OtpPolicy,
    kind: IssueKind,
    now: DateTime<Utc>,
) -> Result<Issued, IssueRefusal> {
    issue_as(ledger, "", &customer(), session, policy, kind, now).await
}

async fn check(
    ledger: &PgOtpLedger,
    session: &str,
    typed: &str,
    now: DateTime<Utc>,
) -> VerifyOutcome {
    let attempt = normalize_attempt(typed).expect("digits");
    ledger
        .verify(&subject(session), &attempt, now)
        .await
        .expect("ledger works")
}

#[tokio::test]
async fn issue_verify_single_use_and_audit() {
    let Some((_db, pool, ledger)) = setup("issue_verify").await else {
        return;
    };
    let policy = OtpPolicy::default();
    let issued = issue(&ledger, "s1", &policy, IssueKind::First, t(0))
        .await
        .expect("granted");
    assert_eq!((issued.code.len(), issued.info.generation), (6, 1));
    assert_eq!(
        check(&ledger, "s1", &wrong_for(&issued.code), t(1)).await,
        VerifyOutcome::Wrong { attempts_left: 4 }
    );
    let spaced = format!(
        "{} {}",
        &issued.code.expose()[..3],
        &issued.code.expose()[3..]
    );
    assert_eq!(
        check(&ledger, "s1", &spaced, t(2)).await,
        VerifyOutcome::Correct
    );
    assert_eq!(
        check(&ledger, "s1", issued.code.expose(), t(3)).await,
        VerifyOutcome::Consumed
    );
    assert_eq!(
        check(&ledger, "nope", "123456", t(3)).await,
        VerifyOutcome::NotIssued
    );
    assert!(ledger.code_for_sending("s1").await.expect("read").is_none());

    let audit = PgAuditLog::new(pool).for_session("s1").await.expect("read");
    let summary: Vec<_> = audit.iter().map(|e| (e.kind(), e.outcome())).collect();
    assert_eq!(
        summary,
        [
            (AuditKind::Issue, "issued"),
            (AuditKind::Check, "wrong"),
            (AuditKind::Check, "correct"),
            (AuditKind::Check, "consumed")
        ]
    );
    assert!(audit
        .iter()
        .all(|e| e.customer() == Some("…3210") && e.flow() == "signup_verification"));
}

#[tokio::test]
async fn resend_replaces_the_code_and_keeps_the_newer_sealed_copy() {
    let Some((_db, _pool, ledger)) = setup("resend").await else {
        return;
    };
    let policy = OtpPolicy::default();
    let first = issue(&ledger, "s1", &policy, IssueKind::First, t(0))
        .await
        .expect("granted");
    let sending = ledger.code_for_sending("s1").await.expect("read");
    assert_eq!(sending, Some((first.code.clone(), 1)));
    assert_eq!(
        check(&ledger, "s1", &wrong_for(&first.code), t(1)).await,
        VerifyOutcome::Wrong { attempts_left: 4 }
    );
    assert_eq!(
        issue(&ledger, "s1", &policy, IssueKind::Resend, t(30))
            .await
            .map(|i| i.info.generation),
        Err(IssueRefusal::Cooldown {
            retry_after: Duration::from_secs(30)
        })
    );
    let second = issue(&ledger, "s1", &policy, IssueKind::Resend, t(60))
        .await
        .expect("resent");
    assert_eq!((second.info.generation, second.info.attempts_left), (2, 4));
    assert_eq!(second.info.next_resend_at, t(60 + 120));
    // The late acceptance of the first message must not delete the second code's copy.
    ledger.confirm_sent("s1", 1, t(61)).await.expect("confirm");
    let pending = ledger.code_for_sending("s1").await.expect("read");
    assert_eq!(pending, Some((second.code.clone(), 2)));
    ledger.confirm_sent("s1", 2, t(62)).await.expect("confirm");
    assert!(ledger.code_for_sending("s1").await.expect("read").is_none());
    assert_eq!(
        check(&ledger, "s1", second.code.expose(), t(64)).await,
        VerifyOutcome::Correct
    );
}

#[tokio::test]
async fn consume_withdraws_and_reverse_codes_keep_no_sealed_copy() {
    let Some((_db, pool, ledger)) = setup("consume").await else {
        return;
    };
    let policy = OtpPolicy::default();
    let issued = issue(&ledger, "s1", &policy, IssueKind::First, t(0))
        .await
        .expect("granted");
    ledger
        .consume("s1", t(1), "session cancelled")
        .await
        .expect("consume");
    ledger
        .consume("s1", t(2), "again")
        .await
        .expect("idempotent");
    assert!(ledger.code_for_sending("s1").await.expect("read").is_none());
    assert_eq!(
        check(&ledger, "s1", issued.code.expose(), t(3)).await,
        VerifyOutcome::Consumed
    );
    let entries = PgAuditLog::new(pool).for_session("s1").await.expect("read");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.kind() == AuditKind::Retire)
            .count(),
        1
    );

    let reverse = issue(&ledger, "r1", &policy, IssueKind::Reverse, t(10))
        .await
        .expect("granted");
    assert!(ledger.code_for_sending("r1").await.expect("read").is_none());
    assert_eq!(
        check(&ledger, "r1", reverse.code.expose(), t(11)).await,
        VerifyOutcome::Correct
    );
}

#[tokio::test]
async fn replayed_steps_issue_nothing_new_and_get_their_verdict_again() {
    let Some((_db, pool, ledger)) = setup("replays").await else {
        return;
    };
    let policy = OtpPolicy::default();
    let subject = subject("s1");
    let customer = customer();
    let req = IssueRequest {
        subject: &subject,
        flow: "signup_verification",
        customer: &customer,
        requester: &customer,
        merchant: "",
        decoy: false,
        policy: &policy,
    };
    let IssueOutcome::Issued(first) = ledger
        .issue(req, IssueKind::First, "event-1", t(0))
        .await
        .expect("ledger works")
    else {
        panic!("first issue granted")
    };
    let IssueOutcome::AlreadyIssued(again) = ledger
        .issue(req, IssueKind::First, "event-1", t(5))
        .await
        .expect("ledger works")
    else {
        panic!("replay recognised")
    };
    assert_eq!(again, first.info);
    let activity = ledger.customer_activity(&customer).await.expect("read");
    assert_eq!(activity.sends_within(Duration::from_secs(600), t(5)), 1);
    assert_eq!(
        ledger.code_for_sending("s1").await.expect("read"),
        Some((first.code.clone(), 1)),
        "the replay still finds the code to send"
    );

    let wrong = normalize_attempt(&wrong_for(&first.code)).expect("digits");
    let right = normalize_attempt(first.code.expose()).expect("digits");
    for at in 1..=3 {
        let outcome = ledger
            .verify_step(&subject, &wrong, t(at), Some("s1:3"))
            .await
            .expect("ledger works");
        assert_eq!(outcome, VerifyOutcome::Wrong { attempts_left: 4 });
    }
    let activity = ledger.customer_activity(&customer).await.expect("read");
    assert_eq!(activity.wrong_within(Duration::from_secs(86_400), t(3)), 1);
    for at in 4..=6 {
        let outcome = ledger
            .verify_step(&subject, &right, t(at), Some("s1:4"))
            .await
            .expect("ledger works");
        assert_eq!(outcome, VerifyOutcome::Correct);
    }
    let later = ledger
        .verify_step(&subject, &right, t(7), Some("s1:5"))
        .await
        .expect("ledger works");
    assert_eq!(later, VerifyOutcome::Consumed);
    let record = ledger.record("s1").await.expect("read").expect("record");
    assert_eq!(record.attempts_left(), 4);
    let issues = PgAuditLog::new(pool)
        .for_session("s1")
        .await
        .expect("read")
        .iter()
        .filter(|e| e.kind() == AuditKind::Issue)
        .count();
    assert_eq!(issues, 1, "one audit entry per real issue");
}

#[tokio::test]
async fn limit_breaches_are_refused_audited_and_leave_the_counters_untouched() {
    let Some((_db, pool, ledger)) = setup("breaches").await else {
        return;
    };
    let policy = OtpPolicy {
        global_sends_per_hour: 1,
        ..OtpPolicy::default()
    };
    issue(&ledger, "s1", &policy, IssueKind::First, t(0))
        .await
        .expect("granted");
    for (session, at) in [("s2", 1), ("s3", 2)] {
        assert!(matches!(
            issue(&ledger, session, &policy, IssueKind::First, t(at)).await,
            Err(IssueRefusal::GlobalCeiling { .. })
        ));
    }
    assert!(matches!(
        issue(&ledger, "s1", &policy, IssueKind::Resend, t(3)).await,
        Err(IssueRefusal::Cooldown { .. })
    ));
    let audit = PgAuditLog::new(pool.clone());
    let last = |entries: Vec<waotp::store::AuditEntry>| {
        let e = entries.last().expect("an entry").clone();
        (
            e.kind(),
            e.outcome().to_owned(),
            e.reason().map(str::to_owned),
        )
    };
    assert_eq!(
        last(audit.for_session("s2").await.expect("read")),
        (
            AuditKind::LimitBreach,
            "refused".into(),
            Some("global_ceiling".into())
        )
    );
    assert_eq!(
        last(audit.for_session("s1").await.expect("read")),
        (AuditKind::Resend, "refused".into(), Some("cooldown".into()))
    );
    // Refusals rolled their increments back: one send counted this hour.
    let counted: i64 = pool
        .get()
        .await
        .expect("connect")
        .query_one(
            "SELECT n FROM otp_hourly_sends WHERE scope = 'service'",
            &[],
        )
        .await
        .expect("counter")
        .get(0);
    assert_eq!(counted, 1);
    // The next hour starts a new count.
    issue(&ledger, "s4", &policy, IssueKind::First, t(3600))
        .await
        .expect("a new hour");
}

#[tokio::test]
async fn merchants_keep_their_own_customer_limits_and_ceilings() {
    let Some((_db, _pool, ledger)) = setup("merchants").await else {
        return;
    };
    let policy = OtpPolicy {
        sends_per_10_min: 100,
        sends_per_day: 100,
        wrong_attempts_per_day: 3,
        ..OtpPolicy::default()
    };
    let alice = customer();
    let at_a = issue_as(&ledger, "a", &alice, "a-1", &policy, IssueKind::First, t(0))
        .await
        .expect("issued");
    for i in 0..3 {
        check(&ledger, "a-1", &wrong_for(&at_a.code), t(i)).await;
    }
    assert!(matches!(
        issue_as(
            &ledger,
            "a",
            &alice,
            "a-2",
            &policy,
            IssueKind::First,
            t(10)
        )
        .await,
        Err(IssueRefusal::CustomerBlocked { .. })
    ));
    let at_b = issue_as(
        &ledger,
        "b",
        &alice,
        "b-1",
        &policy,
        IssueKind::First,
        t(10),
    )
    .await
    .expect("merchant b is not affected");
    assert_eq!(
        check(&ledger, "b-1", at_b.code.expose(), t(11)).await,
        VerifyOutcome::Correct
    );
    let a = ledger
        .merchant_customer_activity("a", &alice)
        .await
        .expect("read");
    assert_eq!(a.wrong_within(Duration::from_secs(86_400), t(11)), 3);
    let b = ledger
        .merchant_customer_activity("b", &alice)
        .await
        .expect("read");
    assert_eq!(b.wrong_within(Duration::from_secs(86_400), t(11)), 0);

    // The default merchant is the one requests naming none are charged to.
    assert_eq!(ledger.adopt_default_merchant("a").expect("adopt"), 0);
    assert!(matches!(
        issue_as(&ledger, "", &alice, "d-1", &policy, IssueKind::First, t(12)).await,
        Err(IssueRefusal::CustomerBlocked { .. })
    ));

    let capped = OtpPolicy {
        merchant_sends_per_hour: Some(1),
        global_sends_per_hour: 4,
        ..OtpPolicy::default()
    };
    let bob = CustomerNumber::parse("+14155550100").expect("valid");
    let hour = 7200;
    issue_as(
        &ledger,
        "c",
        &bob,
        "c-1",
        &capped,
        IssueKind::First,
        t(hour),
    )
    .await
    .expect("first code of c");
    assert!(matches!(
        issue_as(
            &ledger,
            "c",
            &bob,
            "c-2",
            &capped,
            IssueKind::First,
            t(hour + 1)
        )
        .await,
        Err(IssueRefusal::GlobalCeiling { .. })
    ));
    for (i, merchant) in ["d", "e", "f"].iter().enumerate() {
        let result = issue_as(
            &ledger,
            merchant,
            &bob,
            &format!("{merchant}-1"),
            &OtpPolicy {
                global_sends_per_hour: 4,
                ..OtpPolicy::default()
            },
            IssueKind::First,
            t(hour + 2 + i as i64),
        )
        .await;
        assert_eq!(
            result.is_ok(),
            i < 3,
            "the service ceiling counts every merchant"
        );
    }
    assert!(matches!(
        issue_as(
            &ledger,
            "g",
            &bob,
            "g-1",
            &capped,
            IssueKind::First,
            t(hour + 9)
        )
        .await,
        Err(IssueRefusal::GlobalCeiling { .. })
    ));
}

#[tokio::test]
async fn third_party_codes_charge_the_requester_and_stop_at_the_recipients_cap() {
    let Some((_db, _pool, ledger)) = setup("third_party").await else {
        return;
    };
    let policy = OtpPolicy::default();
    let alice = customer();
    let strangers: Vec<CustomerNumber> = (0..policy.third_party_sends_per_day + 1)
        .map(|i| CustomerNumber::parse(&format!("+1415555{i:04}")).expect("valid"))
        .collect();
    let mut issued = Vec::new();
    for (i, stranger) in strangers.iter().enumerate() {
        let session = format!("r{i}");
        let subject = OtpSubject::new(session.as_str(), "account_recovery/send_code");
        let req = IssueRequest {
            subject: &subject,
            flow: "account_recovery",
            customer: &alice,
            requester: stranger,
            merchant: "",
            decoy: false,
            policy: &policy,
        };
        let IssueOutcome::Issued(code) = ledger
            .issue(req, IssueKind::First, &format!("event-{i}"), t(0))
            .await
            .expect("ledger works")
        else {
            panic!("a requester never sees the recipient's cap")
        };
        let sendable = ledger
            .code_for_sending(&session)
            .await
            .expect("read")
            .is_some();
        assert_eq!(sendable, !code.info.withheld, "{session}");
        issued.push((subject, code));
    }
    let withheld: Vec<bool> = issued.iter().map(|(_, c)| c.info.withheld).collect();
    let cap = policy.third_party_sends_per_day as usize;
    assert!(
        withheld[..cap].iter().all(|w| !w) && withheld[cap],
        "{withheld:?}"
    );
    let wrong = normalize_attempt("0000000").expect("code");
    for (subject, _) in &issued {
        ledger
            .verify(subject, &wrong, t(1))
            .await
            .expect("ledger works");
    }
    let day = Duration::from_secs(86_400);
    let alices = ledger.customer_activity(&alice).await.expect("read");
    assert_eq!(
        (
            alices.wrong_within(day, t(1)),
            alices.sends_within(day, t(1)),
            alices.third_party_sends_within(day, t(1))
        ),
        (0, 0, cap)
    );
    for stranger in &strangers {
        let theirs = ledger.customer_activity(stranger).await.expect("read");
        assert_eq!(
            (
                theirs.wrong_within(day, t(1)),
                theirs.sends_within(day, t(1))
            ),
            (1, 1)
        );
    }
}

#[tokio::test]
async fn sweep_drops_only_stale_records() {
    let Some((_db, _pool, ledger)) = setup("sweep").await else {
        return;
    };
    let policy = OtpPolicy::default();
    issue(&ledger, "old", &policy, IssueKind::First, t(0))
        .await
        .expect("granted");
    let week = Duration::from_secs(7 * 86_400);
    let later = t(0) + TimeDelta::days(7);
    issue(&ledger, "new", &policy, IssueKind::First, later)
        .await
        .expect("granted");
    let removed = ledger
        .sweep(later + TimeDelta::seconds(601), week)
        .await
        .expect("sweep");
    assert_eq!(removed, 1);
    assert!(ledger.record("old").await.expect("read").is_none());
    assert!(ledger
        .code_for_sending("old")
        .await
        .expect("read")
        .is_none());
    assert!(ledger.record("new").await.expect("read").is_some());
    assert!(ledger
        .code_for_sending("new")
        .await
        .expect("read")
        .is_some());
    let idle = later + TimeDelta::days(2);
    assert_eq!(
        ledger.sweep(idle, week).await.expect("sweep"),
        1,
        "idle customer"
    );
    assert_eq!(
        ledger.customer_activity(&customer()).await.expect("read"),
        Default::default()
    );
}

/// Every row of every table, as text.
async fn dump(pool: &Pool) -> String {
    let client = pool.get().await.expect("connect");
    let tables = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .expect("tables");
    let mut text = String::new();
    for table in tables {
        let name: String = table.get(0);
        let rows = client
            .query(&format!("SELECT row_to_json(t)::text FROM {name} t"), &[])
            .await
            .expect("rows");
        for row in rows {
            text.push_str(row.get::<_, &str>(0));
            text.push('\n');
        }
    }
    text
}

#[tokio::test]
async fn codes_never_reach_the_database_in_plaintext() {
    let Some((_db, pool, ledger)) = setup("plaintext").await else {
        return;
    };
    let policy = OtpPolicy {
        code_length: 10,
        ..OtpPolicy::default()
    };
    let session = "session-plaintext-probe";
    let issued = issue(&ledger, session, &policy, IssueKind::First, t(0))
        .await
        .expect("granted");
    let while_sealed = dump(&pool).await;
    assert!(
        while_sealed.contains(session),
        "control: the dump holds the session"
    );
    check(&ledger, session, &wrong_for(&issued.code), t(1)).await;
    let resent = issue(&ledger, session, &policy, IssueKind::Resend, t(120))
        .await
        .expect("resent");
    let after_resend = dump(&pool).await;
    ledger
        .confirm_sent(session, resent.info.generation, t(121))
        .await
        .expect("accepted");
    check(&ledger, session, resent.code.expose(), t(122)).await;
    let at_end = dump(&pool).await;
    for code in [&issued.code, &resent.code] {
        for text in [&while_sealed, &after_resend, &at_end] {
            assert!(
                !text.contains(code.expose()),
                "a code is stored in plaintext"
            );
        }
    }
    assert!(!at_end.contains("otp_outgoing"), "no sealed copy is left");
}

#[tokio::test]
async fn instances_without_a_configured_key_share_the_one_stored_first() {
    let Some((db, pool_a, _)) = setup("shared_key").await else {
        return;
    };
    let pool_b = pool(&db.url);
    let (key_a, key_b) = tokio::join!(shared_key(&pool_a, None), shared_key(&pool_b, None));
    let a = PgOtpLedger::new(pool_a.clone(), key_a.expect("key a"));
    let b = PgOtpLedger::new(pool_b.clone(), key_b.expect("key b"));
    let issued = issue(&a, "s1", &OtpPolicy::default(), IssueKind::First, t(0))
        .await
        .expect("granted on a");
    assert_eq!(
        b.code_for_sending("s1").await.expect("read"),
        Some((issued.code.clone(), 1)),
        "b opens a's sealed copy"
    );
    assert_eq!(
        check(&b, "s1", issued.code.expose(), t(1)).await,
        VerifyOutcome::Correct,
        "b checks a's digest"
    );
    // A configured key is used as given and never stored.
    let configured = SecretString::from(KEY_HEX.to_string());
    shared_key(&pool_a, Some(&configured))
        .await
        .expect("configured");
    let stored: i64 = pool_a
        .get()
        .await
        .expect("connect")
        .query_one("SELECT count(*) FROM otp_key", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 1);
    assert!(
        !dump(&pool_a).await.contains(KEY_HEX),
        "the configured key is not stored"
    );
}

/// Two instances (two pools), many concurrent wrong guesses at one code: never more counted
/// than the code's attempts, and the customer's day count matches exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_guesses_on_two_instances_never_exceed_the_attempt_limit() {
    let Some((db, pool_a, a)) = setup("concurrent_verify").await else {
        return;
    };
    let b = std::sync::Arc::new(PgOtpLedger::new(pool(&db.url), key()));
    let a = std::sync::Arc::new(a);
    let policy = OtpPolicy {
        max_attempts: 5,
        wrong_attempts_per_day: 1000,
        ..OtpPolicy::default()
    };
    let issued = issue(&a, "s1", &policy, IssueKind::First, t(0))
        .await
        .expect("granted");
    let wrong = normalize_attempt(&wrong_for(&issued.code)).expect("digits");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
        let wrong = wrong.clone();
        tasks.push(tokio::spawn(async move {
            ledger
                .verify(&subject("s1"), &wrong, t(1))
                .await
                .expect("ledger works")
        }));
    }
    let mut counted = Vec::new();
    let mut locked = 0;
    for task in tasks {
        match task.await.expect("task") {
            VerifyOutcome::Wrong { attempts_left } => counted.push(attempts_left),
            VerifyOutcome::Locked => locked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    counted.sort_unstable();
    assert_eq!(
        counted,
        [0, 1, 2, 3, 4],
        "each attempt counted once, in turn"
    );
    assert_eq!(locked, 35);
    let activity = a.customer_activity(&customer()).await.expect("read");
    assert_eq!(activity.wrong_within(Duration::from_secs(86_400), t(1)), 5);
    let wrong_rows: i64 = pool_a
        .get()
        .await
        .expect("connect")
        .query_one(
            "SELECT count(*) FROM otp_audit WHERE entry->>'outcome' IN ('wrong', 'wrong_locked')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(wrong_rows, 5, "one audit row per counted attempt");
}

/// Two instances issuing at once, for one customer (per-customer limit) and for many customers
/// (service ceiling): never more codes than the limits allow, and exactly that many.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_issues_on_two_instances_never_exceed_the_customer_or_service_limits() {
    let Some((db, _pool, a)) = setup("concurrent_issue").await else {
        return;
    };
    let b = std::sync::Arc::new(PgOtpLedger::new(pool(&db.url), key()));
    let a = std::sync::Arc::new(a);
    let policy = std::sync::Arc::new(OtpPolicy {
        sends_per_10_min: 5,
        sends_per_day: 100,
        global_sends_per_hour: 12,
        ..OtpPolicy::default()
    });
    let run = |customer: CustomerNumber, session: String, i: usize| {
        let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
        let policy = policy.clone();
        tokio::spawn(async move {
            issue_as(
                &ledger,
                "",
                &customer,
                &session,
                &policy,
                IssueKind::First,
                t(0),
            )
            .await
        })
    };
    // One customer, 30 sessions at once: the per-customer limit (5) holds.
    let tasks: Vec<_> = (0..30)
        .map(|i| run(customer(), format!("one-{i}"), i))
        .collect();
    let mut granted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => granted += 1,
            Err(IssueRefusal::CustomerRateLimited { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted, 5);
    // 30 customers at once: the service ceiling (12 this hour, 5 already used) holds.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let number = CustomerNumber::parse(&format!("+4477009{i:05}")).expect("valid");
            run(number, format!("many-{i}"), i)
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => granted += 1,
            Err(IssueRefusal::GlobalCeiling { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted, 7);
}

#[tokio::test]
async fn limits_survive_a_new_pool() {
    let Some((db, _pool, ledger)) = setup("reopen").await else {
        return;
    };
    let policy = OtpPolicy::default();
    let issued = issue(&ledger, "s1", &policy, IssueKind::First, t(0))
        .await
        .expect("granted");
    check(&ledger, "s1", &wrong_for(&issued.code), t(1)).await;
    drop(ledger);
    let reopened = PgOtpLedger::new(pool(&db.url), key());
    assert_eq!(
        check(&reopened, "s1", &wrong_for(&issued.code), t(2)).await,
        VerifyOutcome::Wrong { attempts_left: 3 }
    );
    assert_eq!(
        check(&reopened, "s1", issued.code.expose(), t(3)).await,
        VerifyOutcome::Correct
    );
}

/// Two instances at once: a merchant's own hourly ceiling holds, and two customers asking for
/// codes to each other (each transaction locking both their records) never deadlock for good
/// nor lose a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merchant_ceilings_and_crossed_third_party_codes_hold() {
    let Some((db, _pool, a)) = setup("concurrent_cross").await else {
        return;
    };
    let b = std::sync::Arc::new(PgOtpLedger::new(pool(&db.url), key()));
    let a = std::sync::Arc::new(a);
    let capped = std::sync::Arc::new(OtpPolicy {
        merchant_sends_per_hour: Some(3),
        ..OtpPolicy::default()
    });
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
            let policy = capped.clone();
            tokio::spawn(async move {
                let number = CustomerNumber::parse(&format!("+4477008{i:05}")).expect("valid");
                let session = format!("m-{i}");
                issue_as(
                    &ledger,
                    "m",
                    &number,
                    &session,
                    &policy,
                    IssueKind::First,
                    t(0),
                )
                .await
            })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => granted += 1,
            Err(IssueRefusal::GlobalCeiling { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted, 3, "the merchant's ceiling");

    let alice = CustomerNumber::parse("+14155550101").expect("valid");
    let bob = CustomerNumber::parse("+14155550102").expect("valid");
    let policy = std::sync::Arc::new(OtpPolicy {
        sends_per_10_min: 100,
        sends_per_day: 100,
        third_party_sends_per_day: 100,
        ..OtpPolicy::default()
    });
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (requester, customer) = if i % 4 < 2 {
                (alice.clone(), bob.clone())
            } else {
                (bob.clone(), alice.clone())
            };
            let policy = policy.clone();
            tokio::spawn(async move {
                let session = format!("x-{i}");
                let subject = OtpSubject::new(session.as_str(), "account_recovery/send_code");
                let req = IssueRequest {
                    subject: &subject,
                    flow: "account_recovery",
                    customer: &customer,
                    requester: &requester,
                    merchant: "x",
                    decoy: false,
                    policy: &policy,
                };
                ledger
                    .issue(req, IssueKind::First, &session, t(3600))
                    .await
                    .expect("no lasting deadlock")
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.expect("task"), IssueOutcome::Issued(_)));
    }
    let hour = Duration::from_secs(3600);
    for number in [&alice, &bob] {
        let activity = a
            .merchant_customer_activity("x", number)
            .await
            .expect("read");
        assert_eq!(
            (
                activity.sends_within(hour, t(3600)),
                activity.third_party_sends_within(hour, t(3600))
            ),
            (10, 10),
            "every send counted once on each side"
        );
    }
}

#[tokio::test]
async fn transaction_codes_only_approve_the_shown_amount_and_payee() {
    let Some((_db, _pool, ledger)) = setup("transaction_codes").await else {
        return;
    };
    let policy = OtpPolicy::transaction();
    let shown =
        OtpSubject::transaction("tx1", "transaction_authorization", "120.00", "EUR", "ACME");
    let customer = customer();
    let req = IssueRequest {
        subject: &shown,
        flow: "transaction_authorization",
        customer: &customer,
        requester: &customer,
        merchant: "",
        decoy: false,
        policy: &policy,
    };
    let IssueOutcome::Issued(issued) = ledger
        .issue(req, IssueKind::First, "event-1", t(0))
        .await
        .expect("ledger works")
    else {
        panic!("granted")
    };
    let tampered =
        OtpSubject::transaction("tx1", "transaction_authorization", "1200.00", "EUR", "ACME");
    assert_eq!(
        ledger
            .verify(&tampered, &issued.code, t(1))
            .await
            .expect("ledger works"),
        VerifyOutcome::Wrong { attempts_left: 2 }
    );
    assert_eq!(
        ledger
            .verify(&shown, &issued.code, t(2))
            .await
            .expect("ledger works"),
        VerifyOutcome::Correct
    );
}
