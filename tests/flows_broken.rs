//! Every validator check against the deliberately broken flows in `tests/flows_broken/`:
//! the full list of `file:line:col: message` lines is snapshot tested, and each check is
//! asserted to fire at least once so a silently dead check fails here.

use std::path::Path;

use waotp::flow::{load_dir, LoadError};

fn messages() -> Vec<String> {
    match load_dir(Path::new("tests/flows_broken")) {
        Err(LoadError::Invalid(diags)) => diags.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("broken flows were accepted"),
    }
}

#[test]
fn broken_flows_report_every_error_with_positions() {
    insta::assert_snapshot!(messages().join("\n"));
}

#[test]
fn every_check_fires() {
    let all = messages().join("\n");
    let checks = [
        (
            "unknown keys",
            "unknown_key.toml:16:1: unknown key `mesage`; did you mean `message`?",
        ),
        (
            "every unknown key at once",
            "unknown_key.toml:24:1: unknown key `outcom`; did you mean `outcome`?",
        ),
        (
            "keyword clash",
            "keyword `Help me` also starts flow `keyword_clash`",
        ),
        ("syntax", "syntax_error.toml:4:"),
        (
            "interrupt words shared",
            "word `Stop` is used by interrupts `cancel` and `pause`",
        ),
        (
            "interrupt word hides a choice",
            "is also a word of interrupt `cancel`",
        ),
        ("unknown value", "unknown value `asq`; did you mean `ask`?"),
        (
            "an unknown value does not hide the other errors",
            "unknown_value.toml:13:46: unknown state `dne`; did you mean `done`?",
        ),
        (
            "placeholder in a multi-line string",
            "multiline_text.toml:11:6: undeclared variable `name`",
        ),
        ("reminder outside the window", "add a `reminder_template`"),
        (
            "save_as source",
            "`save_as` variable `order_id` must be declared with `source = \"customer\"`",
        ),
        (
            "first message outside the 24-hour window",
            "first_message_without_template.toml:29:11: message `prompt` can go out 24 hours or more after the customer last wrote (an API-started session",
        ),
        (
            "end message reached by a long timeout",
            "window_after_long_waits.toml:43:11: message `late` can go out 24 hours or more after the customer last wrote (after the timeout of state `ask`)",
        ),
        (
            "reminder after a day",
            "window_after_long_waits.toml:37:12: reminder `nudge` can go out 24 hours or more after the customer last wrote (after the 30h reminder",
        ),
        (
            "message after long waits on another path",
            "message `bye` can go out 24 hours or more after the customer last wrote (after the timeout of state `checked`)",
        ),
        (
            "unresolved state",
            "unknown state `confim`; did you mean `confirm`?",
        ),
        (
            "unresolved message",
            "unknown message `helo`; did you mean `hello`?",
        ),
        ("unresolved template", "unknown template `greeting`"),
        (
            "unresolved hook",
            "unknown hook `lookup_acount`; did you mean `lookup_account`?",
        ),
        ("unresolved variable", "unknown variable `acount`"),
        ("unreachable", "state `forgotten` is unreachable"),
        ("no way out", "state `first` has no way out"),
        ("no timer", "waiting state `ask` has no timer"),
        (
            "half a timer",
            "`timeout` in state `ask_again` needs `on_timeout`",
        ),
        (
            "undeclared var in message",
            "undeclared variable `order`; did you mean `order_id`?",
        ),
        ("undeclared var in template", "undeclared variable `total`"),
        (
            "undeclared var in guard",
            "guard uses undeclared variable `paid`",
        ),
        (
            "guard without else",
            "branches of state `lookup` have no else",
        ),
        (
            "else not last",
            "a branch without `when` must be the last one",
        ),
        (
            "too many buttons",
            "has 4 buttons; WhatsApp allows at most 3",
        ),
        (
            "button title",
            "is 35 characters; WhatsApp allows at most 20",
        ),
        (
            "body length",
            "is 1030 characters; WhatsApp allows at most 1024",
        ),
        ("list rows", "has 11 rows; WhatsApp allows at most 10"),
        ("non-waiting loop", "form a loop that never waits"),
        ("otp length", "otp length 12 is out of range 4–10"),
        ("otp lifetime", "otp lifetime `2h` is out of range 1m–90m"),
        ("otp attempts", "otp attempts 0 is out of range 1–10"),
        (
            "code in free-form message",
            "a code must not be put into a free-form message",
        ),
        ("code listed in template", "`{{code}}` must not be listed"),
        (
            "code in non-authentication template",
            "its category must be `authentication`",
        ),
        ("otp without template", "needs an authentication `template`"),
        (
            "field of another kind",
            "`buttons` is not used by `say` states",
        ),
        ("missing field", "`end` state `done` needs `outcome`"),
        ("retry target", "needs `on_retries_exhausted`"),
        ("nothing starts it", "nothing can start this flow"),
        (
            "file name",
            "flow id `not_the_file_name` must match the file name `wrong_name.toml`",
        ),
        (
            "default language",
            "has no text in the default language `en`",
        ),
        ("duration", "`an hour` is not a duration"),
        (
            "quick reply names no choice of a state sending the template",
            "quick reply `nope` of template `summary` is not a button or list row of state `ask`",
        ),
        (
            "quick reply twice",
            "quick reply `yes` appears twice in template `summary`",
        ),
        ("too many quick replies", "WhatsApp allows at most 10"),
        (
            "quick replies on an authentication template",
            "it cannot have `quick_replies`",
        ),
        (
            "quick replies sent by a state that cannot answer them",
            "which only an `ask` state can answer",
        ),
        (
            "a word standing for two choices",
            "title_synonym.toml:18:48: `yes!` stands for choices `correct` and `wrong` of state `ask`",
        ),
        (
            "an interrupt word that starts another flow",
            "interrupt_starts_other_flow.toml:11:10: `I want to recover` (interrupt `help`) also starts flow `keyword_clash` (its keyword `recover`, tests/flows_broken/keyword_clash.toml:7:13) when typed outside a session",
        ),
        ("template name", "template_content.toml:20:8: template name `Edges-Template` must be 1 to 512 lowercase letters, digits and `_`"),
        ("parameters that differ from the body's", "template_content.toml:25:15: template `edges` takes its parameters from its body, {{name}}, {{order}}, {{name}}; drop `parameters` or list exactly those"),
        ("example for no placeholder", "template_content.toml:26:36: example for `nmae`, which no placeholder of template `edges` uses; did you mean `name`?"),
        ("URL placeholder", "template_content.toml:29:52: URL button `Track` of template `edges` may have no placeholder (waotp fills in body placeholders only)"),
        ("URL button title length", "template_content.toml:30:13: URL button titles of template `edges` must be 1 to 25 characters; this one is 39"),
        ("URL button scheme", "template_content.toml:30:62: URL button `A title far longer than WhatsApp allows` of template `edges` needs an http(s) URL"),
        ("URL button count", "template_content.toml:31:13: template `edges` has 3 URL buttons; WhatsApp allows at most 2"),
        ("authentication key on another category", "template_content.toml:33:27: `code_expiration_minutes` is only for authentication templates; template `edges` is not one"),
        ("content on an authentication template", "template_content.toml:38:8: template `code` cannot have `body`: an authentication template's content is fixed by WhatsApp"),
        ("language twice", "template_content.toml:39:20: language `en` appears twice in template `code`"),
        ("code expiry range", "template_content.toml:40:27: `code_expiration_minutes` must be 1 to 90"),
        ("android package", "template_content.toml:41:28: `shop` is not an Android package name"),
        ("android signature hash", "template_content.toml:41:53: `signature_hash` must be the app's 11-character signing key hash"),
        ("template language without a body text", "template_content.toml:46:12: template `order_only` has no language `fr`: its body message `mixed` has no text in it"),
        ("languages on a non-authentication template", "template_content.toml:52:14: template `no_body`: `languages` is only for authentication templates"),
        ("content without a body", "template_content.toml:53:10: template `no_body` has content but no `body`"),
        ("template body length", "template_content.toml:61:6: the body of template `long` in `en` is 1080 characters; WhatsApp allows at most 1024"),
        ("placeholder at the start", "template_content.toml:64:7: the body of template `edges` must not start with a placeholder"),
        ("placeholders side by side", "template_content.toml:64:36: placeholders `{{order}}` and `{{name}}` of template `edges` are next to each other"),
        ("placeholder at the end", "template_content.toml:64:36: the body of template `edges` must not end with a placeholder"),
        ("placeholder order across languages", "template_content.toml:65:6: template `edges` in `hi` has the placeholders {{order}}, {{name}}, but its other languages have {{name}}, {{order}}, {{name}} in that order"),
        ("placeholder without an example", "template_content.toml:68:13: placeholder `{{order}}` of template `order_only` needs an example value"),
        ("header length", "template_content.toml:71:6: the header of template `edges` in `en` is 70 characters; WhatsApp allows at most 60"),
        ("header placeholders", "template_content.toml:71:13: the header of template `edges` may have no placeholder (waotp fills in body placeholders only)"),
        ("footer placeholders", "template_content.toml:74:14: the footer of template `edges` may have no placeholder"),
        ("header line breaks and Markdown", "template_content.toml:114:6: the header of template `styled` in `en` has the Markdown character `*`: WhatsApp takes a text header as one plain line"),
        (
            "an unknown key does not hide the other errors",
            "all_at_once.toml:21:1: unknown key `timout`; did you mean `timeout`?",
        ),
        (
            "the bad goto behind the unknown key",
            "all_at_once.toml:18:37: unknown state `confrim`; did you mean `confirm`?",
        ),
        (
            "a loop bounded by max_visits but for its uncounted way on",
            "bounded_loops.toml:29:8: states `ask` → `bounce` form a loop that never waits for anything; once `ask` has used up its `max_visits`, entering it goes on to `on_max_visits` uncounted",
        ),
        (
            "an unbounded loop names the two ways to bound it",
            "bounded_loops.toml:76:8: states `spin` → `spin_more` form a loop that never waits for anything; make one of them wait, or give one `max_visits` and `on_max_visits`",
        ),
        (
            "on_max_visits without max_visits",
            "bounded_loops.toml:53:17: `on_max_visits` in state `half` needs `max_visits`",
        ),
        (
            "max_visits out of range",
            "bounded_loops.toml:59:14: `max_visits` in state `zero` is 0; it must be 1 to 100",
        ),
        (
            "max_visits without on_max_visits",
            "bounded_loops.toml:66:14: `max_visits` in state `no_exit` needs `on_max_visits`",
        ),
        (
            "unknown on_max_visits target",
            "bounded_loops.toml:73:17: unknown state `dne`; did you mean `done`?",
        ),
        (
            "max_visits on an end state",
            "bounded_loops.toml:88:14: `max_visits` is not used by `end` states (state `done`)",
        ),
        (
            "unknown on_deadline target",
            "deadline.toml:10:15: unknown state `gone`; did you mean `done`?",
        ),
        (
            "deadline reminder before the start",
            "deadline.toml:11:23: deadline reminder `-50d` must fall after the start and before the deadline (1d after the start)",
        ),
        (
            "deadline reminder that is no duration",
            "deadline.toml:11:31: `soon` is not a duration",
        ),
        (
            "deadline reminders without their message",
            "deadline.toml:11:23: `deadline_reminders` needs `deadline_reminder`",
        ),
        (
            "deadline reminder template without the message",
            "deadline.toml:12:30: `deadline_reminder_template` needs `deadline_reminder`",
        ),
        (
            "on_deadline without deadline",
            "deadline_pairs.toml:9:15: `on_deadline` needs `deadline`",
        ),
        (
            "deadline reminders without deadline",
            "deadline_pairs.toml:10:23: `deadline_reminders` needs a `deadline` in [start]",
        ),
        (
            "deadline out of range",
            "deadline_range.toml:9:12: `deadline` `40d` is longer than 30d",
        ),
        (
            "deadline reminder outside the window",
            "deadline_window.toml:12:21: deadline reminder `hurry` can go out 24 hours or more after the customer last wrote (at the -1h deadline reminder, waiting in state `ask`), when WhatsApp accepts only templates: add a `deadline_reminder_template`",
        ),
        (
            "a state after the deadline waiting for ever",
            "deadline_window.toml:39:8: waiting state `after` can be reached after the deadline (`on_deadline`), so it needs its own `timeout` and `on_timeout`",
        ),
        (
            "deadline end outside the window",
            "deadline_window.toml:30:11: message `late` can go out 24 hours or more after the customer last wrote (at the deadline, waiting in state `ask`)",
        ),
        (
            "unknown built-in text",
            "local_texts.toml:19:6: unknown built-in text `wrong_cod` in [texts]; did you mean `wrong_code`?",
        ),
        (
            "a built-in text's own placeholders",
            "local_texts.toml:22:13: undeclared variable `wait_seconds`; did you mean `wait_secs`?",
        ),
        (
            "title length per language",
            "local_texts.toml:28:44: button title `हाँ, मैं इस ऑर्डर की पुष्टि करता हूँ` (`hi`) is 36 characters; WhatsApp allows at most 20",
        ),
        (
            "title without a language of the messages",
            "local_texts.toml:29:24: button title `No` has no text in `hi`, a language of the flow's messages",
        ),
        (
            "row description length per language",
            "list row description `पहला विकल्प",
        ),
        (
            "unreachable once, naming the line that cuts it off",
            "all_at_once.toml:25:8: state `confirm` is unreachable from the start state `ask` because of line 18 (`confrim`); so is every state only reachable through it",
        ),
    ];
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(_, m)| !all.contains(m))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        missing.is_empty(),
        "checks that did not fire: {missing:?}\n{all}"
    );
}

