//! Reading flow files from disk into checked, hashed [`Flow`]s, and turning problems into
//! `file:line:col: message` diagnostics.
//!
//! This is the only part of the flow module that touches the file system. It must not decide
//! what is valid (that is `validate`) nor run flows (that is `engine`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::ids::FlowId;
use super::located::{line_col, Located};
use super::model::FlowFile;
use super::validate::{check, Issue};
use super::words::words;

/// A loaded, validated flow: what the engine runs.
#[derive(Debug, Clone)]
pub struct Flow {
    id: FlowId,
    file: FlowFile,
    path: PathBuf,
    hash: String,
    source: String,
    warnings: Vec<Diagnostic>,
    /// `[start] keywords`, each as its words ([`super::words::words`]), read once at load.
    keyword_words: Vec<Vec<String>>,
}

impl Flow {
    /// The flow's id.
    pub fn id(&self) -> &FlowId {
        &self.id
    }

    /// The version label written in the file.
    pub fn version(&self) -> &str {
        self.file.version.as_str()
    }

    /// Hex SHA-256 of the file's bytes; sessions record it so they can tell versions apart even
    /// when an author forgot to change `version`.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The file's text, so a runtime can keep old versions for sessions that started on them
    /// and parse them again with [`parse_flow`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed file.
    pub fn file(&self) -> &FlowFile {
        &self.file
    }

    /// The words of each of the flow's start keywords.
    pub fn keyword_words(&self) -> &[Vec<String>] {
        &self.keyword_words
    }

    /// The language of a session started without one: `default_language`, else `en`.
    pub fn default_language(&self) -> &str {
        self.file.default_language()
    }

    /// Whether the merchant API may start it.
    pub fn starts_by_api(&self) -> bool {
        self.file.start.api
    }

    /// Variables the merchant must give when starting a session.
    pub fn required_vars(&self) -> impl Iterator<Item = &str> {
        self.file
            .vars
            .iter()
            .filter(|(_, d)| d.required)
            .map(|(name, _)| name.as_str())
    }

    /// What the validator warns about in the file (it loads all the same), each as
    /// `file:line:col: warning: …`.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Where the flow was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One problem in a flow file, positioned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// File as given to the loader.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong, with a hint where one helps.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Why a set of flows could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// One or more files are invalid; every problem is listed.
    #[error("{} error(s) in flow files", .0.len())]
    Invalid(Vec<Diagnostic>),
}

/// All flows of a directory, by id.
#[derive(Debug, Clone, Default)]
pub struct FlowSet {
    flows: BTreeMap<FlowId, Arc<Flow>>,
}

impl FlowSet {
    /// A set of already parsed flows (later ones win on equal ids).
    pub fn from_flows(flows: impl IntoIterator<Item = Flow>) -> Self {
        Self {
            flows: flows
                .into_iter()
                .map(|f| (f.id.clone(), Arc::new(f)))
                .collect(),
        }
    }

    /// A flow by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Flow>> {
        FlowId::parse(id).ok().and_then(|id| self.flows.get(&id))
    }

    /// All flows in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Flow>> {
        self.flows.values()
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The flow a customer's message starts, if one of its keywords matches. Loading rejects
    /// keywords shared by two flows; a message holding keywords of two flows starts the first
    /// in id order.
    pub fn flow_for_keyword(&self, text: &str) -> Option<&Arc<Flow>> {
        let said = super::words::words(text);
        self.flows
            .values()
            .find(|f| super::engine::said_matches(f, &said))
    }
}

/// Parses and validates one file's text. `name` is how the file is named in messages.
///
/// Every problem is reported at once: an unknown key does not hide the checks of the rest of
/// the file (see [`parse_toml`]).
pub fn parse_flow(name: &str, text: &str) -> Result<Flow, Vec<Diagnostic>> {
    let at = |span_start: usize, message: String| {
        let lc = line_col(text, span_start);
        Diagnostic {
            file: name.to_owned(),
            line: lc.line,
            col: lc.col,
            message,
        }
    };
    let parsed = parse_toml::<FlowFile>(text);
    let mut diags: Vec<Diagnostic> = parsed
        .errors
        .into_iter()
        .map(|(start, m)| at(start, m))
        .collect();
    let Some(file) = parsed.file else {
        return Err(diags);
    };
    let (mut issues, warnings) = check(&file, &parsed.text);
    let stem = Path::new(name).file_stem().and_then(|s| s.to_str());
    if let Some(stem) = stem.filter(|_| name.ends_with(".toml")) {
        if file.id.as_str() != stem {
            issues.push(Issue {
                span: file.id.span(),
                message: format!(
                    "flow id `{}` must match the file name `{stem}.toml`",
                    file.id.as_str()
                ),
            });
        }
    }
    diags.extend(
        issues
            .into_iter()
            .map(|Issue { span, message }| at(parsed.edits.original(span.start), message)),
    );
    if !diags.is_empty() {
        diags.sort();
        diags.dedup();
        return Err(diags);
    }
    let mut file = file;
    super::template_content::fill_parameters(&mut file);
    let id = FlowId::parse(file.id.as_str())
        .map_err(|e| vec![at(file.id.span().start, e.to_string())])?;
    let mut warnings: Vec<Diagnostic> = warnings
        .into_iter()
        .map(|Issue { span, message }| {
            at(
                parsed.edits.original(span.start),
                format!("warning: {message}"),
            )
        })
        .collect();
    warnings.sort();
    warnings.dedup();
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    let keyword_words = file
        .start
        .keywords
        .iter()
        .map(|k| super::words::words(k.as_str()))
        .collect();
    Ok(Flow {
        id,
        keyword_words,
        file,
        path: PathBuf::from(name),
        hash,
        source: text.to_owned(),
        warnings,
    })
}

