//! Guards on transitions: a deliberately tiny condition language over session variables.
//!
//! `var`, `not var`, `var == value`, `var != value`, where value is `true`, `false`, a number,
//! a quoted string or a bare word. Small enough to read at a glance in a flow file; anything
//! richer belongs in the merchant's hook. No I/O.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parsed guard.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    var: String,
    test: Test,
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Truthy,
    Falsy,
    Equals(Value),
    Differs(Value),
}

impl Guard {
    /// Parses a guard expression.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (var, test) = if let Some((l, r)) = text.split_once("==") {
            (l.trim(), Test::Equals(literal(r.trim())?))
        } else if let Some((l, r)) = text.split_once("!=") {
            (l.trim(), Test::Differs(literal(r.trim())?))
        } else if let Some(rest) = text.strip_prefix("not ") {
            (rest.trim(), Test::Falsy)
        } else {
            (text, Test::Truthy)
        };
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "guard `{text}` must be `var`, `not var`, `var == value` or `var != value`"
            ));
        }
        Ok(Self {
            var: var.to_owned(),
            test,
        })
    }

    /// The variable the guard reads.
    pub fn var(&self) -> &str {
        &self.var
    }

    /// Evaluates the guard; a missing variable is null (falsy, equal to nothing).
    pub fn holds(&self, vars: &BTreeMap<String, Value>) -> bool {
        let value = vars.get(&self.var).unwrap_or(&Value::Null);
        match &self.test {
            Test::Truthy => truthy(value),
            Test::Falsy => !truthy(value),
            Test::Equals(v) => loosely_equal(value, v),
            Test::Differs(v) => !loosely_equal(value, v),
        }
    }
}

fn literal(text: &str) -> Result<Value, String> {
    if text.is_empty() {
        return Err("guard has nothing after the operator".to_owned());
    }
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return Ok(Value::String(inner.to_owned()));
    }
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty() && s != "false",
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

// Hooks answer JSON and API vars are strings, so `"true"` must equal `true`.
fn loosely_equal(a: &Value, b: &Value) -> bool {
    a == b || plain(a) == plain(b)
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_the_four_forms() {
        let vars: BTreeMap<String, Value> = [
            ("found".to_owned(), Value::Bool(true)),
            ("n".to_owned(), Value::from("3")),
        ]
        .into();
        assert!(Guard::parse("found")
            .map(|g| g.holds(&vars))
            .unwrap_or(false));
        assert!(!Guard::parse("not found")
            .map(|g| g.holds(&vars))
            .unwrap_or(true));
        assert!(Guard::parse("n == 3")
            .map(|g| g.holds(&vars))
            .unwrap_or(false));
        assert!(Guard::parse("missing != \"x\"")
            .map(|g| g.holds(&vars))
            .unwrap_or(false));
        assert!(Guard::parse("a b").is_err());
    }
}