#[test]
fn no_error_is_a_consequence_of_another() {
    let all = messages();
    for (file, consequence) in [
        // A title or id repeated among its own synonyms is the same word for the same choice.
        ("title_synonym.toml", "`Correct`"),
        ("title_synonym.toml", "`correct` stands for"),
        // `thanks` is only unreachable because `confirm` is.
        ("all_at_once.toml", "`thanks`"),
        // The misspelt `timout` is read as `timeout`, so the state has its timer.
        ("all_at_once.toml", "timer"),
        ("all_at_once.toml", "needs `timeout`"),
    ] {
        let found: Vec<&String> = all
            .iter()
            .filter(|m| m.contains(file) && m.contains(consequence))
            .collect();
        assert!(found.is_empty(), "reported: {found:?}");
    }
}

/// Warnings leave a flow valid (it loads and runs) and are positioned like errors.
#[test]
fn warnings_are_positioned_and_do_not_refuse_the_flow() {
    let name = "tests/flows_broken/warnings.toml";
    let text = std::fs::read_to_string(name).expect("fixture");
    let flow = waotp::flow::parse_flow(name, &text).expect("a flow with only warnings loads");
    let warnings: Vec<String> = flow.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "tests/flows_broken/warnings.toml:30:25: warning: button title `OK` is shown in every language, but the flow's messages are in `en`, `hi`: write it as a table by language, `{ en = \"…\", hi = \"…\" }`",
            "tests/flows_broken/warnings.toml:39:11: warning: state `describe` takes any text as its answer, so a message with `agent` among other words (\"… agent …\") is that answer, not interrupt `agent` (match = \"word\"); only `agent` alone reaches it here",
        ]
    );
}
