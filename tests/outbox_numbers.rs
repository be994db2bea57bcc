//! The outbox sends each entry from its own number: that number's token and path at the Graph
//! API, that number's rate limit (a busy number never slows another), the pair rate pause per
//! (number, customer), the 24-hour window per (number, customer), callbacks signed with the
//! entry's merchant's secret, and entries of a removed number failing with `number_removed`.
//!
//! The real outbox runs over a real store in a temporary directory, against local HTTP fakes of
//! the Graph API and the merchant; the tenants registry is built in the test.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::SecretString;
use serde_json::json;
use support::graph_fake::{GraphFake, VERSION_PATH};
use support::http_fake::{Answer, HttpFake, Recorded};
use support::merchant_signature::{self, Refused};
use waotp::flow::engine::{MessageBody, OutboundMessage, TemplateRef};
use waotp::flow::model::TemplateCategory;
use waotp::merchant::MerchantClient;
use waotp::metrics::Metrics;
use waotp::otp::{CodeSealer, OtpKey};
use waotp::outbox::{Outbox, SandboxRecorder};
use waotp::runtime::merchants::MerchantRuntimes;
use waotp::runtime::{Inbox, Runtime, RuntimeConfig};
use waotp::store::embedded::Embedded;
use waotp::store::Store;
use waotp::store::StoreOptions;
use waotp::store::{OutboxEntry, OutboxPayload, OutboxState, StepWrite};
use waotp::tenants::{FlowSource, Merchant, Number, Scope, Tenants, TenantsHandle};
use waotp::whatsapp::{GraphApi, GraphTimeouts};

const WAIT: Duration = Duration::from_secs(60);

fn number(id: &str, token: Option<&str>, sends_per_second: u32) -> Number {
    Number {
        access_token: token.map(SecretString::from),
        sends_per_second,
        ..Number::new(id)
    }
}

fn merchant(id: &str, secret: Option<&str>, numbers: Vec<Number>) -> Merchant {
    Merchant {
        callback_secret: secret.map(SecretString::from),
        // The bundled flows name `{WAOTP_HOOK_BASE_URL}`, which a sending merchant must set.
        hook_base_url: Some("http://127.0.0.1:9/hooks".into()),
        ..Merchant::new(
            id,
            FlowSource::Dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows")),
            numbers,
        )
    }
}

/// The real outbox over a real store, sending to `graph_url`.
struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    tenants: TenantsHandle,
    recorder: Arc<SandboxRecorder>,
    outbox: Arc<Outbox>,
    runtime: Arc<Runtime>,
}

impl Rig {
    async fn start(graph_url: &str, tenants: Tenants) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let embedded =
            Embedded::open(dir.path(), |_| {}, None, StoreOptions::default()).expect("store");
        let store = embedded.store().clone();
        let key = OtpKey::load_or_create(dir.path(), None).expect("key");
        let sealer = CodeSealer::new(&key);
        let metrics = Arc::new(Metrics::new());
        let merchants =
            MerchantRuntimes::load(&tenants, &Default::default()).expect("merchants' flows");
        let tenants = TenantsHandle::new(tenants);
        let runtime = Arc::new(Runtime::new(
            embedded.storage(),
            merchants,
            metrics.clone(),
            RuntimeConfig::default(),
            tenants.clone(),
        ));
        let inbox = Arc::new(Inbox::new(
            metrics,
            runtime.clone(),
            tokio::runtime::Handle::current(),
        ));
        let recorder = Arc::new(SandboxRecorder::new(embedded.storage().sessions, sealer));
        let graph = GraphApi::new(
            graph_url,
            GraphTimeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(5),
            },
        )
        .expect("graph");
        let merchant = MerchantClient::new(None, Duration::from_secs(5)).expect("merchant");
        let outbox = Arc::new(
            Outbox::new(
                runtime.clone(),
                inbox,
                graph,
                recorder.clone(),
                merchant,
                Duration::from_secs(120),
            )
            .expect("outbox"),
        );
        Rig {
            _dir: dir,
            store,
            tenants,
            recorder,
            outbox,
            runtime,
        }
    }

    /// Queues entries as one step would, atomically.
    fn queue(&self, entries: Vec<OutboxEntry>) {
        self.store
            .sessions()
            .apply(StepWrite {
                outbox: entries,
                ..Default::default()
            })
            .expect("queued");
    }

    fn run(&self) {
        tokio::spawn(self.outbox.clone().run());
    }

    fn entry(&self, id: &str) -> OutboxEntry {
        self.store
            .sessions()
            .outbox_entry(id)
            .expect("read")
            .expect("entry")
    }

    /// Waits until entry `id` is settled (done or failed).
    async fn settled(&self, id: &str) -> OutboxEntry {
        poll(|| {
            let e = self.entry(id);
            matches!(e.state, OutboxState::Done | OutboxState::Failed { .. }).then_some(e)
        })
        .await
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.outbox.stop_dispatching();
    }
}

