//! The reference under `docs/` against the code it describes: whatever drift can be checked
//! mechanically fails here.
//!
//! - every `WAOTP_*` setting `src/config.rs` reads is in `docs/configuration.md`, and the page
//!   documents no setting the code does not read;
//! - every metric `src/metrics.rs` registers is in `docs/metrics.md`, and the page names no
//!   metric that is not registered;
//! - every error code of the API's catalogue (`src/api/error.rs`) has its row, anchor and status
//!   in the error table of `docs/http-api.md`, which lists no other code;
//! - no source, test or doc cites a contract document from outside the repository: comments
//!   point to `docs/` instead, and every `docs/….md` they point to exists, as does every
//!   relative link between the pages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every word made of `prefix` and then `[A-Za-z0-9_]` characters (at least one), in order.
fn words_with_prefix(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at + prefix.len()..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let part_of_a_longer_word = before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if len > 0 && !part_of_a_longer_word {
            found.insert(format!("{prefix}{}", &tail[..len]));
        }
        rest = &tail[len..];
    }
    found
}

/// The part of a source file before its unit tests.
fn without_tests(source: &str) -> &str {
    source.split("#[cfg(test)]").next().unwrap_or(source)
}

#[test]
fn every_setting_the_code_reads_is_documented_and_only_those() {
    let code = words_with_prefix(without_tests(&read("src/config.rs")), "WAOTP_");
    let docs = words_with_prefix(&read("docs/configuration.md"), "WAOTP_");
    assert!(
        code.len() >= 20,
        "expected the settings of src/config.rs, found {code:?}"
    );
    let undocumented: Vec<_> = code.difference(&docs).collect();
    assert!(
        undocumented.is_empty(),
        "settings read in src/config.rs but missing from docs/configuration.md: {undocumented:?}"
    );
    let unknown: Vec<_> = docs.difference(&code).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents settings src/config.rs does not read: {unknown:?}"
    );
}

/// The names `src/metrics.rs` registers, as exported (with the registry's `waotp_` prefix).
fn registered_metrics() -> BTreeSet<String> {
    let source = read("src/metrics.rs");
    let mut names = BTreeSet::new();
    let source = without_tests(&source);
    // `register_with_unit` adds the unit to the exported name, e.g. `_seconds`.
    for (call, suffix) in [(".register(", ""), (".register_with_unit(", "_seconds")] {
        for registration in source.split(call).skip(1) {
            let name = registration
                .split('"')
                .nth(1)
                .unwrap_or_else(|| panic!("a register call without a name: {registration}"));
            if suffix.is_empty() || registration.contains("Unit::Seconds") {
                names.insert(format!("waotp_{name}{suffix}"));
            } else {
                panic!("a unit other than seconds: {registration}");
            }
        }
    }
    names
}

#[test]
fn every_registered_metric_is_documented_and_only_those() {
    let registered = registered_metrics();
    assert!(
        registered.len() >= 20,
        "expected the metrics of src/metrics.rs, found {registered:?}"
    );
    let page = read("docs/metrics.md");
    let documented = words_with_prefix(&page, "waotp_");
    let missing: Vec<_> = registered
        .iter()
        .filter(|name| !documented.iter().any(|d| exported_as(d, name)))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics registered in src/metrics.rs but missing from docs/metrics.md: {missing:?}"
    );
    let unknown: Vec<_> = documented
        .iter()
        .filter(|d| !registered.iter().any(|name| exported_as(d, name)))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/metrics.md names metrics src/metrics.rs does not register: {unknown:?}"
    );
}

/// Whether `shown` is how the exposition writes metric `name`: as is, or with the suffix a
/// counter (`_total`) or a histogram (`_bucket`, `_sum`, `_count`) adds.
fn exported_as(shown: &str, name: &str) -> bool {
    shown
        .strip_prefix(name)
        .is_some_and(|suffix| ["", "_total", "_bucket", "_sum", "_count"].contains(&suffix))
}

/// Text files under `dir`, build output aside.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("target" | "corpus" | "artifacts")
            ) {
                files_under(&path, out);
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "md" | "toml" | "txt" | "snap" | "json")
        ) {
            out.push(path);
        }
    }
}

