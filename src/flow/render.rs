//! `{{var}}` placeholders: finding them (for the validator) and filling them (for the engine).
//!
//! Pure string work; unknown names render as empty text because the validator has already
//! rejected undeclared ones.

use std::collections::BTreeMap;

use serde_json::Value;

/// Byte offset (of `{{`) and trimmed name of every placeholder in `text`.
pub fn placeholders(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text.get(from..).and_then(|t| t.find("{{")) {
        let start = from + open;
        let Some(close) = text.get(start + 2..).and_then(|t| t.find("}}")) else {
            break;
        };
        let name = text
            .get(start + 2..start + 2 + close)
            .unwrap_or_default()
            .trim();
        out.push((start, name));
        from = start + 2 + close + 2;
    }
    out
}

/// Replaces every `{{name}}` with the variable's text.
pub fn render(text: &str, vars: &BTreeMap<String, Value>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest.get(open + 2..).and_then(|t| t.find("}}")) else {
            break;
        };
        out.push_str(rest.get(..open).unwrap_or_default());
        let name = rest
            .get(open + 2..open + 2 + close)
            .unwrap_or_default()
            .trim();
        out.push_str(&value_text(vars.get(name)));
        rest = rest.get(open + 2 + close + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// A variable's value as message text.
pub fn value_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_fills_placeholders() {
        let vars: BTreeMap<String, Value> = [
            ("name".to_owned(), Value::from("Asha")),
            ("n".to_owned(), Value::from(3)),
        ]
        .into();
        assert_eq!(
            render("Hi {{ name }} 👋 {{n}}{{x}}!", &vars),
            "Hi Asha 👋 3!"
        );
        assert_eq!(placeholders("a {{b}} {{ c }} {{"), vec![(2, "b"), (8, "c")]);
    }
}
