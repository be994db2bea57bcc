//! The flow author's commands, called as library functions the way the CLI calls them.

use std::io::Cursor;
use std::path::Path;

use waotp::flow::cli;

fn run(f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> u8) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = f(&mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

#[test]
fn validate_accepts_the_bundled_flows_and_rejects_the_broken_ones() {
    let (code, out, _) = run(|o, e| cli::validate(Path::new("flows"), o, e));
    assert_eq!(code, cli::OK);
    assert!(out.contains("7 flow(s) valid"), "{out}");
    let (code, _, err) = run(|o, e| cli::validate(Path::new("tests/flows_broken"), o, e));
    // Invalid configuration, like an invalid flow directory at start-up.
    assert_eq!(code, 2);
    assert_eq!(code, cli::INVALID);
    assert!(
        err.contains("tests/flows_broken/unknown_key.toml:16:1: unknown key `mesage`"),
        "{err}"
    );
}

#[test]
fn validate_lists_warnings_and_still_accepts_the_flow() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::copy(
        "tests/flows_broken/warnings.toml",
        dir.path().join("warnings.toml"),
    )
    .expect("copy a flow with warnings");
    let (code, out, err) = run(|o, e| cli::validate(dir.path(), o, e));
    assert_eq!(code, cli::OK, "{err}");
    assert!(
        out.contains("1 flow(s) valid") && out.contains(", 2 warning(s)"),
        "{out}"
    );
    assert_eq!(err.matches(": warning: ").count(), 2, "{err}");
    assert!(
        err.contains("warnings.toml:39:11: warning: state `describe` takes any text"),
        "{err}"
    );
}

#[test]
fn validate_exits_1_only_when_it_cannot_read_the_directory() {
    let (code, _, err) = run(|o, e| cli::validate(Path::new("tests/no_such_directory"), o, e));
    assert_eq!(code, cli::FAILED);
    assert!(err.contains("cannot read tests/no_such_directory"), "{err}");
}

#[test]
fn the_validate_exit_codes_are_documented_as_they_are() {
    let readme = std::fs::read_to_string("README.md").expect("README");
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `waotp validate"))
        .expect("validate row");
    assert!(
        row.contains("exit 2 on any invalid file, 1 when the directory cannot be read"),
        "{row}"
    );
    let help = waotp::cli::validate_help();
    assert!(help.contains("exits 2 on any"), "{help}");
    assert!(help.contains("1 when DIR cannot be read"), "{help}");
}

#[test]
fn the_readme_lists_the_chat_commands_the_chat_knows() {
    let readme = std::fs::read_to_string("README.md").expect("README");
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `waotp chat"))
        .expect("chat row");
    let listed: Vec<&str> = row.split('`').filter(|s| s.starts_with('/')).collect();
    let known: Vec<&str> = cli::CHAT_COMMANDS.iter().map(|(c, _)| *c).collect();
    assert_eq!(listed, known, "README: {row}");
    for (command, _) in cli::CHAT_COMMANDS {
        assert!(cli::chat_help().contains(command), "{command}");
    }
}

#[test]
fn the_bundled_flow_scripts_pass() {
    let (code, out, err) = run(|o, e| cli::test(Path::new("flows"), o, e));
    assert_eq!(code, cli::OK, "{out}{err}");
    assert!(out.contains(" 0 failed"), "{out}");
    for flow in [
        "cod_confirmation",
        "cod_confirmation_hi",
        "signup_verification",
        "password_reset",
        "transaction_authorization",
        "account_recovery",
        "support_identity",
        "reverse_verification",
    ] {
        assert!(
            out.contains(&format!("flows/tests/{flow}.toml")),
            "no script for {flow}"
        );
    }
}

