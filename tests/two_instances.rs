//! Several `waotp serve` processes sharing one store, seen from outside: two instances on one
//! PostgreSQL database (each on its own port, with its own empty data directory), all pointed at
//! one fake Graph API and one fake merchant that live in this test process and so see every
//! request of every process. Signed webhooks and merchant API calls alternate between the
//! instances, as behind a load balancer; in the middle of the load one instance is killed with
//! SIGKILL and started again.
//!
//! What must hold: every webhook answered `200` is handled (its session moves: a "yes" brings
//! the code, a typed code completes the session), no message is sent twice (no outbox id in
//! `biz_opaque_callback_data` twice, no read receipt twice, one code per session), every session
//! reaches its outcome (confirmed for those the customer answers, expired for those left to
//! time out, after exactly one reminder: each timer fires once), one customer's messages are
//! handled in arrival order even when two instances took them ("cancel" then at once "yes":
//! cancelled, and no code ever sent), and every session's completion
//! reaches the merchant under one event id (a delivery in flight at the kill may be repeated
//! after it: the merchant drops it by event id).
//!
//! The fake Graph API does what Meta does and a local fake would not: a `sent` status webhook
//! echoing the outbox id of every message it accepted. That is what settles a send in flight at
//! the kill instead of sending it blindly again.
//!
//! The same scenario runs with one embedded instance killed and restarted on its data directory
//! (`one_embedded_instance_killed_midway`). The two-instance test needs a server named by
//! `WAOTP_TEST_DATABASE_URL` (without it, it prints a notice and passes).

mod e2e_support;
mod pg_support;

use e2e_support::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use waotp::webhook::signature::SignatureVerifier;

/// Sessions whose customer answers: most confirm and type the code, every fourth cancels and
/// then says "yes" …
const ANSWERED: usize = 16;
/// … and sessions left to time out (a reminder, then the expiry).
const IDLE: usize = 6;
/// Answered sessions in progress at once.
const AT_ONCE: usize = 6;
/// Customer webhooks acknowledged before the kill (of `2 * ANSWERED`).
const KILL_AFTER_ACKS: usize = 12;
/// The flow of the idle sessions: `cod_confirmation` with the timers below.
const IDLE_FLOW: &str = "cod_confirmation_idle";
/// The idle sessions' reminder and timeout, shortened so that timers are pending across the kill.
const REMINDER: &str = "2s";
const TIMEOUT: &str = "8s";
/// How long a send in flight at the kill waits for its status before it is sent once more.
const IN_DOUBT_SECONDS: &str = "5";
/// The longest any one wait may take: a send or timer claimed by the killed instance is taken
/// over only once its lease (`CLAIM_LEASE`, 30 s) has run out, and a send in flight then waits
/// its status; a session may need two takeovers in a row (its timer's, then its send's).
const WAIT: Duration = Duration::from_secs(100);
/// A callback the killed process had on the wire may reach the merchant fake a moment after the
/// kill started; a repeat (the restart's or another instance's) always comes after the kill.
const ON_THE_WIRE: Duration = Duration::from_secs(2);
/// Every instance hashes and seals codes with the same key.
const OTP_KEY: &str = "two-instances-test-otp-key-0123456789abcdef";

/// The messages of the cash-on-delivery flow: (template name, text of the free-form form).
type Kind = (Option<&'static str>, Option<&'static str>);
const SUMMARY: Kind = (Some("cod_order_summary"), Some("Please confirm"));
const REMINDED: Kind = (Some("cod_order_reminder"), Some("Reminder:"));
const CODE: Kind = (Some("otp_code"), None);
const CONFIRMED: Kind = (None, Some("is confirmed"));
const CANCELLED: Kind = (None, Some("Nothing will be delivered"));
const EXPIRED: Kind = (Some("cod_order_expired"), Some("has expired"));

fn customer(i: usize) -> String {
    format!("9198000006{i:02}")
}

fn order_vars(i: usize) -> Value {
    json!({"customer_name": "Asha", "order_id": format!("B-{i}"), "total": "₹500"})
}

