//! A graceful stop under load, with the real binary: SIGTERM and SIGINT alike make `/readyz`
//! answer 503 at once, finish the requests in flight, let the sends in flight get their answer
//! from a slow Graph API, handle every acknowledged webhook event, flush and exit 0. Started
//! again on the same data, the server delivers every message exactly once.

mod e2e_support;

use e2e_support::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use waotp::store::OutboxState;
use waotp::store::Store;
use waotp::webhook::signature::SignatureVerifier;

/// Every Graph API answer takes this long, so sends are in flight when the signal comes and
/// still are when the listener closes (a second later).
const SLOW_GRAPH: Duration = Duration::from_millis(2500);

/// One HTTP/1.1 connection kept open across the signal: the listener stops accepting, but a
/// request on a connection already accepted is still answered.
struct Connection(TcpStream);

impl Connection {
    fn open(base: &str) -> Connection {
        let address = base.trim_start_matches("http://");
        let stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        Connection(stream)
    }

    /// Sends `head` and `body`, or only the first `sent` bytes of the body.
    fn send(&mut self, head: &str, body: &[u8], sent: usize) {
        self.0.write_all(head.as_bytes()).expect("head");
        self.0.write_all(&body[..sent]).expect("body");
    }

    /// Reads one answer; its status (`None` when the server closed the connection instead).
    fn answer(&mut self) -> Option<u16> {
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            match self.0.read(&mut byte) {
                Ok(1) => raw.push(byte[0]),
                _ => return None,
            }
        }
        let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |n| n.trim().parse().unwrap_or(0));
        let mut body = vec![0u8; length];
        self.0.read_exact(&mut body).ok()?;
        Some(status)
    }

    fn get(&mut self, path: &str) -> Option<u16> {
        self.send(&format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n"), b"", 0);
        self.answer()
    }
}

/// A signed webhook with one text message from `from`.
fn text_webhook(from: &str) -> (Vec<u8>, String) {
    let body = envelope(json!({
        "contacts": [{"profile": {"name": "Kerry"}, "wa_id": from}],
        "messages": [{"from": from, "id": new_wamid(), "timestamp": now_secs(),
                      "type": "text", "text": {"body": "what is this number?"}}]
    }))
    .to_string()
    .into_bytes();
    let signature = SignatureVerifier::new(APP_SECRET.as_bytes()).sign(&body);
    (body, signature)
}

fn webhook_head(signature: &str, length: usize) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         x-hub-signature-256: {signature}\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// Customers whose request waotp acknowledged (201 for a start, 200 for a webhook): each must
/// get exactly one message in the end.
type Acknowledged = Arc<Mutex<Vec<String>>>;

/// Starts a COD session for `customer` (one message) or posts a text from them (one default
/// reply); records the customer when acknowledged. Errors are expected once the listener is
/// closed.
async fn one_request(api: &Api, customer: String, start: bool, acknowledged: &Acknowledged) {
    let request = if start {
        api.http
            .post(format!("{}/v1/sessions", api.base))
            .bearer_auth(API_KEY)
            .json(
                &json!({"flow": "cod_confirmation", "to": format!("+{customer}"),
                          "vars": {"customer_name": "Asha", "order_id": "A-9", "total": "₹9"}}),
            )
    } else {
        let (body, signature) = text_webhook(&customer);
        api.http
            .post(format!("{}/webhook", api.base))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
    };
    if let Ok(res) = request.send().await {
        let expected = if start { 201 } else { 200 };
        assert_eq!(res.status().as_u16(), expected, "customer {customer}");
        acknowledged.lock().expect("ack").push(customer);
    }
}

