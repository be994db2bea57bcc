//! The tenants file (`WAOTP_TENANTS`): every check with the exact `file:line:col` it reports,
//! what a valid file declares, and `waotp tenants check` / `key-digest` run as the real binary.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use waotp::tenants::{file, KeyDigest, Scope, Tenants};

const TOKEN: &str = "EAAG-tenants-token-value";
const SECRET: &str = "tenants-callback-secret-value";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn digest(key: &str) -> String {
    format!("sha256:{}", KeyDigest::of(key.as_bytes()).hex())
}

/// A valid file: one merchant sending from one number. Tests break one line of it.
fn valid() -> String {
    format!(
        r#"[[merchant]]
id = "shop"
api_keys = ["{}"]
callback_url = "https://shop.example/waotp"
callback_secret_env = "SHOP_SECRET"
flows = "flows"

[[merchant.number]]
phone_number_id = "1001"
business_number = "+14155550100"
access_token_env = "SHOP_TOKEN"
"#,
        digest("shop-key")
    )
}

fn env(name: &str) -> Option<String> {
    let vars = HashMap::from([
        ("SHOP_TOKEN", TOKEN),
        ("SHOP_SECRET", SECRET),
        ("OTHER_TOKEN", "EAAG-other"),
        ("EMPTY", "  "),
    ]);
    vars.get(name).map(|v| (*v).to_owned())
}

fn parse(text: &str) -> Result<Tenants, Vec<String>> {
    file::parse("t.toml", text, &root(), &env)
        .map_err(|diags| diags.iter().map(ToString::to_string).collect())
}

/// The problems of `text`, which must be invalid.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

/// `text` with the first `from` replaced by `to` (which must be there).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not in:\n{text}");
    text.replacen(from, to, 1)
}

#[test]
fn a_valid_file_declares_its_merchants_and_numbers() {
    let text = format!(
        r#"{}sends_per_second = 1000

[[merchant.number]]
phone_number_id = "1002"

[[merchant]]
id = "market-2"
api_keys = ["{}"]
callback_secret_env = "SHOP_SECRET"
flow_files = ["flows/cod_confirmation.toml"]
otp_sends_per_hour = 50
otp_allowed_prefixes = ["+91"]
waba_id = "102290129340398"

[[merchant.number]]
phone_number_id = "2001"
access_token_env = "OTHER_TOKEN"
"#,
        valid(),
        digest("market-key")
    );
    let t = parse(&text).expect("valid");
    assert_eq!(t.scope_of(Some("1002")), Some(Scope::new("shop", "1002")));
    assert_eq!(
        t.scope_of(Some("2001")),
        Some(Scope::new("market-2", "2001"))
    );
    assert_eq!(t.scope_of(Some("3001")), None, "an unknown number");
    assert_eq!(
        t.merchant_for_key(b"market-key").expect("key").id,
        "market-2"
    );
    let shop = t.merchant("shop").expect("shop");
    assert_eq!(shop.first_number().phone_number_id, "1001");
    assert_eq!(shop.first_number().sends_per_second, 1000);
    assert_eq!(shop.numbers[1].sends_per_second, 80, "the default rate");
    assert!(
        shop.numbers[1].access_token.is_none(),
        "a number without a token is in sandbox"
    );
    assert!(!shop.sandbox() && !t.sandbox());
    assert_eq!(
        shop.flows,
        waotp::tenants::FlowSource::Dir(root().join("flows")),
        "relative to the file's directory"
    );
    let market = t.merchant("market-2").expect("market");
    assert_eq!(
        market.flows,
        waotp::tenants::FlowSource::Files(vec![root().join("flows/cod_confirmation.toml")])
    );
    assert_eq!(market.otp_sends_per_hour, Some(50));
    assert_eq!(market.otp_allowed_prefixes, Some(vec!["+91".to_owned()]));
    // Secrets come from the environment and stay wrapped.
    let shown = format!("{t:?}");
    assert!(!shown.contains(TOKEN) && !shown.contains(SECRET), "{shown}");
}

#[test]
fn a_file_without_tokens_runs_every_merchant_in_sandbox_mode() {
    let text = valid().replace("access_token_env = \"SHOP_TOKEN\"\n", "");
    let t = parse(&text).expect("valid");
    assert!(t.sandbox());
    assert!(t.merchant("shop").expect("shop").sandbox());
}

