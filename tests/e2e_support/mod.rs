//! End-to-end harness: the real server (in this process, or as a child process) wired to a local
//! fake Graph API and a local fake merchant, both real HTTP servers in the test process so that
//! they outlive a killed child and count every request it made.
//!
//! Webhooks are built the way WhatsApp sends them and signed with the app secret; every wait is
//! a poll with a deadline.
#![allow(dead_code)]

#[path = "../support/http_fake.rs"]
pub mod http_fake;
#[path = "../support/merchant_signature.rs"]
pub mod merchant_signature;

mod api;
mod child;
mod fakes;

// Each test file uses its own part of the harness.
#[allow(unused_imports)]
pub use api::*;
#[allow(unused_imports)]
pub use child::*;
#[allow(unused_imports)]
pub use fakes::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use waotp::store::Store;
use waotp::{Application, Settings};

pub const APP_SECRET: &str = "e2e-app-secret";
pub const VERIFY_TOKEN: &str = "e2e-verify-token";
pub const ACCESS_TOKEN: &str = "EAAG-e2e-token";
pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const WABA_ID: &str = "102290129340398";
pub const API_KEY: &str = "e2e-api-key";
pub const CALLBACK_SECRET: &str = "e2e-callback-secret";
pub const BUSINESS_NUMBER: &str = "+15550783881";
/// The account the fake merchant knows; any other is unknown.
pub const KNOWN_ACCOUNT: &str = "alice@example.com";
pub const RECOVERY_URL: &str = "https://shop.example/recover/tok123";

/// The single merchant's scope: its one number, `WAOTP_PHONE_NUMBER_ID`.
pub fn default_scope() -> waotp::tenants::Scope {
    waotp::tenants::Scope::new(waotp::tenants::DEFAULT_MERCHANT, PHONE_NUMBER_ID)
}

/// The store key of `customer` talking to the single merchant's number [`PHONE_NUMBER_ID`].
pub fn scoped(customer: &str) -> String {
    default_scope().customer_key(customer)
}

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, failing with `what` after [`DEADLINE`].
pub async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A flows directory: the bundled files, optionally with text replaced (short durations).
pub fn flows_copy(dir: &Path, edits: &[(&str, &str, &str)]) -> PathBuf {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let target = dir.join("flows");
    std::fs::create_dir_all(&target).expect("flows dir");
    for entry in std::fs::read_dir(&bundled).expect("bundled flows") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("read flow");
            let mine = edits
                .iter()
                .filter(|(file, _, _)| *file == name)
                .map(|&(_, from, to)| (from, to));
            std::fs::write(target.join(&name), edited(&name, text, mine)).expect("write flow");
        }
    }
    target
}

/// Writes into `dir` (created if missing) a copy of the bundled flow `bundled` (its id) under the
/// id `id`, as `<id>.toml`, with each `(from, to)` edit applied; returns its path. Panics when an
/// edit finds nothing to replace.
pub fn flow_variant(dir: &Path, bundled: &str, id: &str, edits: &[(&str, &str)]) -> PathBuf {
    let text = std::fs::read_to_string(bundled_flows().join(format!("{bundled}.toml")))
        .expect("bundled flow");
    let renamed = (format!("id = \"{bundled}\""), format!("id = \"{id}\""));
    let all =
        std::iter::once((renamed.0.as_str(), renamed.1.as_str())).chain(edits.iter().copied());
    std::fs::create_dir_all(dir).expect("flows dir");
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, edited(bundled, text, all)).expect("write flow");
    path
}

/// `text` with each `(from, to)` replaced in turn; panics naming `name` when `from` is absent.
fn edited<'a>(
    name: &str,
    mut text: String,
    edits: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    for (from, to) in edits {
        assert!(text.contains(from), "{name} has no `{from}`");
        text = text.replace(from, to);
    }
    text
}

/// The bundled flows directory.
pub fn bundled_flows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("flows")
}

/// Settings of a production-mode server talking to the fakes.
pub fn server_vars(
    data: &Path,
    flows: &Path,
    graph: &Graph,
    merchant: &Merchant,
) -> HashMap<String, String> {
    [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("WAOTP_DATA_DIR", data.display().to_string()),
        ("WAOTP_FLOWS_DIR", flows.display().to_string()),
        ("WAOTP_APP_SECRET", APP_SECRET.to_owned()),
        ("WAOTP_VERIFY_TOKEN", VERIFY_TOKEN.to_owned()),
        ("WAOTP_ACCESS_TOKEN", ACCESS_TOKEN.to_owned()),
        ("WAOTP_PHONE_NUMBER_ID", PHONE_NUMBER_ID.to_owned()),
        ("WAOTP_GRAPH_URL", graph.url()),
        ("WAOTP_API_KEYS", API_KEY.to_owned()),
        ("WAOTP_CALLBACK_URL", merchant.callback_url()),
        ("WAOTP_CALLBACK_SECRET", CALLBACK_SECRET.to_owned()),
        ("WAOTP_HOOK_BASE_URL", merchant.hook_base()),
        ("WAOTP_BUSINESS_NUMBER", BUSINESS_NUMBER.to_owned()),
        ("WAOTP_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A server in this process, with its fakes and temp directory.
pub struct E2e {
    pub graph: Graph,
    pub merchant: Merchant,
    pub api: Api,
    pub store: Arc<Store>,
    pub dir: tempfile::TempDir,
    pub flows: PathBuf,
}

impl E2e {
    /// The bundled flows.
    pub async fn start() -> E2e {
        E2e::with_flows(&[]).await
    }

    /// A copy of the bundled flows with `(file, from, to)` text edits.
    pub async fn with_flows(edits: &[(&str, &str, &str)]) -> E2e {
        E2e::with_settings(edits, &[]).await
    }

    /// Like [`E2e::with_flows`], with extra `WAOTP_*` settings.
    pub async fn with_settings(edits: &[(&str, &str, &str)], extra: &[(&str, &str)]) -> E2e {
        let dir = tempfile::tempdir().expect("tempdir");
        let flows = if edits.is_empty() {
            bundled_flows()
        } else {
            flows_copy(dir.path(), edits)
        };
        let graph = Graph::start().await;
        let merchant = Merchant::start().await;
        let mut vars = server_vars(&dir.path().join("data"), &flows, &graph, &merchant);
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let settings = Settings::from_vars(vars).expect("settings");
        let app = Application::build(settings).await.expect("server builds");
        let api = Api::new(format!("http://{}", app.address()));
        let store = app.store().expect("the embedded engine");
        tokio::spawn(app.run_until_stopped());
        E2e {
            graph,
            merchant,
            api,
            store,
            dir,
            flows,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}
