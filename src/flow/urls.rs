//! `{NAME}` references in a flow's URLs: hook URLs and callback URLs may name a setting or an
//! environment variable (`url = "{WAOTP_HOOK_BASE_URL}/lookup_account"`).
//!
//! Owns finding the references, listing those that have no value (so a server can refuse to
//! start on them, pointing at the file, line and column) and replacing them when a call is made.
//! What a name stands for is the caller's business: it passes a lookup, so this module reads no
//! environment itself.

use super::load::{Diagnostic, Flow};
use super::located::{line_col, LineCol, Located};

/// The names referenced by `url`, in order (`{A}/x/{B}` gives `A`, `B`).
pub fn references(url: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = url;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    out
}

/// `url` with every `{NAME}` replaced by `lookup(NAME)` without its trailing `/` (nothing when
/// it has no value).
pub fn resolve(url: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let value = lookup(&rest[start + 1..start + len]);
        out.push_str(value.as_deref().unwrap_or_default().trim_end_matches('/'));
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Every URL of `flow` that may hold references: hooks, the flow's callback and its end states'
/// callbacks, each with what it is for.
fn urls(flow: &Flow) -> Vec<(String, &Located<String>)> {
    let file = flow.file();
    let mut out: Vec<(String, &Located<String>)> = file
        .hooks
        .iter()
        .map(|(name, hook)| (format!("hook `{name}`"), &hook.url))
        .collect();
    if let Some(url) = &file.callback_url {
        out.push(("the flow's `callback_url`".to_owned(), url));
    }
    for (id, state) in &file.states {
        if let Some(url) = &state.callback_url {
            out.push((format!("the `callback_url` of state `{id}`"), url));
        }
    }
    out
}

/// Where a setting a URL may name is set when a tenants file declares the merchants (the
/// environment variable itself must then be unset).
fn where_set(name: &str) -> &'static str {
    match name {
        "WAOTP_HOOK_BASE_URL" => " (with a tenants file: the merchant's `hook_base_url`)",
        "WAOTP_CALLBACK_URL" => " (with a tenants file: the merchant's `callback_url`)",
        _ => "",
    }
}

/// One diagnostic per reference in `flow`'s URLs that `lookup` has no value for.
/// With `settings_only` (a merchant of a tenants file), a name other than the two settings is
/// refused as such, whether or not the environment has it.
pub fn unresolved(
    flow: &Flow,
    lookup: impl Fn(&str) -> Option<String>,
    settings_only: bool,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (what, url) in urls(flow) {
        for name in references(url.as_str()) {
            if lookup(name).is_none() {
                let LineCol { line, col } = line_col(flow.source(), url.span().start);
                out.push(Diagnostic {
                    file: flow.path().display().to_string(),
                    line,
                    col,
                    message: if settings_only && where_set(name).is_empty() {
                        format!("`{{{name}}}` in the URL of {what}: a merchant's flows name only WAOTP_HOOK_BASE_URL and WAOTP_CALLBACK_URL (its hook_base_url and callback_url), never another environment variable")
                    } else {
                        format!(
                            "`{{{name}}}` in the URL of {what}: {name} is not set{}",
                            where_set(name)
                        )
                    },
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::parse_flow;

    #[test]
    fn references_are_found_and_replaced() {
        assert_eq!(references("{A}/x/{B}?q={C"), vec!["A", "B"]);
        assert!(references("https://shop.example/hook").is_empty());
        let lookup = |name: &str| (name == "A").then(|| "https://a.example/".to_owned());
        assert_eq!(resolve("{A}/x", lookup), "https://a.example/x");
        assert_eq!(resolve("{B}/x", lookup), "/x");
    }

    #[test]
    fn unset_references_point_at_their_url() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/flows/account_recovery.toml"
        ))
        .expect("bundled flow");
        let flow = parse_flow("flows/account_recovery.toml", &text).expect("valid");
        let found = unresolved(&flow, |_| None, false);
        assert_eq!(found.len(), 2, "{found:?}");
        let line = text
            .lines()
            .position(|l| l.contains("{WAOTP_HOOK_BASE_URL}/lookup_account"))
            .expect("line")
            + 1;
        assert_eq!(found[0].line, line);
        assert_eq!(found[0].file, "flows/account_recovery.toml");
        assert!(
            found[0].message.contains("WAOTP_HOOK_BASE_URL")
                && found[0].message.contains("lookup_account"),
            "{}",
            found[0]
        );
        assert!(unresolved(&flow, |_| Some("https://shop.example".into()), false).is_empty());
    }
}