/// Polls `check` until it gives a value, failing after [`WAIT`].
async fn poll<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(id: &str, scope: &Scope, to: &str) -> OutboxEntry {
    OutboxEntry::pending(
        id.into(),
        None,
        to.into(),
        OutboxPayload::Text {
            text: format!("message {id}"),
        },
        Utc::now(),
    )
    .from_scope(scope)
}

fn messages_path(phone_number_id: &str) -> String {
    format!("{VERSION_PATH}/{phone_number_id}/messages")
}

fn sends_to(requests: &[Recorded], phone_number_id: &str) -> Vec<Recorded> {
    requests
        .iter()
        .filter(|r| r.path == messages_path(phone_number_id))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_number_sends_with_its_own_token_and_a_number_without_one_is_recorded() {
    let graph = GraphFake::start().await;
    let tenants = Tenants::new(vec![
        merchant("shop_a", None, vec![number("1001", Some("token-a"), 80)]),
        merchant(
            "shop_b",
            None,
            vec![
                number("2002", Some("token-b"), 80),
                number("3003", None, 80),
            ],
        ),
    ])
    .expect("tenants");
    let rig = Rig::start(&graph.base_url(), tenants).await;
    let a = Scope::new("shop_a", "1001");
    let b = Scope::new("shop_b", "2002");
    let sandboxed = Scope::new("shop_b", "3003");
    rig.queue(vec![
        text("a1", &a, "919800000001"),
        text("b1", &b, "919800000001"),
        text("a2", &a, "919800000002"),
        text("b2", &b, "919800000002"),
        text("s1", &sandboxed, "919800000001"),
    ]);
    rig.run();
    for id in ["a1", "a2", "b1", "b2", "s1"] {
        assert_eq!(rig.settled(id).await.state, OutboxState::Done, "{id}");
    }

    let requests = graph.requests();
    assert_eq!(requests.len(), 4, "the sandboxed number sends nothing");
    for (phone_number_id, token) in [("1001", "token-a"), ("2002", "token-b")] {
        let sent = sends_to(&requests, phone_number_id);
        assert_eq!(sent.len(), 2, "{phone_number_id}");
        for r in &sent {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {token}").as_str())
            );
        }
    }
    let recorded = rig
        .recorder
        .messages(&sandboxed, "919800000001")
        .await
        .expect("recorded");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["from"], "3003");
    assert_eq!(recorded[0]["text"], "message s1");
    // Recorded per number: the same customer at another number has nothing recorded.
    assert!(rig
        .recorder
        .messages(&b, "919800000001")
        .await
        .expect("listed")
        .is_empty());
}

/// Checks a token bucket's promise on arrival times: over any span of `t` seconds at most
/// `burst + rate × t` sends arrive, plus `slack` for requests that left the limiter together
/// but reached the fake apart (scheduling on a loaded machine).
fn assert_within_rate(arrivals: &[Instant], rate: f64, burst: f64, slack: f64, label: &str) {
    for i in 0..arrivals.len() {
        for j in i..arrivals.len() {
            let span = arrivals[j].duration_since(arrivals[i]).as_secs_f64();
            let count = (j - i + 1) as f64;
            assert!(
                count <= burst + rate * span + slack,
                "{label}: {count} sends within {span:.3}s (limit {burst} + {rate}/s)"
            );
        }
    }
}