/// The project's own sources, tests and docs.
fn project_files() -> Vec<PathBuf> {
    let root = root();
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "fuzz", "docs", "flows", "schema"] {
        files_under(&root.join(dir), &mut files);
    }
    for file in ["README.md", "BENCHMARKS.md", "Cargo.toml"] {
        files.push(root.join(file));
    }
    files
}

#[test]
fn nothing_cites_a_contract_from_outside_the_repository() {
    // Spelled in two halves so that this file does not match itself.
    let citation = ["SP", "EC"].concat();
    let mut citing = Vec::new();
    for path in project_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if line.contains(&citation) {
                citing.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        citing.is_empty(),
        "point to docs/ instead:\n{}",
        citing.join("\n")
    );
}

#[test]
fn every_pointer_into_docs_leads_to_a_page() {
    let root = root();
    let mut broken = Vec::new();
    for path in project_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // A path into `docs/` written in a comment or a page, from the repository's root …
        for page in doc_pointers(&text) {
            if !root.join(&page).is_file() {
                broken.push(format!("{}: {page}", path.display()));
            }
        }
        // … and relative Markdown links in the docs and the README.
        if path.extension().and_then(|e| e.to_str()) == Some("md") {
            let dir = path.parent().unwrap_or(&root);
            for (target, anchor) in markdown_links(&text) {
                let file = if target.is_empty() {
                    path.clone()
                } else {
                    dir.join(&target)
                };
                if !file.exists() {
                    broken.push(format!("{}: ({target})", path.display()));
                } else if let Some(anchor) = anchor {
                    let page = std::fs::read_to_string(&file).unwrap_or_default();
                    if !heading_anchors(&page).contains(&anchor) {
                        broken.push(format!("{}: ({target}#{anchor})", path.display()));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "pointers to missing files or headings:\n{}",
        broken.join("\n")
    );
}

/// Every `docs/….md` path written in `text`.
fn doc_pointers(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("docs/") {
        let path: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
            .collect();
        if let Some(end) = path.find(".md") {
            found.insert(path[..end + 3].to_owned());
        }
    }
    found
}

/// The relative targets of `[text](target#anchor)` links: the file (empty for the same page)
/// and the anchor, if any.
fn markdown_links(text: &str) -> Vec<(String, Option<String>)> {
    let mut targets = Vec::new();
    for piece in text.split("](").skip(1) {
        let Some(end) = piece.find(')') else { continue };
        let link = &piece[..end];
        if link.contains("://") || link.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = match link.split_once('#') {
            Some((file, anchor)) => (file, Some(anchor.to_owned())),
            None => (link, None),
        };
        if file.is_empty() && anchor.is_none() {
            continue;
        }
        targets.push((file.to_owned(), anchor));
    }
    targets
}

/// The anchors Markdown renderers give a page's headings: lower case, punctuation dropped,
/// spaces turned into hyphens; and the explicit `<a id="…">` anchors.
fn heading_anchors(page: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = explicit_anchors(page);
    for line in page.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let anchor: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        anchors.insert(anchor);
    }
    anchors
}

/// The `<a id="…">` anchors of a page.
fn explicit_anchors(page: &str) -> BTreeSet<String> {
    page.split("<a id=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_api_error_code_is_in_the_error_table_and_only_those() {
    let page = read("docs/http-api.md");
    let documented = explicit_anchors(&page);
    for code in waotp::api::error::CATALOGUE {
        let row = page
            .lines()
            .find(|l| l.starts_with(&format!("| <a id=\"{}\"></a>", code.code)))
            .unwrap_or_else(|| panic!("`{}` has no row in docs/http-api.md", code.code));
        assert!(
            row.contains(&format!("| {} |", code.status)),
            "`{}` is answered with {}, its row says otherwise: {row}",
            code.code,
            code.status
        );
        // The address every refusal of this code points to.
        let url = waotp::api::error::doc_url(code.code);
        let (file, anchor) = url.split_once('#').expect("an anchor");
        assert_eq!(file, "docs/http-api.md");
        assert!(documented.contains(anchor), "{url}");
    }
    let catalogued: BTreeSet<String> = waotp::api::error::CATALOGUE
        .iter()
        .map(|c| c.code.to_owned())
        .collect();
    let unknown: Vec<_> = documented.difference(&catalogued).collect();
    assert!(
        unknown.is_empty(),
        "docs/http-api.md documents codes the API never answers: {unknown:?}"
    );
}