/// What [`parse_toml`] made of a file.
pub(crate) struct Parsed<T> {
    /// The file as read once every unknown key was dealt with; `None` when it cannot be read.
    pub(crate) file: Option<T>,
    /// Structural errors, at byte offsets of the original text.
    pub(crate) errors: Vec<(usize, String)>,
    /// The edits made to read `file`, to map its spans back to the original text.
    pub(crate) edits: Edits,
    /// The text `file` was read from (the original with the edits), which its spans index.
    pub(crate) text: String,
}

/// Renames made to a text, in order: `(offset, old length, new length)`, each offset in the
/// text as it was when that edit was made.
#[derive(Default)]
pub(crate) struct Edits(Vec<(usize, usize, usize)>);

impl Edits {
    /// The offset in the original text of `at`, an offset in the edited text; inside a renamed
    /// key, the key's start.
    pub(crate) fn original(&self, mut at: usize) -> usize {
        for &(pos, old, new) in self.0.iter().rev() {
            if at >= pos + new {
                at = at - new + old;
            } else if at > pos {
                at = pos;
            }
        }
        at
    }
}

/// Deserialises a flow file. serde stops at the first error, so after an unknown key or value
/// the parse is retried without it, to list every one at once and still check the rest of the
/// file. A key with a close known name (`timout`) is read as that name, so the state does not
/// also look as if it had no `timeout`; other unknown keys are commented out (same byte length,
/// so positions stay right). An unknown value with a close known one (`kind = "asq"`) is read
/// as that one. Any other error ends the search: after an edit it could be an artefact of the
/// edit rather than the author's mistake, so the file is then not checked further.
///
/// Generic over the file's shape so that every TOML file waotp reads (flows, the tenants file)
/// reports its problems the same way.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Parsed<T> {
    const MAX_REPORTED: usize = 50;
    let mut text = text.to_owned();
    let mut parsed = Parsed {
        file: None,
        errors: Vec::new(),
        edits: Edits::default(),
        text: String::new(),
    };
    // The text before the last rename and, for a key, its offset: toml refuses a rename to a
    // key the table already has (or a value of another type), and the key is then commented
    // out instead; a refused value ends the search.
    let mut renamed: Option<(String, Option<usize>)> = None;
    while parsed.errors.len() < MAX_REPORTED {
        let e = match toml::from_str::<T>(&text) {
            Ok(file) => {
                parsed.file = Some(file);
                parsed.text = text;
                return parsed;
            }
            Err(e) => e,
        };
        let unknown_key = e.message().starts_with("unknown field");
        let unknown_value = e.message().starts_with("unknown variant");
        if let Some((before, key_at)) = renamed.take() {
            if !unknown_key && !unknown_value {
                text = before;
                parsed.edits.0.pop();
                match key_at {
                    Some(start) => {
                        text.replace_range(start..=start, "#");
                        continue;
                    }
                    None => break,
                }
            }
        }
        let start = e.span().map_or(0, |s| s.start);
        if !unknown_key && !unknown_value && !parsed.errors.is_empty() {
            break;
        }
        let original = parsed.edits.original(start);
        parsed
            .errors
            .push((original, tidy_toml_message(e.message())));
        let hint = unknown_hint(e.message());
        if unknown_key
            && text
                .as_bytes()
                .get(start)
                .is_some_and(u8::is_ascii_alphanumeric)
        {
            match hint {
                Some((key, close)) if text[start..].starts_with(key.as_str()) => {
                    renamed = Some((text.clone(), Some(start)));
                    text.replace_range(start..start + key.len(), &close);
                    parsed.edits.0.push((start, key.len(), close.len()));
                }
                _ => text.replace_range(start..=start, "#"),
            }
            continue;
        }
        match hint {
            // A basic string: the value sits between the quotes at `start`.
            Some((value, close))
                if unknown_value && text[start..].starts_with(&format!("\"{value}\"")) =>
            {
                renamed = Some((text.clone(), None));
                text.replace_range(start + 1..start + 1 + value.len(), &close);
                parsed.edits.0.push((start + 1, value.len(), close.len()));
            }
            _ => break,
        }
    }
    parsed.file = None;
    parsed
}

