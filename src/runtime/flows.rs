//! The flows of one merchant: the current set, every version a live session still uses, and
//! reloading.
//!
//! A merchant's flows are every `*.toml` file of a directory or a list of files
//! ([`FlowSource`]). A reload (file change, SIGHUP) swaps in the new set only when every file
//! validates;
//! otherwise every error is logged and the old set stays. A session keeps the exact file it
//! started on: versions are kept by content hash, in memory and in the store, so they survive
//! both reloads and restarts.
//!
//! `{NAME}` references in the flows' URLs are checked on every load ([`UrlNames`]): outside
//! sandbox mode a name without a value fails the load like an invalid file (at start-up: exit
//! code 2); in sandbox mode it is logged as a warning and the call fails when it is made.

use crate::flow::engine::SessionState;
use crate::flow::{parse_flow, Flow, FlowSet, FlowVersions, LoadError};
use crate::store::Sessions;
use crate::tenants::FlowSource;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// What `{NAME}` in a flow's URL stands for: two settings by name (they may come from the
/// config file), any other name from the process environment; an empty value counts as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlNames {
    pub hook_base_url: Option<String>,
    pub callback_url: Option<String>,
    /// Whether a name without a value refuses the load (outside sandbox mode).
    pub required: bool,
    /// Whether the two settings are the only names (a merchant of a tenants file): any other
    /// name stands for nothing, so a merchant's flow can never carry another merchant's token
    /// or secret, or the service's, out in a URL.
    pub settings_only: bool,
}

impl UrlNames {
    /// The value `{name}` stands for.
    pub fn value(&self, name: &str) -> Option<String> {
        match name {
            "WAOTP_HOOK_BASE_URL" => self.hook_base_url.clone(),
            "WAOTP_CALLBACK_URL" => self.callback_url.clone(),
            _ if self.settings_only => None,
            _ => std::env::var(name).ok(),
        }
        .filter(|v| !v.trim().is_empty())
    }

    /// Checks every flow of `set`: the unset references when they are required, else `Ok` after
    /// a warning for each.
    fn check(&self, set: &FlowSet) -> Result<(), String> {
        let mut unset: Vec<_> = set
            .iter()
            .flat_map(|flow| {
                crate::flow::urls::unresolved(flow, |n| self.value(n), self.settings_only)
            })
            .collect();
        unset.sort();
        if unset.is_empty() {
            return Ok(());
        }
        if self.required {
            return Err(unset
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"));
        }
        for d in &unset {
            tracing::warn!(%d, "sandbox mode: this flow URL has an unset name; calls to it will fail");
        }
        Ok(())
    }
}

/// The loaded flows of one merchant.
#[derive(Debug)]
pub struct FlowRegistry {
    source: FlowSource,
    urls: UrlNames,
    versions: RwLock<FlowVersions>,
    fingerprint: RwLock<Vec<(PathBuf, u64, Option<SystemTime>)>>,
}

/// Sizes and modification times of the flow files, to notice a change.
fn fingerprint(source: &FlowSource) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let stat = |path: PathBuf| {
        let m = std::fs::metadata(&path).ok()?;
        Some((path, m.len(), m.modified().ok()))
    };
    let mut out: Vec<_> = match source {
        FlowSource::Dir(dir) => std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .filter_map(stat)
                    .collect()
            })
            .unwrap_or_default(),
        FlowSource::Files(files) => files.iter().cloned().filter_map(stat).collect(),
    };
    out.sort();
    out
}

