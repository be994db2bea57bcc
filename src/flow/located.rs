//! Source positions for flow files: a value that remembers where in the TOML text it was written,
//! and the conversion from byte offsets to `line:col`.
//!
//! This module only knows about text and spans; it must not know what a flow means.

use std::borrow::Cow;
use std::ops::Range;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

/// A value read from a flow file together with its byte span in that file.
///
/// Equality and ordering look only at the value, so two `Located` names compare like strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Located<T> {
    inner: toml::Spanned<T>,
}

impl<T> Located<T> {
    /// Wraps a value with a span; used by tests and by code that builds flows in memory.
    pub fn new(span: Range<usize>, value: T) -> Self {
        Self {
            inner: toml::Spanned::new(span, value),
        }
    }

    /// The value as written.
    pub fn get(&self) -> &T {
        self.inner.get_ref()
    }

    /// Byte range of the value in its file.
    pub fn span(&self) -> Range<usize> {
        self.inner.span()
    }
}

impl Located<String> {
    /// The value as a string slice.
    pub fn as_str(&self) -> &str {
        self.inner.get_ref().as_str()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `toml::Spanned` is recognised by the toml deserializer by its private struct name, so
        // delegating to it (rather than re-implementing) keeps the span capture working.
        toml::Spanned::<T>::deserialize(deserializer).map(|inner| Self { inner })
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    // The span is invisible in the file, so the schema is exactly the inner value's schema.
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A 1-based line and column (columns count characters, not bytes, so emoji do not skew them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    /// 1-based line.
    pub line: usize,
    /// 1-based column in characters.
    pub col: usize,
}

/// Converts a byte offset in `text` into a line and column.
pub fn line_col(text: &str, offset: usize) -> LineCol {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    LineCol { line, col }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_and_in_characters() {
        let text = "a = 1\nb = \"é\" x";
        assert_eq!(line_col(text, 0), LineCol { line: 1, col: 1 });
        assert_eq!(line_col(text, 6), LineCol { line: 2, col: 1 });
        let x = text.find('x').unwrap_or(0);
        assert_eq!(line_col(text, x), LineCol { line: 2, col: 9 });
    }
}
