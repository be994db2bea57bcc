//! `waotp templates list/check/push` as a real child process, against a local fake of the Graph
//! API's template endpoints shaped as Meta documents them: pages with cursors, Graph error
//! bodies, rejection reasons, creation and editing.

mod e2e_support;

use e2e_support::*;
use serde_json::{json, Value};
use std::process::Command;

struct Run {
    code: i32,
    out: String,
    err: String,
}

/// Runs `waotp ARGS` with only the account's settings, off the test's async threads (the fake
/// answers on them).
async fn waotp(args: &[&str], graph_url: String) -> Run {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_waotp"))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("WAOTP_WABA_ID", WABA_ID)
            .env("WAOTP_ACCESS_TOKEN", ACCESS_TOKEN)
            .env("WAOTP_GRAPH_URL", graph_url)
            .output()
            .expect("waotp runs")
    })
    .await
    .expect("joined");
    Run {
        code: output.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&output.stdout).into_owned(),
        err: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The create bodies `waotp templates list flows` prints.
async fn listed() -> Vec<Value> {
    let run = waotp(&["templates", "list", "flows"], "http://127.0.0.1:9".into()).await;
    assert_eq!(run.code, 0, "{}", run.err);
    serde_json::from_str::<Value>(&run.out)
        .expect("list prints JSON")
        .as_array()
        .expect("an array")
        .clone()
}

fn body_of<'a>(bodies: &'a [Value], name: &str, language: &str) -> &'a Value {
    bodies
        .iter()
        .find(|b| b["name"] == name && b["language"] == language)
        .unwrap_or_else(|| panic!("{name} [{language}] is listed"))
}

fn line_of<'a>(out: &'a str, name: &str, language: &str) -> &'a str {
    let prefix = format!("{name} [{language}]");
    out.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {name} [{language}] in:\n{out}"))
}

fn creates(graph: &Graph) -> usize {
    graph
        .http
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/message_templates"))
        .count()
}

