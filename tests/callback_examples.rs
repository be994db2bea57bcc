//! The signature verifiers merchants copy from docs/examples/ (Python, Node) and examples/
//! (Rust), run against calls made by waotp's own merchant client over HTTP: a genuine call is
//! accepted, a tampered body and a call signed more than five minutes ago are refused.
//!
//! Python 3 is required; Node is used when `node` is on the PATH and skipped with a notice
//! otherwise.

mod support;

#[path = "../examples/verify_callback.rs"]
#[allow(dead_code)]
mod verify_callback;

use chrono::{TimeDelta, Utc};
use secrecy::SecretString;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::http_fake::{Answer, HttpFake, Recorded};
use waotp::merchant::MerchantClient;

const SECRET: &str = "whsec-examples-0123456789";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/examples")
        .join(name)
}

/// A real callback and a real hook call, as the merchant's server received them: one signed
/// now and one signed six minutes ago of each.
async fn received_calls() -> (Vec<Recorded>, Vec<Recorded>) {
    let merchant = HttpFake::start(|_| Answer::json(200, json!({}))).await;
    let client = MerchantClient::new(Some(SecretString::from(SECRET)), Duration::from_secs(5))
        .expect("client builds");
    // Non-ASCII on purpose: the verifiers must work on the raw bytes.
    let body = json!({"id": "evt_1", "type": "session.completed",
                      "session": {"id": "ses_1", "vars": {"name": "Zoë — 東京"}}})
    .to_string();
    let hook = json!({"session_id": "ses_1", "hook": "lookup_account",
                      "vars": {"account": "zoë@example.com"}});
    let mut fresh = Vec::new();
    let mut stale = Vec::new();
    for (at, out) in [
        (Utc::now(), &mut fresh),
        (Utc::now() - TimeDelta::minutes(6), &mut stale),
    ] {
        client
            .deliver_callback(&merchant.url("/callbacks"), "evt_1", body.as_bytes(), at)
            .await
            .expect("delivered");
        out.push(merchant.last_request());
        client
            .call_hook(&merchant.url("/hooks/lookup_account"), &hook, at)
            .await
            .expect("answered");
        out.push(merchant.last_request());
    }
    (fresh, stale)
}

fn tampered(r: &Recorded) -> Recorded {
    let mut t = r.clone();
    let last = t.body.len() - 2;
    t.body[last] ^= 0x01;
    t
}

fn signature(r: &Recorded) -> &str {
    r.header("x-waotp-signature").expect("signed")
}

/// Runs a verifier script the way its header comment says; true when it accepts the call.
fn script_accepts(interpreter: &str, script: &Path, r: &Recorded) -> bool {
    let mut child = Command::new(interpreter)
        .arg(script)
        .arg(signature(r))
        .env("WAOTP_CALLBACK_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&r.body)
        .expect("body written");
    let out = child.wait_with_output().expect("verifier ran");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!(
            "{interpreter} {} failed ({other:?}): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn check_script(interpreter: &str, script: &Path, fresh: &[Recorded], stale: &[Recorded]) {
    for r in fresh {
        assert!(
            script_accepts(interpreter, script, r),
            "{interpreter}: genuine {}",
            r.path
        );
        assert!(
            !script_accepts(interpreter, script, &tampered(r)),
            "{interpreter}: tampered {}",
            r.path
        );
    }
    for r in stale {
        assert!(
            !script_accepts(interpreter, script, r),
            "{interpreter}: stale {}",
            r.path
        );
    }
}

#[tokio::test]
async fn the_python_verifier_accepts_genuine_calls_only() {
    let (fresh, stale) = received_calls().await;
    check_script("python3", &example("verify_callback.py"), &fresh, &stale);
}

#[tokio::test]
async fn the_node_verifier_accepts_genuine_calls_only() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!(
            "node not found: the Node verifier (docs/examples/verify_callback.js) is not run"
        );
        return;
    }
    let (fresh, stale) = received_calls().await;
    check_script("node", &example("verify_callback.js"), &fresh, &stale);
}

#[tokio::test]
async fn the_rust_verifier_accepts_genuine_calls_only() {
    use verify_callback::{verify, Refused};
    let (fresh, stale) = received_calls().await;
    let at = |r: &Recorded| r.received_at as u64;
    for r in &fresh {
        assert_eq!(
            verify(SECRET.as_bytes(), signature(r), &r.body, at(r)),
            Ok(())
        );
        let t = tampered(r);
        assert_eq!(
            verify(SECRET.as_bytes(), signature(&t), &t.body, at(r)),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(b"another secret", signature(r), &r.body, at(r)),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(SECRET.as_bytes(), "sha256=00", &r.body, at(r)),
            Err(Refused::Malformed)
        );
    }
    for r in &stale {
        assert_eq!(
            verify(SECRET.as_bytes(), signature(r), &r.body, at(r)),
            Err(Refused::Stale)
        );
    }
}
