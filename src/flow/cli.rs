//! The flow author's commands — `validate`, `test`, `chat`, `schema`, `graph` — as library
//! functions that return a process exit code (0 ok, 1 failure, 2 bad usage or invalid flow
//! files). The command-line parser only forwards to these.
//!
//! Reads flow files and the given input, writes to the given output; never the network.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::engine::Event;
use super::load::{load_dir, parse_flow, Flow, LoadError};
use super::script::run_script;
use super::simulate::Simulation;
use super::transcript::describe;

/// Exit code: success.
pub const OK: u8 = 0;
/// Exit code: failed tests, runtime error (such as an unreadable directory).
pub const FAILED: u8 = 1;
/// Exit code: bad usage.
pub const USAGE: u8 = 2;
/// Exit code: invalid flow files — invalid configuration, as when the server refuses to start
/// on them.
pub const INVALID: u8 = 2;

/// The flows of `dir`, or the exit code after printing why not: [`INVALID`] for invalid files,
/// [`FAILED`] when they cannot be read.
pub(crate) fn load(dir: &Path, err: &mut dyn Write) -> Result<super::load::FlowSet, u8> {
    match load_dir(dir) {
        Ok(set) => Ok(set),
        Err(LoadError::Invalid(diags)) => {
            for d in &diags {
                let _ = writeln!(err, "{d}");
            }
            Err(INVALID)
        }
        Err(e) => {
            let _ = writeln!(err, "{e}");
            Err(FAILED)
        }
    }
}

/// `waotp validate [DIR]`: every error of every flow file, `file:line:col: message`; exits
/// [`INVALID`] on any, [`FAILED`] when a file cannot be read. Warnings
/// (`file:line:col: warning: message`) are listed on valid flows and leave the exit code 0.
pub fn validate(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match load(dir, err) {
        Ok(set) => {
            // Warnings do not make a flow invalid: they are listed, and the exit code stays 0.
            let mut warned = 0;
            for d in set.iter().flat_map(|f| f.warnings()) {
                let _ = writeln!(err, "{d}");
                warned += 1;
            }
            let _ = write!(out, "{} flow(s) valid in {}", set.len(), dir.display());
            let _ = match warned {
                0 => writeln!(out),
                n => writeln!(out, ", {n} warning(s)"),
            };
            OK
        }
        Err(code) => code,
    }
}

/// `waotp test [DIR]`: runs `DIR/tests/*.toml` scripts against the flows in `DIR`.
pub fn test(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let flows = match load(dir, err) {
        Ok(flows) => flows,
        Err(code) => return code,
    };
    let tests = dir.join("tests");
    let mut paths: Vec<_> = match std::fs::read_dir(&tests) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            let _ = writeln!(err, "cannot read {}: {e}", tests.display());
            return FAILED;
        }
    };
    paths.sort();
    let (mut passed, mut failed) = (0, 0);
    for path in paths {
        let name = path.display();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(err, "{name}: {e}");
                failed += 1;
                continue;
            }
        };
        match run_script(&flows, &text) {
            Ok(results) => {
                for r in results {
                    if r.failures.is_empty() {
                        passed += 1;
                        let _ = writeln!(out, "ok   {name}: {}", r.name);
                    } else {
                        failed += 1;
                        let _ = writeln!(out, "FAIL {name}: {}", r.name);
                        for f in r.failures {
                            let _ = writeln!(out, "  {f}");
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(out, "FAIL {name}: {e}");
            }
        }
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        OK
    } else {
        FAILED
    }
}

/// The flow `flow` — an id in `dir`, or the path of one `.toml` file — or the exit code after
/// printing why not, as `validate` would: [`FAILED`] when it cannot be read, [`INVALID`] for
/// invalid files, [`USAGE`] for an unknown id.
fn find_flow(dir: &Path, flow: &str, err: &mut dyn Write) -> Result<Arc<Flow>, u8> {
    if flow.ends_with(".toml") {
        let text = match std::fs::read_to_string(flow) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(err, "cannot read {flow}: {e}");
                return Err(FAILED);
            }
        };
        return match parse_flow(flow, &text) {
            Ok(f) => Ok(Arc::new(f)),
            Err(diags) => {
                for d in diags {
                    let _ = writeln!(err, "{d}");
                }
                Err(INVALID)
            }
        };
    }
    let set = load(dir, err).inspect_err(|&code| {
        if code == FAILED {
            // The directory is the default `flows` unless given: say how to give another.
            let _ = writeln!(
                err,
                "(flows are read from {}; give another directory with --dir, or a file as FLOW.toml)",
                dir.display()
            );
        }
    })?;
    let found = set.get(flow).cloned();
    found.ok_or_else(|| {
        let ids: Vec<&str> = set.iter().map(|f| f.id().as_str()).collect();
        let _ = writeln!(
            err,
            "unknown flow `{flow}`{}",
            super::validate::did_you_mean(flow, ids)
        );
        USAGE
    })
}

