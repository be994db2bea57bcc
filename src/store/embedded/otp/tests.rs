//! Ledger behaviour against a real sled database: outcomes, resends, replays and audit.

use std::time::Duration;

use chrono::TimeDelta;

use super::test_support::*;
use super::*;
use crate::otp::policy::OtpPolicy;
use crate::store::embedded::audit::AuditLog;

#[test]
fn issue_verify_single_use_and_audit() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
    let policy = OtpPolicy::default();
    let issued = issue(&ledger, "s1", &policy, IssueKind::First, t(0)).expect("granted");
    assert_eq!(issued.code.len(), 6);
    assert_eq!(issued.info.generation, 1);
    assert_eq!(
        check(&ledger, "s1", &wrong_for(&issued.code), t(1)),
        VerifyOutcome::Wrong { attempts_left: 4 }
    );
    let spaced = format!(
        "{} {}",
        &issued.code.expose()[..3],
        &issued.code.expose()[3..]
    );
    assert_eq!(check(&ledger, "s1", &spaced, t(2)), VerifyOutcome::Correct);
    assert_eq!(
        check(&ledger, "s1", issued.code.expose(), t(3)),
        VerifyOutcome::Consumed
    );
    assert_eq!(
        check(&ledger, "nope", "123456", t(3)),
        VerifyOutcome::NotIssued
    );
    assert!(
        ledger.code_for_sending("s1").expect("read").is_none(),
        "a used code is not sent"
    );

    let audit = AuditLog::open(&db, crate::store::embedded::redo::Redo::none())
        .expect("audit")
        .for_session("s1")
        .expect("read");
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
    let json = serde_json::to_string(&audit).expect("json");
    assert!(!json.contains(issued.code.expose()));
}

#[test]
fn resend_replaces_code_and_keeps_the_newer_sealed_copy() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
    let policy = OtpPolicy::default();
    let first = issue(&ledger, "s1", &policy, IssueKind::First, t(0)).expect("granted");
    let (sending, generation) = ledger
        .code_for_sending("s1")
        .expect("read")
        .expect("sealed copy");
    assert_eq!((sending, generation), (first.code.clone(), 1));
    assert_eq!(
        check(&ledger, "s1", &wrong_for(&first.code), t(1)),
        VerifyOutcome::Wrong { attempts_left: 4 }
    );
    assert_eq!(
        issue(&ledger, "s1", &policy, IssueKind::Resend, t(30)).map(|i| i.info.generation),
        Err(IssueRefusal::Cooldown {
            retry_after: Duration::from_secs(30)
        })
    );
    let second = issue(&ledger, "s1", &policy, IssueKind::Resend, t(60)).expect("resent");
    assert_eq!((second.info.generation, second.info.attempts_left), (2, 4));
    assert_eq!(second.info.next_resend_at, t(60 + 120));
    // The late acceptance of the first message must not delete the second code's copy.
    ledger.confirm_sent("s1", 1, t(61)).expect("confirm");
    let (pending, generation) = ledger
        .code_for_sending("s1")
        .expect("read")
        .expect("still there");
    assert_eq!((pending, generation), (second.code.clone(), 2));
    ledger.confirm_sent("s1", 2, t(62)).expect("confirm");
    assert!(ledger.code_for_sending("s1").expect("read").is_none());
    if first.code != second.code {
        assert_eq!(
            check(&ledger, "s1", first.code.expose(), t(63)),
            VerifyOutcome::Wrong { attempts_left: 3 }
        );
    }
    assert_eq!(
        check(&ledger, "s1", second.code.expose(), t(64)),
        VerifyOutcome::Correct
    );
}

#[test]
fn consume_withdraws_the_code() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
    let issued =
        issue(&ledger, "s1", &OtpPolicy::default(), IssueKind::First, t(0)).expect("granted");
    ledger
        .consume("s1", t(1), "session cancelled")
        .expect("consume");
    ledger.consume("s1", t(2), "again").expect("idempotent");
    assert!(ledger.code_for_sending("s1").expect("read").is_none());
    assert_eq!(
        check(&ledger, "s1", issued.code.expose(), t(3)),
        VerifyOutcome::Consumed
    );
    let retired = AuditLog::open(&db, crate::store::embedded::redo::Redo::none())
        .expect("audit")
        .for_session("s1")
        .expect("read");
    assert_eq!(
        retired
            .iter()
            .filter(|e| e.kind() == AuditKind::Retire)
            .count(),
        1
    );
}

