//! The crash suite: the real `waotp` binary in sandbox mode, driven through a few dozen
//! cash-on-delivery conversations over the API and signed webhooks, is killed with SIGKILL at
//! random moments and restarted on the same data directory. The drivers behave like WhatsApp
//! and a merchant: whatever was not acknowledged is sent again (same message id, same
//! `Idempotency-Key`). After a final graceful stop the store itself is inspected:
//!
//! - every acknowledged inbound message is in the log and none is left unhandled;
//! - each was handled exactly once: a confirmed session took exactly its four steps, and its
//!   code lost exactly the one attempt the wrong guess cost;
//! - no outbound message was recorded twice for one step (sandbox ids are unique);
//! - every message owed was sent: each conversation got its code, even one whose send was in
//!   flight at a kill (held in doubt, then sent once more after the in-doubt wait);
//! - every session has a valid outcome, or is still waiting with its timer in the store.
//!
//! It runs three times: in sandbox mode (outbound messages recorded in the store), and twice
//! against a local fake of the Graph API. In the first Graph run, like Meta, every message the
//! fake accepted is reported `sent` by a status webhook echoing its `biz_opaque_callback_data`,
//! so the fakes' own records must show each outbound message (by that tracker) requested exactly
//! once, and a `session.completed` callback, always with one event id, for every finished
//! session. In the second no status ever comes: a message in doubt at a kill is then sent once
//! more — the only way a customer may get a second copy — and never a third time.
//!
//! The seed of the kill schedule is printed; `WAOTP_CRASH_SEED=<n>` replays a failing run.

mod common;
mod support;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use support::graph_fake::{GraphFake, PHONE_NUMBER_ID, TOKEN};
use support::http_fake::{Answer, HttpFake};
use waotp::otp::{CodeStatus, OtpKey};
use waotp::store::embedded::otp::OtpLedger;
use waotp::store::Store;
use waotp::tenants::{Scope, DEFAULT_MERCHANT, SANDBOX_NUMBER};

const API_KEY: &str = "crash-suite-key";
const SESSIONS: usize = 32;
const DRIVERS: usize = 8;
const KILLS: usize = 3;
/// Everything — kills and restarts included — must be done by then, or the suite fails.
const OVERALL: Duration = Duration::from_secs(180);
/// The in-doubt wait of the servers under test: long enough for the status webhooks of the
/// Graph run to arrive first (as Meta's do), short enough to keep the suite quick.
const IN_DOUBT_SECS: &str = "5";

/// Starts `waotp serve` on the data directory and reads the bound address from its JSON log.
fn start_server(dir: &Path, extra: &[(String, String)]) -> (Child, String) {
    let mut vars = common::test_vars(dir);
    vars.extend(extra.iter().cloned());
    vars.insert("WAOTP_API_KEYS".into(), API_KEY.into());
    vars.insert("WAOTP_IN_DOUBT_SECONDS".into(), IN_DOUBT_SECS.into());
    common::spawn_serve(vars)
}

