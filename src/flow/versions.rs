//! Which flow file a session runs on: the current set for new sessions, and every version seen
//! since start-up (by content hash) for sessions that began on an older file.
//!
//! In memory only; a runtime that must survive restarts with old sessions stores
//! [`Flow::source`] by hash and puts it back with [`FlowVersions::remember`].

use std::collections::HashMap;
use std::sync::Arc;

use super::engine::SessionState;
use super::load::{Flow, FlowSet};

/// The current flows and all earlier versions still needed.
#[derive(Debug, Clone, Default)]
pub struct FlowVersions {
    current: FlowSet,
    by_hash: HashMap<String, Arc<Flow>>,
}

impl FlowVersions {
    /// Starts with one valid set.
    pub fn new(current: FlowSet) -> Self {
        let mut versions = Self::default();
        versions.replace(current);
        versions
    }

    /// Makes `next` the set new sessions use (call only with a fully valid set); earlier
    /// versions stay available to the sessions that run on them.
    pub fn replace(&mut self, next: FlowSet) {
        for flow in next.iter() {
            self.by_hash
                .insert(flow.hash().to_owned(), Arc::clone(flow));
        }
        self.current = next;
    }

    /// Keeps a version loaded from storage.
    pub fn remember(&mut self, flow: Flow) {
        self.by_hash.insert(flow.hash().to_owned(), Arc::new(flow));
    }

    /// The set new sessions start from.
    pub fn current(&self) -> &FlowSet {
        &self.current
    }

    /// The exact file `session` started on, if it is still known.
    pub fn for_session(&self, session: &SessionState) -> Option<&Arc<Flow>> {
        self.by_hash.get(&session.flow_hash)
    }

    /// Forgets versions no session needs any more (the current set is always kept).
    pub fn retain_hashes(&mut self, mut in_use: impl FnMut(&str) -> bool) {
        let current: Vec<String> = self.current.iter().map(|f| f.hash().to_owned()).collect();
        self.by_hash
            .retain(|hash, _| current.contains(hash) || in_use(hash));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;

    use super::*;
    use crate::flow::engine::new_session;
    use crate::flow::load::parse_flow;

    const V1: &str = r#"
id = "tiny"
version = "1"
[start]
state = "done"
api = true
[states.done]
kind = "end"
outcome = "ok"
"#;

    fn set_of(text: &str) -> FlowSet {
        let flow = parse_flow("tiny.toml", text).expect("valid");
        FlowSet::from_flows([flow])
    }

    #[test]
    fn sessions_keep_the_version_they_started_on() {
        let mut versions = FlowVersions::new(set_of(V1));
        let v1 = Arc::clone(versions.current().get("tiny").expect("loaded"));
        let session = new_session(&v1, BTreeMap::new(), "en", Utc::now()).expect("session");
        versions.replace(set_of(&V1.replace("version = \"1\"", "version = \"2\"")));
        assert_eq!(
            versions.current().get("tiny").map(|f| f.version()),
            Some("2")
        );
        assert_eq!(
            versions.for_session(&session).map(|f| f.version()),
            Some("1")
        );
        versions.retain_hashes(|_| false);
        assert!(versions.for_session(&session).is_none());
        let again = parse_flow("tiny.toml", v1.source()).expect("stored source parses");
        versions.remember(again);
        assert_eq!(
            versions.for_session(&session).map(|f| f.version()),
            Some("1")
        );
    }
}