#[test]
fn reverse_codes_keep_no_sealed_copy() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
    let issued = issue(
        &ledger,
        "r1",
        &OtpPolicy::default(),
        IssueKind::Reverse,
        t(0),
    )
    .expect("granted");
    assert!(ledger.code_for_sending("r1").expect("read").is_none());
    assert_eq!(
        check(&ledger, "r1", issued.code.expose(), t(5)),
        VerifyOutcome::Correct
    );
}

#[test]
fn sweep_drops_only_stale_records() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
    let policy = OtpPolicy::default();
    issue(&ledger, "old", &policy, IssueKind::First, t(0)).expect("granted");
    let week = Duration::from_secs(7 * 86_400);
    let later = t(0) + TimeDelta::days(7);
    issue(&ledger, "new", &policy, IssueKind::First, later).expect("granted");
    // "old" expired at t(600), more than a week before `later + 601 s`; the customer is active.
    let removed = ledger
        .sweep(later + TimeDelta::seconds(601), week)
        .expect("sweep");
    assert_eq!(removed, 1);
    assert!(ledger.record("old").expect("read").is_none());
    assert!(ledger.code_for_sending("old").expect("read").is_none());
    assert!(ledger.record("new").expect("read").is_some());
    let idle = later + TimeDelta::days(2);
    assert_eq!(ledger.sweep(idle, week).expect("sweep"), 1, "idle customer");
    assert_eq!(
        ledger.customer_activity(&customer()).expect("read"),
        Default::default()
    );
}

#[test]
fn replayed_steps_issue_nothing_new() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
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
    let run = |kind, step: &str, now| ledger.issue(req, kind, step, now).expect("ledger works");
    let IssueOutcome::Issued(first) = run(IssueKind::First, "event-1", t(0)) else {
        panic!("first issue granted")
    };
    let IssueOutcome::AlreadyIssued(again) = run(IssueKind::First, "event-1", t(5)) else {
        panic!("replay recognised")
    };
    assert_eq!(again, first.info);
    let sends = |now| {
        ledger
            .customer_activity(&customer)
            .expect("read")
            .sends_within(Duration::from_secs(600), now)
    };
    assert_eq!(sends(t(5)), 1, "the replay was not counted");
    let IssueOutcome::Issued(second) = run(IssueKind::Resend, "event-2", t(60)) else {
        panic!("resend granted")
    };
    assert_eq!(second.info.generation, 2);
    assert!(matches!(
        run(IssueKind::Resend, "event-2", t(61)),
        IssueOutcome::AlreadyIssued(IssuedCode { generation: 2, .. })
    ));
    assert_eq!(sends(t(61)), 2);
    let issues = AuditLog::open(&db, crate::store::embedded::redo::Redo::none())
        .expect("audit")
        .for_session("s1")
        .expect("read");
    assert_eq!(issues.len(), 2, "one audit entry per real issue");
}

#[test]
fn transaction_codes_only_approve_the_shown_amount_and_payee() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
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
        .expect("ledger works")
    else {
        panic!("granted")
    };
    let tampered =
        OtpSubject::transaction("tx1", "transaction_authorization", "1200.00", "EUR", "ACME");
    let verify = |subject: &OtpSubject, now| {
        ledger
            .verify(subject, &issued.code, now)
            .expect("ledger works")
    };
    assert_eq!(
        verify(&tampered, t(1)),
        VerifyOutcome::Wrong { attempts_left: 2 }
    );
    assert_eq!(verify(&shown, t(2)), VerifyOutcome::Correct);
}

