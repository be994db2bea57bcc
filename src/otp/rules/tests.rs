//! Unit and property tests of the pure OTP rules.

use super::*;
use crate::otp::code::normalize_attempt;
use crate::otp::key::OtpKey;
use chrono::TimeDelta;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("in range")
}

struct World {
    key: OtpKey,
    policy: OtpPolicy,
    customer: CustomerNumber,
    activity: CustomerActivity,
    global: GlobalSends,
}

impl World {
    fn new(policy: OtpPolicy) -> Self {
        Self {
            key: OtpKey::generate(&mut StdRng::seed_from_u64(9)),
            policy,
            customer: CustomerNumber::parse("+919876543210").expect("valid"),
            activity: CustomerActivity::default(),
            global: GlobalSends::default(),
        }
    }

    fn subject(session: &str) -> OtpSubject {
        OtpSubject::new(session, "signup")
    }

    /// Issues `code` for `session`, resending when `prev` is given; applies the grant.
    fn issue(
        &mut self,
        session: &str,
        prev: Option<&OtpRecord>,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<OtpRecord, IssueRefusal> {
        let subject = Self::subject(session);
        let digest = self
            .key
            .digest(&subject, &normalize_attempt(code).expect("code"));
        let req = IssueRequest {
            subject: &subject,
            flow: "signup_verification",
            customer: &self.customer,
            requester: &self.customer,
            merchant: "",
            decoy: false,
            policy: &self.policy,
        };
        let grant = decide_issue(
            req,
            prev,
            &self.activity,
            &self.activity,
            &self.global,
            digest,
            now,
        )?;
        self.activity = grant.activity;
        self.global = grant.global;
        Ok(grant.record)
    }

    fn verify(
        &mut self,
        record: &mut OtpRecord,
        attempt: &str,
        now: DateTime<Utc>,
    ) -> VerifyOutcome {
        let subject = Self::subject(record.session_id());
        let attempt = normalize_attempt(attempt).expect("code");
        let key = &self.key;
        let d = decide_verify(Some(record), &self.activity, now, |stored| {
            key.verify(&subject, &attempt, stored)
        });
        if let Some(r) = d.record {
            *record = r;
        }
        if let Some(a) = d.activity {
            self.activity = a;
        }
        d.outcome
    }
}

#[test]
fn fresh_issue_sets_lifetime_cooldown_and_counters() {
    let mut w = World::new(OtpPolicy::default());
    let r = w.issue("s1", None, "123456", t(0)).expect("granted");
    assert_eq!(r.expires_at(), t(600));
    assert_eq!(r.next_resend_at(), t(60));
    assert_eq!(r.attempts_left(), 5);
    assert_eq!(r.status(), CodeStatus::Active);
    assert_eq!(w.activity.sends_within(DAY_WINDOW, t(0)), 1);
    assert_eq!(w.global.count_at(t(0)), 1);
}

#[test]
fn wrong_attempts_count_down_then_lock() {
    let mut w = World::new(OtpPolicy::transaction());
    let mut r = w.issue("s1", None, "123456", t(0)).expect("granted");
    assert_eq!(
        w.verify(&mut r, "000000", t(1)),
        VerifyOutcome::Wrong { attempts_left: 2 }
    );
    assert_eq!(
        w.verify(&mut r, "000000", t(2)),
        VerifyOutcome::Wrong { attempts_left: 1 }
    );
    let last = w.verify(&mut r, "000000", t(3));
    assert_eq!(last, VerifyOutcome::Wrong { attempts_left: 0 });
    assert!(last.locks_session());
    // Locked: even the right code is refused, and nothing more is counted.
    assert_eq!(w.verify(&mut r, "123456", t(4)), VerifyOutcome::Locked);
    assert_eq!(w.activity.wrong_within(DAY_WINDOW, t(4)), 3);
}

#[test]
fn correct_code_is_single_use_and_spaces_are_fine() {
    let mut w = World::new(OtpPolicy::default());
    let mut r = w.issue("s1", None, "123456", t(0)).expect("granted");
    assert_eq!(w.verify(&mut r, "123 456", t(1)), VerifyOutcome::Correct);
    assert_eq!(w.verify(&mut r, "123456", t(2)), VerifyOutcome::Consumed);
}

#[test]
fn expired_code_is_refused_uncounted() {
    let mut w = World::new(OtpPolicy::default());
    let mut r = w.issue("s1", None, "123456", t(0)).expect("granted");
    assert_eq!(w.verify(&mut r, "123456", t(600)), VerifyOutcome::Expired);
    assert_eq!(r.attempts_left(), 5);
    assert_eq!(w.activity.wrong_within(DAY_WINDOW, t(600)), 0);
}

#[test]
fn retired_code_never_verifies() {
    let mut w = World::new(OtpPolicy::default());
    let mut r = w
        .issue("s1", None, "123456", t(0))
        .expect("granted")
        .retired();
    assert_eq!(w.verify(&mut r, "123456", t(1)), VerifyOutcome::Consumed);
}

#[test]
fn resend_replaces_code_carries_attempts_and_doubles_cooldown() {
    let mut w = World::new(OtpPolicy::default());
    let mut r = w.issue("s1", None, "111111", t(0)).expect("granted");
    assert_eq!(
        w.verify(&mut r, "000000", t(1)),
        VerifyOutcome::Wrong { attempts_left: 4 }
    );
    assert_eq!(
        w.issue("s1", Some(&r), "222222", t(59)),
        Err(IssueRefusal::Cooldown {
            retry_after: Duration::from_secs(1)
        })
    );
    let mut r2 = w.issue("s1", Some(&r), "222222", t(60)).expect("resent");
    assert_eq!(r2.attempts_left(), 4, "attempt counter carries over");
    assert_eq!(r2.next_resend_at(), t(60 + 120), "cooldown doubled");
    assert_eq!(r2.expires_at(), t(60 + 600), "new code, new lifetime");
    let unused = r2.clone();
    assert_eq!(
        w.verify(&mut r2.clone(), "111111", t(61)),
        VerifyOutcome::Wrong { attempts_left: 3 }
    );
    assert_eq!(w.verify(&mut r2, "222222", t(61)), VerifyOutcome::Correct);
    let r3 = w
        .issue("s1", Some(&unused), "333333", t(180))
        .expect("resent again");
    assert_eq!(r3.next_resend_at(), t(180 + 240));
}

#[test]
fn resend_is_refused_for_missing_locked_or_used_codes() {
    let mut w = World::new(OtpPolicy {
        max_attempts: 1,
        ..OtpPolicy::default()
    });
    let subject = World::subject("s1");
    let digest = w
        .key
        .digest(&subject, &normalize_attempt("1234").expect("code"));
    let req = IssueRequest {
        subject: &subject,
        flow: "f",
        customer: &w.customer,
        requester: &w.customer,
        merchant: "",
        decoy: false,
        policy: &w.policy,
    };
    let none = decide_resend(req, None, &w.activity, &w.activity, &w.global, digest, t(0));
    assert_eq!(none, Err(IssueRefusal::NotIssued));
    let mut r = w.issue("s1", None, "123456", t(0)).expect("granted");
    w.verify(&mut r, "000000", t(1));
    assert_eq!(
        w.issue("s1", Some(&r), "222222", t(999)),
        Err(IssueRefusal::Locked)
    );
    let mut used = w.issue("s2", None, "123456", t(0)).expect("granted");
    w.verify(&mut used, "123456", t(1));
    let again = w
        .issue("s2", Some(&used), "222222", t(999))
        .expect("a used code allows a new step");
    assert_eq!(again.attempts_left(), 1);
}

#[test]
fn customer_send_limits_apply_across_sessions() {
    let policy = OtpPolicy {
        resend_cooldown: Duration::from_secs(10),
        ..OtpPolicy::default()
    };
    let mut w = World::new(policy);
    for i in 0..5 {
        w.issue(&format!("s{i}"), None, "123456", t(i * 10))
            .expect("within limit");
    }
    assert_eq!(
        w.issue("s5", None, "123456", t(100)),
        Err(IssueRefusal::CustomerRateLimited {
            retry_after: Duration::from_secs(500)
        })
    );
    for i in 5..10 {
        let at = t(600 + (i - 5) * 10);
        w.issue(&format!("s{i}"), None, "123456", at)
            .expect("next window");
    }
    let day_full = w.issue("s10", None, "123456", t(1300));
    assert!(matches!(
        day_full,
        Err(IssueRefusal::CustomerRateLimited { .. })
    ));
    w.issue("s10", None, "123456", t(86_400))
        .expect("a day later");
}

#[test]
fn wrong_attempts_across_sessions_block_the_customer_for_a_day() {
    let mut w = World::new(OtpPolicy::default());
    let mut records: Vec<_> = (0..3)
        .map(|i| {
            w.issue(&format!("s{i}"), None, "123456", t(i))
                .expect("granted")
        })
        .collect();
    let mut wrong = 0;
    for r in &mut records {
        for _ in 0..4 {
            if matches!(
                w.verify(r, "000000", t(10 + wrong)),
                VerifyOutcome::Wrong { .. }
            ) {
                wrong += 1;
            }
        }
    }
    assert_eq!(wrong, 10, "the 11th and 12th wrong attempts are refused");
    let blocked = w.verify(&mut records[2], "123456", t(100));
    assert!(
        matches!(blocked, VerifyOutcome::CustomerBlocked { .. }),
        "{blocked:?}"
    );
    let refused = w.issue("s9", None, "123456", t(100));
    assert!(matches!(refused, Err(IssueRefusal::CustomerBlocked { .. })));
    w.issue("s9", None, "123456", t(86_410 + 10))
        .expect("window passed");
}

#[test]
fn global_ceiling_and_country_allow_list() {
    let policy = OtpPolicy {
        global_sends_per_hour: 1,
        allowed_prefixes: vec!["+91".into()],
        ..OtpPolicy::default()
    };
    let mut w = World::new(policy);
    w.issue("s1", None, "123456", t(0)).expect("first");
    w.customer = CustomerNumber::parse("+919000000001").expect("valid");
    let ceiling = w.issue("s2", None, "123456", t(1));
    assert!(matches!(ceiling, Err(IssueRefusal::GlobalCeiling { .. })));
    w.customer = CustomerNumber::parse("+447700900123").expect("valid");
    assert_eq!(
        w.issue("s3", None, "123456", t(1)),
        Err(IssueRefusal::CountryNotAllowed)
    );
}

#[test]
fn cooldown_doubles_and_is_capped() {
    let base = Duration::from_secs(60);
    assert_eq!(resend_cooldown(base, 1), base);
    assert_eq!(resend_cooldown(base, 2), base * 2);
    assert_eq!(resend_cooldown(base, 4), base * 8);
    assert_eq!(resend_cooldown(base, 40), MAX_RESEND_COOLDOWN);
}

proptest! {
    /// Whatever mix of guesses arrives, at most `max_attempts` wrong ones are counted, a locked
    /// or used code never verifies, and the right code verifies only while attempts remain.
    #[test]
    fn attempts_never_exceed_the_limit(
        max in 1u8..=10,
        guesses in prop::collection::vec(any::<bool>(), 0..30),
    ) {
        let mut w = World::new(OtpPolicy { max_attempts: max, wrong_attempts_per_day: 1000, ..OtpPolicy::default() });
        let mut r = w.issue("s", None, "123456", t(0)).expect("granted");
        let (mut wrong, mut correct) = (0u8, 0);
        for (i, right) in guesses.iter().enumerate() {
            let out = w.verify(&mut r, if *right { "123456" } else { "654321" }, t(1 + i as i64));
            match out {
                VerifyOutcome::Wrong { attempts_left } => {
                    wrong += 1;
                    prop_assert_eq!(attempts_left, max - wrong);
                }
                VerifyOutcome::Correct => correct += 1,
                VerifyOutcome::Locked => prop_assert_eq!(wrong, max),
                VerifyOutcome::Consumed => prop_assert_eq!(correct, 1),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert!(wrong <= max);
        prop_assert!(correct <= 1);
    }

    /// However issues are timed, no 10-minute span holds more than 5 sends and no day more
    /// than 10.
    #[test]
    fn customer_send_limits_hold_for_any_timing(gaps in prop::collection::vec(0i64..900, 1..60)) {
        let mut w = World::new(OtpPolicy::default());
        let mut now = t(0);
        let mut granted = Vec::new();
        for (i, gap) in gaps.iter().enumerate() {
            now += TimeDelta::seconds(*gap);
            if w.issue(&format!("s{i}"), None, "123456", now).is_ok() {
                granted.push(now);
            }
        }
        for (i, start) in granted.iter().enumerate() {
            let in_span = |secs: i64| granted[i..].iter().take_while(|g| **g < *start + TimeDelta::seconds(secs)).count();
            prop_assert!(in_span(600) <= 5);
            prop_assert!(in_span(86_400) <= 10);
        }
    }
}

/// Two numbers' counters: Mallory's chat asks for codes, some of them sent to Alice.
struct Pair {
    key: OtpKey,
    policy: OtpPolicy,
    alice: CustomerNumber,
    mallory: CustomerNumber,
    activity: std::collections::HashMap<CustomerNumber, CustomerActivity>,
    global: GlobalSends,
}

impl Pair {
    fn new() -> Self {
        Self {
            key: OtpKey::generate(&mut StdRng::seed_from_u64(11)),
            policy: OtpPolicy::default(),
            alice: CustomerNumber::parse("+447700900123").expect("valid"),
            mallory: CustomerNumber::parse("+14155550100").expect("valid"),
            activity: Default::default(),
            global: GlobalSends::default(),
        }
    }

    fn of(&self, n: &CustomerNumber) -> CustomerActivity {
        self.activity.get(n).cloned().unwrap_or_default()
    }

    /// Issues a code sent to `to` at `from`'s request (`decoy`: sent nowhere).
    fn issue(
        &mut self,
        session: &str,
        to: &CustomerNumber,
        from: &CustomerNumber,
        decoy: bool,
        now: DateTime<Utc>,
    ) -> Result<(OtpRecord, bool), IssueRefusal> {
        let subject = World::subject(session);
        let digest = self
            .key
            .digest(&subject, &normalize_attempt("123456").expect("code"));
        let req = IssueRequest {
            subject: &subject,
            flow: "account_recovery",
            customer: to,
            requester: from,
            merchant: "",
            decoy,
            policy: &self.policy,
        };
        let (mine, theirs) = (self.of(from), self.of(to));
        let g = decide_issue(req, None, &mine, &theirs, &self.global, digest, now)?;
        self.activity.insert(from.clone(), g.activity);
        if let Some(theirs) = g.target_activity {
            self.activity.insert(to.clone(), theirs);
        }
        self.global = g.global;
        Ok((g.record, g.withheld))
    }

    fn guess_wrong(&mut self, record: &mut OtpRecord, now: DateTime<Utc>) -> VerifyOutcome {
        let activity = self.of(record.requester());
        let d = decide_verify(Some(record), &activity, now, |_| false);
        if let Some(a) = d.activity {
            self.activity.insert(record.requester().clone(), a);
        }
        if let Some(r) = d.record {
            *record = r;
        }
        d.outcome
    }
}

#[test]
fn wrong_guesses_in_a_strangers_chat_never_lock_the_codes_owner_out() {
    let mut p = Pair::new();
    let (alice, mallory) = (p.alice.clone(), p.mallory.clone());
    // Two recoveries of Alice's account from Mallory's chat, five wrong guesses each.
    for (i, session) in ["r1", "r2"].into_iter().enumerate() {
        let at = t(i as i64 * 60);
        let (mut r, withheld) = p.issue(session, &alice, &mallory, false, at).expect("sent");
        assert!(!withheld);
        assert_eq!(r.requester(), &mallory);
        for _ in 0..5 {
            p.guess_wrong(&mut r, at);
        }
    }
    assert_eq!(p.of(&mallory).wrong_within(DAY_WINDOW, t(120)), 10);
    assert_eq!(p.of(&alice).wrong_within(DAY_WINDOW, t(120)), 0);
    // Alice's own code is issued, and the stranger is the one blocked.
    let (r, _) = p
        .issue("own", &alice, &alice, false, t(120))
        .expect("Alice's own code");
    assert_eq!(r.requester(), &alice);
    assert!(matches!(
        p.issue("r3", &alice, &mallory, false, t(120)),
        Err(IssueRefusal::CustomerBlocked { .. })
    ));
    // Codes others asked for did not use up Alice's own send limits.
    assert_eq!(p.of(&alice).sends_within(DAY_WINDOW, t(120)), 1);
    assert_eq!(p.of(&alice).third_party_sends_within(DAY_WINDOW, t(120)), 2);
}

#[test]
fn codes_others_trigger_are_capped_per_target_and_withheld_silently() {
    let mut p = Pair::new();
    let alice = p.alice.clone();
    let cap = p.policy.third_party_sends_per_day;
    let mut sent = 0;
    for i in 0..cap + 3 {
        let requester = CustomerNumber::parse(&format!("+1415555{i:04}")).expect("valid");
        let (_, withheld) = p
            .issue(&format!("s{i}"), &alice, &requester, false, t(i64::from(i)))
            .expect("granted: the requester sees no refusal");
        sent += u32::from(!withheld);
        // Each requester is charged the same either way.
        assert_eq!(p.of(&requester).sends_within(DAY_WINDOW, t(100)), 1);
    }
    assert_eq!(sent, cap);
    // Alice's own codes are not counted against, nor stopped by, the cap.
    let (_, withheld) = p.issue("own", &alice, &alice, false, t(100)).expect("own");
    assert!(!withheld);
    // A day later the cap frees up.
    let later = t(86_400 + 100);
    let (_, withheld) = p
        .issue("late", &alice, &p.mallory.clone(), false, later)
        .expect("ok");
    assert!(!withheld);
}

proptest! {
    /// Whatever the requester's history, a decoy and a third party's real code get the same
    /// answer and leave the requester's counters and the global count in the same state.
    #[test]
    fn a_decoy_is_charged_to_the_requester_exactly_like_a_real_code(
        sends in proptest::collection::vec(0i64..86_400, 0..12),
        wrong in proptest::collection::vec(0i64..86_400, 0..12),
        recipient_had in 0u32..8,
        guesses in 0usize..7,
    ) {
        let mut outcomes = Vec::new();
        for decoy in [false, true] {
            let mut p = Pair::new();
            let (alice, mallory) = (p.alice.clone(), p.mallory.clone());
            let mut history = CustomerActivity::default();
            for ago in &sends {
                history.record_send(t(-ago));
            }
            for ago in &wrong {
                history.record_wrong_attempt(t(-ago));
            }
            p.activity.insert(mallory.clone(), history);
            // What the recipient went through must not matter to the requester either.
            let mut theirs = CustomerActivity::default();
            for _ in 0..recipient_had {
                theirs.record_third_party_send(t(-60));
                theirs.record_wrong_attempt(t(-60));
            }
            p.activity.insert(alice.clone(), theirs);
            let to = if decoy { mallory.clone() } else { alice.clone() };
            let issued = p.issue("s", &to, &mallory, decoy, t(0));
            let mut verdicts = Vec::new();
            if let Ok((mut record, _)) = issued.clone() {
                for i in 0..guesses {
                    verdicts.push(p.guess_wrong(&mut record, t(1 + i as i64)));
                }
            }
            let seen = issued.map(|(r, _)| (r.attempts_left(), r.expires_at(), r.next_resend_at()));
            outcomes.push((seen, verdicts, p.of(&mallory), p.global.count_at(t(0))));
        }
        prop_assert_eq!(&outcomes[0], &outcomes[1]);
    }
}

#[test]
fn a_third_party_code_to_a_number_outside_the_allowed_countries_is_withheld() {
    let mut p = Pair::new();
    p.policy.allowed_prefixes = vec!["+1".into()];
    let (alice, mallory) = (p.alice.clone(), p.mallory.clone());
    let (_, withheld) = p
        .issue("s", &alice, &mallory, false, t(0))
        .expect("granted");
    assert!(withheld);
    assert_eq!(
        p.issue("own", &alice, &alice, false, t(0)),
        Err(IssueRefusal::CountryNotAllowed)
    );
}
