//! The flow author's commands, called as library functions the way the CLI calls them.

use std::collections::BTreeSet;
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
            Some("en"),
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
            Some("en"),
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
            Some("en"),
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
            Some("hi"),
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
            Some("en"),
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

/// The ```toml blocks of the flow guide.
fn guide_toml_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string("flows/README.md").expect("flow guide");
    let mut blocks = Vec::new();
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("```toml\n") {
        let body = &rest[at + "```toml\n".len()..];
        let end = body.find("```").expect("a closed ```toml block");
        blocks.push(body[..end].to_owned());
        rest = &body[end..];
    }
    blocks
}

/// Every key of `value` as `path key`, the path with `*` for a name of the flow's own (a state,
/// a variable, a hook…) and `[]` for an array's items, e.g. `states.*.list.rows[] title`; and
/// every state kind as `kind ask`.
fn keys_used(path: &str, value: &toml::Value, found: &mut BTreeSet<String>) {
    const NAMED: &[&str] = &[
        "vars",
        "templates",
        "hooks",
        "interrupts",
        "messages",
        "texts",
        "states",
    ];
    match value {
        toml::Value::Table(table) => {
            for (key, child) in table {
                found.insert(format!("{path} {key}"));
                let child_path = if NAMED.contains(&path) {
                    format!("{path}.*")
                } else if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if path == "states.*" && key == "kind" {
                    found.insert(format!("kind {}", child.as_str().unwrap_or_default()));
                }
                keys_used(&child_path, child, found);
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                keys_used(&format!("{path}[]"), item, found);
            }
        }
        _ => {}
    }
}

/// "The flow guide covers every key with an example": every key of the generated reference
/// (and every state kind) appears, in its place, in a TOML example of flows/README.md — a key
/// added to the model without an example fails here.
#[test]
fn every_key_of_the_reference_has_a_toml_example_in_the_flow_guide() {
    let mut used = BTreeSet::new();
    for block in guide_toml_blocks() {
        let value: toml::Value = toml::from_str(&block)
            .unwrap_or_else(|e| panic!("a ```toml block of flows/README.md: {e}\n{block}"));
        keys_used("", &value, &mut used);
    }
    let reference = cli::reference_markdown();
    let mut section = None;
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in reference.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            section = match heading {
                "Top level" => Some(""),
                "`[start]`" => Some("start"),
                "`[vars.NAME]`" => Some("vars.*"),
                "`[templates.ID]`" => Some("templates.*"),
                "`[hooks.NAME]`" => Some("hooks.*"),
                "`[interrupts.NAME]`" => Some("interrupts.*"),
                "State kinds" => Some("kind"),
                "`[states.ID]`" => Some("states.*"),
                "`buttons = [{ … }]`" => Some("states.*.buttons[]"),
                "`list = { … }`" => Some("states.*.list"),
                "`rows = [{ … }]`" => Some("states.*.list.rows[]"),
                "`branches = [{ … }]`" => Some("states.*.branches[]"),
                "`[states.ID.otp]`" => Some("states.*.otp"),
                // Ids rather than keys, each shown with its English wording.
                h if h.starts_with("Built-in texts") => None,
                other => panic!("a new reference section `{other}`: say where its keys go"),
            };
            continue;
        }
        let (Some(path), Some(row)) = (section, line.strip_prefix("| `")) else {
            continue;
        };
        let key = row.split('`').next().unwrap_or_default();
        checked += 1;
        if !used.contains(&format!("{path} {key}")) {
            missing.push(format!("{path} {key}"));
        }
    }
    assert!(checked > 80, "only {checked} keys read from the reference");
    assert!(
        missing.is_empty(),
        "keys of the reference without a TOML example in flows/README.md: {missing:?}"
    );
}

/// The guide's whole example flow is valid as it stands.
#[test]
fn the_flow_guide_example_flow_is_valid() {
    let blocks = guide_toml_blocks();
    let flow = blocks
        .iter()
        .find(|b| b.contains("id = \"delivery_slot\""))
        .expect("the example flow in flows/README.md");
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("delivery_slot.toml"), flow).expect("write the flow");
    let (code, out, err) = run(|o, e| cli::validate(dir.path(), o, e));
    assert_eq!(code, cli::OK, "{err}");
    assert!(out.contains("1 flow(s) valid"), "{out}");
}

