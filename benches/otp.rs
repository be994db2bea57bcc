//! OTP costs: the pure keyed digest and its check, and issuing and verifying through the sled
//! ledger (one atomic transaction each, on a temporary on-disk database, without the flush the
//! runtime adds by group commit).
//!
//! Run: `cargo bench --bench otp`

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rand::rngs::OsRng;
use waotp::otp::{
    generate, CustomerNumber, IssueRequest, OtpKey, OtpPolicy, OtpSubject, VerifyOutcome,
};
use waotp::store::embedded::otp::OtpLedger;
use waotp::store::{IssueKind, IssueOutcome};

fn pure(c: &mut Criterion) {
    let key = OtpKey::generate(&mut OsRng);
    let subject = OtpSubject::new("ses_0123456789abcdef01234567", "signup");
    let bound = OtpSubject::new("ses_0123456789abcdef01234567", "transaction")
        .bind("amount", "125.00")
        .bind("currency", "EUR")
        .bind("payee", "ACME Ltd");
    let code = generate(6, &mut OsRng).expect("valid length");
    let digest = key.digest(&subject, &code);
    let bound_digest = key.digest(&bound, &code);
    assert!(key.verify(&subject, &code, &digest));

    let mut g = c.benchmark_group("otp");
    g.bench_function("generate_code", |b| b.iter(|| generate(6, &mut OsRng)));
    g.bench_function("digest", |b| b.iter(|| key.digest(&subject, &code)));
    g.bench_function("verify_digest", |b| {
        b.iter(|| key.verify(&subject, &code, &digest))
    });
    g.bench_function("verify_digest_bound_transaction", |b| {
        b.iter(|| key.verify(&bound, &code, &bound_digest))
    });
    g.finish();
}

/// A ledger on a temporary directory, and a policy whose service-wide ceiling does not stop a
/// long benchmark (each iteration is a new customer, so per-customer limits never apply).
struct Bench {
    _dir: tempfile::TempDir,
    ledger: OtpLedger,
    policy: OtpPolicy,
    n: std::cell::Cell<u64>,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open db");
        let ledger = OtpLedger::open(&db, OtpKey::generate(&mut OsRng)).expect("ledger");
        let policy = OtpPolicy {
            global_sends_per_hour: 1_000_000,
            ..OtpPolicy::default()
        };
        Bench {
            _dir: dir,
            ledger,
            policy,
            n: std::cell::Cell::new(0),
        }
    }

    /// Issues a first code for a new session and customer; returns the session and code.
    fn issue(&self) -> (OtpSubject, String, DateTime<Utc>) {
        let n = self.n.get() + 1;
        self.n.set(n);
        // One second per issue keeps the hourly ceiling's window moving, too.
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("in range")
            + Duration::seconds(n as i64);
        let subject = OtpSubject::new(format!("ses_{n:024}"), "signup");
        let customer =
            CustomerNumber::parse(&format!("+9198{:08}", n % 100_000_000)).expect("number");
        let req = IssueRequest {
            subject: &subject,
            flow: "signup_verification",
            customer: &customer,
            requester: &customer,
            merchant: "",
            decoy: false,
            policy: &self.policy,
        };
        match self
            .ledger
            .issue(req, IssueKind::First, &format!("step-{n}"), now)
            .expect("ledger works")
        {
            IssueOutcome::Issued(issued) => (subject, issued.code.expose().to_owned(), now),
            other => panic!("not issued: {other:?}"),
        }
    }
}

fn ledger(c: &mut Criterion) {
    let bench = Bench::new();
    let mut g = c.benchmark_group("otp_ledger");
    g.bench_function("issue", |b| b.iter(|| bench.issue()));
    g.bench_function("verify_correct", |b| {
        b.iter_batched(
            || bench.issue(),
            |(subject, code, now)| {
                let code = waotp::otp::normalize_attempt(&code).expect("digits");
                let outcome = bench
                    .ledger
                    .verify(&subject, &code, now)
                    .expect("ledger works");
                assert_eq!(outcome, VerifyOutcome::Correct);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, pure, ledger);
criterion_main!(benches);
