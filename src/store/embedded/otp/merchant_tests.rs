//! OTP limits per merchant: a customer's sends and wrong guesses at one merchant never count at
//! another; a merchant's own hourly ceiling stops its codes only; records of a store written
//! before merchants existed stay in force under the default merchant.

use rand::rngs::OsRng;

use super::test_support::{customer, key, subject, t, temp_db, wrong_for};
use super::{IssueKind, IssueOutcome, Issued, OtpLedger};
use crate::otp::normalize_attempt;
use crate::otp::policy::OtpPolicy;
use crate::otp::rules::{IssueRefusal, IssueRequest, VerifyOutcome};

fn issue_at(
    ledger: &OtpLedger,
    merchant: &str,
    session: &str,
    policy: &OtpPolicy,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Issued, IssueRefusal> {
    let subject = subject(session);
    let customer = customer();
    let req = IssueRequest {
        subject: &subject,
        flow: "signup_verification",
        customer: &customer,
        requester: &customer,
        merchant,
        decoy: false,
        policy,
    };
    match ledger
        .issue_with(
            req,
            IssueKind::First,
            &format!("{session}:0"),
            now,
            &mut OsRng,
        )
        .expect("ledger works")
    {
        IssueOutcome::Issued(issued) => Ok(issued),
        IssueOutcome::Refused(refusal) => Err(refusal),
        IssueOutcome::AlreadyIssued(info) => panic!("unexpected replay: {info:?}"),
    }
}

fn guess(ledger: &OtpLedger, session: &str, typed: &str, secs: i64) -> VerifyOutcome {
    let typed = normalize_attempt(typed).expect("digits");
    ledger
        .verify(&subject(session), &typed, t(secs))
        .expect("ledger works")
}

/// Makes `customer()` type `policy.wrong_attempts_per_day` wrong codes at `merchant`.
fn block_at(ledger: &OtpLedger, merchant: &str, policy: &OtpPolicy) {
    let mut wrong = 0;
    let mut session = 0;
    while wrong < policy.wrong_attempts_per_day {
        let id = format!("{merchant}-s{session}");
        let issued = issue_at(ledger, merchant, &id, policy, t(i64::from(wrong))).expect("issued");
        for _ in 0..policy.max_attempts {
            if wrong == policy.wrong_attempts_per_day {
                break;
            }
            guess(ledger, &id, &wrong_for(&issued.code), i64::from(wrong));
            wrong += 1;
        }
        session += 1;
    }
}

#[test]
fn a_customer_blocked_at_one_merchant_still_gets_codes_at_another() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
    let policy = OtpPolicy {
        sends_per_10_min: 100,
        sends_per_day: 100,
        ..OtpPolicy::default()
    };
    block_at(&ledger, "a", &policy);
    assert!(
        matches!(
            issue_at(&ledger, "a", "a-next", &policy, t(60)),
            Err(IssueRefusal::CustomerBlocked { .. })
        ),
        "the wrong guesses block the customer at merchant a"
    );
    let at_b = issue_at(&ledger, "b", "b-1", &policy, t(60)).expect("merchant b is not affected");
    assert_eq!(
        guess(&ledger, "b-1", at_b.code.expose(), 61),
        VerifyOutcome::Correct
    );
    let a = ledger
        .merchant_customer_activity("a", &customer())
        .expect("read");
    let b = ledger
        .merchant_customer_activity("b", &customer())
        .expect("read");
    assert_ne!(a, b, "each merchant keeps its own record of the customer");
}

#[test]
fn a_merchants_hourly_ceiling_stops_its_codes_only_and_the_service_ceiling_stays_global() {
    let db = temp_db();
    let ledger = OtpLedger::open(&db, key()).expect("open");
    let capped = OtpPolicy {
        merchant_sends_per_hour: Some(1),
        global_sends_per_hour: 3,
        ..OtpPolicy::default()
    };
    let free = OtpPolicy {
        global_sends_per_hour: 3,
        ..OtpPolicy::default()
    };
    issue_at(&ledger, "a", "a-1", &capped, t(0)).expect("first code of a");
    assert!(matches!(
        issue_at(&ledger, "a", "a-2", &capped, t(1)),
        Err(IssueRefusal::GlobalCeiling { .. })
    ));
    issue_at(&ledger, "b", "b-1", &free, t(2)).expect("b has no ceiling of its own");
    issue_at(&ledger, "c", "c-1", &free, t(3)).expect("third code of the hour");
    assert!(
        matches!(
            issue_at(&ledger, "c", "c-2", &free, t(4)),
            Err(IssueRefusal::GlobalCeiling { .. })
        ),
        "the service-wide ceiling counts every merchant's codes"
    );
}

#[test]
fn limits_of_a_store_from_before_merchants_stay_in_force_under_the_default_merchant() {
    let db = temp_db();
    let policy = OtpPolicy {
        sends_per_10_min: 100,
        sends_per_day: 100,
        ..OtpPolicy::default()
    };
    {
        let ledger = OtpLedger::open(&db, key()).expect("open");
        block_at(&ledger, "", &policy);
    }
    // Rewrite the customer's record the way an older version kept it: under the bare number.
    let customers = db.open_tree(super::CUSTOMERS_TREE).expect("tree");
    let (scoped, value) = customers.iter().next().expect("one record").expect("read");
    customers.remove(&scoped).expect("remove");
    customers
        .insert(customer().as_str().as_bytes(), value)
        .expect("insert");

    let ledger = OtpLedger::open(&db, key()).expect("reopen");
    assert_eq!(ledger.adopt_default_merchant("shop").expect("moved"), 1);
    assert!(matches!(
        issue_at(&ledger, "shop", "again", &policy, t(60)),
        Err(IssueRefusal::CustomerBlocked { .. })
    ));
    assert!(
        matches!(
            issue_at(&ledger, "", "again-default", &policy, t(60)),
            Err(IssueRefusal::CustomerBlocked { .. })
        ),
        "requests naming no merchant are the default merchant's"
    );
    assert_eq!(
        ledger.adopt_default_merchant("shop").expect("again"),
        0,
        "moved once"
    );
}
