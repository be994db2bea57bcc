//! The ledger under concurrency and restarts: attempts are counted atomically, and every
//! counter, cooldown and lock lives on disk.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use chrono::TimeDelta;

use super::test_support::*;
use super::*;
use crate::otp::policy::OtpPolicy;

#[test]
fn concurrent_wrong_guesses_take_exactly_the_attempts_left() {
    const THREADS: usize = 16;
    let db = temp_db();
    let ledger = Arc::new(OtpLedger::open(&db, key()).expect("open"));
    let policy = OtpPolicy {
        max_attempts: 5,
        wrong_attempts_per_day: 1000,
        ..OtpPolicy::default()
    };
    let issued = issue(&ledger, "s1", &policy, IssueKind::First, t(0)).expect("granted");
    let wrong = wrong_for(&issued.code);
    for _ in 0..2 {
        check(&ledger, "s1", &wrong, t(1));
    }
    let barrier = Arc::new(Barrier::new(THREADS));
    let outcomes: Vec<VerifyOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (ledger, barrier, wrong) =
                    (Arc::clone(&ledger), Arc::clone(&barrier), wrong.clone());
                scope.spawn(move || {
                    barrier.wait();
                    check(&ledger, "s1", &wrong, t(2))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let counted: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, VerifyOutcome::Wrong { .. }))
        .collect();
    let mut left: Vec<_> = counted
        .iter()
        .map(|o| match o {
            VerifyOutcome::Wrong { attempts_left } => *attempts_left,
            _ => 99,
        })
        .collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [0, 1, 2],
        "exactly the 3 remaining attempts are counted, each once"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == VerifyOutcome::Locked)
            .count(),
        THREADS - 3
    );
    assert_eq!(
        ledger
            .customer_activity(&customer())
            .expect("read")
            .wrong_within(Duration::from_secs(86_400), t(3)),
        5
    );
    assert_eq!(
        check(&ledger, "s1", issued.code.expose(), t(3)),
        VerifyOutcome::Locked
    );
}

#[test]
fn counters_cooldowns_and_locks_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = OtpPolicy {
        max_attempts: 3,
        wrong_attempts_per_day: 6,
        ..OtpPolicy::default()
    };
    let reopen = || {
        let db = reopen_db(dir.path());
        let ledger = OtpLedger::open(&db, key()).expect("open");
        (db, ledger)
    };
    let (s1_code, s3_code) = {
        let (db, ledger) = reopen();
        let s1 = issue(&ledger, "s1", &policy, IssueKind::First, t(0)).expect("granted");
        check(&ledger, "s1", &wrong_for(&s1.code), t(1));
        let s2 = issue(&ledger, "s2", &policy, IssueKind::First, t(2)).expect("granted");
        for i in 0..3 {
            check(&ledger, "s2", &wrong_for(&s2.code), t(3 + i));
        }
        let s3 = issue(&ledger, "s3", &policy, IssueKind::First, t(10)).expect("granted");
        db.flush().expect("flush");
        (s1.code, s3.code)
    };
    let activity = {
        let (db, ledger) = reopen();
        // Cooldown: s1's first resend is still 60 s after its issue.
        assert_eq!(
            issue(&ledger, "s1", &policy, IssueKind::Resend, t(30)).map(|i| i.info.generation),
            Err(IssueRefusal::Cooldown {
                retry_after: Duration::from_secs(30)
            })
        );
        // Lock: s2 spent its 3 attempts before the restart.
        assert_eq!(check(&ledger, "s2", "000000", t(20)), VerifyOutcome::Locked);
        // Per-code attempts: s1 had 2 left.
        assert_eq!(
            check(&ledger, "s1", &wrong_for(&s1_code), t(21)),
            VerifyOutcome::Wrong { attempts_left: 1 }
        );
        // Per-customer sends: 3 of 5 per 10 minutes were used before the restart.
        issue(&ledger, "s4", &policy, IssueKind::First, t(22)).expect("4th");
        issue(&ledger, "s5", &policy, IssueKind::First, t(23)).expect("5th");
        assert!(matches!(
            issue(&ledger, "s6", &policy, IssueKind::First, t(24)),
            Err(IssueRefusal::CustomerRateLimited { .. })
        ));
        // Customer wrong attempts: the 6th (across sessions s1, s2, s3) blocks the customer.
        assert_eq!(
            check(&ledger, "s3", &wrong_for(&s3_code), t(25)),
            VerifyOutcome::Wrong { attempts_left: 2 }
        );
        db.flush().expect("flush");
        ledger.customer_activity(&customer()).expect("read")
    };
    let (_db, ledger) = reopen();
    assert_eq!(
        ledger.customer_activity(&customer()).expect("read"),
        activity
    );
    assert!(matches!(
        check(&ledger, "s3", s3_code.expose(), t(40)),
        VerifyOutcome::CustomerBlocked { .. }
    ));
    assert!(matches!(
        issue(&ledger, "s7", &policy, IssueKind::First, t(40)),
        Err(IssueRefusal::CustomerBlocked { .. })
    ));
    let late = t(30) + TimeDelta::days(1);
    assert!(
        issue(&ledger, "s7", &policy, IssueKind::First, late).is_ok(),
        "the windows pass"
    );
}
