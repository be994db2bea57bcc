//! What an operator meets first: `waotp serve --help`, start-up refusals for bad configuration
//! (exit code 2 naming what to fix), and the `/metrics` a monitoring system scrapes.

mod e2e_support;

use e2e_support::*;
use std::collections::HashMap;

/// Every `WAOTP_*` name the settings code reads.
fn settings_read_by_config() -> Vec<String> {
    let source = include_str!("../src/config.rs");
    let mut names: Vec<String> = source
        .split('"')
        .filter(|s| {
            s.starts_with("WAOTP_")
                && s.len() > "WAOTP_".len()
                && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        })
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn serve_help_lists_every_setting_with_its_default() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waotp"))
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .expect("waotp serve --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).expect("utf8");
    let names = settings_read_by_config();
    assert!(names.len() >= 20, "{names:?}");
    for name in &names {
        assert!(help.contains(name.as_str()), "{name} missing from:\n{help}");
    }
    // Each setting's line carries its default (the values the settings code falls back to).
    for (name, default) in [
        ("WAOTP_LISTEN", "127.0.0.1:8080"),
        ("WAOTP_DATA_DIR", "./data"),
        ("WAOTP_FLOWS_DIR", "./flows"),
        ("WAOTP_GRAPH_URL", "https://graph.facebook.com/v23.0"),
        ("WAOTP_SENDS_PER_SECOND", "80"),
        ("WAOTP_IN_DOUBT_SECONDS", "120"),
        ("WAOTP_RETENTION_DAYS", "30"),
        ("WAOTP_WEBHOOK_BUFFER_MIB", "64"),
        ("WAOTP_LOG", "info"),
        ("WAOTP_LOG_FORMAT", "pretty"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{help}"));
        assert!(
            line.contains(&format!("[default: {default}]")),
            "{name}: {line}"
        );
    }
}

/// A sandbox server's settings in `dir` (no flows with URLs needed).
fn sandbox_vars(dir: &std::path::Path, flows: &std::path::Path) -> HashMap<String, String> {
    [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("WAOTP_DATA_DIR", dir.join("data").display().to_string()),
        ("WAOTP_FLOWS_DIR", flows.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[test]
fn an_invalid_log_filter_stops_start_up_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["waotp=loud", "info,[{", "=debug"] {
        let mut vars = sandbox_vars(dir.path(), &bundled_flows());
        vars.insert("WAOTP_LOG".into(), bad.into());
        let (code, stderr) = serve_until_exit(&vars)
            .unwrap_or_else(|| panic!("WAOTP_LOG={bad}: the server started"));
        assert_eq!(code, 2, "WAOTP_LOG={bad}: {stderr}");
        assert!(stderr.contains("WAOTP_LOG"), "WAOTP_LOG={bad}: {stderr}");
    }
}

#[test]
fn a_database_url_that_is_not_postgres_stops_start_up_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars = sandbox_vars(dir.path(), &bundled_flows());
    vars.insert(
        "WAOTP_DATABASE_URL".into(),
        "mysql://waotp:hunter2@db.internal/waotp".into(),
    );
    let (code, stderr) = serve_until_exit(&vars).expect("the server started with a MySQL URL");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("WAOTP_DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("postgres://"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password is printed: {stderr}"
    );
}

#[test]
fn a_database_that_cannot_be_reached_stops_start_up_naming_it_without_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A loopback port nobody listens on: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut vars = sandbox_vars(dir.path(), &bundled_flows());
    vars.insert(
        "WAOTP_DATABASE_URL".into(),
        format!("postgres://waotp:hunter2@127.0.0.1:{port}/waotp_orders"),
    );
    let (code, stderr) = serve_until_exit(&vars).expect("the server started without its database");
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}/waotp_orders")),
        "the message names no host and database: {stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password is printed: {stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "the embedded database was opened beside PostgreSQL"
    );
}

/// Production settings (a Graph API that is never called at start-up).
fn production_vars(dir: &std::path::Path, flows: &std::path::Path) -> HashMap<String, String> {
    let mut vars = sandbox_vars(dir, flows);
    for (k, v) in [
        ("WAOTP_APP_SECRET", APP_SECRET),
        ("WAOTP_VERIFY_TOKEN", VERIFY_TOKEN),
        ("WAOTP_ACCESS_TOKEN", ACCESS_TOKEN),
        ("WAOTP_PHONE_NUMBER_ID", PHONE_NUMBER_ID),
        ("WAOTP_GRAPH_URL", "http://127.0.0.1:9/v23.0"),
        ("WAOTP_API_KEYS", API_KEY),
        ("WAOTP_CALLBACK_SECRET", CALLBACK_SECRET),
        ("WAOTP_LOG_FORMAT", "json"),
    ] {
        vars.insert(k.to_owned(), v.to_owned());
    }
    vars
}

