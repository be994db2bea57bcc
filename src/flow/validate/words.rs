//! Checks of typed words: an interrupt word must not also mean a choice that goes elsewhere,
//! two interrupts must not share a word (the engine would silently pick one), and a warning
//! where a free-text answer keeps an interrupt that matches inside messages from firing.

use std::collections::BTreeMap;

use super::Checker;
use crate::flow::located::Located;
use crate::flow::model::{InterruptMatch, StateKind};
use crate::flow::words::normalize;

pub(super) fn check_words(cx: &mut Checker<'_>) {
    let file = cx.file;
    let mut interrupt_words: BTreeMap<String, (&str, Option<&str>)> = BTreeMap::new();
    for (name, interrupt) in &file.interrupts {
        let goto = interrupt.goto.as_ref().map(Located::as_str);
        for w in &interrupt.words {
            let key = normalize(w.as_str());
            if let Some((other, _)) = interrupt_words.get(&key) {
                cx.error(
                    w.span(),
                    format!(
                        "word `{}` is used by interrupts `{other}` and `{name}`",
                        w.as_str()
                    ),
                );
            } else {
                interrupt_words.insert(key, (name.as_str(), goto));
            }
        }
    }
    for (id, s) in &file.states {
        let buttons = s.buttons.iter().map(|b| (&b.title, &b.synonyms, &b.goto));
        let rows = s
            .list
            .iter()
            .flat_map(|l| &l.rows)
            .map(|r| (&r.title, &r.synonyms, &r.goto));
        for (title, synonyms, goto) in buttons.chain(rows) {
            let titles = title.variants().into_iter().map(|(_, t)| t);
            for w in titles.chain(synonyms.iter().cloned()) {
                let Some((name, target)) = interrupt_words.get(&normalize(w.as_str())) else {
                    continue;
                };
                if *target != Some(goto.as_str()) {
                    cx.error(
                        w.span(),
                        format!("`{}` in state `{id}` is also a word of interrupt `{name}`, which goes elsewhere; typing it would trigger the interrupt", w.as_str()),
                    );
                }
            }
        }
    }
    free_text_keeps_word_interrupts(cx);
}

/// In a free-text state (`on_text`) every message the state cannot otherwise use is the
/// answer, so an interrupt with `match = "word"` fires there only when its word is the whole
/// message: "I want an agent" is saved as the answer. Not wrong, but worth knowing where.
fn free_text_keeps_word_interrupts(cx: &mut Checker<'_>) {
    let file = cx.file;
    let by_word: Vec<(&String, &Located<String>)> = file
        .interrupts
        .iter()
        .filter(|(_, i)| {
            i.matching
                .as_ref()
                .is_some_and(|m| m.get() == &InterruptMatch::Word)
        })
        .filter_map(|(name, i)| i.words.first().map(|w| (name, w)))
        .collect();
    for (id, s) in &file.states {
        let Some(on_text) = &s.on_text else { continue };
        if s.kind.get() != &StateKind::Ask {
            continue;
        }
        for (name, word) in &by_word {
            let word = word.as_str();
            cx.warning(
                on_text.span(),
                format!(
                    "state `{id}` takes any text as its answer, so a message with `{word}` among other words (\"… {word} …\") is that answer, not interrupt `{name}` (match = \"word\"); only `{word}` alone reaches it here"
                ),
            );
        }
    }
}
