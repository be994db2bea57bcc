//! How typed words are compared: the one normalisation shared by the engine (matching what a
//! customer typed) and the validator (finding words that would match two things).

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
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
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
}
