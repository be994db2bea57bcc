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
use super::located::line_col;
use super::model::FlowFile;
use super::validate::{validate, Issue};

/// A loaded, validated flow: what the engine runs.
#[derive(Debug, Clone)]
pub struct Flow {
    id: FlowId,
    file: FlowFile,
    path: PathBuf,
    hash: String,
    source: String,
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
        self.flows
            .values()
            .find(|f| super::engine::keyword_matches(f, text))
    }
}

/// Parses and validates one file's text. `name` is how the file is named in messages.
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
    let file = match parse_toml(text) {
        Ok(f) => f,
        Err(errors) => return Err(errors.into_iter().map(|(start, m)| at(start, m)).collect()),
    };
    let mut issues = validate(&file);
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
    if !issues.is_empty() {
        let mut diags: Vec<Diagnostic> = issues
            .into_iter()
            .map(|Issue { span, message }| at(span.start, message))
            .collect();
        diags.sort();
        diags.dedup();
        return Err(diags);
    }
    let id = FlowId::parse(file.id.as_str())
        .map_err(|e| vec![at(file.id.span().start, e.to_string())])?;
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    Ok(Flow {
        id,
        file,
        path: PathBuf::from(name),
        hash,
        source: text.to_owned(),
    })
}

/// Deserialises a flow file. serde stops at the first error, so after an unknown key the key
/// is commented out (same byte length, so positions stay right) and parsing is retried, to list
/// every unknown key at once. Any other error ends the search: after an edit it could be an
/// artefact of the edit rather than the author's mistake.
fn parse_toml(text: &str) -> Result<FlowFile, Vec<(usize, String)>> {
    const MAX_REPORTED: usize = 50;
    let mut text = text.to_owned();
    let mut errors = Vec::new();
    while errors.len() < MAX_REPORTED {
        let e = match toml::from_str::<FlowFile>(&text) {
            Ok(file) if errors.is_empty() => return Ok(file),
            Ok(_) => break,
            Err(e) => e,
        };
        let start = e.span().map_or(0, |s| s.start);
        let unknown_key = e.message().starts_with("unknown field");
        if !unknown_key && !errors.is_empty() {
            break;
        }
        errors.push((start, tidy_toml_message(e.message())));
        let ascii_key = text
            .as_bytes()
            .get(start)
            .is_some_and(u8::is_ascii_alphanumeric);
        if !unknown_key || !ascii_key {
            break;
        }
        text.replace_range(start..=start, "#");
    }
    Err(errors)
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
            let candidates: Vec<&str> = expected
                .split(['`', ',', ' '])
                .filter(|s| !s.is_empty() && *s != "one" && *s != "of" && *s != "or")
                .collect();
            let hint = super::validate::did_you_mean(field, candidates.iter().copied());
            if hint.is_empty() {
                return format!("unknown {what} `{field}`; expected {expected}");
            }
            return format!("unknown {what} `{field}`{hint}");
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
    let mut set = FlowSet::default();
    let mut diags = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
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

/// A customer message must start at most one flow, so two flows may not share a keyword.
fn keyword_clashes(set: &FlowSet) -> Vec<Diagnostic> {
    let mut owner: BTreeMap<String, &FlowId> = BTreeMap::new();
    let mut diags = Vec::new();
    for flow in set.iter() {
        for k in &flow.file.start.keywords {
            let key = k.as_str().trim().to_lowercase();
            match owner.get(&key) {
                Some(other) => {
                    let text = std::fs::read_to_string(&flow.path).unwrap_or_default();
                    let lc = line_col(&text, k.span().start);
                    diags.push(Diagnostic {
                        file: flow.path.display().to_string(),
                        line: lc.line,
                        col: lc.col,
                        message: format!("keyword `{}` also starts flow `{other}`", k.as_str()),
                    });
                }
                None => {
                    owner.insert(key, &flow.id);
                }
            }
        }
    }
    diags
}
