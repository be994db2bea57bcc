//! Checks a parsed flow file and returns every problem at once, each with the span it is about.
//!
//! Pure: takes a [`FlowFile`], returns [`Issue`]s. It must not read files (that is `load`) and
//! must not depend on the engine; the engine may rely on everything checked here.

mod bounds;
mod graph;
mod states;
pub use states::STATE_FIELDS;
mod templates;
mod texts;
mod window;
mod words;

use std::ops::Range;

use super::located::Located;
use super::model::FlowFile;

/// Largest body of an interactive (buttons/list) message WhatsApp accepts.
pub const MAX_INTERACTIVE_BODY: usize = 1024;
/// Largest plain text message WhatsApp accepts.
pub const MAX_TEXT_BODY: usize = 4096;
/// Most reply buttons in one message.
pub const MAX_BUTTONS: usize = 3;
/// Longest reply-button title (and list button text).
pub const MAX_BUTTON_TITLE: usize = 20;
/// Most rows in a list menu.
pub const MAX_LIST_ROWS: usize = 10;
/// Longest list row title.
pub const MAX_ROW_TITLE: usize = 24;
/// Longest list row description.
pub const MAX_ROW_DESCRIPTION: usize = 72;
/// Variables every flow may use without declaring them.
pub const BUILTIN_VARS: &[&str] = &["attempts_left"];

/// One problem: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Byte span in the file.
    pub span: Range<usize>,
    /// Message, with a hint where one helps.
    pub message: String,
}

/// Every problem in `file`, read from `text` (its spans are offsets into it); empty when it is
/// valid.
pub fn validate(file: &FlowFile, text: &str) -> Vec<Issue> {
    check(file, text).0
}

/// Every problem in `file`, and every warning: what is valid but likely not what the author
/// meant (the flow still loads).
pub fn check(file: &FlowFile, text: &str) -> (Vec<Issue>, Vec<Issue>) {
    let mut cx = Checker {
        file,
        text,
        issues: Vec::new(),
        warnings: Vec::new(),
    };
    cx.check_header();
    states::check_states(&mut cx);
    bounds::check_bounds(&mut cx);
    templates::check_templates(&mut cx);
    texts::check_texts(&mut cx);
    graph::check_graph(&mut cx);
    window::check_window(&mut cx);
    words::check_words(&mut cx);
    (cx.issues, cx.warnings)
}

/// `"; did you mean `x`?"` when a candidate is close to `name`, else an empty string.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match closest(name, candidates) {
        Some(c) => format!("; did you mean `{c}`?"),
        None => String::new(),
    }
}

/// The candidate closest to `name` (but not `name` itself) when one is close enough to be what
/// was meant: at most a third of the longer name's characters apart, plus one.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let best = candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= (name.chars().count().max(c.chars().count()) / 3).max(1) + 1)
        .min();
    match best {
        Some((_, c)) if c != name => Some(c),
        _ => None,
    }
}

pub(crate) struct Checker<'a> {
    file: &'a FlowFile,
    text: &'a str,
    issues: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl<'a> Checker<'a> {
    /// The 1-based line of a byte offset, for messages that point at a second place.
    fn line_of(&self, offset: usize) -> usize {
        super::located::line_col(self.text, offset).line
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.issues.push(Issue {
            span,
            message: message.into(),
        });
    }

    fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.warnings.push(Issue {
            span,
            message: message.into(),
        });
    }

    /// The languages the flow's messages are written in, and its default language.
    fn message_languages(&self) -> std::collections::BTreeSet<&'a str> {
        let file = self.file;
        file.messages
            .values()
            .flat_map(|texts| texts.keys().map(String::as_str))
            .chain([self.default_language()])
            .collect()
    }

    /// Reports `what` named by `name` unless `known` contains it.
    fn reference<'k>(
        &mut self,
        what: &str,
        name: &Located<String>,
        known: impl Iterator<Item = &'k String> + Clone,
    ) -> bool {
        if known.clone().any(|k| k == name.get()) {
            return true;
        }
        let hint = did_you_mean(name.as_str(), known.map(String::as_str));
        self.error(
            name.span(),
            format!("unknown {what} `{}`{hint}", name.as_str()),
        );
        false
    }

    fn state_ref(&mut self, name: &Located<String>) -> bool {
        self.reference("state", name, self.file.states.keys())
    }

    fn message_ref(&mut self, name: &Located<String>) -> bool {
        self.reference("message", name, self.file.messages.keys())
    }

    fn var_ref(&mut self, name: &Located<String>) -> bool {
        self.reference("variable", name, self.file.vars.keys())
    }

    fn default_language(&self) -> &'a str {
        self.file.default_language()
    }

    fn check_header(&mut self) {
        let file = self.file;
        if let Err(e) = super::ids::FlowId::parse(file.id.as_str()) {
            self.error(file.id.span(), e.to_string());
        }
        if file.version.as_str().trim().is_empty() {
            self.error(file.version.span(), "version must not be empty");
        }
        self.state_ref(&file.start.state);
        if !file.start.api && file.start.keywords.is_empty() {
            self.error(
                file.start.state.span(),
                "nothing can start this flow: set `api = true` or give `keywords` in [start]",
            );
        }
        for target in [&file.on_delivery_failure, &file.on_retries_exhausted]
            .into_iter()
            .flatten()
        {
            self.state_ref(target);
        }
        for (name, interrupt) in &file.interrupts {
            if let Some(goto) = &interrupt.goto {
                self.state_ref(goto);
            }
            if let Some(m) = &interrupt.message {
                self.message_ref(m);
            }
            if interrupt.goto.is_none() && interrupt.message.is_none() && interrupt.notify.is_none()
            {
                let span = interrupt.words.first().map_or(0..0, Located::span);
                self.error(
                    span,
                    format!("interrupt `{name}` does nothing: give `goto`, `message` or `notify`"),
                );
            }
        }
        for hook in file.hooks.values() {
            for var in &hook.send {
                self.var_ref(var);
            }
        }
        for (id, state) in &file.states {
            if let Err(e) = super::ids::StateId::parse(id) {
                self.error(state.kind.span(), e.to_string());
            }
        }
    }
}