#[test]
fn chat_and_graph_exit_like_validate_on_an_unreadable_or_invalid_directory() {
    let missing = Path::new("tests/no_such_directory");
    let (code, _, err) = run(|o, e| cli::graph(missing, "account_recovery", o, e));
    assert_eq!(code, cli::FAILED, "{err}");
    assert!(
        err.contains("cannot read tests/no_such_directory") && err.contains("--dir"),
        "{err}"
    );
    let (code, _, err) = run(|o, e| {
        cli::chat(
            missing,
            "account_recovery",
            &[],
            Some("en"),
            &mut Cursor::new(""),
            o,
            e,
        )
    });
    assert_eq!(code, cli::FAILED, "{err}");
    let broken = Path::new("tests/flows_broken");
    let (code, _, err) = run(|o, e| cli::graph(broken, "unknown_key", o, e));
    assert_eq!(code, cli::INVALID, "{err}");
    assert!(err.contains("unknown key `mesage`"), "{err}");
}

/// A flow written from the guide alone — confirm the delivery address before dispatch — with
/// the second edition's features end to end: "ask again, at most twice" with `max_visits`, a
/// 24-hour session deadline with a reminder, a word-matching agent interrupt, and every
/// customer-visible text in English and Hindi, each language with its own script.
#[test]
fn the_address_confirmation_flow_and_its_scripts_in_two_languages() {
    let dir = Path::new("tests/flows_address");
    let (code, out, err) = run(|o, e| cli::validate(dir, o, e));
    assert_eq!(code, cli::OK, "{err}");
    assert!(out.contains("1 flow(s) valid"), "{out}");
    // The one warning: the free-text state keeps a sentence naming the agent as its answer.
    assert_eq!(err.matches(": warning: ").count(), 1, "{err}");
    let (code, out, err) = run(|o, e| cli::test(dir, o, e));
    assert_eq!(code, cli::OK, "{out}{err}");
    assert!(out.contains("10 passed, 0 failed"), "{out}");
    assert!(out.contains("address_confirmation_hi.toml: hi: "), "{out}");
    let (code, out, _) = run(|o, e| cli::graph(dir, "address_confirmation", o, e));
    assert_eq!(code, cli::OK);
    assert!(
        out.contains("ask_new --> give_up : entered after 3 visits (max_visits)"),
        "{out}"
    );
    assert!(
        out.contains("any_waiting_state --> no_answer : deadline 24h after the start"),
        "{out}"
    );
}

/// `cod_confirmation` made Hindi-first: `default_language = "hi"`.
fn hindi_first_flow_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let flow = std::fs::read_to_string("flows/cod_confirmation.toml").expect("bundled flow");
    let flow = flow.replacen("default_language = \"en\"", "default_language = \"hi\"", 1);
    assert!(flow.contains("default_language = \"hi\""));
    std::fs::write(dir.path().join("cod_confirmation.toml"), flow).expect("write the flow");
    dir
}

/// Like the server, which gives a session without `lang` the flow's `default_language`, a
/// script case without `lang` and a chat without `--lang` speak the flow's default language.
#[test]
fn scripts_and_chat_without_a_language_use_the_flows_default_language() {
    let dir = hindi_first_flow_dir();
    std::fs::create_dir(dir.path().join("tests")).expect("tests directory");
    std::fs::write(
        dir.path().join("tests/default.toml"),
        "flow = \"cod_confirmation\"\n[[case]]\nname = \"no lang\"\nvars = { customer_name = \"Asha\", order_id = \"A-7\", total = \"₹10\" }\nsteps = [\n  { expect = [\"नमस्ते Asha\", \"[confirm] पुष्टि करें\"], state = \"summary\" },\n  { say = \"क्या?\", expect = [\"कृपया दिए गए विकल्पों में से एक चुनें\"], absent = [\"Please\"] },\n]\n",
    )
    .expect("write a script");
    let (code, out, err) = run(|o, e| cli::test(dir.path(), o, e));
    assert_eq!(code, cli::OK, "{out}{err}");
    let vars = [
        ("customer_name".to_owned(), "Asha".to_owned()),
        ("order_id".to_owned(), "A-7".to_owned()),
        ("total".to_owned(), "₹10".to_owned()),
    ];
    let (code, out, err) = run(|o, e| {
        cli::chat(
            dir.path(),
            "cod_confirmation",
            &vars,
            None,
            &mut Cursor::new("क्या?\n"),
            o,
            e,
        )
    });
    assert_eq!(code, cli::OK, "{err}");
    assert!(out.contains("[confirm] पुष्टि करें"), "{out}");
    assert!(out.contains("कृपया दिए गए विकल्पों में से एक चुनें"), "{out}");
    assert!(!out.contains("Please"), "{out}");
}