#[test]
fn an_unknown_key_is_an_error_with_a_hint() {
    let text = edit(&valid(), "access_token_env", "acess_token_env");
    assert_eq!(
        errors(&text),
        ["t.toml:11:1: unknown key `acess_token_env`; did you mean `access_token_env`?"]
    );
    let text = edit(
        &valid(),
        "flows = \"flows\"",
        "flows = \"flows\"\ncolour = \"red\"",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:7:1: unknown key `colour`; expected"),
        "{e:?}"
    );
}

#[test]
fn a_wrong_type_is_an_error_that_does_not_quote_the_value() {
    let text = edit(
        &valid(),
        "access_token_env = \"SHOP_TOKEN\"",
        "sends_per_second = \"a-pasted-secret\"",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:11:20: invalid type: a string, expected"),
        "{e:?}"
    );
    assert!(!e[0].contains("a-pasted-secret"), "{e:?}");
}

#[test]
fn a_bad_merchant_id_is_an_error() {
    for bad in ["Shop", "shop a", "", "a-very-long-merchant-id-of-33-chr"] {
        let text = edit(&valid(), "id = \"shop\"", &format!("id = \"{bad}\""));
        assert_eq!(
            errors(&text),
            [format!("t.toml:2:6: merchant id `{bad}` must be 1 to 32 characters of a-z, 0-9, `_` and `-`")],
            "{bad}"
        );
    }
}

#[test]
fn an_api_key_must_be_a_digest_and_is_never_printed() {
    for bad in [
        "live-key-123".to_owned(),
        format!("sha256:{}", "ab".repeat(31)),
        format!("sha1:{}", "ab".repeat(32)),
        format!("sha256:{}", "zz".repeat(32)),
    ] {
        let text = edit(&valid(), &digest("shop-key"), &bad);
        let e = errors(&text);
        assert_eq!(
            e,
            ["t.toml:3:13: an API key is written as its digest, `sha256:` and 64 hex digits (`waotp tenants key-digest` prints it), never as the key"],
        );
        assert!(!e[0].contains(&bad));
    }
}

#[test]
fn phone_number_ids_and_business_numbers_are_checked() {
    let text = edit(&valid(), "\"1001\"", "\"10x1\"");
    assert_eq!(
        errors(&text),
        ["t.toml:9:19: phone_number_id `10x1` must be the digits WhatsApp shows for the number"]
    );
    let text = edit(&valid(), "\"+14155550100\"", "\"14155550100\"");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "t.toml:10:19: business_number `14155550100` is not an E.164 number with `+`"
        ),
        "{e:?}"
    );
    let text = edit(&valid(), "\"+14155550100\"", "\"+1415555\"");
    assert!(errors(&text)[0].starts_with("t.toml:10:19: business_number"));
}

#[test]
fn sends_per_second_stays_within_metas_range() {
    for bad in ["0", "1001"] {
        let text = edit(
            &valid(),
            "access_token_env = \"SHOP_TOKEN\"",
            &format!("access_token_env = \"SHOP_TOKEN\"\nsends_per_second = {bad}"),
        );
        assert_eq!(
            errors(&text),
            ["t.toml:12:20: sends_per_second must be from 1 to 1000"],
            "{bad}"
        );
    }
}

#[test]
fn duplicates_point_at_the_second_and_name_the_first() {
    let second = |id: &str, number: &str, key: &str, business: &str| {
        format!(
            r#"
[[merchant]]
id = "{id}"
api_keys = ["{}"]
flows = "flows"

[[merchant.number]]
phone_number_id = "{number}"
business_number = "{business}"
"#,
            digest(key)
        )
    };
    // Lines 1-11 are the valid file; the second merchant is lines 13-20.
    let text = valid() + &second("shop", "2001", "other-key", "+14155550101");
    assert_eq!(
        errors(&text),
        ["t.toml:14:6: merchant `shop` is declared twice (first at t.toml:2:6)"]
    );
    let text = valid() + &second("other", "1001", "other-key", "+14155550101");
    assert_eq!(
        errors(&text),
        ["t.toml:19:19: phone number id `1001` is also a number of merchant `shop` (t.toml:9:19)"]
    );
    let text = valid() + &second("other", "2001", "shop-key", "+14155550101");
    assert_eq!(
        errors(&text),
        ["t.toml:15:13: this API key is also a key of merchant `shop` (t.toml:3:13)"]
    );
    let text = valid() + &second("other", "2001", "other-key", "+14155550100");
    assert_eq!(
        errors(&text),
        ["t.toml:20:19: business number `+14155550100` is also declared for merchant `shop` (t.toml:10:19)"]
    );
}