async fn drains_on(signal: &str, prefix: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let graph = Graph::start().await;
    let merchant = Merchant::start().await;
    let data = dir.path().join("data");
    let mut vars = server_vars(&data, &bundled_flows(), &graph, &merchant);
    vars.insert("WAOTP_DRAIN_SECONDS".into(), "15".into());
    // A send left in doubt would be sent again one second after the restart: the count of
    // messages below would show it.
    vars.insert("WAOTP_IN_DOUBT_SECONDS".into(), "1".into());
    // The load uses one API key; its rate limit is not what is tested here.
    vars.insert("WAOTP_API_BURST".into(), "100000".into());
    graph.set_delay(SLOW_GRAPH);
    let mut server = ChildServer::start(&vars, "info");
    let api = server.api.clone();
    let acknowledged: Acknowledged = Arc::default();

    // A first wave, all acknowledged, whose messages are then on their way to the slow Graph API.
    let mut n = 0;
    let mut next_customer = || {
        n += 1;
        (format!("{prefix}{n:04}"), n % 2 == 0)
    };
    let wave: Vec<_> = (0..12).map(|_| next_customer()).collect();
    futures_util::future::join_all(
        wave.into_iter()
            .map(|(c, start)| one_request(&api, c, start, &acknowledged)),
    )
    .await;
    wait_for("sends in flight at the slow Graph API", || {
        (graph.calls().len() >= 2).then_some(())
    })
    .await;

    // More load keeps coming while the server stops.
    let load = {
        let (api, acknowledged) = (api.clone(), acknowledged.clone());
        let customers: Vec<_> = (0..400).map(|_| next_customer()).collect();
        tokio::spawn(async move {
            for (c, start) in customers {
                one_request(&api, c, start, &acknowledged).await;
            }
        })
    };
    // A webhook half received when the signal comes, and a connection to ask /readyz on.
    let (body, signature) = text_webhook(&format!("{prefix}9999"));
    let mut in_flight = Connection::open(&api.base);
    in_flight.send(&webhook_head(&signature, body.len()), &body, body.len() / 2);
    let address = api.base.trim_start_matches("http://").to_owned();
    assert_eq!(Connection::open(&api.base).get("/readyz"), Some(200));

    server.signal(signal);
    // Fresh connections to /readyz: 503 while the listener still accepts, then refused.
    let mut seen = Vec::new();
    wait_for("the listener to close", || {
        match TcpStream::connect(&address) {
            Ok(stream) => {
                stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
                seen.push(Connection(stream).get("/readyz"));
                None
            }
            Err(_) => Some(()),
        }
    })
    .await;
    assert!(
        seen.contains(&Some(503)),
        "/readyz never answered 503 before the listener closed: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .skip_while(|s| **s != Some(503))
            .any(|s| *s == Some(200)),
        "/readyz answered 200 after its first 503: {seen:?}"
    );
    // The request in flight at the signal, its body still arriving after the listener closed,
    // is finished and acknowledged.
    in_flight
        .0
        .write_all(&body[body.len() / 2..])
        .expect("rest of the body");
    assert_eq!(
        in_flight.answer(),
        Some(200),
        "the webhook in flight is answered"
    );
    acknowledged
        .lock()
        .expect("ack")
        .push(format!("{prefix}9999"));
    drop(in_flight);

    let status = server.wait_exit().await;
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        server.log_text()
    );
    load.abort();
    let _ = load.await;
    let log = server.log_text();
    assert!(log.contains(signal) && log.contains("stopping"), "{log}");
    assert!(log.contains("stopped; database flushed"), "{log}");
    assert!(!log.contains("drain timeout"), "{log}");
    drop(server);

    // What the stop left on disk: every acknowledged event handled, no send in flight or in
    // doubt, nothing failed.
    {
        let store = Store::open(&data, |_| {}).expect("reopen after the stop");
        assert_eq!(store.inbound().pending_len(), 0, "unhandled webhook events");
        assert!(store.sessions().in_flight().expect("read").is_empty());
        let queued = store
            .sessions()
            .due_outbox(chrono::Utc::now() + chrono::Duration::days(1), 10_000)
            .expect("read");
        for entry in &queued {
            assert_eq!(entry.state, OutboxState::Pending, "{}", entry.id);
        }
    }

    // Started again, normally fast: every acknowledged customer gets exactly one message.
    graph.set_delay(Duration::ZERO);
    let acknowledged = acknowledged.lock().expect("ack").clone();
    assert!(acknowledged.len() >= 13, "{acknowledged:?}");
    let server = ChildServer::start(&vars, "info");
    for customer in &acknowledged {
        graph.wait_accepted(customer, 1).await;
    }
    // The outbox empties only once nothing is in doubt: a send left in doubt would have been
    // sent a second time first (after one second), and counted below.
    outbox_empty(&server.api).await;
    for customer in &acknowledged {
        assert_eq!(graph.sends_to(customer).len(), 1, "customer {customer}");
    }
}

/// Waits until the server's outbox is empty (read from `/metrics`).
async fn outbox_empty(api: &Api) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !api
        .metrics()
        .await
        .lines()
        .any(|l| l == "waotp_outbox_depth 0")
    {
        assert!(std::time::Instant::now() < deadline, "outbox never emptied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_nothing_is_lost_or_sent_twice() {
    drains_on("TERM", "91981000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_like_sigterm() {
    drains_on("INT", "91982000").await;
}
