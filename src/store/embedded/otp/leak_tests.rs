//! What must never leave the process: codes on disk in plaintext, codes or keys in logs.

use std::sync::{Arc, Mutex};

use super::test_support::*;
use super::*;
use crate::otp::policy::OtpPolicy;

#[test]
fn codes_never_reach_the_data_directory_in_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = OtpPolicy {
        code_length: 10,
        ..OtpPolicy::default()
    };
    let session = "session-plaintext-probe";
    let codes = {
        let db = sled::open(dir.path()).expect("db");
        let key = OtpKey::load_or_create(dir.path(), None).expect("key file in the data dir");
        let ledger = OtpLedger::open(&db, key).expect("open");
        let mut codes = Vec::new();
        let issued = issue(&ledger, session, &policy, IssueKind::First, t(0)).expect("granted");
        let (sending, generation) = ledger
            .code_for_sending(session)
            .expect("read")
            .expect("sealed");
        assert_eq!(sending, issued.code);
        db.flush().expect("flush while the sealed copy exists");
        ledger
            .confirm_sent(session, generation, t(1))
            .expect("accepted by WhatsApp");
        check(&ledger, session, &wrong_for(&issued.code), t(2));
        codes.push(issued.code);
        let resent = issue(&ledger, session, &policy, IssueKind::Resend, t(120)).expect("resent");
        db.flush().expect("flush");
        ledger
            .confirm_sent(session, resent.info.generation, t(121))
            .expect("accepted");
        assert_eq!(
            check(&ledger, session, resent.code.expose(), t(122)),
            VerifyOutcome::Correct
        );
        codes.push(resent.code);
        db.flush().expect("flush");
        codes
    };
    let mut files = vec![dir.path().to_path_buf()];
    let mut haystack = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
        } else {
            haystack.push(std::fs::read(&path).expect("file"));
        }
    }
    let found = |needle: &[u8]| {
        haystack
            .iter()
            .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    };
    // The search works: the session id is stored in the clear.
    assert!(
        found(session.as_bytes()),
        "control: session id must be found on disk"
    );
    for code in &codes {
        assert!(
            !found(code.expose().as_bytes()),
            "a code was found on disk in plaintext"
        );
    }
}

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

/// Issues, sends, checks, resends and withdraws a code, logging what a careless caller might.
/// Returns every code seen and the key file's contents.
fn ledger_run() -> (Vec<OtpCode>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("db");
    let key = OtpKey::load_or_create(dir.path(), None).expect("key");
    let key_file =
        std::fs::read_to_string(dir.path().join(crate::otp::key::KEY_FILE_NAME)).expect("key file");
    tracing::debug!(?key, "key loaded");
    let ledger = OtpLedger::open(&db, key).expect("open");
    let policy = OtpPolicy::default();
    let a = issue(&ledger, "s1", &policy, IssueKind::First, t(0)).expect("granted");
    tracing::debug!(issued = ?a, "issued");
    let (sending, generation) = ledger
        .code_for_sending("s1")
        .expect("read")
        .expect("sealed");
    ledger
        .confirm_sent("s1", generation, t(1))
        .expect("confirm");
    check(&ledger, "s1", &wrong_for(&a.code), t(2));
    let b = issue(&ledger, "s1", &policy, IssueKind::Resend, t(60)).expect("resent");
    check(&ledger, "s1", b.code.expose(), t(61));
    ledger.consume("s1", t(62), "done").expect("consume");
    (vec![a.code, b.code, sending], key_file.trim().to_owned())
}

#[test]
fn no_code_or_key_in_logs_at_any_level() {
    let logs = Captured::default();
    let writer = logs.clone();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    );
    // tracing caches per call site whether anyone listens. A parallel test thread registering
    // one of the ledger's call sites can, if descheduled mid-registration, leave it cached as
    // "nobody listens" after this subscriber appeared. So re-evaluate the cache and run again
    // until the ledger's own lines are captured; every run's output is checked for leaks.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut secrets = Vec::new();
    loop {
        let (codes, key_file) = tracing::dispatcher::with_default(&dispatch, || {
            tracing::callsite::rebuild_interest_cache();
            ledger_run()
        });
        secrets.extend(codes.iter().map(|c| c.expose().to_owned()));
        secrets.push(key_file);
        let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
        if text.contains("otp issued") && text.contains("otp checked") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ledger's log lines were never captured: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
    assert!(
        text.contains("…3210") && !text.contains("9876543210"),
        "customers are masked"
    );
    assert!(!text.contains(KEY_HEX));
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a code or key reached the logs"
        );
    }
}
