//! Names that identify flows and states: parsed once, so an invalid id cannot travel further.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Errors for ids that do not follow the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty, too long, or characters other than `a-z`, `0-9`, `_`.
    #[error("`{0}` is not a valid id (use lowercase letters, digits and `_`, at most 64)")]
    Invalid(String),
}

fn check(text: &str) -> Result<(), IdError> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(IdError::Invalid(text.to_owned()))
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses an id: lowercase letters, digits and `_`.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                check(text).map(|()| Self(text.to_owned()))
            }

            /// The id as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(text: String) -> Result<Self, IdError> {
                check(&text).map(|()| Self(text))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A flow's id, e.g. `cod_confirmation`.
    FlowId
);
id_type!(
    /// A state's id within a flow, e.g. `ask_code`.
    StateId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_snake_case_only() {
        assert!(FlowId::parse("cod_confirmation").is_ok());
        assert!(StateId::parse("Ask").is_err());
        assert!(StateId::parse("").is_err());
        assert!(StateId::parse("a-b").is_err());
    }
}
