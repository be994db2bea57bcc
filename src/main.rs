//! The `waotp` binary: command-line entry point.
//!
//! On the `flow` branch this only forwards the flow author's commands to
//! `waotp::flow::cli`; the full parser (with `serve`) lives on the main branch.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use waotp::flow::cli;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, err) = (&mut io::stdout(), &mut io::stderr());
    let positional: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let flag = |name: &str| -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == name)
            .map(|w| w[1].clone())
            .collect()
    };
    let dir = |i: usize| {
        positional
            .get(i)
            .map_or_else(|| PathBuf::from("flows"), PathBuf::from)
    };
    let code = match args.first().map(String::as_str) {
        Some("validate") => cli::validate(&dir(0), out, err),
        Some("test") => cli::test(&dir(0), out, err),
        Some("schema") => cli::schema(out),
        Some("graph") => match positional.first() {
            Some(flow) => cli::graph(&PathBuf::from("flows"), flow, out, err),
            None => cli::USAGE,
        },
        Some("chat") => match positional.first() {
            Some(flow) => {
                let vars: Vec<(String, String)> = flag("--var")
                    .iter()
                    .filter_map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    })
                    .collect();
                let lang = flag("--lang").pop().unwrap_or_else(|| "en".to_owned());
                cli::chat(
                    &PathBuf::from("flows"),
                    flow,
                    &vars,
                    &lang,
                    &mut io::stdin().lock(),
                    out,
                    err,
                )
            }
            None => cli::USAGE,
        },
        _ => {
            use std::io::Write as _;
            let _ = writeln!(err, "usage: waotp validate [DIR] | test [DIR] | chat FLOW [--var k=v]... [--lang xx] | schema | graph FLOW");
            cli::USAGE
        }
    };
    ExitCode::from(code)
}
