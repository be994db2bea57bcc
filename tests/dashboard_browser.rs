//! The dashboard in a real browser: Debian's headless `chromium` loads the page of a server that
//! ran a few scripted flows, and the funnel numbers in the rendered DOM must equal what
//! `/v1/stats` answers for the same hours. A screenshot is left at `target/dashboard.png`.
//!
//! How the browser gets in without the key in a URL: the test, holding the key, asks
//! `POST /dashboard/link` for a one-time path (single use, valid one minute); chromium opens
//! it, receives the HttpOnly session cookie and is redirected to `/dashboard`. Skipped, with a
//! message, when chromium is not installed (`.ci/run` installs it).

mod common;
mod stats_support;

use serde_json::Value;
use stats_support::{start, Server, API_KEY};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

/// Runs chromium headless on `url` with `extra` flags; returns its stdout.
fn chromium(profile: &Path, extra: &[&str], url: &str) -> String {
    let child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(BROWSER_DEADLINE) {
        Ok(output) => {
            let output = output.expect("chromium ran");
            assert!(
                output.status.success(),
                "chromium failed: {}",
                output.status
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("chromium did not finish within {BROWSER_DEADLINE:?}");
        }
    }
}

/// A one-time dashboard URL, minted with the API key.
async fn one_time_url(server: &Server) -> String {
    let link = server
        .api(reqwest::Method::POST, "/dashboard/link", None)
        .await;
    format!("{}{}", server.base, link["path"].as_str().expect("path"))
}

/// The value of attribute `name` in the first tag that contains `anchor`.
fn attribute(dom: &str, anchor: &str, name: &str) -> String {
    let at = dom
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} not in the page"));
    let tag_end = at + dom[at..].find('>').expect("tag end");
    let tag_start = dom[..at].rfind('<').expect("tag start");
    let tag = &dom[tag_start..tag_end];
    let needle = format!("{name}=\"");
    let from = tag.find(&needle).expect("attribute") + needle.len();
    tag[from..from + tag[from..].find('"').expect("quote")].to_owned()
}

/// The number a funnel stage shows: its `data-value` and the text drawn beside the bar.
fn shown_stage(dom: &str, flow: &str, window: &str, stage: &str) -> (u64, String) {
    let anchor = format!(r#"data-flow="{flow}" data-window="{window}" data-stage="{stage}""#);
    let value = attribute(dom, &anchor, "data-value")
        .parse()
        .expect("a count");
    let at = dom.find(&anchor).expect("stage");
    let group = &dom[at..at + dom[at..].find("</g>").expect("group end")];
    let text_at = group.find(r#"class="count""#).expect("count text");
    let text = &group[text_at..];
    let text = &text[text.find('>').expect(">") + 1..text.find("</text>").expect("</text>")];
    (value, text.to_owned())
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, wherever the target dir is configured.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_funnels_equal_the_stats_api() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("SKIPPED dashboard_browser: {CHROMIUM} not found (apt-get install chromium)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());

    // Three sign-ups (verified, cancelled, undeliverable) and one cancelled password reset.
    let a = server
        .start_session("signup_verification", "+15550000011")
        .await;
    let (a_msg, a_code) = server.code("+15550000011", 1).await;
    server.sent("signup_verification", 1).await;
    server
        .status(&a_msg, "+15550000011", "delivered", None)
        .await;
    server.status(&a_msg, "+15550000011", "read", None).await;
    server.say("+15550000011", &a_code).await;
    assert_eq!(server.outcome(&a).await, "verified");
    let b = server
        .start_session("signup_verification", "+15550000012")
        .await;
    let (b_msg, _) = server.code("+15550000012", 1).await;
    server.sent("signup_verification", 2).await;
    server
        .status(&b_msg, "+15550000012", "delivered", None)
        .await;
    server
        .api(
            reqwest::Method::POST,
            &format!("/v1/sessions/{b}/cancel"),
            None,
        )
        .await;
    let c = server
        .start_session("signup_verification", "+15550000013")
        .await;
    let (c_msg, _) = server.code("+15550000013", 1).await;
    server.sent("signup_verification", 3).await;
    server
        .status(&c_msg, "+15550000013", "failed", Some(131047))
        .await;
    assert_eq!(server.outcome(&c).await, "undeliverable");
    let d = server.start_session("password_reset", "+15550000014").await;
    server.code("+15550000014", 1).await;
    server.sent("password_reset", 1).await;
    server
        .api(
            reqwest::Method::POST,
            &format!("/v1/sessions/{d}/cancel"),
            None,
        )
        .await;

    let profile = tempfile::tempdir().expect("browser profile");
    let url = one_time_url(&server).await;
    let dom = chromium(profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("Funnel per flow"), "not the dashboard: {dom}");
    assert!(!dom.contains(API_KEY));

    let stages = [
        ("started", "sessions_started"),
        ("code_sent", "codes_sent"),
        ("delivered", "codes_delivered"),
        ("read", "codes_read"),
        ("verified", "verified"),
    ];
    let mut compared = 0;
    for window in ["24h", "7d"] {
        let section = format!(r#"<section data-window="{window}""#);
        let from = attribute(&dom, &section, "data-from");
        let to = attribute(&dom, &section, "data-to");
        for flow in ["signup_verification", "password_reset", "cod_confirmation"] {
            let path = format!(
                "/v1/stats?flow={flow}&from={}&to={}",
                from.replace('+', "%2B"),
                to.replace('+', "%2B")
            );
            let api: Value = server.api(reqwest::Method::GET, &path, None).await;
            for (stage, field) in stages {
                let (value, text) = shown_stage(&dom, flow, window, stage);
                assert_eq!(Some(value), api[field].as_u64(), "{window} {flow} {stage}");
                assert_eq!(text, value.to_string(), "{window} {flow} {stage}");
                compared += 1;
            }
        }
        // The figures are the scripted ones, not zeros on both sides.
        let (started, _) = shown_stage(&dom, "signup_verification", window, "started");
        assert_eq!(started, 3);
        let (verified, _) = shown_stage(&dom, "signup_verification", window, "verified");
        assert_eq!(verified, 1);
        let sparkline = format!(r#"data-window="{window}" data-total=""#);
        assert_eq!(attribute(&dom, &sparkline, "data-total"), "4");
    }
    assert_eq!(compared, 30);
    assert!(dom.contains("131047"), "the failure reason is listed");
    assert!(dom.contains("24 hours since the customer last wrote"));

    // The one-time link is spent: a second browser gets the login form, not the figures.
    let again = chromium(
        tempfile::tempdir().expect("profile").path(),
        &["--dump-dom"],
        &url,
    );
    assert!(again.contains(r#"action="/dashboard/login""#));
    assert!(!again.contains("Funnel per flow"));

    let shot = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        tempfile::tempdir().expect("profile").path(),
        &[
            "--window-size=1280,2000",
            &format!("--screenshot={}", shot.display()),
        ],
        &one_time_url(&server).await,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("dashboard screenshot: {}", shot.display());
    server.stop();
}