/// Instances of `waotp serve` sharing one store, with the fakes they all talk to.
struct Cluster {
    graph: Graph,
    merchant: Merchant,
    dir: tempfile::TempDir,
    flows: PathBuf,
    /// `WAOTP_DATABASE_URL` of every instance; `None`: the embedded engine.
    database_url: Option<String>,
    servers: Mutex<Vec<Option<ChildServer>>>,
    /// Where each instance answers; `None` while it is dead.
    apis: Mutex<Vec<Option<Api>>>,
    http: reqwest::Client,
    /// Customer webhooks (texts) answered `200` so far.
    customer_acks: AtomicUsize,
    killed_at: Mutex<Option<Instant>>,
    /// The log of every process started, killed ones included: (instance, its lines).
    logs: Mutex<Vec<(usize, LogLines)>>,
}

/// The lines one process has written so far, shared with the thread that reads them.
type LogLines = Arc<Mutex<Vec<String>>>;

impl Cluster {
    async fn start(instances: usize, database_url: Option<String>) -> Arc<Cluster> {
        let dir = tempfile::tempdir().expect("tempdir");
        let flows = flows_copy(dir.path(), &[]);
        // The idle sessions' flow: the same messages, with a reminder and a timeout short enough
        // to be pending across the kill. The answered sessions keep the bundled timers: a
        // summary whose send the kill left in doubt reaches its customer only after
        // `IN_DOUBT_SECONDS`, and an eight-second timeout could then beat the answer.
        flow_variant(
            &flows,
            "cod_confirmation",
            IDLE_FLOW,
            &[
                (
                    "reminders = [\"6h\"]",
                    &format!("reminders = [\"{REMINDER}\"]"),
                ),
                ("timeout = \"24h\"", &format!("timeout = \"{TIMEOUT}\"")),
            ],
        );
        let cluster = Arc::new(Cluster {
            graph: Graph::start().await,
            merchant: Merchant::start().await,
            dir,
            flows,
            database_url,
            servers: Mutex::new((0..instances).map(|_| None).collect()),
            apis: Mutex::new(vec![None; instances]),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            customer_acks: AtomicUsize::new(0),
            killed_at: Mutex::new(None),
            logs: Mutex::default(),
        });
        for n in 0..instances {
            cluster.start_instance(n);
        }
        cluster
    }

    /// Settings of instance `n`: its own port and data directory, everything else shared.
    fn vars(&self, n: usize) -> HashMap<String, String> {
        let data = self.dir.path().join(format!("instance-{n}"));
        let mut vars = server_vars(&data, &self.flows, &self.graph, &self.merchant);
        vars.insert("WAOTP_IN_DOUBT_SECONDS".into(), IN_DOUBT_SECONDS.into());
        vars.insert("WAOTP_OTP_KEY".into(), OTP_KEY.into());
        if let Some(url) = &self.database_url {
            vars.insert("WAOTP_DATABASE_URL".into(), url.clone());
        }
        vars
    }