#[test]
fn a_merchant_needs_a_number() {
    let text = valid();
    let text = &text[..text.find("[[merchant.number]]").expect("number")];
    let e = errors(text);
    assert!(
        e.contains(
            &"t.toml:2:6: merchant `shop` has no number; add a [[merchant.number]] table"
                .to_owned()
        ),
        "{e:?}"
    );
    assert_eq!(
        errors("# nobody yet\n"),
        ["t.toml:1:1: the file declares no merchant; add a [[merchant]] table"]
    );
}

#[test]
fn a_variable_the_file_names_must_be_set_and_its_value_is_never_shown() {
    let text = edit(&valid(), "\"SHOP_TOKEN\"", "\"MISSING_TOKEN\"");
    assert_eq!(
        errors(&text),
        ["t.toml:11:20: environment variable `MISSING_TOKEN` (access_token_env) is unset or empty"]
    );
    let text = edit(&valid(), "\"SHOP_TOKEN\"", "\"EMPTY\"");
    assert_eq!(
        errors(&text),
        ["t.toml:11:20: environment variable `EMPTY` (access_token_env) is unset or empty"]
    );
    let text = edit(&valid(), "\"SHOP_SECRET\"", "\"NO_SECRET\"");
    assert_eq!(
        errors(&text),
        ["t.toml:5:23: environment variable `NO_SECRET` (callback_secret_env) is unset or empty"]
    );
    // A token pasted where its variable's name belongs is refused without being printed.
    let text = edit(&valid(), "\"SHOP_TOKEN\"", &format!("\"{TOKEN}\""));
    let e = errors(&text);
    assert_eq!(
        e,
        ["t.toml:11:20: access_token_env names an environment variable: letters, digits and `_`, not starting with a digit"]
    );
}

#[test]
fn a_sending_merchant_needs_keys_and_a_callback_secret() {
    let text = edit(&valid(), "callback_secret_env = \"SHOP_SECRET\"\n", "");
    assert_eq!(
        errors(&text),
        ["t.toml:2:6: merchant `shop` sends to WhatsApp (a number has access_token_env) and needs callback_secret_env"]
    );
    let text = edit(
        &valid(),
        &format!("api_keys = [\"{}\"]\n", digest("shop-key")),
        "",
    );
    assert_eq!(
        errors(&text),
        ["t.toml:2:6: merchant `shop` sends to WhatsApp (a number has access_token_env) and needs api_keys"]
    );
}

#[test]
fn flows_must_exist_and_be_given_one_way() {
    let text = edit(&valid(), "flows = \"flows\"", "flows = \"no_such_dir\"");
    assert_eq!(
        errors(&text),
        [format!(
            "t.toml:6:9: flows directory `{}` does not exist",
            root().join("no_such_dir").display()
        )]
    );
    let text = edit(
        &valid(),
        "flows = \"flows\"",
        "flow_files = [\"flows/cod_confirmation.toml\", \"flows/nope.toml\"]",
    );
    assert_eq!(
        errors(&text),
        [format!(
            "t.toml:6:46: flow file `{}` does not exist",
            root().join("flows/nope.toml").display()
        )]
    );
    let text = edit(
        &valid(),
        "flows = \"flows\"",
        "flows = \"flows\"\nflow_files = []",
    );
    assert_eq!(
        errors(&text),
        ["t.toml:7:14: give either `flows` (a directory) or `flow_files` (a list), not both"]
    );
    let text = edit(&valid(), "flows = \"flows\"\n", "");
    assert_eq!(
        errors(&text),
        ["t.toml:2:6: merchant `shop` needs `flows` (a directory) or `flow_files` (a list of files)"]
    );
}