/// How many 1-second windows, from the first arrival, the sends took.
fn windows(arrivals: &[Instant]) -> u64 {
    let first = arrivals[0];
    let last = arrivals[arrivals.len() - 1];
    last.duration_since(first).as_secs() + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_number_keeps_its_own_rate_limit_under_load() {
    const PER_NUMBER: usize = 300;
    let graph = GraphFake::start().await;
    let tenants = Tenants::new(vec![
        merchant("shop_a", None, vec![number("1001", Some("token-a"), 50)]),
        merchant("shop_b", None, vec![number("2002", Some("token-b"), 100)]),
    ])
    .expect("tenants");
    let rig = Rig::start(&graph.base_url(), tenants).await;
    let a = Scope::new("shop_a", "1001");
    let b = Scope::new("shop_b", "2002");
    // All of A's queued before all of B's: B must not wait behind A's backlog.
    let mut entries: Vec<OutboxEntry> = (0..PER_NUMBER)
        .map(|i| text(&format!("a{i:03}"), &a, &format!("9198{i:08}")))
        .collect();
    entries.extend((0..PER_NUMBER).map(|i| text(&format!("b{i:03}"), &b, &format!("9197{i:08}"))));
    rig.queue(entries);
    rig.run();
    poll(|| (graph.requests().len() >= 2 * PER_NUMBER).then_some(())).await;

    let requests = graph.requests();
    let arrivals = |id: &str| -> Vec<Instant> {
        let mut at: Vec<Instant> = sends_to(&requests, id).iter().map(|r| r.arrived).collect();
        at.sort();
        at
    };
    let at_a = arrivals("1001");
    let at_b = arrivals("2002");
    assert_eq!(at_a.len(), PER_NUMBER);
    assert_eq!(at_b.len(), PER_NUMBER);
    // The limiter's bucket holds one second's worth and starts full: over t seconds a number
    // sends at most `rate × (1 + t)`; in any 1-second window at most twice its rate. The slack,
    // half a second's worth, is for sends the limiter let go apart that a loaded machine
    // delivered together; without a limit all 300 would arrive at once.
    assert_within_rate(&at_a, 50.0, 50.0, 25.0, "number A");
    assert_within_rate(&at_b, 100.0, 100.0, 50.0, "number B");
    let most_in_a_second = at_a
        .iter()
        .enumerate()
        .map(|(i, t)| {
            at_a[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        most_in_a_second <= 125,
        "A: {most_in_a_second} in one second"
    );
    // B, at twice A's rate and not behind A's queue, is done in clearly fewer windows.
    let (windows_a, windows_b) = (windows(&at_a), windows(&at_b));
    assert!(
        windows_b + 2 <= windows_a,
        "B took {windows_b} one-second windows, A {windows_a}"
    );
    // B's first send did not wait for A's backlog.
    assert!(
        at_b[0] < at_a[at_a.len() / 2],
        "B started only after half of A was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_rate_limit_holds_one_number_and_customer_only() {
    // The first send from A to the customer hits Meta's pair rate limit; every other is taken.
    let refused_once = Arc::new(AtomicBool::new(false));
    let refused = refused_once.clone();
    let graph = HttpFake::start(move |r: &Recorded| {
        if r.path == messages_path("1001")
            && r.json()["to"] == "919800000001"
            && !refused.swap(true, Ordering::SeqCst)
        {
            Answer::json(
                400,
                json!({ "error": {
                    "message": "(#131056) pair rate limit hit", "type": "OAuthException",
                    "code": 131056, "fbtrace_id": "x",
                }}),
            )
        } else {
            Answer::json(200, json!({ "messages": [{ "id": "wamid.fake.ok" }] }))
        }
    })
    .await;
    let tenants = Tenants::new(vec![merchant(
        "shop",
        None,
        vec![
            number("1001", Some("token-a"), 80),
            number("2002", Some("token-b"), 80),
        ],
    )])
    .expect("tenants");
    let rig = Rig::start(&graph.url(VERSION_PATH), tenants).await;
    let a = Scope::new("shop", "1001");
    let b = Scope::new("shop", "2002");
    rig.queue(vec![text("a1", &a, "919800000001")]);
    rig.run();
    poll(|| {
        (rig.entry("a1").attempts >= 1 && rig.entry("a1").state == OutboxState::Pending)
            .then_some(())
    })
    .await;
    // The pause is recorded for (A, customer), not for the customer alone.
    let sessions = rig.store.sessions();
    let now = Utc::now().timestamp_millis();
    assert!(sessions
        .recipient_paused_until(&a.customer_key("919800000001"))
        .expect("read")
        .is_some_and(|until| until > now));
    assert!(sessions
        .recipient_paused_until(&b.customer_key("919800000001"))
        .expect("read")
        .is_none());
    // The same customer gets B's message at once while A's waits out the pause.
    rig.queue(vec![
        text("b1", &b, "919800000001"),
        text("a2", &a, "919800000002"),
    ]);
    assert_eq!(rig.settled("b1").await.state, OutboxState::Done);
    assert_eq!(rig.settled("a2").await.state, OutboxState::Done);
    // Both went out while A's pause for this customer was still in force.
    let first = rig.entry("a1");
    assert_eq!(first.state, OutboxState::Pending, "still held by the pause");
    assert_eq!(first.attempts, 1);
    assert!(sessions
        .recipient_paused_until(&a.customer_key("919800000001"))
        .expect("read")
        .is_some_and(|until| until > Utc::now().timestamp_millis()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_signed_with_their_own_merchants_secret() {
    let graph = GraphFake::start().await;
    let merchant_site = HttpFake::start(|_| Answer::json(200, json!({}))).await;
    let tenants = Tenants::new(vec![
        merchant(
            "shop_a",
            Some("secret-a"),
            vec![number("1001", Some("t"), 80)],
        ),
        merchant(
            "shop_b",
            Some("secret-b"),
            vec![number("2002", Some("t"), 80)],
        ),
        merchant("shop_c", None, vec![number("3003", Some("t"), 80)]),
    ])
    .expect("tenants");
    let rig = Rig::start(&graph.base_url(), tenants).await;
    let callback = |id: &str, scope: &Scope| {
        OutboxEntry::pending(
            id.into(),
            None,
            "919800000001".into(),
            OutboxPayload::Callback {
                url: merchant_site.url(&format!("/hooks/{id}")),
                event_id: format!("evt_{id}"),
                body: json!({ "event": "session.completed", "id": id }),
            },
            Utc::now(),
        )
        .from_scope(scope)
    };
    rig.queue(vec![
        callback("cb_a", &Scope::new("shop_a", "1001")),
        callback("cb_b", &Scope::new("shop_b", "2002")),
        callback("cb_c", &Scope::new("shop_c", "3003")),
    ]);
    rig.run();
    for id in ["cb_a", "cb_b", "cb_c"] {
        assert_eq!(rig.settled(id).await.state, OutboxState::Done, "{id}");
    }
    let calls: HashMap<String, Recorded> = merchant_site
        .requests()
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    let check = |id: &str, secret: &str| {
        let r = &calls[&format!("/hooks/{id}")];
        merchant_signature::check(
            secret,
            r.header("x-waotp-signature"),
            &r.body,
            merchant_signature::unix_now(),
        )
    };
    assert_eq!(check("cb_a", "secret-a"), Ok(()));
    assert_eq!(check("cb_a", "secret-b"), Err(Refused::Mismatch));
    assert_eq!(check("cb_b", "secret-b"), Ok(()));
    assert_eq!(check("cb_b", "secret-a"), Err(Refused::Mismatch));
    // A merchant without a secret: unsigned, as without WAOTP_CALLBACK_SECRET.
    assert_eq!(check("cb_c", "secret-a"), Err(Refused::Missing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_a_removed_number_fails_with_number_removed() {
    let graph = GraphFake::start().await;
    let both = || {
        Tenants::new(vec![merchant(
            "shop",
            None,
            vec![
                number("1001", Some("token-a"), 80),
                number("2002", Some("token-b"), 80),
            ],
        )])
        .expect("tenants")
    };
    let rig = Rig::start(&graph.base_url(), both()).await;
    // The tenants file is reloaded without number 2002.
    rig.tenants.replace(
        Tenants::new(vec![merchant(
            "shop",
            None,
            vec![number("1001", Some("token-a"), 80)],
        )])
        .expect("tenants"),
    );
    rig.outbox.on_tenants_changed(&rig.tenants.current());
    rig.queue(vec![
        text("gone", &Scope::new("shop", "2002"), "919800000001"),
        text("kept", &Scope::new("shop", "1001"), "919800000001"),
    ]);
    rig.run();
    assert_eq!(
        rig.settled("gone").await.state,
        OutboxState::Failed {
            reason: "number_removed".into()
        }
    );
    assert_eq!(rig.settled("kept").await.state, OutboxState::Done);
    let requests = graph.requests();
    assert!(
        sends_to(&requests, "2002").is_empty(),
        "nothing sent from the removed number"
    );
    assert_eq!(sends_to(&requests, "1001").len(), 1);
}

fn prompt(id: &str, scope: &Scope, to: &str) -> OutboxEntry {
    OutboxEntry::pending(
        id.into(),
        None,
        to.into(),
        OutboxPayload::Message {
            message: OutboundMessage {
                message_id: "prompt".into(),
                body: MessageBody::Text {
                    text: "Type your code".into(),
                },
                template: Some(TemplateRef {
                    name: "code_prompt".into(),
                    language: "en".into(),
                    category: TemplateCategory::Utility,
                    parameters: Vec::new(),
                    quick_replies: Vec::new(),
                }),
            },
        },
        Utc::now(),
    )
    .from_scope(scope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_24_hour_window_is_per_number_and_customer() {
    let graph = GraphFake::start().await;
    let tenants = Tenants::new(vec![merchant(
        "shop",
        None,
        vec![
            number("1001", Some("token-a"), 80),
            number("2002", Some("token-b"), 80),
        ],
    )])
    .expect("tenants");
    let rig = Rig::start(&graph.base_url(), tenants).await;
    let a = Scope::new("shop", "1001");
    let b = Scope::new("shop", "2002");
    let sessions = rig.store.sessions();
    // The customer wrote to number A only.
    sessions
        .touch_window(&a.customer_key("919800000001"), Utc::now())
        .expect("window");
    // Another wrote before windows were kept per number: that counts for the default number
    // (the first merchant's first, here A) only.
    sessions
        .touch_window("919800000002", Utc::now())
        .expect("window");
    rig.queue(vec![
        prompt("a1", &a, "919800000001"),
        prompt("b1", &b, "919800000001"),
        prompt("a2", &a, "919800000002"),
        prompt("b2", &b, "919800000002"),
    ]);
    rig.run();
    for id in ["a1", "b1", "a2", "b2"] {
        assert_eq!(rig.settled(id).await.state, OutboxState::Done, "{id}");
    }
    let requests = graph.requests();
    let kind = |phone_number_id: &str, to: &str| -> String {
        let sent = sends_to(&requests, phone_number_id);
        let r = sent.iter().find(|r| r.json()["to"] == to).expect("sent");
        r.json()["type"].as_str().expect("type").to_owned()
    };
    assert_eq!(kind("1001", "919800000001"), "text");
    assert_eq!(kind("2002", "919800000001"), "template");
    assert_eq!(kind("1001", "919800000002"), "text");
    assert_eq!(kind("2002", "919800000002"), "template");
}

/// A `sent` status naming `tracker`, reported for the number `phone_number_id`.
fn echo(message_id: &str, tracker: &str, phone_number_id: &str) -> waotp::domain::DeliveryStatus {
    waotp::domain::DeliveryStatus {
        message_id: waotp::domain::MessageId::parse(message_id.to_owned()).expect("id"),
        recipient: waotp::domain::WaId::parse("919800000001").expect("wa id"),
        recipient_user_id: None,
        status: waotp::domain::StatusKind::Sent,
        timestamp: Utc::now().timestamp(),
        errors: Vec::new(),
        callback_data: Some(tracker.to_owned()),
        phone_number_id: Some(phone_number_id.to_owned()),
    }
}

#[tokio::test]
async fn a_status_of_another_number_never_settles_an_entry_in_doubt() {
    let tenants = Tenants::new(vec![
        merchant("shop", None, vec![number("1001", Some("token-a"), 80)]),
        merchant("market", None, vec![number("2001", Some("token-b"), 80)]),
    ])
    .expect("tenants");
    let rig = Rig::start("http://127.0.0.1:9", tenants).await;
    let mut entry = text("doubt", &Scope::new("shop", "1001"), "919800000001");
    entry.state = OutboxState::InDoubt;
    rig.queue(vec![entry]);
    // Number 2001 reports a message carrying shop's tracker: not what 1001 sent.
    rig.runtime
        .track_status(&echo("wamid.other", "doubt", "2001"))
        .await
        .expect("status");
    let sessions = rig.store.sessions();
    assert_eq!(
        sessions.echo("doubt").expect("read"),
        None,
        "settled by another number's status"
    );
    assert_eq!(rig.entry("doubt").state, OutboxState::InDoubt);
    // The sending number's own status does settle it.
    rig.runtime
        .track_status(&echo("wamid.own", "doubt", "1001"))
        .await
        .expect("status");
    assert_eq!(
        sessions.echo("doubt").expect("read").as_deref(),
        Some("wamid.own")
    );
}