    /// Starts instance `n` (again) and routes calls to it once it listens.
    fn start_instance(&self, n: usize) {
        let vars = self.vars(n);
        // Waits for the process to log its address: a blocking wait, off the async workers.
        // `WAOTP_TEST_LOG` (say `waotp=debug,info`) for more of each process in a failure's logs.
        let level = std::env::var("WAOTP_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
        let server = tokio::task::block_in_place(|| ChildServer::start(&vars, &level));
        self.logs
            .lock()
            .expect("logs")
            .push((n, server.log.clone()));
        self.apis.lock().expect("apis")[n] = Some(server.api.clone());
        self.servers.lock().expect("servers")[n] = Some(server);
    }

    /// Writes every process's log and every Graph API call to a file for a failure's message;
    /// returns where, with each process's warnings and errors.
    fn dump(&self) -> String {
        let mut all = String::new();
        let mut problems = String::new();
        for (k, (n, log)) in self.logs.lock().expect("logs").iter().enumerate() {
            all.push_str(&format!("== process {k} (instance {n})\n"));
            for line in log.lock().expect("log").iter() {
                all.push_str(line);
                all.push('\n');
                if line.contains("\"WARN\"") || line.contains("\"ERROR\"") {
                    problems.push_str(&format!("process {k}: {line}\n"));
                }
            }
        }
        all.push_str("== Graph API calls\n");
        for call in self.graph.calls() {
            all.push_str(&call.to_string());
            all.push('\n');
        }
        let path = std::env::temp_dir().join(format!(
            "two_instances-{}-{}.log",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        ));
        let written = match std::fs::write(&path, all) {
            Ok(()) => format!("logs in {}", path.display()),
            Err(e) => format!("logs not written to {}: {e}", path.display()),
        };
        format!("{written}; warnings and errors:\n{problems}")
    }

    /// SIGKILL to instance `n`: no call reaches it any more, nothing of it is flushed.
    fn kill_instance(&self, n: usize) {
        self.apis.lock().expect("apis")[n] = None;
        let server = self.servers.lock().expect("servers")[n]
            .take()
            .expect("a running instance");
        *self.killed_at.lock().expect("kill time") = Some(Instant::now());
        server.kill9();
    }

    /// The live instance whose turn it is (round robin from `turn`), if any.
    fn pick(&self, turn: usize) -> Option<Api> {
        let apis = self.apis.lock().expect("apis");
        (0..apis.len()).find_map(|k| apis[(turn + k) % apis.len()].clone())
    }

    fn live_apis(&self) -> Vec<Api> {
        self.apis
            .lock()
            .expect("apis")
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Posts a signed webhook until an instance answers `200`, as WhatsApp retries: a request
    /// to an instance being killed fails, and the retry goes to the next one.
    async fn webhook(&self, turn: usize, body: &Value) {
        let bytes = body.to_string().into_bytes();
        let signature = SignatureVerifier::new(APP_SECRET.as_bytes()).sign(&bytes);
        let deadline = Instant::now() + WAIT;
        let mut attempt = turn;
        loop {
            let last = match self.pick(attempt) {
                Some(api) => match self
                    .http
                    .post(format!("{}/webhook", api.base))
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", &signature)
                    .body(bytes.clone())
                    .send()
                    .await
                {
                    Ok(res) if res.status() == 200 => return,
                    Ok(res) => format!("status {}", res.status()),
                    Err(e) => e.to_string(),
                },
                None => "no instance is up".to_owned(),
            };
            assert!(
                Instant::now() < deadline,
                "no instance acknowledged a webhook ({last}): {body}"
            );
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A text from customer `i`'s phone; returns once an instance acknowledged it.
    async fn customer_text(&self, turn: usize, i: usize, text: &str) {
        let from = customer(i);
        let body = envelope(json!({
            "contacts": [{"profile": {"name": "Asha"}, "wa_id": from}],
            "messages": [{"from": from, "id": new_wamid(), "timestamp": now_secs(),
                          "type": "text", "text": {"body": text}}]
        }));
        self.webhook(turn, &body).await;
        self.customer_acks.fetch_add(1, Ordering::SeqCst);
    }

    /// `POST /v1/sessions` with an `Idempotency-Key`, retried (on any instance) until answered:
    /// a retry of a start that was committed gets the same session back.
    async fn start_session(&self, turn: usize, i: usize) -> String {
        let flow = if i < ANSWERED {
            "cod_confirmation"
        } else {
            IDLE_FLOW
        };
        let deadline = Instant::now() + WAIT;
        let mut attempt = turn;
        loop {
            let last = match self.pick(attempt) {
                Some(api) => match self
                    .http
                    .post(format!("{}/v1/sessions", api.base))
                    .bearer_auth(API_KEY)
                    .header("Idempotency-Key", format!("order-{i}"))
                    .json(&json!({"flow": flow, "to": format!("+{}", customer(i)),
                                  "vars": order_vars(i)}))
                    .send()
                    .await
                {
                    Ok(res) if res.status() == 201 => {
                        let body: Value = res.json().await.expect("JSON session");
                        return body["id"].as_str().expect("session id").to_owned();
                    }
                    Ok(res) => {
                        let status = res.status();
                        let body = res.text().await.unwrap_or_default();
                        assert!(status.is_server_error(), "start {i}: {status} {body}");
                        format!("{status} {body}")
                    }
                    Err(e) => e.to_string(),
                },
                None => "no instance is up".to_owned(),
            };
            assert!(
                Instant::now() < deadline,
                "session {i} never started: {last}"
            );
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `GET /v1/sessions/{id}` (round robin) until `done` holds; returns the session.
    /// A `404` from an instance means the instances do not share their sessions.
    async fn wait_session(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut turn = 0;
        loop {
            let mut last = Value::Null;
            if let Some(api) = self.pick(turn) {
                if let Ok(res) = self
                    .http
                    .get(format!("{}/v1/sessions/{id}", api.base))
                    .bearer_auth(API_KEY)
                    .send()
                    .await
                {
                    assert_ne!(
                        res.status(),
                        404,
                        "session {id} is unknown to the instance at {}: do the instances share \
                         one store (WAOTP_DATABASE_URL)?",
                        api.base
                    );
                    if res.status() == 200 {
                        last = res.json().await.expect("JSON session");
                        if done(&last) {
                            return last;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "session {id} never {what}: {last}"
            );
            turn += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every live instance reports an empty outbox (nothing pending or in doubt).
    async fn wait_outbox_empty(&self) {
        wait_for_async("every outbox empty", || async {
            for api in self.live_apis() {
                let Ok(res) = self.http.get(format!("{}/metrics", api.base)).send().await else {
                    return None;
                };
                let text = res.text().await.unwrap_or_default();
                if !text.lines().any(|l| l == "waotp_outbox_depth 0") {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
}

/// Polls `check` until it returns `Some`, failing with `what` after [`WAIT`].
async fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_until`] with an async check.
async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    check: impl Fn() -> F,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What Meta does: a `sent` status webhook echoing the outbox id of every message the fake
/// accepted, posted to the instances in turn, until `stop`.
async fn meta_statuses(cluster: Arc<Cluster>, customers: Vec<String>, stop: Arc<AtomicBool>) {
    let mut echoed = HashSet::new();
    let mut turn = 0;
    while !stop.load(Ordering::SeqCst) {
        for c in &customers {
            for (body, wamid) in cluster.graph.accepted_to(c) {
                if !echoed.insert(wamid.clone()) {
                    continue;
                }
                let tracker = body["biz_opaque_callback_data"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a send without its outbox id: {body}"));
                let status = envelope(json!({"statuses": [{
                    "id": wamid, "status": "sent", "timestamp": now_secs(),
                    "recipient_id": c, "biz_opaque_callback_data": tracker}]}));
                cluster.webhook(turn, &status).await;
                turn += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends to `customer` of the template named `template`, or of a free-form message whose text
/// contains `text` (the same message, inside or outside the 24-hour window).
fn sends_like(graph: &Graph, customer: &str, template: Option<&str>, text: Option<&str>) -> usize {
    graph
        .sends_to(customer)
        .iter()
        .filter(|b| {
            template.is_some_and(|t| b["template"]["name"] == t)
                || text.is_some_and(|t| text_of(b).is_some_and(|body| body.contains(t)))
        })
        .count()
}

/// The code of the authentication template sent to `customer`, once it was accepted.
async fn code_sent_to(graph: &Graph, customer: &str) -> String {
    wait_until(&format!("the code sent to {customer}"), || {
        graph
            .accepted_to(customer)
            .iter()
            .find_map(|(b, _)| auth_code(b))
    })
    .await
}

/// One customer answering: the summary arrives, "yes", the code arrives, the code typed back.
async fn answered_session(cluster: Arc<Cluster>, i: usize) -> String {
    let c = customer(i);
    let id = cluster.start_session(i, i).await;
    wait_until(&format!("the summary to {c}"), || {
        (sends_like(&cluster.graph, &c, SUMMARY.0, SUMMARY.1) > 0).then_some(())
    })
    .await;
    if changes_mind(i) {
        // "cancel" acknowledged by one instance, then at once "yes" to the next: handled in
        // that order, the session is cancelled and no code is ever sent.
        cluster.customer_text(i + 1, i, "cancel").await;
        cluster.customer_text(i + 2, i, "yes").await;
        let done = cluster
            .wait_session(&id, "completed", |s| s["status"] == "completed")
            .await;
        assert_eq!(done["outcome"], "cancelled", "in arrival order: {done}");
        return id;
    }
    cluster.customer_text(i + 1, i, "yes").await;
    // Handled (by whichever instance): the code goes out.
    let code = code_sent_to(&cluster.graph, &c).await;
    cluster.customer_text(i + 2, i, &code).await;
    let done = cluster
        .wait_session(&id, "completed", |s| s["status"] == "completed")
        .await;
    assert_eq!(done["outcome"], "confirmed", "{done}");
    id
}

/// Whether customer `i` cancels and then says "yes" (two messages in quick succession, to two
/// instances) instead of confirming.
fn changes_mind(i: usize) -> bool {
    i % 4 == 3
}

/// The whole scenario on `instances` instances sharing `database_url` (or one embedded).
async fn load_with_a_kill(instances: usize, database_url: Option<String>) {
    let cluster = Cluster::start(instances, database_url).await;
    let all: Vec<usize> = (0..ANSWERED + IDLE).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = tokio::spawn(meta_statuses(
        cluster.clone(),
        all.iter().map(|&i| customer(i)).collect(),
        stop.clone(),
    ));

    // The idle sessions first: their timers are pending when the kill comes.
    let mut idle = Vec::new();
    for i in ANSWERED..ANSWERED + IDLE {
        idle.push((i, cluster.start_session(i, i).await));
    }

    // Before any load: every instance sees the sessions another one started.
    for (_, id) in &idle {
        for api in cluster.live_apis() {
            let res = cluster
                .http
                .get(format!("{}/v1/sessions/{id}", api.base))
                .bearer_auth(API_KEY)
                .send()
                .await
                .expect("GET session");
            assert_eq!(
                res.status(),
                200,
                "session {id} is unknown to the instance at {}: the instances do not share one \
                 store (is WAOTP_DATABASE_URL wired to the PostgreSQL engine?)",
                api.base
            );
        }
    }

    let victim = instances - 1;
    let killer = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            wait_until("the load to get going", || {
                (cluster.customer_acks.load(Ordering::SeqCst) >= KILL_AFTER_ACKS).then_some(())
            })
            .await;
            cluster.kill_instance(victim);
            cluster.start_instance(victim);
        })
    };

    let permits = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut answered = Vec::new();
    for i in 0..ANSWERED {
        let cluster = cluster.clone();
        let permits = permits.clone();
        answered.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            (i, answered_session(cluster, i).await)
        }));
    }
    let mut answered_ids = Vec::new();
    for task in answered {
        match task.await {
            Ok(done) => answered_ids.push(done),
            Err(e) => panic!("an answered session failed: {e}; {}", cluster.dump()),
        }
    }
    killer.await.expect("the kill and restart failed");

    for (i, id) in &idle {
        let done = cluster
            .wait_session(id, "expired", |s| s["status"] == "completed")
            .await;
        assert_eq!(done["outcome"], "expired", "idle session {i}: {done}");
    }
    let sessions: Vec<(usize, String)> = answered_ids.iter().chain(&idle).cloned().collect();
    for (_, id) in &sessions {
        wait_until(&format!("the completion callback of {id}"), || {
            cluster
                .merchant
                .callbacks()
                .iter()
                .any(|r| {
                    let b = r.json();
                    b["type"] == "session.completed" && b["session"]["id"] == id.as_str()
                })
                .then_some(())
        })
        .await;
    }
    cluster.wait_outbox_empty().await;
    stop.store(true, Ordering::SeqCst);
    statuses.await.expect("the status webhooks failed");

    let killed_at = cluster
        .killed_at
        .lock()
        .expect("kill time")
        .expect("an instance was killed");
    check_no_duplicate_sends(&cluster.graph);
    check_callbacks(&cluster.merchant, &sessions, killed_at);
    let graph = &cluster.graph;
    for i in 0..ANSWERED + IDLE {
        let c = customer(i);
        let count = |(template, text)| sends_like(graph, &c, template, text);
        let reminders = count(REMINDED);
        assert_eq!(count(SUMMARY), 1, "summaries to {c}");
        if i < ANSWERED && changes_mind(i) {
            assert_eq!(count(CANCELLED), 1, "cancellations to {c}");
            assert_eq!(
                count(CODE),
                0,
                "codes to {c}: \"yes\" came after \"cancel\""
            );
            assert_eq!(count(CONFIRMED), 0, "confirmations to {c}");
        } else if i < ANSWERED {
            assert_eq!(count(CODE), 1, "codes to {c}");
            assert_eq!(count(CONFIRMED), 1, "confirmations to {c}");
            assert!(reminders <= 1, "{reminders} reminders to {c}");
        } else {
            assert_eq!(
                reminders, 1,
                "reminders to {c}: the reminder timer fires once"
            );
            assert_eq!(count(EXPIRED), 1, "expiries to {c}: the timeout fires once");
            assert_eq!(count(CODE), 0, "codes to {c}");
        }
    }
}

/// No outbox id reached the Graph API twice, and no customer message got two read receipts.
fn check_no_duplicate_sends(graph: &Graph) {
    let mut trackers: HashMap<String, usize> = HashMap::new();
    for body in graph.sends() {
        let tracker = body["biz_opaque_callback_data"]
            .as_str()
            .unwrap_or_else(|| panic!("a send without its outbox id: {body}"));
        *trackers.entry(tracker.to_owned()).or_default() += 1;
    }
    let twice: Vec<_> = trackers.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "outbox ids sent more than once: {twice:?}"
    );
    let mut receipts: HashMap<String, usize> = HashMap::new();
    for body in graph.calls().iter().filter(|b| b["status"] == "read") {
        let id = body["message_id"].as_str().expect("receipt's message id");
        *receipts.entry(id.to_owned()).or_default() += 1;
    }
    let twice: Vec<_> = receipts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "read receipts sent more than once: {twice:?}"
    );
    assert!(
        !receipts.is_empty(),
        "the customers' messages were marked read"
    );
}

/// Every session's completion reached the merchant signed, under exactly one event id; a
/// delivery repeated with the same id is one that was in flight at the kill.
fn check_callbacks(merchant: &Merchant, sessions: &[(usize, String)], killed_at: Instant) {
    let mut deliveries: HashMap<String, Vec<Instant>> = HashMap::new();
    let mut events: HashMap<String, HashSet<String>> = HashMap::new();
    for r in merchant.callbacks() {
        let body = verify_callback(&r);
        if body["type"] != "session.completed" {
            continue;
        }
        let event = body["id"].as_str().expect("event id").to_owned();
        let session = body["session"]["id"]
            .as_str()
            .expect("session id")
            .to_owned();
        events.entry(session).or_default().insert(event.clone());
        deliveries.entry(event).or_default().push(r.arrived);
    }
    for (_, id) in sessions {
        let ids = events.get(id).cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "completion events of session {id}: {ids:?}");
    }
    for (event, mut times) in deliveries {
        times.sort();
        assert!(
            times.len() == 1
                || (times[0] < killed_at + ON_THE_WIRE
                    && times[1..].iter().all(|t| *t > killed_at)),
            "callback {event} delivered {} times, not only across the kill",
            times.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_one_killed_midway() {
    let Some(database) = pg_support::fresh_database("two_instances").await else {
        return;
    };
    load_with_a_kill(2, Some(database.url.clone())).await;
}

/// The same scenario, one embedded instance killed and restarted on its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_embedded_instance_killed_midway() {
    load_with_a_kill(1, None).await;
}

/// An event an instance recorded (and acknowledged) but never handled, because it died at
/// once, is handled by a live instance without waiting for the dead one's restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_a_dead_instance_recorded_is_handled_by_a_live_one() {
    let Some(database) = pg_support::fresh_database("stale_event").await else {
        return;
    };
    let cluster = Cluster::start(1, Some(database.url.clone())).await;
    let c = customer(0);
    let id = cluster.start_session(0, 0).await;
    wait_until(&format!("the summary to {c}"), || {
        (sends_like(&cluster.graph, &c, SUMMARY.0, SUMMARY.1) > 0).then_some(())
    })
    .await;
    // The dead instance's last act: "yes" recorded in the shared database, then nothing.
    let body = envelope(json!({
        "contacts": [{"profile": {"name": "Asha"}, "wa_id": c}],
        "messages": [{"from": c, "id": new_wamid(), "timestamp": now_secs(),
                      "type": "text", "text": {"body": "yes"}}]
    }));
    let parsed = waotp::webhook::payload::parse(body.to_string().as_bytes()).expect("payload");
    let storage = waotp::store::Storage::postgres(
        &database.url,
        Some(&secrecy::SecretString::from(OTP_KEY.to_owned())),
    )
    .await
    .expect("the shared database");
    for event in &parsed.events {
        let recorded = storage
            .inbound
            .record(event, &scoped(&c), chrono::Utc::now().timestamp())
            .await
            .expect("recorded");
        assert!(matches!(recorded, waotp::store::Recorded::New { .. }));
    }
    // The live instance takes it over: the code goes out, once.
    code_sent_to(&cluster.graph, &c).await;
    let session = cluster
        .wait_session(&id, "awaiting the code", |s| s["status"] == "active")
        .await;
    assert_eq!(session["status"], "active", "{session}");
    assert_eq!(sends_like(&cluster.graph, &c, CODE.0, CODE.1), 1);
    wait_for_async("the event marked handled", || async {
        (storage.inbound.pending_count().await.ok()? == 0).then_some(())
    })
    .await;
}