/// The server as the drivers see it: its current address, replaced on every restart.
struct Server {
    address: RwLock<String>,
    /// Requests answered with success so far; the kill schedule counts them.
    acknowledged: AtomicUsize,
    /// Set when every conversation is over: remaining kills then happen at once.
    drivers_done: std::sync::atomic::AtomicBool,
    client: reqwest::Client,
    deadline: Instant,
    /// Where codes are read from: the fake Graph API's records, or else the sandbox listing.
    graph: Option<Arc<GraphFake>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        let address = self.address.read().unwrap_or_else(|p| p.into_inner());
        format!("http://{address}{path}")
    }

    /// Sends a request until the server answers it with a success status, the way WhatsApp
    /// and a careful merchant retry: a refused connection or a lost answer means "again".
    async fn until_ok(
        &self,
        make: impl Fn(&reqwest::Client, String) -> reqwest::RequestBuilder,
        path: &str,
    ) -> Value {
        loop {
            assert!(
                Instant::now() < self.deadline,
                "{path}: no answer before the deadline"
            );
            let sent = make(&self.client, self.url(path))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(res) = sent {
                let status = res.status();
                if status.is_success() {
                    let body = res.json().await.unwrap_or(Value::Null);
                    self.acknowledged.fetch_add(1, Ordering::SeqCst);
                    return body;
                }
                // A 5xx (e.g. storage error while dying) is retried; anything else is a bug.
                if !status.is_server_error() {
                    let body = res.text().await.unwrap_or_default();
                    panic!("{path}: {status} {body}");
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn webhook(&self, body: String) {
        let signature = common::sign(body.as_bytes());
        self.until_ok(
            |c, url| {
                c.post(url)
                    .header("x-hub-signature-256", signature.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
            },
            "/webhook",
        )
        .await;
    }

    /// The code sent for `session`, if it was sent before `give_up`.
    async fn code_for(&self, to: &str, session: &str, give_up: Instant) -> Option<String> {
        if let Some(graph) = &self.graph {
            while Instant::now() < give_up {
                if let Some(code) = graph_code(graph, session) {
                    return Some(code);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return None;
        }
        while Instant::now() < give_up {
            let path = format!("/v1/sandbox/messages?to=%2B{}", &to[1..]);
            let got = self
                .client
                .get(self.url(&path))
                .bearer_auth(API_KEY)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(res) = got {
                if let Ok(body) = res.json::<Value>().await {
                    let code = body["messages"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|m| m["session_id"] == session)
                        .find_map(|m| m["code"].as_str().map(str::to_owned));
                    if code.is_some() {
                        return code;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// The code in the authentication template the fake Graph API received for `session`.
fn graph_code(graph: &GraphFake, session: &str) -> Option<String> {
    graph.requests().iter().find_map(|r| {
        let body = r.json();
        let tracker = body["biz_opaque_callback_data"].as_str()?;
        if !tracker.starts_with(&format!("{session}:")) {
            return None;
        }
        // The authentication template is the one with the copy-code (url) button; the order
        // summary is a template with body parameters too.
        let components = body["template"]["components"].as_array()?;
        components.iter().find(|c| c["sub_type"] == "url")?;
        components.iter().find(|c| c["type"] == "body")?["parameters"][0]["text"]
            .as_str()
            .map(str::to_owned)
    })
}

fn webhook_body(from: &str, id: &str, message: Value) -> String {
    let mut m = message;
    m["from"] = json!(from);
    m["id"] = json!(id);
    m["timestamp"] = json!(Utc::now().timestamp().to_string());
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550783881",
                               "phone_number_id": PHONE_NUMBER_ID},
                  "contacts": [{"wa_id": from, "profile": {"name": "Crash"}}],
                  "messages": [m]}}]}]})
    .to_string()
}

/// What one conversation left behind, as the driver saw it.
#[derive(Debug, Default)]
struct Driven {
    to: String,
    session: String,
    /// Inbound message ids the server acknowledged.
    acknowledged: Vec<String>,
    /// Whether the driver got as far as typing the right code.
    typed_code: bool,
}

/// One cash-on-delivery conversation: start, Confirm, a wrong code, the right code.
async fn converse(server: Arc<Server>, n: usize) -> Driven {
    let to = format!("+1555600{n:04}");
    let digits = &to[1..];
    let started = server
        .until_ok(
            |c, url| {
                c.post(url)
                    .bearer_auth(API_KEY)
                    .header("idempotency-key", format!("crash-{n}"))
                    .json(&json!({"flow": "cod_confirmation", "to": to,
                                  "vars": {"customer_name": "Asha", "order_id": format!("C-{n}"), "total": "₹499"}}))
            },
            "/v1/sessions",
        )
        .await;
    let session = started["id"].as_str().expect("session id").to_owned();
    let mut driven = Driven {
        to: to.clone(),
        session: session.clone(),
        ..Driven::default()
    };
    let confirm = format!("wamid.crash.{n}.confirm");
    server
        .webhook(webhook_body(
            digits,
            &confirm,
            json!({"type": "interactive", "interactive": {"type": "button_reply",
                   "button_reply": {"id": "confirm", "title": "Confirm"}}}),
        ))
        .await;
    driven.acknowledged.push(confirm);
    // A code whose send was in flight at a kill comes once its doubt is settled: by its status,
    // or by the one resend after the in-doubt wait. Every conversation gets its code.
    let Some(code) = server.code_for(&to, &session, server.deadline).await else {
        return driven;
    };
    let wrong: String = code
        .chars()
        .map(|c| char::from_digit((c.to_digit(10).unwrap_or(0) + 1) % 10, 10).unwrap_or('0'))
        .collect();
    for (label, text) in [("wrong", wrong), ("right", code)] {
        let id = format!("wamid.crash.{n}.{label}");
        server
            .webhook(webhook_body(
                digits,
                &id,
                json!({"type": "text", "text": {"body": text}}),
            ))
            .await;
        driven.acknowledged.push(id);
    }
    driven.typed_code = true;
    driven
}

fn kill9(child: &mut Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

/// Meta's side of the status webhooks: every message the fake Graph API accepted is reported
/// `sent` to whichever server runs now, echoing its `biz_opaque_callback_data`, until `stop`.
/// The fake numbers the messages it accepts in order (`wamid.fake.N`).
fn report_statuses(
    server: Arc<Server>,
    graph: Arc<GraphFake>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reported = 0;
        loop {
            let sends: Vec<Value> = graph
                .requests()
                .iter()
                .map(|r| r.json())
                .filter(|b| b.get("status").is_none())
                .collect();
            if sends.len() == reported {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            for (n, body) in sends.iter().enumerate().skip(reported) {
                let to = body["to"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches('+');
                let status = json!({"object": "whatsapp_business_account", "entry": [{"id": "1",
                    "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
                        "metadata": {"display_phone_number": "15550783881",
                                     "phone_number_id": support::graph_fake::PHONE_NUMBER_ID},
                        "statuses": [{"id": format!("wamid.fake.{}", n + 1), "status": "sent",
                                      "timestamp": Utc::now().timestamp().to_string(),
                                      "recipient_id": to,
                                      "biz_opaque_callback_data": body["biz_opaque_callback_data"]}]}}]}]});
                server.webhook(status.to_string()).await;
            }
            reported = sends.len();
        }
    })
}

/// Waits until the server has handled every recorded event and sent everything queued.
async fn quiesce(server: &Server) {
    loop {
        let metrics = common::metrics(&server.client, &server.url("")).await;
        assert!(
            Instant::now() < server.deadline,
            "server never settled: {}",
            metrics
                .lines()
                .filter(|l| l.starts_with("waotp_inbound_pending")
                    || l.starts_with("waotp_outbox_depth"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if metrics.contains("waotp_inbound_pending 0\n")
            && metrics.contains("waotp_outbox_depth 0\n")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_kill_nine_at_random_moments_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (driven, seed) = crash_run(dir.path(), Vec::new(), None, false).await;
    check_store(&data_dir(dir.path()), &driven, seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_kill_nine_sends_nothing_twice_and_calls_back_every_outcome() {
    let graph = Arc::new(GraphFake::start().await);
    let merchant = HttpFake::start(|_| Answer::json(200, json!({}))).await;
    let extra = vec![
        ("WAOTP_ACCESS_TOKEN".to_owned(), TOKEN.to_owned()),
        (
            "WAOTP_PHONE_NUMBER_ID".to_owned(),
            PHONE_NUMBER_ID.to_owned(),
        ),
        ("WAOTP_GRAPH_URL".to_owned(), graph.base_url()),
        ("WAOTP_CALLBACK_URL".to_owned(), merchant.url("/callbacks")),
        ("WAOTP_HOOK_BASE_URL".to_owned(), merchant.url("/hooks")),
        (
            "WAOTP_CALLBACK_SECRET".to_owned(),
            "crash-callback-secret".to_owned(),
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let (driven, seed) = crash_run(dir.path(), extra, Some(graph.clone()), true).await;
    check_store(&data_dir(dir.path()), &driven, seed);

    // No message requested twice for one step: trackers are unique in Graph's own records.
    let trackers: Vec<String> = graph
        .requests()
        .iter()
        .filter_map(|r| {
            r.json()["biz_opaque_callback_data"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let distinct: HashSet<&String> = trackers.iter().collect();
    assert_eq!(
        distinct.len(),
        trackers.len(),
        "a message went to Graph twice (seed {seed})"
    );
    assert!(!trackers.is_empty());

    // Every finished session was called back, at least once, always under one event id.
    let store = Store::open(&data_dir(dir.path()), |_| {}).expect("reopen");
    let mut event_ids: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for r in merchant.requests() {
        let body = r.json();
        assert_eq!(body["type"], "session.completed");
        let session = body["session"]["id"]
            .as_str()
            .expect("session id")
            .to_owned();
        let event_id = r
            .header("x-waotp-event-id")
            .expect("event id header")
            .to_owned();
        assert_eq!(body["id"].as_str(), Some(event_id.as_str()));
        event_ids.entry(session).or_default().insert(event_id);
    }
    for d in &driven {
        let record = store
            .sessions()
            .get(&d.session)
            .expect("read")
            .expect("session");
        if !record.is_active() {
            let ids = event_ids.get(&d.session);
            assert!(
                ids.is_some(),
                "{} finished without a callback (seed {seed})",
                d.session
            );
            assert_eq!(
                ids.map(HashSet::len),
                Some(1),
                "callbacks under several event ids"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_kill_nine_without_statuses_sends_every_message_at_most_twice() {
    let graph = Arc::new(GraphFake::start().await);
    let extra = vec![
        ("WAOTP_ACCESS_TOKEN".to_owned(), TOKEN.to_owned()),
        (
            "WAOTP_PHONE_NUMBER_ID".to_owned(),
            PHONE_NUMBER_ID.to_owned(),
        ),
        ("WAOTP_GRAPH_URL".to_owned(), graph.base_url()),
        (
            "WAOTP_CALLBACK_SECRET".to_owned(),
            "crash-callback-secret".to_owned(),
        ),
        // The bundled identity flows name it; this run drives no hook.
        (
            "WAOTP_HOOK_BASE_URL".to_owned(),
            "http://127.0.0.1:9/hooks".to_owned(),
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    // WhatsApp that never reports a status: a send in flight at a kill stays in doubt and goes
    // once more after the wait — the one case where a customer may get a message twice.
    let (driven, seed) = crash_run(dir.path(), extra, Some(graph.clone()), false).await;
    check_store(&data_dir(dir.path()), &driven, seed);
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for r in graph.requests() {
        if let Some(tracker) = r.json()["biz_opaque_callback_data"].as_str() {
            *copies.entry(tracker.to_owned()).or_default() += 1;
        }
    }
    let twice = copies.values().filter(|n| **n == 2).count();
    eprintln!("crash suite: {twice} message(s) in doubt at a kill were sent once more");
    assert!(
        copies.values().all(|n| *n <= 2),
        "a message went more than twice (seed {seed}): {copies:?}"
    );
}

/// Drives every conversation through a server that is killed and restarted `KILLS` times,
/// then stops it gracefully. Returns what the drivers saw, and the seed.
async fn crash_run(
    dir: &Path,
    extra: Vec<(String, String)>,
    graph: Option<Arc<GraphFake>>,
    report: bool,
) -> (Vec<Driven>, u64) {
    let seed = std::env::var("WAOTP_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("crash suite seed: {seed} (WAOTP_CRASH_SEED={seed} replays this schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let (child, address) = start_server(dir, &extra);
    let server = Arc::new(Server {
        address: RwLock::new(address),
        acknowledged: AtomicUsize::new(0),
        drivers_done: false.into(),
        client: reqwest::Client::new(),
        deadline: Instant::now() + OVERALL,
        graph: graph.clone(),
    });
    let stop_reporting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reporter = graph
        .filter(|_| report)
        .map(|graph| report_statuses(server.clone(), graph, stop_reporting.clone()));

    // Kill points, in acknowledged requests: spread over the ~4 requests per conversation.
    let total = SESSIONS * 4;
    let kill_at: Vec<usize> = (0..KILLS)
        .map(|k| {
            let span = total / (KILLS + 1);
            span * k + rng.gen_range(span / 2..span + span / 2)
        })
        .collect();
    let supervisor = {
        let server = server.clone();
        let dir = dir.to_owned();
        tokio::spawn(async move {
            let mut child = child;
            let mut kills = 0;
            for at in kill_at {
                while server.acknowledged.load(Ordering::SeqCst) < at
                    && !server.drivers_done.load(Ordering::SeqCst)
                {
                    if Instant::now() > server.deadline {
                        return (child, kills);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                kill9(&mut child);
                kills += 1;
                let (dir, extra) = (dir.clone(), extra.clone());
                let (next, address) =
                    tokio::task::spawn_blocking(move || start_server(&dir, &extra))
                        .await
                        .expect("restart");
                child = next;
                *server.address.write().unwrap_or_else(|p| p.into_inner()) = address;
            }
            (child, kills)
        })
    };

    // Conversations run several at a time, so kills land in the middle of all kinds of work.
    let next = Arc::new(AtomicUsize::new(0));
    let mut drivers = Vec::new();
    for _ in 0..DRIVERS {
        let (server, next) = (server.clone(), next.clone());
        drivers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= SESSIONS {
                    return done;
                }
                done.push(converse(server.clone(), n).await);
            }
        }));
    }
    let mut driven = Vec::new();
    for d in drivers {
        driven.extend(d.await.expect("driver"));
    }
    server.drivers_done.store(true, Ordering::SeqCst);
    let (mut child, kills) = supervisor.await.expect("supervisor");
    assert_eq!(kills, KILLS, "the kill schedule did not run (seed {seed})");

    quiesce(&server).await;
    stop_reporting.store(true, Ordering::SeqCst);
    if let Some(reporter) = reporter {
        reporter.await.expect("status reporter");
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("SIGTERM");
    assert!(status.success());
    assert!(
        child.wait().expect("exit").success(),
        "graceful stop failed"
    );
    (driven, seed)
}

fn check_store(data: &Path, driven: &[Driven], seed: u64) {
    let store = Store::open(data, |_| {}).expect("reopen the database");
    let key = OtpKey::load_or_create(data, None).expect("otp key");
    let ledger = OtpLedger::open(store.db(), key)
        .expect("ledger")
        .logged(store.redo());
    let inbound = store.inbound();
    let sessions = store.sessions();
    assert_eq!(
        inbound.pending_len(),
        0,
        "acknowledged events left unhandled (seed {seed})"
    );

    // Each inbound message id appears once in the log, however often it was delivered.
    let logged: Vec<String> = inbound
        .all()
        .expect("log")
        .into_iter()
        .map(|(_, e)| e.event.dedupe_key())
        .collect();
    let unique: HashSet<&String> = logged.iter().collect();
    assert_eq!(
        unique.len(),
        logged.len(),
        "an event was logged twice (seed {seed})"
    );

    let far = Utc::now() + chrono::Duration::days(30);
    let timers: HashSet<String> = sessions
        .due_timers(far, 100_000)
        .expect("timers")
        .into_iter()
        .map(|t| t.timer.session_id)
        .collect();
    let valid = [
        "confirmed",
        "cancelled",
        "locked",
        "expired",
        "undeliverable",
    ];
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for d in driven {
        for id in &d.acknowledged {
            assert!(
                inbound.seen(&format!("m\u{0}{id}")).expect("lookup"),
                "{id} was acknowledged but is not in the log (seed {seed})"
            );
        }
        let record = sessions
            .get(&d.session)
            .expect("read")
            .unwrap_or_else(|| panic!("{} was acknowledged but lost (seed {seed})", d.session));
        let json = waotp::runtime::session_json(&record);
        let outcome = json["outcome"].as_str().unwrap_or("waiting").to_owned();
        if record.is_active() {
            assert!(
                timers.contains(&d.session),
                "{} waits without a timer (seed {seed}): {json}",
                d.session
            );
        } else {
            assert!(valid.contains(&outcome.as_str()), "{outcome} (seed {seed})");
        }
        if d.typed_code {
            // The right code was acknowledged after the wrong one, so it was handled and
            // confirmed the order; and each of the three messages was applied exactly once:
            // start + confirm + wrong + right are four steps, and one attempt was lost.
            assert_eq!(outcome, "confirmed", "{} (seed {seed}): {json}", d.session);
            assert_eq!(
                record.step, 4,
                "{} took {} steps (seed {seed})",
                d.session, record.step
            );
            let otp = ledger
                .record(&d.session)
                .expect("read")
                .expect("otp record");
            assert_eq!(otp.status(), CodeStatus::Used);
            assert_eq!(
                otp.attempts_left(),
                4,
                "the wrong code counted other than once"
            );
        }
        *outcomes.entry(outcome).or_default() += 1;

        // No outbound message twice for one step: one sandbox record per outbox entry (kept
        // per number and customer; the sandbox run has the single merchant's sandbox number).
        let recorded_as = Scope::new(DEFAULT_MERCHANT, SANDBOX_NUMBER).customer_key(&d.to[1..]);
        let sent = sessions.sandbox_messages(&recorded_as).expect("sandbox");
        let ids: Vec<&str> = sent.iter().filter_map(|m| m["id"].as_str()).collect();
        let distinct: HashSet<&&str> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "a message went twice (seed {seed}): {ids:?}"
        );
    }
    eprintln!("crash suite outcomes: {outcomes:?}");
    // Nothing owed was lost: every conversation got its code, however the kills fell.
    let without_code: Vec<&str> = driven
        .iter()
        .filter(|d| !d.typed_code)
        .map(|d| d.session.as_str())
        .collect();
    assert!(
        without_code.is_empty(),
        "no code ever came for {without_code:?} (seed {seed}): {outcomes:?}"
    );
}