/// `waotp schema`: the JSON Schema of the flow file format.
pub fn schema(out: &mut dyn Write) -> u8 {
    let _ = writeln!(out, "{}", schema_json());
    OK
}

/// `waotp schema --markdown`: the flow guide's reference tables, generated from the same
/// definitions as the JSON Schema.
pub fn schema_markdown(out: &mut dyn Write) -> u8 {
    let _ = write!(out, "{}", reference_markdown());
    OK
}

/// The reference tables as `flows/README.md` carries them, markers included.
pub fn reference_markdown() -> String {
    let schema =
        serde_json::to_value(schemars::schema_for!(super::model::FlowFile)).unwrap_or_default();
    format!(
        "{}\n\n{}\n{}\n",
        super::reference::BEGIN,
        super::reference::markdown(&schema),
        super::reference::END
    )
}

/// The JSON Schema text, derived from the model types.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(super::model::FlowFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// `waotp graph FLOW`: a Mermaid state diagram.
pub fn graph(dir: &Path, flow: &str, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match find_flow(dir, flow, err) {
        Ok(f) => {
            let _ = write!(out, "{}", super::graph::mermaid(&f));
            OK
        }
        Err(code) => code,
    }
}

/// The commands of `waotp chat`, as written and what they do, in the order they are listed.
pub const CHAT_COMMANDS: &[(&str, &str)] = &[
    ("/tap ID", "tap a button or list row"),
    ("/wait 10m", "move the clock on"),
    ("/hook NAME {json}", "answer the hook"),
    ("/hookerror NAME", "fail the hook"),
    (
        "/fail",
        "WhatsApp reports the last message as undeliverable",
    ),
    ("/otp", "show the last code"),
    ("/check CODE", "check a code as the merchant's site does"),
    ("/cancel", "cancel as the merchant API does"),
    (
        "/state",
        "show the state, status, clock, next timer, visit counts and deadline",
    ),
    ("/help", "this list"),
    ("/quit", "leave"),
];

/// The chat's one-line help: every command of [`CHAT_COMMANDS`].
pub fn chat_help() -> String {
    let commands: Vec<String> = CHAT_COMMANDS
        .iter()
        .map(|(command, what)| format!("{command} ({what})"))
        .collect();
    format!("type as the customer, or: {}", commands.join(", "))
}