#[test]
fn a_flow_url_naming_an_unset_variable_stops_a_production_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The bundled identity flows call `{WAOTP_HOOK_BASE_URL}/lookup_account`.
    let (code, stderr) = serve_until_exit(&production_vars(dir.path(), &bundled_flows()))
        .expect("the server started without WAOTP_HOOK_BASE_URL");
    assert_eq!(code, 2, "{stderr}");
    for needle in [
        "account_recovery.toml",
        "support_identity.toml",
        "WAOTP_HOOK_BASE_URL",
    ] {
        assert!(stderr.contains(needle), "no {needle} in: {stderr}");
    }

    // Any environment variable may be named; an empty one counts as unset.
    let flows = flows_copy(
        dir.path(),
        &[(
            "support_identity.toml",
            "{WAOTP_HOOK_BASE_URL}/lookup_account",
            "{SHOP_HOOKS}/lookup_account",
        )],
    );
    let mut vars = production_vars(dir.path(), &flows);
    vars.insert(
        "WAOTP_HOOK_BASE_URL".into(),
        "http://127.0.0.1:9/hooks".into(),
    );
    vars.insert("SHOP_HOOKS".into(), String::new());
    let (code, stderr) = serve_until_exit(&vars).expect("the server started without SHOP_HOOKS");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("support_identity.toml"), "{stderr}");
    assert!(stderr.contains("SHOP_HOOKS"), "{stderr}");
    assert!(!stderr.contains("account_recovery.toml"), "{stderr}");

    // Once it is set, the server starts.
    vars.insert("SHOP_HOOKS".into(), "http://127.0.0.1:9/shop".into());
    let server = ChildServer::start(&vars, "info");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_starts_the_bundled_flows_without_a_hook_base_and_says_what_will_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::start(&sandbox_vars(dir.path(), &bundled_flows()), "info");
    let line = server
        .wait_log(&["WAOTP_HOOK_BASE_URL", "account_recovery.toml"])
        .await;
    assert!(line.contains("WARN"), "{line}");
    server
        .wait_log(&["WAOTP_HOOK_BASE_URL", "support_identity.toml"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_build_info_units_and_hooks_apart_from_callbacks() {
    let e = E2e::start().await;
    let text = e.api.metrics().await;
    assert!(
        text.contains(&format!(
            "waotp_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("# TYPE waotp_build_info gauge"), "{text}");
    assert!(
        text.contains("waotp_storage_engine{engine=\"embedded\"} 1\n"),
        "the metrics name no storage engine: {text}"
    );
    for timing in [
        "waotp_delivery_latency_seconds",
        "waotp_step_seconds",
        "waotp_store_flush_seconds",
    ] {
        assert!(
            text.contains(&format!("# UNIT {timing} seconds\n")),
            "no unit for {timing}: {text}"
        );
    }

    // An account recovery calls two hooks; its end is reported by callbacks.
    let customer = "14155550121";
    e.api.text(customer, "recover").await;
    let id = wait_for("the keyword's session", || {
        e.store
            .sessions()
            .active(&scoped(customer), "account_recovery")
            .expect("store")
    })
    .await;
    e.graph.wait_accepted(customer, 1).await;
    e.api.text(customer, KNOWN_ACCOUNT).await;
    let sent = e.graph.wait_accepted("447700900123", 1).await;
    let code = auth_code(&sent.last().expect("sent").0).expect("code");
    e.api.text(customer, &code).await;
    e.api.wait_completed(&id).await;
    e.merchant.completed(&id).await;
    wait_for("both hooks counted", || {
        let hooks = e.merchant.hook_calls("lookup_account").len()
            + e.merchant.hook_calls("recovery_link").len();
        (hooks == 2).then_some(())
    })
    .await;
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let text = e.api.metrics().await;
        let callbacks = e.merchant.callbacks().len();
        let want = [
            "waotp_hook_attempts_total 2\n".to_owned(),
            "waotp_hook_failures_total 0\n".to_owned(),
            format!("waotp_callback_attempts_total {callbacks}\n"),
            "waotp_callback_failures_total 0\n".to_owned(),
        ];
        if want.iter().all(|w| text.contains(w.as_str())) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "want {want:?} in {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_id_is_in_the_log_lines_written_while_answering_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars = sandbox_vars(dir.path(), &bundled_flows());
    vars.insert("WAOTP_API_KEYS".into(), API_KEY.into());
    let server = ChildServer::start(&vars, "info");
    let res = server
        .api
        .http
        .post(format!("{}/v1/sessions", server.api.base))
        .bearer_auth(API_KEY)
        .header("x-request-id", "trace-4f1c9a")
        .json(&serde_json::json!({"flow": "signup_verification", "to": "+447700900777"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-request-id"], "trace-4f1c9a");
    let line = server.wait_log(&["session started", "trace-4f1c9a"]).await;
    let line: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(line["span"]["request_id"], "trace-4f1c9a", "{line}");
}