#[test]
fn limit_breaches_are_audited_as_such() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
    let policy = OtpPolicy {
        global_sends_per_hour: 1,
        ..OtpPolicy::default()
    };
    issue(&ledger, "s1", &policy, IssueKind::First, t(0)).expect("granted");
    assert!(matches!(
        issue(&ledger, "s2", &policy, IssueKind::First, t(1)),
        Err(IssueRefusal::GlobalCeiling { .. })
    ));
    assert!(matches!(
        issue(&ledger, "s1", &policy, IssueKind::Resend, t(2)),
        Err(IssueRefusal::Cooldown { .. })
    ));
    let log = AuditLog::open(&db, crate::store::embedded::redo::Redo::none()).expect("audit");
    let entry = |session: &str| {
        let entries = log.for_session(session).expect("read");
        let last = entries.last().expect("an entry");
        (
            last.kind(),
            last.outcome().to_owned(),
            last.reason().map(str::to_owned),
        )
    };
    assert_eq!(
        entry("s2"),
        (
            AuditKind::LimitBreach,
            "refused".into(),
            Some("global_ceiling".into())
        )
    );
    assert_eq!(
        entry("s1"),
        (AuditKind::Resend, "refused".into(), Some("cooldown".into()))
    );
}

/// A flow step replayed after a crash (its session write lost, the ledger's change kept) must
/// get its first verdict back: neither a second wrong attempt counted nor "already used" for a
/// right code.
#[test]
fn a_replayed_step_gets_its_verdict_again_without_spending_an_attempt() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
    let policy = OtpPolicy::default();
    let issued = issue(&ledger, "s1", &policy, IssueKind::First, t(0)).expect("granted");
    let wrong = crate::otp::normalize_attempt(&wrong_for(&issued.code)).expect("digits");
    let right = crate::otp::normalize_attempt(issued.code.expose()).expect("digits");
    let verify = |code: &OtpCode, step: &str, at| {
        ledger
            .verify_step(&subject("s1"), code, t(at), Some(step))
            .expect("ledger works")
    };
    for at in 1..=3 {
        assert_eq!(
            verify(&wrong, "s1:3", at),
            VerifyOutcome::Wrong { attempts_left: 4 }
        );
    }
    assert_eq!(
        ledger
            .customer_activity(&customer())
            .expect("read")
            .wrong_within(Duration::from_secs(86_400), t(3)),
        1
    );
    for at in 4..=6 {
        assert_eq!(verify(&right, "s1:4", at), VerifyOutcome::Correct);
    }
    // A later step is no replay: the code is used.
    assert_eq!(verify(&right, "s1:5", 7), VerifyOutcome::Consumed);
    let record = ledger.record("s1").expect("read").expect("record");
    assert_eq!(record.attempts_left(), 4);
}

#[test]
fn third_party_codes_charge_the_requester_and_stop_at_the_recipients_cap() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
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
            .expect("ledger works")
        else {
            panic!("a requester never sees the recipient's cap")
        };
        // A withheld code has no sealed copy: the outbox has nothing to send.
        let sendable = ledger.code_for_sending(&session).expect("read").is_some();
        assert_eq!(sendable, !code.info.withheld, "{session}");
        issued.push((session, subject, code));
    }
    let withheld: Vec<bool> = issued.iter().map(|(_, _, c)| c.info.withheld).collect();
    let cap = policy.third_party_sends_per_day as usize;
    assert!(
        withheld[..cap].iter().all(|w| !w) && withheld[cap],
        "{withheld:?}"
    );

    // Wrong guesses in the strangers' sessions count against the strangers only.
    let wrong = crate::otp::normalize_attempt("0000000").expect("code");
    for (_, subject, _) in &issued {
        for _ in 0..5 {
            ledger.verify(subject, &wrong, t(1)).expect("ledger works");
        }
    }
    let activity = |n: &CustomerNumber| ledger.customer_activity(n).expect("read");
    let day = Duration::from_secs(86_400);
    assert_eq!(activity(&alice).wrong_within(day, t(1)), 0);
    assert_eq!(activity(&alice).sends_within(day, t(1)), 0);
    assert_eq!(activity(&alice).third_party_sends_within(day, t(1)), cap);
    for stranger in &strangers {
        assert_eq!(activity(stranger).wrong_within(day, t(1)), 5);
        assert_eq!(activity(stranger).sends_within(day, t(1)), 1);
    }
    // Alice's own code is issued and sent as usual.
    let own = issue(&ledger, "own", &policy, IssueKind::First, t(2)).expect("granted");
    assert!(!own.info.withheld);
    assert!(ledger.code_for_sending("own").expect("read").is_some());
}