#[test]
fn urls_limits_and_account_ids_are_checked() {
    let text = edit(&valid(), "https://shop.example/waotp", "shop.example/waotp");
    assert_eq!(
        errors(&text),
        ["t.toml:4:16: `shop.example/waotp` is not an http(s) URL"]
    );
    let text = edit(
        &valid(),
        "flows = \"flows\"",
        "flows = \"flows\"\notp_sends_per_hour = 0\notp_allowed_prefixes = [\"91\"]\nwaba_id = \"1-2\"",
    );
    assert_eq!(
        errors(&text),
        [
            "t.toml:7:22: otp_sends_per_hour must be from 1 to 1000000",
            "t.toml:8:25: `91` is not a phone number prefix such as +91",
            "t.toml:9:11: waba_id must be letters and digits only",
        ]
    );
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let text = edit(&valid(), "\"1001\"", "\"10x1\"");
    let text = edit(&text, "\"SHOP_TOKEN\"", "\"MISSING_TOKEN\"");
    let text = edit(&text, "id = \"shop\"", "id = \"Shop\"");
    let text = edit(&text, "access_token_env", "acess_token_env");
    // The misspelt key is read as the key it is close to, so its value is still checked.
    assert_eq!(
        errors(&text),
        [
            "t.toml:2:6: merchant id `Shop` must be 1 to 32 characters of a-z, 0-9, `_` and `-`",
            "t.toml:9:19: phone_number_id `10x1` must be the digits WhatsApp shows for the number",
            "t.toml:11:1: unknown key `acess_token_env`; did you mean `access_token_env`?",
            "t.toml:11:19: environment variable `MISSING_TOKEN` (access_token_env) is unset or empty",
        ]
    );
}

/// `waotp ARGS` with only `vars` in its environment, from the crate's root.
fn waotp(args: &[&str], vars: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_waotp"))
        .args(args)
        .current_dir(root())
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("waotp runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("waotp ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tenants_check_accepts_the_documented_example() {
    let (code, out, err) = waotp(&["tenants", "check", "docs/examples/tenants.toml"], &[], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("merchant acme: 2 API key(s)"), "{out}");
    assert!(
        out.contains("  number 106540352242923 (+15550783882): sandbox, 200 sends/s"),
        "{out}"
    );
    assert!(out.contains("merchant bazaar: 1 API key(s)"), "{out}");
    assert!(
        out.contains("docs/examples/tenants.toml: 2 merchant(s), 3 number(s) valid (sandbox mode"),
        "{out}"
    );
    // WAOTP_TENANTS names the file when no FILE is given.
    let (code, out, _) = waotp(
        &["tenants", "check"],
        &[("WAOTP_TENANTS", "docs/examples/tenants.toml")],
        "",
    );
    assert_eq!(code, 0);
    assert!(out.contains("3 number(s) valid"), "{out}");
}

#[test]
fn tenants_check_lists_every_error_and_exits_1_without_showing_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tenants.toml");
    let text = edit(&valid(), "\"1001\"", "\"10x1\"");
    let text = edit(
        &text,
        "flows = \"flows\"",
        &format!("flows = \"{}\"", root().join("flows").display()),
    );
    std::fs::write(&path, text).expect("write");
    let path = path.display().to_string();
    let (code, out, err) = waotp(&["tenants", "check", &path], &[("SHOP_SECRET", SECRET)], "");
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!("{path}:9:19: phone_number_id `10x1`")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{path}:11:20: environment variable `SHOP_TOKEN` (access_token_env) is unset or empty"
        )),
        "{err}"
    );
    // Valid once the token is set; still no secret on the screen.
    std::fs::write(
        &path,
        edit(
            &valid(),
            "flows = \"flows\"",
            &format!("flows = \"{}\"", root().join("flows").display()),
        ),
    )
    .expect("write");
    let (code, out, err) = waotp(
        &["tenants", "check", &path],
        &[("SHOP_SECRET", SECRET), ("SHOP_TOKEN", TOKEN)],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("  number 1001 (+14155550100): sends to WhatsApp, 80 sends/s"),
        "{out}"
    );
    assert!(
        !out.contains(TOKEN) && !out.contains(SECRET) && !err.contains(TOKEN),
        "{out}{err}"
    );
    let (code, _, err) = waotp(&["tenants", "check", "no/such/tenants.toml"], &[], "");
    assert_eq!(code, 1);
    assert!(err.contains("cannot read no/such/tenants.toml"), "{err}");
}

#[test]
fn key_digest_prints_what_api_keys_lists() {
    let (code, out, err) = waotp(&["tenants", "key-digest"], &[], "acme-live-key-1\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{}\n", digest("acme-live-key-1")));
    // The documented example lists this very digest for acme.
    let example =
        std::fs::read_to_string(root().join("docs/examples/tenants.toml")).expect("example");
    assert!(example.contains(out.trim()), "{out}");
    let (code, out, err) = waotp(&["tenants", "key-digest"], &[], "\n");
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
}