#[test]
fn a_failing_script_fails_the_command() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::create_dir(dir.path().join("tests")).expect("tests directory");
    std::fs::copy(
        "flows/signup_verification.toml",
        dir.path().join("signup_verification.toml"),
    )
    .expect("copy a flow");
    std::fs::write(
        dir.path().join("tests/bad.toml"),
        "flow = \"signup_verification\"\n[[case]]\nname = \"wrong expectation\"\nsteps = [{ code = true, outcome = \"locked\" }]\n",
    )
    .expect("write a script");
    let (code, out, _) = run(|o, e| cli::test(dir.path(), o, e));
    assert_eq!(code, cli::FAILED);
    assert!(
        out.contains("expected outcome `locked`, the session ended with `verified`"),
        "{out}"
    );
    assert!(!out.contains("Some("), "{out}");
}

#[test]
fn a_chat_that_differs_from_another_case_says_where() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::create_dir(dir.path().join("tests")).expect("tests directory");
    std::fs::copy(
        "flows/signup_verification.toml",
        dir.path().join("signup_verification.toml"),
    )
    .expect("copy a flow");
    std::fs::write(
        dir.path().join("tests/differ.toml"),
        "flow = \"signup_verification\"\n[[case]]\nname = \"right code\"\nsteps = [{ code = true }]\n[[case]]\nname = \"wrong code\"\nsame_chat_as = \"right code\"\nsteps = [{ code = false }]\n",
    )
    .expect("write a script");
    let (code, out, _) = run(|o, e| cli::test(dir.path(), o, e));
    assert_eq!(code, cli::FAILED);
    assert!(
        out.contains("customer-visible chat differs from case `right code` at message "),
        "{out}"
    );
    assert!(!out.contains("[\""), "{out}");
}

#[test]
fn chat_plays_a_conversation_with_slash_commands() {
    let input = "hello\n/tap confirm\n/otp\n/wait 10m\n";
    let vars = [
        ("customer_name".to_owned(), "Asha".to_owned()),
        ("order_id".to_owned(), "A-7".to_owned()),
        ("total".to_owned(), "₹10".to_owned()),
    ];
    let (code, out, err) = run(|o, e| {
        cli::chat(
            Path::new("flows"),
            "cod_confirmation",
            &vars,
            "en",
            &mut Cursor::new(input),
            o,
            e,
        )
    });
    assert_eq!(code, cli::OK, "{err}");
    assert!(out.contains("[confirm] Confirm"), "{out}");
    assert!(out.contains("Please choose one of the options"), "{out}");
    assert!(out.contains("(last code: "), "{out}");
    assert!(out.contains("outcome `expired`"), "{out}");
}

#[test]
fn chat_check_is_refused_while_the_session_waits_for_a_button() {
    // As the server's `/check` is (409 no_code_pending): no code is outstanding yet.
    let input = "/check 123456\n/state\n";
    let vars = [
        ("customer_name".to_owned(), "Asha".to_owned()),
        ("order_id".to_owned(), "A-7".to_owned()),
        ("total".to_owned(), "₹10".to_owned()),
    ];
    let (code, out, err) = run(|o, e| {
        cli::chat(
            Path::new("flows"),
            "cod_confirmation",
            &vars,
            "en",
            &mut Cursor::new(input),
            o,
            e,
        )
    });
    assert_eq!(code, cli::OK, "{err}");
    assert!(
        out.contains("(/check refused: the session is not waiting for a code now"),
        "{out}"
    );
}

#[test]
fn chat_state_shows_the_visit_counts_and_the_deadline() {
    let input = "asha@example.com\n/hookerror lookup_account\n/state\n";
    let (code, out, err) = run(|o, e| {
        cli::chat(
            Path::new("flows"),
            "account_recovery",
            &[],
            "en",
            &mut Cursor::new(input),
            o,
            e,
        )
    });
    assert_eq!(code, cli::OK, "{err}");
    assert!(out.contains("(state `lookup`, status Active"), "{out}");
    assert!(out.contains(", visits `lookup` 2, deadline "), "{out}");
}