/// `waotp chat FLOW`: an offline conversation with a fake clock.
pub fn chat(
    dir: &Path,
    flow: &str,
    vars: &[(String, String)],
    lang: Option<&str>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let flow = match find_flow(dir, flow, err) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let vars: BTreeMap<String, Value> = vars
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let seed = rand::random();
    let lang = lang.unwrap_or(flow.default_language());
    let mut sim = match Simulation::start(&flow, vars, lang, seed) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "{e} (give it with --var name=value)");
            return USAGE;
        }
    };
    let _ = writeln!(
        out,
        "chatting with `{}` v{} — {}",
        flow.id(),
        flow.version(),
        chat_help()
    );
    let print = |sim: &mut Simulation<'_>, out: &mut dyn Write| {
        for o in sim.take_output() {
            let _ = writeln!(out, "{}", describe(&o));
            // What the customer would see of the template, when the flow gives its content.
            let template = match &o {
                super::simulate::Output::Message(m) => m.template.as_ref().and_then(|t| {
                    super::template_content::customer_text(
                        flow.file(),
                        &t.name,
                        &t.language,
                        &t.parameters,
                        None,
                    )
                }),
                super::simulate::Output::Code {
                    template: Some(name),
                    code,
                    delivered: true,
                    reverse: false,
                    ..
                } => {
                    super::template_content::customer_text(flow.file(), name, lang, &[], Some(code))
                }
                _ => None,
            };
            if let Some(text) = template {
                let _ = writeln!(
                    out,
                    "     as the template: {}",
                    text.replace('\n', "\n       ")
                );
            }
        }
    };
    print(&mut sim, out);
    let mut line = String::new();
    loop {
        if sim.is_completed() {
            return OK;
        }
        let _ = write!(out, "you> ");
        let _ = out.flush();
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return OK,
            Ok(_) => {}
        }
        let text = line.trim();
        let (cmd, arg) = text
            .split_once(' ')
            .map_or((text, ""), |(c, a)| (c, a.trim()));
        match cmd {
            "" => continue,
            "/quit" => return OK,
            "/help" => {
                let _ = writeln!(out, "{}", chat_help());
            }
            "/tap" => sim.apply(Event::Reply { id: arg.to_owned() }),
            "/fail" => sim.fail_last(),
            "/cancel" => sim.apply(Event::CancelFromApi),
            "/check" => {
                if let Err(e) = sim.check_via_api(arg) {
                    let _ = writeln!(out, "(/check refused: {e})");
                }
            }
            "/otp" => {
                let _ = writeln!(out, "(last code: {})", sim.last_code().unwrap_or("none"));
            }
            "/state" => {
                let s = sim.session();
                let at = sim
                    .next_timer()
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "-".to_owned());
                let mut extra = String::new();
                if !s.visits.is_empty() {
                    let visits: Vec<String> = s
                        .visits
                        .iter()
                        .map(|(state, n)| format!("`{state}` {n}"))
                        .collect();
                    extra.push_str(&format!(", visits {}", visits.join(", ")));
                }
                if let Some(deadline) = s.deadline_at {
                    extra.push_str(&format!(", deadline {}", deadline.to_rfc3339()));
                }
                let _ = writeln!(
                    out,
                    "(state `{}`, status {:?}, clock {}, next timer {at}{extra})",
                    s.state,
                    s.status,
                    sim.now().to_rfc3339()
                );
            }
            "/wait" => match super::duration::parse_duration(arg) {
                Ok(d) => sim.advance(d),
                Err(e) => {
                    let _ = writeln!(out, "({e})");
                }
            },
            "/hook" => {
                let (name, json) = arg.split_once(' ').unwrap_or((arg, "{}"));
                match serde_json::from_str::<Value>(json) {
                    Ok(Value::Object(fields)) => sim.apply(Event::HookOk {
                        hook: name.to_owned(),
                        fields,
                    }),
                    _ => {
                        let _ = writeln!(out, "(the answer must be a JSON object)");
                    }
                }
            }
            "/hookerror" => sim.apply(Event::HookError {
                hook: arg.to_owned(),
                reason: "simulated".to_owned(),
            }),
            c if c.starts_with('/') => {
                let _ = writeln!(out, "(unknown command; {})", chat_help());
            }
            _ => sim.apply(Event::Text {
                body: text.to_owned(),
            }),
        }
        print(&mut sim, out);
    }
}