/// Every problem of a failed load, one `file:line:col: message` per line. `LoadError`'s own
/// `Display` only counts them, which tells an operator nothing about what to fix.
fn describe(error: LoadError) -> String {
    match error {
        LoadError::Invalid(diagnostics) => diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// The validator's warnings (a flow with them still runs), once per load.
fn log_warnings(set: &FlowSet) {
    for d in set.iter().flat_map(|f| f.warnings()) {
        tracing::warn!(warning = %d, "flow file warning");
    }
}

impl FlowRegistry {
    /// Loads `dir`; an invalid directory, or a URL naming something `urls` has no value for
    /// when one is required, is an error with every message (`file:line:col`).
    pub fn load(dir: &Path, urls: UrlNames) -> Result<FlowRegistry, String> {
        FlowRegistry::load_from(&FlowSource::Dir(dir.to_owned()), urls)
    }

    /// Loads a merchant's flows (a directory or a list of files), like [`FlowRegistry::load`].
    pub fn load_from(source: &FlowSource, urls: UrlNames) -> Result<FlowRegistry, String> {
        let set = source.load().map_err(describe)?;
        urls.check(&set)?;
        log_warnings(&set);
        Ok(FlowRegistry {
            source: source.clone(),
            urls,
            versions: RwLock::new(FlowVersions::new(set)),
            fingerprint: RwLock::new(fingerprint(source)),
        })
    }

    /// Where the flows are read from.
    pub fn source(&self) -> &FlowSource {
        &self.source
    }

    /// What `{NAME}` in the flows' URLs stands for.
    pub fn urls(&self) -> &UrlNames {
        &self.urls
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, FlowVersions> {
        self.versions.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current set (a cheap copy: flows are shared).
    pub fn current(&self) -> FlowSet {
        self.read().current().clone()
    }

    /// The current version of a flow by id.
    pub fn get(&self, id: &str) -> Option<Arc<Flow>> {
        self.read().current().get(id).cloned()
    }

    /// The exact file `session` started on: loaded now, or kept in the store.
    pub async fn version(&self, session: &SessionState, store: &dyn Sessions) -> Option<Arc<Flow>> {
        if let Some(f) = self.read().for_session(session).cloned() {
            return Some(f);
        }
        let (name, text) = store.flow_source(&session.flow_hash).await.ok().flatten()?;
        let flow = parse_flow(&name, &text).ok()?;
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        versions.remember(flow);
        versions.for_session(session).cloned()
    }

    /// Keeps the text of `flow` in the store so that its sessions outlive file changes.
    pub async fn remember(&self, flow: &Flow, store: &dyn Sessions) {
        if let Err(e) = store
            .put_flow_source(
                flow.hash(),
                &flow.path().display().to_string(),
                flow.source(),
            )
            .await
        {
            tracing::warn!(error = %e, "cannot keep the flow's text");
        }
    }

    /// Reloads the directory; keeps the old set when anything is invalid. Returns whether the
    /// set was replaced.
    pub fn reload(&self) -> bool {
        *self.fingerprint.write().unwrap_or_else(|p| p.into_inner()) = fingerprint(&self.source);
        match self
            .source
            .load()
            .map_err(describe)
            .and_then(|set| self.urls.check(&set).map(|()| set))
        {
            Ok(set) => {
                let n = set.len();
                log_warnings(&set);
                self.versions
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(set);
                tracing::info!(flows = n, "flows reloaded");
                true
            }
            Err(e) => {
                for line in e.lines() {
                    tracing::error!(%line, "flow reload refused; keeping the previous flows");
                }
                false
            }
        }
    }

    /// Reloads when a flow file changed since the last load (polled by the runtime's
    /// watcher). Returns whether the set was replaced.
    pub fn reload_if_changed(&self) -> bool {
        let now = fingerprint(&self.source);
        let changed = *self.fingerprint.read().unwrap_or_else(|p| p.into_inner()) != now;
        changed && self.reload()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_loads_and_reloads_name_file_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broken.toml");
        std::fs::write(
            &path,
            "id = \"broken\"\nversion = \"1\"\ncolour = \"red\"\n",
        )
        .expect("write");
        let error = FlowRegistry::load(dir.path(), UrlNames::default()).expect_err("invalid flow");
        let file = path.display().to_string();
        assert!(error.contains(&format!("{file}:3:1")), "{error}");
    }

    #[test]
    fn a_url_naming_an_unset_variable_fails_a_load_and_a_reload_when_required() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/support_identity.toml");
        let text = std::fs::read_to_string(bundled).expect("bundled flow");
        let path = dir.path().join("support_identity.toml");
        std::fs::write(&path, &text).expect("write");
        let production = UrlNames {
            required: true,
            ..UrlNames::default()
        };
        let error = FlowRegistry::load(dir.path(), production.clone()).expect_err("unset");
        assert!(error.contains("support_identity.toml:"), "{error}");
        assert!(error.contains("WAOTP_HOOK_BASE_URL"), "{error}");
        // The sandbox starts anyway (and says so in a warning).
        FlowRegistry::load(dir.path(), UrlNames::default()).expect("sandbox");

        let set = UrlNames {
            hook_base_url: Some("http://127.0.0.1:9/hooks".into()),
            ..production
        };
        let registry = FlowRegistry::load(dir.path(), set).expect("set");
        std::fs::write(
            &path,
            text.replace("version = \"1\"", "version = \"2\"")
                .replace("{WAOTP_HOOK_BASE_URL}", "{WAOTP_TEST_NEVER_SET}"),
        )
        .expect("write");
        assert!(
            !registry.reload(),
            "a reload naming an unset variable was taken"
        );
        assert_eq!(
            registry.get("support_identity").expect("flow").version(),
            "1"
        );
    }
}