#[test]
fn list_prints_every_template_of_the_bundled_flows_as_metas_create_body() {
    let output = Command::new(env!("CARGO_BIN_EXE_waotp"))
        .args(["templates", "list", "flows"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("waotp runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "no content is missing"
    );
    insta::assert_snapshot!(String::from_utf8_lossy(&output.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_every_page_and_reports_each_standing() {
    let bodies = listed().await;
    let graph = Graph::start().await;
    {
        let mut account = graph.account.lock().expect("account");
        account.page_size = 2;
        // Someone else's template first, so ours are spread over several pages.
        account.add(
            "hello_world",
            "en_US",
            "APPROVED",
            json!({"category": "UTILITY", "components": []}),
        );
        account.add(
            "cod_order_summary",
            "en",
            "APPROVED",
            body_of(&bodies, "cod_order_summary", "en").clone(),
        );
        let mut rejected = body_of(&bodies, "cod_order_summary", "hi").clone();
        rejected["rejected_reason"] = json!("INVALID_FORMAT");
        account.add("cod_order_summary", "hi", "REJECTED", rejected);
        account.add(
            "cod_order_reminder",
            "en",
            "PAUSED",
            body_of(&bodies, "cod_order_reminder", "en").clone(),
        );
        account.add(
            "cod_order_reminder",
            "hi",
            "PENDING",
            body_of(&bodies, "cod_order_reminder", "hi").clone(),
        );
        let mut edited = body_of(&bodies, "cod_order_expired", "en").clone();
        edited["components"][0]["text"] = json!("Order {{1}} expired.");
        account.add("cod_order_expired", "en", "APPROVED", edited);
        account.add(
            "otp_code",
            "en",
            "DISABLED",
            body_of(&bodies, "otp_code", "en").clone(),
        );
    }
    let run = waotp(&["templates", "check", "flows"], graph.url()).await;
    assert_eq!(run.code, 1, "a flow cannot run: {}\n{}", run.out, run.err);
    let out = &run.out;
    assert_eq!(
        line_of(out, "cod_order_summary", "en"),
        "cod_order_summary [en] (cod_confirmation): approved"
    );
    assert_eq!(
        line_of(out, "cod_order_summary", "hi"),
        "cod_order_summary [hi] (cod_confirmation): rejected (INVALID_FORMAT)"
    );
    assert!(line_of(out, "cod_order_reminder", "en").ends_with(": paused"));
    assert!(line_of(out, "cod_order_reminder", "hi").ends_with(": pending"));
    assert!(line_of(out, "cod_order_expired", "en").ends_with(": different: body text"));
    assert!(line_of(out, "cod_order_expired", "hi").ends_with(": missing"));
    let otp = line_of(out, "otp_code", "en");
    assert!(otp.ends_with(": disabled"), "{otp}");
    assert!(
        otp.contains("cod_confirmation") && otp.contains("password_reset"),
        "one line for every flow sharing it: {otp}"
    );
    assert!(
        !out.contains("hello_world"),
        "templates no flow needs are not reported"
    );

    let reads: Vec<_> = graph
        .http
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(reads.len(), 4, "7 templates in pages of 2");
    assert!(reads[0].path.contains("fields=") && reads[0].path.contains("rejected_reason"));
    assert!(reads[1].path.contains("after=cursor2"), "{}", reads[1].path);
    assert!(reads[3].path.contains("after=cursor6"), "{}", reads[3].path);
    for r in &reads {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {ACCESS_TOKEN}").as_str())
        );
    }
    assert!(!run.out.contains(ACCESS_TOKEN) && !run.err.contains(ACCESS_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_creates_the_missing_once_and_edits_only_with_update() {
    let bodies = listed().await;
    let graph = Graph::start().await;
    let mut edited = body_of(&bodies, "cod_order_expired", "en").clone();
    edited["components"][0]["text"] = json!("Order {{1}} expired.");
    graph.account.lock().expect("account").add(
        "cod_order_expired",
        "en",
        "APPROVED",
        edited.clone(),
    );

    let run = waotp(&["templates", "push", "flows"], graph.url()).await;
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    assert_eq!(
        creates(&graph),
        bodies.len() - 1,
        "every missing one created: {}",
        run.out
    );
    assert!(
        line_of(&run.out, "cod_order_summary", "hi").contains("created (pending, id "),
        "{}",
        run.out
    );
    assert_eq!(
        line_of(&run.out, "cod_order_expired", "en"),
        "cod_order_expired [en]: body text differs; left as it is (run with --update to edit it)"
    );
    let created = graph
        .account
        .lock()
        .expect("account")
        .find("cod_order_summary", "en")
        .cloned()
        .expect("created");
    assert_eq!(
        created["components"],
        body_of(&bodies, "cod_order_summary", "en")["components"]
    );
    assert_eq!(
        graph
            .account
            .lock()
            .expect("account")
            .find("cod_order_expired", "en")
            .expect("kept")["components"],
        edited["components"],
        "an approved template is not edited without --update"
    );

    let again = waotp(&["templates", "push", "flows"], graph.url()).await;
    assert_eq!(again.code, 0, "{}", again.err);
    assert_eq!(
        creates(&graph),
        bodies.len() - 1,
        "a second run creates nothing"
    );
    assert!(
        again
            .out
            .lines()
            .filter(|l| l.contains("exists (pending)"))
            .count()
            >= bodies.len() - 1
    );

    let update = waotp(&["templates", "push", "flows", "--update"], graph.url()).await;
    assert_eq!(update.code, 0, "{}", update.err);
    assert_eq!(
        line_of(&update.out, "cod_order_expired", "en"),
        "cod_order_expired [en]: updated (body text changed)"
    );
    assert_eq!(
        graph
            .account
            .lock()
            .expect("account")
            .find("cod_order_expired", "en")
            .expect("kept")["components"],
        body_of(&bodies, "cod_order_expired", "en")["components"]
    );
    assert_eq!(creates(&graph), bodies.len() - 1);

    // Once Meta approves them all, every flow can run.
    for t in graph.account.lock().expect("account").templates.iter_mut() {
        t["status"] = json!("APPROVED");
    }
    let check = waotp(&["templates", "check", "flows"], graph.url()).await;
    assert_eq!(check.code, 0, "{}\n{}", check.out, check.err);
    assert!(
        check.out.lines().all(|l| l.ends_with(": approved")),
        "{}",
        check.out
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_leaves_what_whatsapp_does_not_let_an_edit_change() {
    // WhatsApp edits only approved, rejected or paused templates, and never an approved
    // template's category.
    let bodies = listed().await;
    let graph = Graph::start().await;
    let mut reviewed = body_of(&bodies, "cod_order_expired", "en").clone();
    reviewed["components"][0]["text"] = json!("Order {{1}} expired.");
    let mut marketing = body_of(&bodies, "cod_order_summary", "en").clone();
    marketing["category"] = json!("MARKETING");
    {
        let mut account = graph.account.lock().expect("account");
        for b in &bodies {
            let (name, language) = (
                b["name"].as_str().unwrap_or_default(),
                b["language"].as_str().unwrap_or_default(),
            );
            let body = match (name, language) {
                ("cod_order_expired", "en") => reviewed.clone(),
                ("cod_order_summary", "en") => marketing.clone(),
                _ => b.clone(),
            };
            let status = if name == "cod_order_expired" {
                "PENDING"
            } else {
                "APPROVED"
            };
            account.add(name, language, status, body);
        }
    }
    let run = waotp(&["templates", "push", "flows", "--update"], graph.url()).await;
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    assert_eq!(
        line_of(&run.out, "cod_order_expired", "en"),
        "cod_order_expired [en]: body text differs; not edited while WhatsApp reviews it (only approved, rejected or paused templates can be edited): run again once it is reviewed"
    );
    assert!(
        line_of(&run.out, "cod_order_summary", "en").starts_with(
            "cod_order_summary [en]: category (WhatsApp has marketing, the flow file utility) differs; not edited: WhatsApp never changes an approved template's category"
        ),
        "{}",
        run.out
    );
    let account = graph.account.lock().expect("account");
    assert_eq!(
        account.find("cod_order_expired", "en").expect("kept")["components"],
        reviewed["components"]
    );
    assert_eq!(
        account.find("cod_order_summary", "en").expect("kept")["category"],
        "MARKETING"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_errors_are_reported_with_metas_message() {
    let graph = Graph::start().await;
    graph.http.push(e2e_support::http_fake::Answer::json(
        401,
        json!({"error": {"message": "Error validating access token: Session has expired",
               "type": "OAuthException", "code": 190, "error_subcode": 463, "fbtrace_id": "E2E"}}),
    ));
    let run = waotp(&["templates", "check", "flows"], graph.url()).await;
    assert_eq!(run.code, 1);
    assert!(
        run.err
            .contains("Graph API error 190 (HTTP 401): Error validating access token"),
        "{}",
        run.err
    );
    assert!(
        run.err
            .contains("WhatsApp refused the access token: set WAOTP_ACCESS_TOKEN to a valid token"),
        "{}",
        run.err
    );
    assert!(!run.out.contains(ACCESS_TOKEN) && !run.err.contains(ACCESS_TOKEN));

    // A create Meta refuses is reported, the others still go, and the exit code says it.
    graph.account.lock().expect("account").refuse = vec!["cod_order_summary".to_owned()];
    let bodies = listed().await;
    let push = waotp(&["templates", "push", "flows"], graph.url()).await;
    assert_eq!(push.code, 1, "{}", push.out);
    assert!(
        push.err
            .contains("cod_order_summary [en]: not created: Graph API error 100 (HTTP 400)"),
        "{}",
        push.err
    );
    assert_eq!(creates(&graph), bodies.len(), "every create was tried");
    assert!(graph
        .account
        .lock()
        .expect("account")
        .find("cod_order_reminder", "en")
        .is_some());
}

/// Runs `waotp ARGS` with exactly the environment `vars`; its exit code and stderr.
fn run_with(args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_waotp"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("waotp runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_without_an_account_is_a_usage_error_naming_what_is_missing() {
    let (code, _, err) = run_with(&["templates", "check", "flows"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("WAOTP_WABA_ID (or --waba-id) and WAOTP_ACCESS_TOKEN are not set"),
        "{err}"
    );

    let (code, _, err) = run_with(
        &["templates", "push", "flows"],
        &[("WAOTP_WABA_ID", WABA_ID)],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("WAOTP_ACCESS_TOKEN is not set"), "{err}");
    assert!(!err.contains("WAOTP_WABA_ID"), "{err}");

    let (code, _, err) = run_with(
        &["templates", "check", "flows"],
        &[("WAOTP_ACCESS_TOKEN", ACCESS_TOKEN)],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("WAOTP_WABA_ID (or --waba-id) is not set"),
        "{err}"
    );
    assert!(!err.contains(ACCESS_TOKEN), "{err}");
}

#[test]
fn an_unreachable_graph_api_is_named_and_the_token_stays_out() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let (code, out, err) = run_with(
        &["templates", "check", "flows"],
        &[
            ("WAOTP_WABA_ID", WABA_ID),
            ("WAOTP_ACCESS_TOKEN", ACCESS_TOKEN),
            ("WAOTP_GRAPH_URL", &url),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot read the templates from {url}: Graph API unreachable"
        )),
        "{err}"
    );
    assert!(!out.contains(ACCESS_TOKEN) && !err.contains(ACCESS_TOKEN));
}

#[test]
fn the_help_says_where_the_token_comes_from_and_what_the_exit_codes_mean() {
    for args in [
        &["templates", "--help"][..],
        &["templates", "check", "--help"][..],
        &["templates", "push", "--help"][..],
    ] {
        let (code, out, _) = run_with(args, &[("WAOTP_ACCESS_TOKEN", ACCESS_TOKEN)]);
        assert_eq!(code, Some(0), "{args:?}");
        assert!(out.contains("WAOTP_ACCESS_TOKEN"), "{args:?}: {out}");
        assert!(out.contains("Exit codes"), "{args:?}: {out}");
        assert!(!out.contains(ACCESS_TOKEN), "{args:?}: {out}");
    }
}

/// A tenants file of two sending merchants, `alpha` (account [`WABA_ID`], only the
/// cash-on-delivery flow) and `beta` (another account, every bundled flow), and `delta` (no
/// account, a number in sandbox mode).
fn two_merchants(dir: &std::path::Path) -> std::path::PathBuf {
    let flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let digest = |k: &str| waotp::tenants::KeyDigest::of(k.as_bytes()).hex();
    let text = format!(
        r#"[[merchant]]
id = "alpha"
api_keys = ["sha256:{}"]
callback_secret_env = "SHOP_SECRET"
flow_files = [{:?}]
waba_id = "{WABA_ID}"

[[merchant.number]]
phone_number_id = "1001"
access_token_env = "ALPHA_TOKEN"

[[merchant]]
id = "beta"
api_keys = ["sha256:{}"]
callback_secret_env = "SHOP_SECRET"
flows = {:?}
waba_id = "999999999"

[[merchant.number]]
phone_number_id = "2001"
access_token_env = "BETA_TOKEN"

[[merchant]]
id = "delta"
flows = {:?}

[[merchant.number]]
phone_number_id = "3001"
"#,
        digest("alpha-key"),
        flows.join("cod_confirmation.toml").display().to_string(),
        digest("beta-key"),
        flows.display().to_string(),
        flows.display().to_string(),
    );
    let path = dir.join("tenants.toml");
    std::fs::write(&path, text).expect("tenants file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_tenants_file_the_commands_work_on_the_merchant_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = two_merchants(dir.path()).display().to_string();
    let graph = Graph::start().await;
    let run = |args: &'static [&'static str]| {
        let vars = [
            ("WAOTP_TENANTS", file.clone()),
            ("WAOTP_GRAPH_URL", graph.url()),
            ("ALPHA_TOKEN", ACCESS_TOKEN.to_owned()),
            ("BETA_TOKEN", "EAAG-beta-token".to_owned()),
            ("SHOP_SECRET", "shop-secret".to_owned()),
        ];
        tokio::task::spawn_blocking(move || {
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            run_with(args, &vars)
        })
    };

    // Several merchants and none named: which?
    let (code, _, err) = run(&["templates", "list"]).await.expect("joined");
    assert_eq!(code, Some(2));
    assert!(err.contains("--merchant"), "{err}");
    assert!(err.contains("alpha, beta, delta"), "{err}");
    let (code, _, err) = run(&["templates", "check", "--merchant", "gamma"])
        .await
        .expect("joined");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("no merchant `gamma`") && err.contains("alpha, beta, delta"),
        "{err}"
    );
    let (code, _, err) = run(&["templates", "check", "--merchant", "delta"])
        .await
        .expect("joined");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("merchant `delta` has no waba_id and no number with an access token"),
        "{err}"
    );

    // Alpha's flows only.
    let (code, out, err) = run(&["templates", "list", "--merchant", "alpha"])
        .await
        .expect("joined");
    assert_eq!(code, Some(0), "{err}");
    let names: std::collections::BTreeSet<String> = serde_json::from_str::<Value>(&out)
        .expect("JSON")
        .as_array()
        .expect("array")
        .iter()
        .map(|b| b["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(names.contains("cod_order_summary"), "{names:?}");
    assert!(
        !names.contains("transaction_summary"),
        "only alpha's flow: {names:?}"
    );

    // Alpha's account, with the token of alpha's number.
    let (code, out, err) = run(&["templates", "check", "--merchant", "alpha"])
        .await
        .expect("joined");
    assert_eq!(code, Some(1), "nothing is in the account yet: {out}{err}");
    assert!(
        line_of(&out, "cod_order_summary", "en").contains("missing"),
        "{out}"
    );
    let reads: Vec<_> = graph
        .http
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/message_templates"))
        .collect();
    assert!(!reads.is_empty());
    for r in &reads {
        assert!(r.path.contains(&format!("/{WABA_ID}/")), "{}", r.path);
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {ACCESS_TOKEN}").as_str())
        );
    }
    assert!(!err.contains(ACCESS_TOKEN) && !out.contains(ACCESS_TOKEN));

    // A directory and a merchant at once is a usage error.
    let (code, _, err) = run(&["templates", "list", "flows", "--merchant", "alpha"])
        .await
        .expect("joined");
    assert_eq!(code, Some(2), "{err}");
}
