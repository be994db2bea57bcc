//! Several merchants and numbers in one deployment, end to end on the real server (sandbox
//! mode): events are routed by `metadata.phone_number_id`, a customer's conversations with two
//! numbers are independent, events for a number nobody serves are ignored, OTP limits are per
//! merchant, and a store written before merchants existed keeps its sessions.

mod e2e_support;

use e2e_support::{
    envelope_for, flow_variant, new_wamid, now_secs, wait_for, Api, APP_SECRET, VERIFY_TOKEN,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use waotp::store::SessionQuery;
use waotp::store::Store;
use waotp::store::{OutboxPayload, SessionRecord, StepWrite};
use waotp::tenants::{FlowSource, KeyDigest, Merchant, Number, Scope, Tenants};
use waotp::{Application, Settings};

const CUSTOMER: &str = "919876543210";
/// Merchant `shop_a` has two numbers, `shop_b` one.
const A1: &str = "1001";
const A2: &str = "1002";
const B1: &str = "2001";

/// A chat-started copy of the bundled sign-up flow: keyword `verify`, 10-digit codes (a typed
/// `0000000000` is wrong for certain in practice: one chance in ten billion).
fn verify_flow(dir: &Path) -> PathBuf {
    flow_variant(
        dir,
        "signup_verification",
        "verify",
        &[
            ("api = true", "api = true\nkeywords = [\"verify\"]"),
            ("length = 6", "length = 10"),
        ],
    )
}

fn number(id: &str, business: &str) -> Number {
    Number {
        business_number: Some(business.into()),
        ..Number::new(id)
    }
}

fn merchant(id: &str, flows: FlowSource, numbers: Vec<Number>) -> Merchant {
    Merchant {
        api_keys: vec![KeyDigest::of(format!("key-{id}").as_bytes())],
        ..Merchant::new(id, flows, numbers)
    }
}

struct Deployment {
    api: Api,
    store: Arc<Store>,
    reload: waotp::app::TenantsReload,
    dir: tempfile::TempDir,
}

/// `shop_a` (reading a flows directory) with numbers `a`, `shop_b` (a list of files) with `b`.
fn tenants(dir: &Path, a: &[&str], b: &[&str]) -> Tenants {
    let numbers = |ids: &[&str]| {
        ids.iter()
            .map(|id| number(id, &format!("+1555000{id}")))
            .collect()
    };
    Tenants::new(vec![
        merchant("shop_a", FlowSource::Dir(dir.join("flows_a")), numbers(a)),
        merchant(
            "shop_b",
            FlowSource::Files(vec![dir.join("flows_b/verify.toml")]),
            numbers(b),
        ),
    ])
    .expect("tenants")
}

/// Two merchants, three numbers.
async fn deployment() -> Deployment {
    let dir = tempfile::tempdir().expect("tempdir");
    verify_flow(&dir.path().join("flows_a"));
    verify_flow(&dir.path().join("flows_b"));
    let tenants = tenants(dir.path(), &[A1, A2], &[B1]);
    let vars = [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "WAOTP_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("WAOTP_APP_SECRET", APP_SECRET.to_owned()),
        ("WAOTP_VERIFY_TOKEN", VERIFY_TOKEN.to_owned()),
        ("WAOTP_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = Settings::from_vars(vars).expect("settings");
    let app = Application::build_with_tenants(settings, tenants)
        .await
        .expect("server builds");
    let api = Api::new(format!("http://{}", app.address()));
    let store = app.store().expect("the embedded engine");
    let reload = app.tenants();
    tokio::spawn(app.run_until_stopped());
    Deployment {
        api,
        store,
        reload,
        dir,
    }
}

/// One `messages` change: a text from `from` to the business number `to`.
fn text_change(to: &str, from: &str, body: &str) -> Value {
    envelope_for(
        to,
        &format!("1555000{to}"),
        json!({
            "contacts": [{"profile": {"name": "Kerry"}, "wa_id": from}],
            "messages": [{"from": from, "id": new_wamid(), "timestamp": now_secs(),
                          "type": "text", "text": {"body": body}}]
        }),
    )
}

/// Several changes (to several numbers) in one webhook body, as Meta batches them.
fn batch(changes: Vec<Value>) -> Value {
    let entries: Vec<Value> = changes
        .into_iter()
        .flat_map(|c| c["entry"].as_array().cloned().unwrap_or_default())
        .collect();
    json!({"object": "whatsapp_business_account", "entry": entries})
}

fn scope(merchant: &str, number: &str) -> Scope {
    Scope::new(merchant, number)
}

impl Deployment {
    async fn text(&self, to: &str, body: &str) {
        self.api.webhook(text_change(to, CUSTOMER, body)).await;
    }

    async fn settle(&self) {
        wait_for("recorded events handled", || {
            (self.store.inbound().pending_len() == 0).then_some(())
        })
        .await;
    }

    /// The customer's active `verify` session with `scope`'s number, once there is one.
    async fn active(&self, scope: &Scope) -> SessionRecord {
        let key = scope.customer_key(CUSTOMER);
        let id = wait_for("the keyword's session", || {
            self.store.sessions().active(&key, "verify").expect("store")
        })
        .await;
        self.store
            .sessions()
            .get(&id)
            .expect("store")
            .expect("session")
    }

    /// Every session of the customer with `scope`'s number, oldest first.
    fn sessions_with(&self, scope: &Scope) -> Vec<SessionRecord> {
        let page = self
            .store
            .sessions()
            .list(&SessionQuery {
                limit: 100,
                ..SessionQuery::default()
            })
            .expect("listing");
        let mut out: Vec<SessionRecord> = page
            .sessions
            .into_iter()
            .filter(|r| r.merchant == scope.merchant && r.number == scope.number)
            .collect();
        out.sort_by_key(|r| r.created_at);
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customer_writing_to_three_numbers_at_once_has_three_independent_sessions() {
    let d = deployment().await;
    d.api
        .webhook(batch(vec![
            text_change(A1, CUSTOMER, "verify"),
            text_change(A2, CUSTOMER, "verify"),
            text_change(B1, CUSTOMER, "verify"),
        ]))
        .await;
    let scopes = [
        scope("shop_a", A1),
        scope("shop_a", A2),
        scope("shop_b", B1),
    ];
    let mut ids = Vec::new();
    for s in &scopes {
        let record = d.active(s).await;
        assert_eq!(
            (record.merchant.as_str(), record.number.as_str()),
            (s.merchant.as_str(), s.number.as_str())
        );
        // The code goes out from the session's own number, for its own merchant.
        let code = d
            .store
            .sessions()
            .outbox_entry(&format!("{}:0:0", record.id))
            .expect("store")
            .expect("the code's outbox entry");
        assert!(
            matches!(code.payload, OutboxPayload::Code { .. }),
            "{code:?}"
        );
        assert_eq!(
            (code.merchant.as_str(), code.number.as_str()),
            (s.merchant.as_str(), s.number.as_str())
        );
        // Each number has its own 24-hour window with the customer.
        assert!(d
            .store
            .sessions()
            .last_customer_message(&s.customer_key(CUSTOMER))
            .expect("store")
            .is_some());
        ids.push(record.id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three sessions");

    // Cancelling at one number ends that conversation only.
    d.text(A1, "cancel").await;
    d.settle().await;
    let cancelled = d
        .store
        .sessions()
        .get(&ids_of(&d, &scopes[0]))
        .expect("store");
    let cancelled = cancelled.expect("session");
    assert!(!cancelled.is_active(), "{cancelled:?}");
    assert_eq!(cancelled.engine.outcome.as_deref(), Some("cancelled"));
    for s in &scopes[1..] {
        assert!(
            d.active(s).await.is_active(),
            "{s} is still waiting for its code"
        );
    }
}

/// The id of the (only) session of the customer with `scope`'s number.
fn ids_of(d: &Deployment, scope: &Scope) -> String {
    let sessions = d.sessions_with(scope);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    sessions[0].id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_a_number_nobody_serves_is_acknowledged_counted_and_ignored() {
    let d = deployment().await;
    // `webhook` asserts the 200.
    d.text("9999", "verify").await;
    d.api
        .webhook(batch(vec![
            text_change("9999", CUSTOMER, "verify"),
            text_change(A1, CUSTOMER, "hello"),
        ]))
        .await;
    d.settle().await;
    let metrics = d.api.metrics().await;
    assert!(
        metrics.contains("waotp_events_other_number_total 2"),
        "{metrics}"
    );
    assert_eq!(
        d.store.inbound().len(),
        1,
        "only the event for a served number is recorded"
    );
    let all = d
        .store
        .sessions()
        .list(&SessionQuery {
            limit: 10,
            ..SessionQuery::default()
        })
        .expect("listing");
    assert!(all.sessions.is_empty(), "{:?}", all.sessions);
    let unknown = Scope::new("", "9999").customer_key(CUSTOMER);
    assert!(d
        .store
        .sessions()
        .last_customer_message(&unknown)
        .expect("store")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_removes_and_adds_numbers_without_a_restart() {
    let d = deployment().await;
    d.text(A2, "verify").await;
    let before = d.active(&scope("shop_a", A2)).await;
    // Its code goes out before the number is removed (a message still queued for a removed
    // number fails with `number_removed` and takes the flow's delivery-failure branch).
    wait_for("the code sent", || {
        (d.store.sessions().outbox_depth() == 0).then_some(())
    })
    .await;
    let before = d
        .store
        .sessions()
        .get(&before.id)
        .expect("store")
        .expect("session");
    // A2 leaves shop_a; shop_b gets a second number.
    const B2: &str = "2002";
    d.reload
        .apply(tenants(d.dir.path(), &[A1], &[B1, B2]))
        .expect("reloaded");
    d.text(A2, "cancel").await;
    d.text(B2, "verify").await;
    let at_b2 = d.active(&scope("shop_b", B2)).await;
    assert_eq!(at_b2.merchant, "shop_b");
    d.settle().await;
    let metrics = d.api.metrics().await;
    assert!(
        metrics.contains("waotp_events_other_number_total 1"),
        "{metrics}"
    );
    // The removed number's message reached nobody: its session is as it was.
    let after = d
        .store
        .sessions()
        .get(&before.id)
        .expect("store")
        .expect("session");
    assert_eq!(after.last_inbound, before.last_inbound, "{after:?}");
    assert_ne!(
        after.engine.outcome.as_deref(),
        Some("cancelled"),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_blocked_at_one_merchant_still_gets_a_code_at_another() {
    let d = deployment().await;
    // Two sessions at shop_a, each locked by five wrong codes: ten wrong codes in a day block
    // the customer at shop_a (both of its numbers)…
    for _ in 0..2 {
        d.text(A1, "verify").await;
        for _ in 0..5 {
            d.text(A1, "0000000000").await;
        }
    }
    d.text(A1, "verify").await;
    d.settle().await;
    let at_a1 = d.sessions_with(&scope("shop_a", A1));
    assert_eq!(at_a1.len(), 3, "{at_a1:?}");
    for locked in &at_a1[..2] {
        assert_eq!(
            locked.engine.outcome.as_deref(),
            Some("locked"),
            "{locked:?}"
        );
    }
    assert_eq!(
        at_a1[2].otp_refused.as_deref(),
        Some("customer_blocked"),
        "{:?}",
        at_a1[2]
    );
    d.text(A2, "verify").await;
    d.settle().await;
    let at_a2 = d.sessions_with(&scope("shop_a", A2));
    assert_eq!(at_a2.len(), 1, "{at_a2:?}");
    assert_eq!(at_a2[0].otp_refused.as_deref(), Some("customer_blocked"));

    // …and not at shop_b.
    d.text(B1, "verify").await;
    let at_b = d.active(&scope("shop_b", B1)).await;
    assert_eq!(at_b.otp_refused, None);
    let code = d
        .store
        .sessions()
        .outbox_entry(&format!("{}:0:0", at_b.id))
        .expect("store")
        .expect("a code is queued for the customer at shop_b");
    assert!(
        matches!(code.payload, OutboxPayload::Code { .. }),
        "{code:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_merchants_keeps_its_sessions_after_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let flows = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    let customer = "14155550123";
    // The previous version's shape: an active session without merchant or number, indexed and
    // windowed under the bare customer id.
    let id = "ses_000000000000000000legacy";
    {
        let store = Store::open(&data, |_| {}).expect("store");
        let registry =
            waotp::runtime::flows::FlowRegistry::load(&flows, Default::default()).expect("flows");
        let flow = registry.get("signup_verification").expect("flow");
        let now = chrono::Utc::now();
        let engine = waotp::flow::engine::new_session(&flow, Default::default(), "en", now)
            .expect("session");
        let (engine, _) = waotp::flow::engine::step(
            &flow,
            &engine,
            waotp::flow::engine::Event::Start,
            now,
            &mut rand::rngs::OsRng,
        );
        store
            .sessions()
            .put_flow_source(
                flow.hash(),
                &flow.path().display().to_string(),
                flow.source(),
            )
            .expect("flow source");
        let record = SessionRecord {
            id: id.into(),
            to: format!("+{customer}"),
            customer: customer.into(),
            created_at: now,
            updated_at: now,
            step: 1,
            engine,
            timer_key: None,
            otp_purpose: None,
            otp_bound: Vec::new(),
            last_inbound: 0,
            otp_refused: None,
            merchant: String::new(),
            number: String::new(),
        };
        assert!(record.is_active());
        store
            .sessions()
            .apply(StepWrite {
                record: Some(record),
                activate: Some((customer.into(), "signup_verification".into())),
                ..StepWrite::default()
            })
            .expect("write");
        store
            .sessions()
            .touch_window(customer, now)
            .expect("window");
        store.flush().expect("flush");
    }

    // The new version, single-merchant sandbox setup, on the same directory.
    let mut vars: std::collections::HashMap<String, String> = [
        ("WAOTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("WAOTP_DATA_DIR", data.display().to_string()),
        ("WAOTP_FLOWS_DIR", flows.display().to_string()),
        ("WAOTP_APP_SECRET", APP_SECRET.to_owned()),
        ("WAOTP_VERIFY_TOKEN", VERIFY_TOKEN.to_owned()),
        ("WAOTP_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.insert("WAOTP_PHONE_NUMBER_ID".into(), A1.into());
    // sled's background flusher may hold the old handle's file lock for a moment.
    let deadline = std::time::Instant::now() + e2e_support::DEADLINE;
    let app = loop {
        let settings = Settings::from_vars(vars.clone()).expect("settings");
        match Application::build(settings).await {
            Ok(app) => break app,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "server builds: {e:#}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let api = Api::new(format!("http://{}", app.address()));
    let store = app.store().expect("the embedded engine");
    tokio::spawn(app.run_until_stopped());

    let default = Scope::new(waotp::tenants::DEFAULT_MERCHANT, A1);
    let migrated = store.sessions().get(id).expect("store").expect("session");
    assert_eq!(
        (migrated.merchant.as_str(), migrated.number.as_str()),
        (default.merchant.as_str(), default.number.as_str())
    );
    let key = default.customer_key(customer);
    assert_eq!(
        store
            .sessions()
            .active(&key, "signup_verification")
            .expect("store")
            .as_deref(),
        Some(id)
    );
    assert!(store
        .sessions()
        .last_customer_message(&key)
        .expect("store")
        .is_some());

    // The session still answers its customer: "cancel" ends it instead of a default reply.
    api.webhook(text_change(A1, customer, "cancel")).await;
    let ended = wait_for("the legacy session to answer", || {
        store
            .sessions()
            .get(id)
            .expect("store")
            .filter(|r| !r.is_active())
    })
    .await;
    assert_eq!(ended.engine.outcome.as_deref(), Some("cancelled"));
}