/// The unknown key or value of toml's "unknown field `x`, expected ..." (or "unknown variant")
/// message and the known one close to it, if one is.
fn unknown_hint(message: &str) -> Option<(String, String)> {
    let message = message.trim().replace('\n', " ");
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (name, expected) = rest.split_once("`, expected ")?;
    let close = closest(name, expected)?;
    Some((name.to_owned(), close.to_owned()))
}

/// The candidate of toml's "expected `a`, `b` or `c`" list closest to `name`, if one is close.
fn closest<'e>(name: &str, expected: &'e str) -> Option<&'e str> {
    let candidates = expected
        .split(['`', ',', ' '])
        .filter(|s| !s.is_empty() && *s != "one" && *s != "of" && *s != "or");
    super::validate::closest(name, candidates)
}

fn tidy_toml_message(message: &str) -> String {
    // toml's "unknown field `x`, expected one of ..." lists every key; lead with a did-you-mean
    // hint when one name is close.
    let message = message.trim().replace('\n', " ");
    for (prefix, what) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        if let Some((field, expected)) = rest.split_once("`, expected ") {
            return match closest(field, expected) {
                Some(close) => format!("unknown {what} `{field}`; did you mean `{close}`?"),
                None => format!("unknown {what} `{field}`; expected {expected}"),
            };
        }
    }
    message
}

/// Loads every `*.toml` file directly inside `dir` (sub-directories such as `tests/` are left
/// alone) and reports every problem of every file at once.
pub fn load_dir(dir: &Path) -> Result<FlowSet, LoadError> {
    let io = |path: &Path, source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    load_files(&paths)
}

/// Loads the named flow files (a merchant's list of flows), reporting every problem of every
/// file at once, like [`load_dir`].
pub fn load_files(paths: &[PathBuf]) -> Result<FlowSet, LoadError> {
    let io = |path: &Path, source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut set = FlowSet::default();
    let mut diags = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        let name = path.display().to_string();
        match parse_flow(&name, &text) {
            Ok(flow) => {
                set.flows.insert(flow.id.clone(), Arc::new(flow));
            }
            Err(mut d) => diags.append(&mut d),
        }
    }
    diags.extend(keyword_clashes(&set));
    diags.sort();
    if diags.is_empty() {
        Ok(set)
    } else {
        Err(LoadError::Invalid(diags))
    }
}

/// Where `span_start` of `flow`'s file is, as `file:line:col`.
fn position(flow: &Flow, span_start: usize) -> (String, usize, usize) {
    let lc = line_col(&flow.source, span_start);
    (flow.path.display().to_string(), lc.line, lc.col)
}

/// Clashes between flows, each reported with both places: a customer message must start at
/// most one flow, so two flows may not share a keyword; and an interrupt word of one flow must
/// not start another, or the same word that acts inside a session (e.g. `agent` asking for a
/// person) silently starts the other flow once the session has ended.
fn keyword_clashes(set: &FlowSet) -> Vec<Diagnostic> {
    let mut owner: BTreeMap<String, (&Flow, &Located<String>)> = BTreeMap::new();
    let mut diags = Vec::new();
    let diag = |flow: &Flow, at: usize, message: String| {
        let (file, line, col) = position(flow, at);
        Diagnostic {
            file,
            line,
            col,
            message,
        }
    };
    for flow in set.iter() {
        for k in &flow.file.start.keywords {
            let key = words(k.as_str()).join(" ");
            if key.is_empty() {
                continue;
            }
            match owner.get(&key) {
                Some((other, theirs)) => {
                    let (file, line, col) = position(other, theirs.span().start);
                    diags.push(diag(
                        flow,
                        k.span().start,
                        format!(
                            "keyword `{}` also starts flow `{}` ({file}:{line}:{col})",
                            k.as_str(),
                            other.id
                        ),
                    ));
                }
                None => {
                    owner.insert(key, (flow, k));
                }
            }
        }
    }
    for flow in set.iter() {
        for (name, interrupt) in &flow.file.interrupts {
            for word in &interrupt.words {
                let started = set
                    .iter()
                    .filter(|other| other.id != flow.id)
                    .find_map(|other| {
                        other
                            .file
                            .start
                            .keywords
                            .iter()
                            .find(|k| super::engine::keyword_in(k.as_str(), word.as_str()))
                            .map(|k| (other, k))
                    });
                if let Some((other, k)) = started {
                    let (file, line, col) = position(other, k.span().start);
                    diags.push(diag(
                        flow,
                        word.span().start,
                        format!(
                            "`{}` (interrupt `{name}`) also starts flow `{}` (its keyword `{}`, {file}:{line}:{col}) when typed outside a session",
                            word.as_str(),
                            other.id,
                            k.as_str()
                        ),
                    ));
                }
            }
        }
    }
    diags
}
