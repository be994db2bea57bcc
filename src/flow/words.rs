//! How typed words are compared: the one normalisation shared by the engine (matching what a
//! customer typed) and the validator (finding words that would match two things).

use unicode_segmentation::UnicodeSegmentation;

/// Lowercase, single-spaced, without surrounding ASCII punctuation: "  Yes! " → "yes".
pub fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_matches(|c: char| c.is_ascii_punctuation())
        .to_lowercase()
}

/// The words of a text for keyword matching: runs of letters and digits, lowercased, so
/// "I'm locked-out!" is `i`, `m`, `locked`, `out`.
///
/// The runs are of whole characters as a reader sees them (grapheme clusters): the marks that
/// Devanagari and other scripts write after a letter (virama, nukta, vowel signs) stay in the
/// word, so "क्या" is one word, not `क` and `या`.
pub fn words(text: &str) -> Vec<String> {
    // In ASCII every character is a grapheme of its own (but `\r\n`, neither of them part of
    // a word): the same runs, without the segmentation tables.
    if text.is_ascii() {
        return text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    by_graphemes(text)
}

fn by_graphemes(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for g in text.graphemes(true) {
        if g.chars().next().is_some_and(char::is_alphanumeric) {
            word.push_str(g);
        } else if !word.is_empty() {
            out.push(word.to_lowercase());
            word.clear();
        }
    }
    if !word.is_empty() {
        out.push(word.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_space_and_punctuation() {
        assert_eq!(normalize("  Yes! "), "yes");
        assert_eq!(normalize("Locked   OUT."), "locked out");
        assert_eq!(normalize("👍"), "👍");
    }

    #[test]
    fn words_split_on_punctuation_and_keep_marks_inside_words() {
        assert_eq!(words("I'm locked-out!"), ["i", "m", "locked", "out"]);
        // Virama (U+094D) and nukta (U+093C) are not alphanumeric on their own.
        assert_eq!(words("क्या आप ज़रूर, एजेंट?"), ["क्या", "आप", "ज़रूर", "एजेंट"]);
        assert_eq!(words("¿Quiero un AGENTE?"), ["quiero", "un", "agente"]);
        assert_eq!(words("أريد وكيلًا"), ["أريد", "وكيلًا"]);
    }

    proptest::proptest! {
        #[test]
        fn ascii_words_are_the_grapheme_words(text in "[ -~\\r\\n\\t]{0,40}") {
            proptest::prop_assert_eq!(words(&text), by_graphemes(&text));
        }
    }
}
