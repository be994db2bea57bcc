//! Customer-visible short texts written inline (button and list-row titles, row descriptions,
//! the list button): one string for every language, or one per language code.
//!
//! Only the format and how a language is picked live here; lengths and missing languages are
//! the validator's to check.

use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::flow::located::Located;

/// `"Confirm"` (the same in every language) or `{ en = "Confirm", hi = "पुष्टि करें" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalText {
    /// One text for every language.
    Plain(String),
    /// A text per language code, each with its own position.
    PerLanguage(BTreeMap<String, Located<String>>),
}

impl Located<LocalText> {
    /// The text for `lang`, else for `default`, else the first one written.
    pub fn in_language(&self, lang: &str, default: &str) -> &str {
        match self.get() {
            LocalText::Plain(text) => text,
            LocalText::PerLanguage(texts) => texts
                .get(lang)
                .or_else(|| texts.get(default))
                .or_else(|| texts.values().next())
                .map_or("", |t| t.as_str()),
        }
    }

    /// Every text with its language (`None` for a plain string) and where it is written.
    pub fn variants(&self) -> Vec<(Option<&str>, Located<String>)> {
        match self.get() {
            LocalText::Plain(text) => vec![(None, Located::new(self.span(), text.clone()))],
            LocalText::PerLanguage(texts) => texts
                .iter()
                .map(|(lang, text)| (Some(lang.as_str()), text.clone()))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for LocalText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = LocalText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a table of strings by language, e.g. { en = \"Yes\" }")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LocalText, E> {
                Ok(LocalText::Plain(v.to_owned()))
            }

            // Each language's text is read as `Located`, so a too-long Hindi title is pointed
            // at exactly; an untagged enum would lose the positions.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LocalText, A::Error> {
                let mut texts = BTreeMap::new();
                while let Some((lang, text)) = map.next_entry::<String, Located<String>>()? {
                    texts.insert(lang, text);
                }
                Ok(LocalText::PerLanguage(texts))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

impl JsonSchema for LocalText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LocalText".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "One text for every language, or a table of texts by language code (`{ en = \"Confirm\", hi = \"पुष्टि करें\" }`).",
            "anyOf": [
                { "type": "string" },
                { "type": "object", "additionalProperties": { "type": "string" } }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        a: Located<LocalText>,
        b: Located<LocalText>,
    }

    #[test]
    fn reads_a_plain_string_or_a_table_by_language_with_positions() {
        let text = "a = \"Yes\"\nb = { en = \"Yes\", hi = \"हाँ\" }\n";
        let h: Holder = toml::from_str(text).expect("parses");
        assert_eq!(h.a.in_language("hi", "en"), "Yes");
        assert_eq!(h.b.in_language("hi", "en"), "हाँ");
        assert_eq!(h.b.in_language("es", "en"), "Yes");
        let variants = h.b.variants();
        let (lang, hi) = &variants[1];
        assert_eq!(*lang, Some("hi"));
        assert_eq!(&text[hi.span()], "\"हाँ\"");
        assert_eq!(&text[h.a.span()], "\"Yes\"");
    }
}