#[test]
fn chat_in_hindi_shows_hindi_buttons_reprompt_and_resend_wait_notice() {
    let input = "क्या?\nपुष्टि करें\nदोबारा भेजें\n";
    let vars = [
        ("customer_name".to_owned(), "Asha".to_owned()),
        ("order_id".to_owned(), "A-7".to_owned()),
        ("total".to_owned(), "₹10".to_owned()),
    ];
    let (code, out, err) = run(|o, e| {
        cli::chat(
            Path::new("flows"),
            "cod_confirmation",
            &vars,
            "hi",
            &mut Cursor::new(input),
            o,
            e,
        )
    });
    assert_eq!(code, cli::OK, "{err}");
    assert!(out.contains("[confirm] पुष्टि करें"), "{out}");
    assert!(
        out.contains("माफ़ कीजिए, मैं समझ नहीं पाया। कृपया दिए गए विकल्पों में से एक चुनें।"),
        "{out}"
    );
    assert!(out.contains("सेकंड प्रतीक्षा करें।"), "{out}");
    assert!(!out.contains("Please"), "{out}");
}

#[test]
fn chat_refuses_a_missing_required_variable() {
    let (code, _, err) = run(|o, e| {
        cli::chat(
            Path::new("flows"),
            "cod_confirmation",
            &[],
            "en",
            &mut Cursor::new(""),
            o,
            e,
        )
    });
    assert_eq!(code, cli::USAGE);
    assert!(
        err.contains("missing required variable `customer_name`"),
        "{err}"
    );
}

#[test]
fn graph_draws_a_mermaid_diagram() {
    let (code, out, _) = run(|o, e| cli::graph(Path::new("flows"), "account_recovery", o, e));
    assert_eq!(code, cli::OK);
    assert!(out.starts_with("stateDiagram-v2"));
    assert!(
        out.contains("lookup --> send_code : found == true"),
        "{out}"
    );
    assert!(
        out.contains("ask_account --> ask_account : reminder after 5m"),
        "{out}"
    );
    assert!(
        out.contains("lookup --> unavailable : entered after 2 visits (max_visits)"),
        "{out}"
    );
    assert!(
        out.contains("any_waiting_state --> expired : deadline 45m after the start"),
        "{out}"
    );
    let (code, _, err) = run(|o, e| cli::graph(Path::new("flows"), "acount_recovery", o, e));
    assert_eq!(code, cli::USAGE);
    assert!(err.contains("did you mean `account_recovery`"), "{err}");
}

#[test]
fn graph_draws_the_deadline_reminders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = std::fs::read_to_string("flows/account_recovery.toml").expect("bundled flow");
    let flow = flow.replacen(
        "on_deadline = \"expired\"\n",
        "on_deadline = \"expired\"\ndeadline_reminders = [\"-10m\", \"20m\"]\ndeadline_reminder = \"ask_reminder\"\n",
        1,
    );
    std::fs::write(dir.path().join("account_recovery.toml"), flow).expect("write the flow");
    let (code, out, err) = run(|o, e| cli::graph(dir.path(), "account_recovery", o, e));
    assert_eq!(code, cli::OK, "{err}");
    assert!(
        out.contains(
            "any_waiting_state --> any_waiting_state : deadline reminder at -10m, 20m (ask_reminder)"
        ),
        "{out}"
    );
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let committed = std::fs::read_to_string("schema/flow.schema.json").expect("committed schema");
    assert_eq!(
        committed.trim_end(),
        cli::schema_json().trim_end(),
        "run `waotp schema > schema/flow.schema.json`"
    );
    assert!(committed.contains("\"additionalProperties\": false"));
}

/// The flow guide's reference tables are the generated ones: a doc comment changed in the model
/// (or a field added) without regenerating the block fails here.
#[test]
fn the_flow_guide_reference_is_the_generated_one() {
    let readme = std::fs::read_to_string("flows/README.md").expect("flow guide");
    let generated = cli::reference_markdown();
    let begin = readme
        .find(waotp::flow::reference::BEGIN)
        .expect("the begin marker in flows/README.md");
    let end = readme
        .find(waotp::flow::reference::END)
        .expect("the end marker in flows/README.md");
    let block = &readme[begin..end + waotp::flow::reference::END.len() + 1];
    assert_eq!(
        block, generated,
        "run `waotp schema --markdown` and put its output between the markers of flows/README.md"
    );
}