#[test]
fn serve_refuses_a_tenants_file_beside_the_variables_it_replaces() {
    let (code, _, err) = waotp(
        &["serve"],
        &[
            ("WAOTP_TENANTS", "docs/examples/tenants.toml"),
            ("WAOTP_ACCESS_TOKEN", TOKEN),
            ("WAOTP_PHONE_NUMBER_ID", "1001"),
        ],
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("WAOTP_TENANTS declares the merchants and their numbers; unset WAOTP_ACCESS_TOKEN, WAOTP_PHONE_NUMBER_ID"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
}

#[test]
fn the_example_is_read_relative_to_its_own_directory() {
    let t = file::read(Path::new("docs/examples/tenants.toml"), &|_| None).expect("example");
    let acme = t.merchant("acme").expect("acme");
    assert_eq!(
        acme.flows,
        waotp::tenants::FlowSource::Dir(PathBuf::from("docs/examples/../../flows"))
    );
    assert_eq!(
        acme.number("+15550783882")
            .expect("by business number")
            .sends_per_second,
        200
    );
}

/// The TOML blocks of a Markdown page that follow `heading`, up to the next heading of its level.
fn toml_blocks(page: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(page)).expect("page");
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in {page}"));
    let level = heading.split(' ').next().unwrap_or("##");
    let rest = &text[start + heading.len()..];
    let end = rest.find(&format!("\n{level} ")).unwrap_or(rest.len());
    rest[..end]
        .split("```toml\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn the_documented_files_are_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("flows/acme")).expect("flows");
    for f in ["cod_confirmation.toml", "signup_verification.toml"] {
        std::fs::write(dir.path().join("flows").join(f), "").expect("flow file");
    }
    let any = |_: &str| Some("set".to_owned());
    for (page, heading) in [
        ("README.md", "## For providers: many merchants and numbers"),
        ("docs/tenants.md", "## An example"),
    ] {
        let blocks = toml_blocks(page, heading);
        assert_eq!(blocks.len(), 1, "{page}");
        let t = file::parse(page, &blocks[0], dir.path(), &any)
            .unwrap_or_else(|e| panic!("{page}: {e:?}"));
        assert_eq!(t.merchants().len(), 2, "{page}");
        assert!(!t.sandbox(), "{page}");
    }
}

proptest::proptest! {
    /// Whatever an editor leaves in the file mid-edit (a cut, a stray character), the parse
    /// ends, and every error it reports points inside the text.
    #[test]
    fn any_edit_of_a_valid_file_gives_a_tenants_registry_or_positioned_errors(
        cut in 0usize..400,
        at in 0usize..400,
        c in proptest::char::any(),
    ) {
        let mut text = valid();
        let cut = (0..=cut.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        let at = (0..=at.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert(at, c);
        if let Err(diags) = file::parse("t.toml", &text, &root(), &env) {
            proptest::prop_assert!(!diags.is_empty());
            let lines: Vec<&str> = text.split('\n').collect();
            for d in &diags {
                proptest::prop_assert!(d.line >= 1 && d.line <= lines.len(), "{d}");
                proptest::prop_assert!(d.col >= 1 && d.col <= lines[d.line - 1].chars().count() + 1, "{d}");
                proptest::prop_assert!(!d.message.contains(TOKEN) && !d.message.contains(SECRET), "{d}");
            }
        }
    }
}

#[test]
fn the_readme_example_loads_its_flows_as_serve_does() {
    // README's block, written in the project's root, with its variables set: serve loads
    // every merchant's flows, and acme's hooks need its hook_base_url.
    let blocks = toml_blocks("README.md", "## For providers: many merchants and numbers");
    let any = |_: &str| Some("set".to_owned());
    let t = file::parse("tenants.toml", &blocks[0], &root(), &any).expect("valid");
    assert!(!t.sandbox());
    let otp = waotp::otp::policy::OtpPolicy::default();
    if let Err(e) = waotp::runtime::merchants::MerchantRuntimes::load(&t, &otp) {
        panic!("README's example does not serve: {e}");
    }
    // Without it, the refusal names the setting a tenants file has for it.
    let text = blocks[0]
        .lines()
        .filter(|l| !l.starts_with("hook_base_url"))
        .collect::<Vec<_>>()
        .join("\n");
    let t = file::parse("tenants.toml", &text, &root(), &any).expect("valid");
    let e = waotp::runtime::merchants::MerchantRuntimes::load(&t, &otp).expect_err("refused");
    assert!(
        e.contains("merchant `acme`") && e.contains("the merchant's `hook_base_url`"),
        "{e}"
    );
}

#[test]
fn tenants_check_never_echoes_a_secret_written_where_a_name_or_number_goes() {
    // The token and the callback secret pasted in place of their variables' names, and the
    // token pasted as a number: every place is reported, no secret is shown.
    const PASTED_TOKEN: &str = "EAAGm0PX4ZCpsBAOpastedTokenValue0123456789";
    const PASTED_SECRET: &str = "whsec_live_PastedCallbackSecret42";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tenants.toml");
    let text = format!(
        r#"[[merchant]]
id = "shop"
api_keys = ["{}"]
callback_secret_env = "{PASTED_SECRET}"
flows = "{}"

[[merchant.number]]
phone_number_id = "{PASTED_TOKEN}"
business_number = "{PASTED_TOKEN}"
access_token_env = "{PASTED_TOKEN}"
"#,
        digest("shop-key"),
        root().join("flows").display()
    );
    std::fs::write(&path, text).expect("write");
    let path = path.display().to_string();
    let (code, out, err) = waotp(&["tenants", "check", &path], &[], "");
    assert_eq!(code, 1, "{out}");
    for (line, col) in [(4, 23), (8, 19), (9, 19), (10, 20)] {
        assert!(
            err.contains(&format!("{path}:{line}:{col}: ")),
            "{line}:{col} in {err}"
        );
    }
    assert!(
        !err.contains(PASTED_TOKEN)
            && !err.contains("EAAGm0PX4ZCpsBAO")
            && !err.contains(PASTED_SECRET),
        "{err}"
    );
    // A conventional name is still named.
    assert!(
        !out.contains(PASTED_TOKEN) && !out.contains(PASTED_SECRET),
        "{out}"
    );
}

#[test]
fn tenants_check_lists_a_callback_url_without_the_credentials_it_carries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tenants.toml");
    let text = format!(
        r#"[[merchant]]
id = "shop"
api_keys = ["{}"]
callback_url = "https://waotp:cb-pass-123@shop.example/events?token=cb-token-456"
flows = "{}"

[[merchant.number]]
phone_number_id = "1001"
"#,
        digest("shop-key"),
        root().join("flows").display()
    );
    std::fs::write(&path, text).expect("write");
    let (code, out, err) = waotp(&["tenants", "check", &path.display().to_string()], &[], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("callbacks to https://shop.example/events?…"),
        "{out}"
    );
    assert!(
        !out.contains("cb-pass-123") && !out.contains("cb-token-456"),
        "{out}"
    );
}

#[test]
fn a_merchants_flows_name_its_own_settings_never_the_processs_environment() {
    // market's flow would carry a variable of the process (every merchant's tokens and
    // secrets live there) out to market's own server.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("market")).expect("flows dir");
    let flow = std::fs::read_to_string(root().join("flows/support_identity.toml")).expect("flow");
    std::fs::write(
        dir.path().join("market/support_identity.toml"),
        flow.replace("{WAOTP_HOOK_BASE_URL}", "https://market.example/{HOME}"),
    )
    .expect("write");
    let text = format!(
        r#"[[merchant]]
id = "market"
api_keys = ["{}"]
callback_secret_env = "SHOP_SECRET"
flows = "market"

[[merchant.number]]
phone_number_id = "2001"
access_token_env = "SHOP_TOKEN"
"#,
        digest("market-key")
    );
    assert!(
        std::env::var("HOME").is_ok(),
        "a variable every process has"
    );
    let t = file::parse("tenants.toml", &text, dir.path(), &env).expect("valid");
    let otp = waotp::otp::policy::OtpPolicy::default();
    let e = waotp::runtime::merchants::MerchantRuntimes::load(&t, &otp)
        .expect_err("a flow naming the environment is refused");
    assert!(
        e.contains("merchant `market`")
            && e.contains(
                "`{HOME}` in the URL of hook `lookup_account`: a merchant's flows name only"
            ),
        "{e}"
    );
    // What a URL's names stand for at a call: the merchant's settings, nothing else.
    let names = waotp::runtime::flows::UrlNames {
        hook_base_url: Some("https://market.example/hooks".into()),
        settings_only: true,
        ..Default::default()
    };
    assert_eq!(names.value("HOME"), None);
    assert_eq!(
        names.value("WAOTP_HOOK_BASE_URL").as_deref(),
        Some("https://market.example/hooks")
    );
}
