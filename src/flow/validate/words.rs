//! Checks of typed words: an interrupt word must not also mean a choice that goes elsewhere,
//! and two interrupts must not share a word (the engine would silently pick one).

use std::collections::BTreeMap;

use super::Checker;
use crate::flow::located::Located;
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
            for w in std::iter::once(title).chain(synonyms) {
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
}
