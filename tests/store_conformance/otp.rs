//! The OTP ledger: codes issued, checked and used once; limits; counters that survive.

use super::support::{at, now};
use super::Backend;
use chrono::{DateTime, Utc};
use std::time::Duration;
use waotp::otp::policy::OtpPolicy;
use waotp::otp::rules::{IssueRefusal, IssueRequest, VerifyOutcome};
use waotp::otp::{normalize_attempt, CustomerNumber, OtpCode, OtpSubject};
use waotp::store::{AuditKind, IssueKind, IssueOutcome, Issued, Storage};

const CUSTOMER: &str = "+919876543210";

fn customer() -> CustomerNumber {
    CustomerNumber::parse(CUSTOMER).expect("number")
}

async fn issue(
    s: &Storage,
    session: &str,
    policy: &OtpPolicy,
    when: DateTime<Utc>,
) -> IssueOutcome {
    let subject = OtpSubject::new(session, "signup");
    let customer = customer();
    let req = IssueRequest {
        subject: &subject,
        flow: "signup_verification",
        customer: &customer,
        requester: &customer,
        merchant: "acme",
        decoy: false,
        policy,
    };
    s.otp
        .issue(req, IssueKind::First, &format!("{session}:1"), when)
        .await
        .expect("ledger works")
}

fn issued(outcome: IssueOutcome) -> Issued {
    match outcome {
        IssueOutcome::Issued(i) => i,
        other => panic!("not issued: {other:?}"),
    }
}

async fn check(s: &Storage, session: &str, attempt: &str, when: DateTime<Utc>) -> VerifyOutcome {
    let attempt = normalize_attempt(attempt).expect("digits");
    s.otp
        .verify_step(&OtpSubject::new(session, "signup"), &attempt, when, None)
        .await
        .expect("ledger works")
}

/// A wrong guess for `code`: same length, every digit shifted.
fn wrong_for(code: &OtpCode) -> String {
    code.expose()
        .bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect()
}

pub async fn codes_are_issued_checked_and_used_once(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let policy = OtpPolicy::default();
    let code = issued(issue(&s, "ses_o1", &policy, t0).await);
    assert_eq!(code.info.generation, 1);
    // The same step again is a replay: nothing new is issued or counted.
    assert!(matches!(
        issue(&s, "ses_o1", &policy, at(t0, 1)).await,
        IssueOutcome::AlreadyIssued(_)
    ));
    let (sealed, generation) = s
        .otp
        .code_for_sending("ses_o1")
        .await
        .expect("read")
        .expect("awaiting delivery");
    assert_eq!((sealed.expose(), generation), (code.code.expose(), 1));
    s.otp
        .confirm_sent("ses_o1", 1, at(t0, 2))
        .await
        .expect("sent");
    assert!(s
        .otp
        .code_for_sending("ses_o1")
        .await
        .expect("read")
        .is_none());

    assert_eq!(
        check(&s, "ses_o1", &wrong_for(&code.code), at(t0, 3)).await,
        VerifyOutcome::Wrong { attempts_left: 4 }
    );
    assert_eq!(
        check(&s, "ses_o1", code.code.expose(), at(t0, 4)).await,
        VerifyOutcome::Correct
    );
    assert_eq!(
        check(&s, "ses_o1", code.code.expose(), at(t0, 5)).await,
        VerifyOutcome::Consumed
    );
    assert_eq!(
        check(&s, "ses_none", "123456", at(t0, 5)).await,
        VerifyOutcome::NotIssued
    );

    let audit = s.audit.for_session("ses_o1").await.expect("audit");
    let kinds: Vec<AuditKind> = audit.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds.first(), Some(&AuditKind::Issue));
    assert!(kinds.contains(&AuditKind::Check));
    let json = serde_json::to_string(&audit).expect("json");
    assert!(
        !json.contains(code.code.expose()),
        "no code in the audit log"
    );
    let from_start = s.audit.read_from(0, 100).await.expect("read");
    assert!(from_start.len() >= audit.len());
    assert!(from_start.windows(2).all(|w| w[0].0 < w[1].0));

    // A session that ends withdraws its code.
    let other = issued(issue(&s, "ses_o2", &policy, at(t0, 10)).await);
    s.otp
        .consume("ses_o2", at(t0, 11), "session ended")
        .await
        .expect("consume");
    assert_eq!(
        check(&s, "ses_o2", other.code.expose(), at(t0, 12)).await,
        VerifyOutcome::Consumed
    );
}

pub async fn the_per_customer_limit_refuses_further_codes(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let policy = OtpPolicy {
        sends_per_10_min: 2,
        ..OtpPolicy::default()
    };
    // Concurrent issues for one customer: exactly the limit is granted.
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (s, policy) = (s.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            matches!(
                issue(&s, &format!("ses_lim{i}"), &policy, at(t0, i)).await,
                IssueOutcome::Issued(_)
            )
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.expect("task"));
    }
    assert_eq!(granted, 2, "increment and compare are one change");
    assert!(matches!(
        issue(&s, "ses_lim9", &policy, at(t0, 9)).await,
        IssueOutcome::Refused(IssueRefusal::CustomerRateLimited { .. })
    ));
    let activity = s
        .otp
        .merchant_customer_activity("acme", &customer())
        .await
        .expect("activity");
    assert_eq!(
        activity.sends_within(Duration::from_secs(600), at(t0, 10)),
        2
    );
    // Another merchant's customer is not limited by these.
    let elsewhere = s
        .otp
        .merchant_customer_activity("globex", &customer())
        .await
        .expect("activity");
    assert_eq!(
        elsewhere.sends_within(Duration::from_secs(600), at(t0, 10)),
        0
    );
}

pub async fn wrong_attempts_survive_reopening(b: &dyn Backend) {
    let s = b.open().await;
    let t0 = now();
    let policy = OtpPolicy::default();
    let code = issued(issue(&s, "ses_w", &policy, t0).await);
    assert_eq!(
        check(&s, "ses_w", &wrong_for(&code.code), at(t0, 1)).await,
        VerifyOutcome::Wrong { attempts_left: 4 }
    );
    s.engine.durable().await.expect("durable");
    let s = b.reopen(s).await;
    assert_eq!(
        check(&s, "ses_w", &wrong_for(&code.code), at(t0, 2)).await,
        VerifyOutcome::Wrong { attempts_left: 3 },
        "the first wrong attempt still counts"
    );
    assert!(s.otp.record("ses_w").await.expect("read").is_some());
    let activity = s
        .otp
        .merchant_customer_activity("acme", &customer())
        .await
        .expect("activity");
    assert_eq!(
        activity.wrong_within(Duration::from_secs(86_400), at(t0, 3)),
        2
    );
    assert_eq!(
        check(&s, "ses_w", code.code.expose(), at(t0, 4)).await,
        VerifyOutcome::Correct,
        "and the code itself survives"
    );
}

/// The code sealer the ledger hands out seals under the ledger's key: what one handle seals,
/// another on the same data (a restart, another instance) opens; a wrong session does not.
pub async fn a_sealed_code_opens_after_reopening(b: &dyn Backend) {
    let s = b.open().await;
    let code = normalize_attempt("482913").expect("a code");
    let sealed = s
        .otp
        .code_sealer()
        .seal("ses_sealed", &code, &mut rand::rngs::OsRng);
    let s = b.reopen(s).await;
    let sealer = s.otp.code_sealer();
    let opened = sealer.open("ses_sealed", &sealed).expect("opens");
    assert_eq!(opened.expose(), "482913", "{}", b.name());
    assert!(sealer.open("ses_other", &sealed).is_err(), "{}", b.name());
}
