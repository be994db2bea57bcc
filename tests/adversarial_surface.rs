//! Unauthenticated abuse of the HTTP surface: floods of unsigned webhook bodies against the
//! server's memory, and repeated wrong keys against the merchant API and the dashboard login.
//! Memory is read from the real server run as a child process (`/proc/<pid>/status`); every
//! wait is a poll with a deadline, and nothing asserts how long anything took.
//!
//! Linux only: memory is read from `/proc`, and the clients play different machines from
//! different loopback addresses (all of 127.0.0.0/8 is local there).
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Unverified webhook bodies
// ---------------------------------------------------------------------------------------------

/// The resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// Sends `head`, then `total` body bytes in `piece`-sized writes spaced by `pace`, until the
/// whole body is sent or the server answers or hangs up; returns what the server said.
async fn slow_upload(
    address: String,
    head: String,
    total: usize,
    piece: usize,
    pace: Duration,
) -> String {
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let filler = vec![b' '; piece];
    let mut sent = 0;
    let mut tick = tokio::time::interval(pace);
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    // Write until done or answered.
    while sent < total {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    break;
                }
            },
            _ = tick.tick() => {
                let n = piece.min(total - sent);
                if stream.write_all(&filler[..n]).await.is_err() {
                    break;
                }
                sent += n;
            }
            _ = tokio::time::sleep_until(deadline) => panic!("upload still running after 120 s"),
        }
    }
    // Then read the answer to its end (the server closes a connection whose body it refused).
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("no answer to an upload within 120 s"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                // One answer is all we need; the connection may be kept alive.
                if got.windows(4).any(|w| w == b"\r\n\r\n") && !got.starts_with(b"HTTP/1.1 100") {
                    let text = String::from_utf8_lossy(&got);
                    let head_end = text.find("\r\n\r\n").unwrap_or(text.len());
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())
                                .flatten()
                        })
                        .unwrap_or(0);
                    if got.len() >= head_end + 4 + length {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// `uploads` concurrent slow uploads of `body` bytes, each with a well-formed signature that
/// does not match (so the server has to read one to its end before it can refuse it), while the
/// resident memory of `pid` is watched; returns the answers and the peak.
async fn burst(address: &str, pid: u32, uploads: usize, body: usize) -> (Vec<String>, u64) {
    let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-hub-signature-256: sha256={}\r\ncontent-length: {body}\r\n\r\n",
        "0".repeat(64)
    );
    let tasks: Vec<_> = (0..uploads)
        .map(|_| {
            tokio::spawn(slow_upload(
                address.to_owned(),
                head.clone(),
                body,
                64 * 1024,
                Duration::from_millis(20),
            ))
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("upload task"));
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    (answers, peak.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_unsigned_bodies_cannot_exhaust_memory_and_it_is_returned() {
    const UPLOADS: usize = 200;
    const BODY: usize = 3 * 1024 * 1024;
    let budget_mib: u64 = 32;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars: HashMap<String, String> = common::test_vars(dir.path());
    vars.insert(
        "WAOTP_FLOWS_DIR".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/flows").into(),
    );
    vars.insert("WAOTP_API_KEYS".into(), "surface-key".into());
    vars.insert("WAOTP_WEBHOOK_BUFFER_MIB".into(), budget_mib.to_string());
    let (child, address) = common::spawn_serve(vars);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(child);
    let pid = child.0.id();
    let base = format!("http://{address}");
    let client = reqwest::Client::new();

    // Warm up the paths the burst will take, then take the baseline.
    let legit = |id: &str| common::text_message(id, "15551230000", "hi");
    for i in 0..3 {
        let body = legit(&format!("wamid.warm-{i}"));
        let res = common::post_signed(&client, &base, body).await;
        assert_eq!(res.status(), 200);
        let res = client
            .post(format!("{base}/webhook"))
            .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
            .body(vec![b' '; 200_000])
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 401);
    }
    let baseline = rss_bytes(pid);

    let (answers, peak) = burst(&address, pid, UPLOADS, BODY).await;
    let status = |a: &String| a.get(9..12).unwrap_or("---").to_owned();
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for a in &answers {
        *by_status.entry(status(a)).or_default() += 1;
    }
    eprintln!(
        "answers {by_status:?}; resident memory: baseline {} MiB, peak {} MiB",
        baseline / MIB,
        peak / MIB
    );
    // Every upload was refused: with 401 once read and checked, or with 503 when the budget
    // for unverified bodies was spent (or 408 when the machine was too slow to take it in
    // time).
    for a in &answers {
        assert!(
            ["401", "503", "408"].contains(&status(a).as_str()),
            "unexpected answer {a:?} ({by_status:?})"
        );
    }
    assert!(
        by_status.get("503").copied().unwrap_or(0) > 0,
        "600 MiB of unverified bodies all fitted a {budget_mib} MiB budget? {by_status:?}"
    );
    for a in answers.iter().filter(|a| status(a) == "503") {
        let retry_after = a
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("retry-after:")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("503 without Retry-After: {a}"));
        let seconds: u64 = retry_after.trim().parse().expect("Retry-After in seconds");
        assert!(seconds >= 1, "{a}");
    }
    assert!(
        by_status.get("401").copied().unwrap_or(0) > 0,
        "the budget let no body through: {by_status:?}"
    );

    // During the burst, memory grew by at most the budget plus what 200 connections need of
    // their own (read buffers, tasks; 50 to 60 MiB here), far from the 600 MiB sent (before the
    // budget: 430 MiB).
    let grown = peak.saturating_sub(baseline);
    assert!(
        grown < (budget_mib + 96) * MIB,
        "resident memory grew by {} MiB (from {} MiB) for a {budget_mib} MiB budget",
        grown / MIB,
        baseline / MIB
    );

    // Afterwards the bodies' memory is given back. What stays is the allocator's: glibc keeps
    // some of what the connections' own small buffers used in its per-thread arenas (30 to
    // 60 MiB here, whatever the budget), not the bodies, which went back with their mappings.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = rss_bytes(pid);
    while now > baseline + 64 * MIB {
        assert!(
            Instant::now() < deadline,
            "resident memory still {} MiB after the burst (baseline {} MiB, peak {} MiB)",
            now / MIB,
            baseline / MIB,
            peak / MIB
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = rss_bytes(pid);
    }
    eprintln!("settled at {} MiB", now / MIB);

    // Each refusal for the budget is counted as such.
    let metrics = common::metrics(&client, &base).await;
    let overloaded = format!(
        "waotp_webhook_requests_total{{result=\"overloaded\"}} {}",
        by_status.get("503").copied().unwrap_or(0)
    );
    assert!(
        metrics.contains(&overloaded),
        "{overloaded} not in {metrics}"
    );

    // And the server still takes a genuine delivery.
    let body = legit("wamid.after-burst");
    let res = common::post_signed(&client, &base, body).await;
    assert_eq!(res.status(), 200);
    drop(child);
}

// ---------------------------------------------------------------------------------------------
// Wrong keys
// ---------------------------------------------------------------------------------------------

const API_KEY: &str = "surface-api-key";
/// Wrong keys a client may try before it is slowed down.
const FREE_WRONG_KEYS: usize = 10;

/// An HTTP client whose connections come from `ip` (any 127.x.y.z address is this machine), so
/// that one test can play several clients.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `GET /v1/sessions/ses_none` with `key`: 404 means the key was accepted.
async fn api_get(client: &reqwest::Client, base: &str, key: &str) -> reqwest::Response {
    client
        .get(format!("{base}/v1/sessions/ses_none"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .expect("sent")
}

async fn dashboard_login(client: &reqwest::Client, base: &str, key: &str) -> reqwest::Response {
    client
        .post(format!("{base}/dashboard/login"))
        .form(&[("key", key)])
        .send()
        .await
        .expect("sent")
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{} without Retry-After", res.status()))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After in seconds")
}

/// Sends wrong keys from `client` until it is made to wait at least `min_secs`; returns that
/// 429. The first [`FREE_WRONG_KEYS`] must each be an ordinary 401; after that, keys sent while
/// the client waits are answered 429 and not counted, and each wrong key once the wait is over
/// makes the next wait longer. (Waiting a few seconds keeps the test's next requests within the
/// window however slow the machine.)
async fn throttle(
    client: &reqwest::Client,
    base: &str,
    dashboard: bool,
    min_secs: u64,
) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut wrong = 0;
    loop {
        assert!(Instant::now() < deadline, "never made to wait {min_secs} s");
        let key = format!("wrong-key-{wrong}");
        let res = if dashboard {
            dashboard_login(client, base, &key).await
        } else {
            api_get(client, base, &key).await
        };
        if res.status() == 429 {
            assert!(
                wrong >= FREE_WRONG_KEYS,
                "throttled after only {wrong} wrong keys"
            );
            if retry_after(&res) >= min_secs {
                return res;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(res.status(), 401, "wrong key {wrong}");
        wrong += 1;
        assert!(
            wrong <= FREE_WRONG_KEYS + 4,
            "{wrong} wrong keys counted and never a wait of {min_secs} s"
        );
    }
}

#[tokio::test]
async fn wrong_api_keys_from_one_client_are_slowed_down_never_the_right_key_from_another() {
    let app = common::spawn_app_with(&[("WAOTP_API_KEYS", API_KEY)]).await;
    let attacker = client_from("127.0.0.2");
    let merchant = client_from("127.0.0.3");

    let throttled = throttle(&attacker, &app.base, false, 4).await;
    let first_wait = retry_after(&throttled);
    assert!(first_wait >= 4);
    let body: serde_json::Value = throttled.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_attempts");

    // While it waits, the attacker learns nothing, not even from the right key ...
    let res = api_get(&attacker, &app.base, API_KEY).await;
    assert_eq!(res.status(), 429);
    assert!(retry_after(&res) >= 1);
    // ... and its dashboard logins wait too.
    let res = dashboard_login(&attacker, &app.base, API_KEY).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("set-cookie").is_none());
    // The merchant, elsewhere, is served as usual, on the API and on the dashboard.
    for _ in 0..3 {
        assert_eq!(api_get(&merchant, &app.base, API_KEY).await.status(), 404);
    }
    let res = dashboard_login(&merchant, &app.base, API_KEY).await;
    assert_eq!(res.status(), 303);
    assert!(res.headers().get("set-cookie").is_some());
    // Requests that present no key at all are not guesses, and not refused as such.
    let res = merchant
        .get(format!("{}/v1/sessions/ses_none", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 401);

    // Once the wait is over, the right key works from the attacker's address too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = api_get(&attacker, &app.base, API_KEY).await;
        if res.status() != 429 {
            assert_eq!(res.status(), 404);
            break;
        }
        assert!(Instant::now() < deadline, "still throttled after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // But it is not forgiven: the next wrong key makes it wait again, longer.
    assert_eq!(
        api_get(&attacker, &app.base, "wrong-again").await.status(),
        401
    );
    let res = api_get(&attacker, &app.base, API_KEY).await;
    assert_eq!(res.status(), 429);
    assert!(retry_after(&res) > first_wait, "the wait did not grow");
}

#[tokio::test]
async fn wrong_dashboard_logins_are_slowed_down_per_client() {
    let app = common::spawn_app_with(&[("WAOTP_API_KEYS", API_KEY)]).await;
    let attacker = client_from("127.0.0.4");
    let colleague = client_from("127.0.0.5");

    let throttled = throttle(&attacker, &app.base, true, 4).await;
    assert!(retry_after(&throttled) >= 1);
    assert!(throttled.headers().get("set-cookie").is_none());
    let page = throttled.text().await.expect("page");
    assert!(page.contains("Too many wrong keys"), "{page}");

    // The right key from the throttled client waits too; from another client it logs in.
    let res = dashboard_login(&attacker, &app.base, API_KEY).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("set-cookie").is_none());
    let res = dashboard_login(&colleague, &app.base, API_KEY).await;
    assert_eq!(res.status(), 303);
    // And the throttled client's bearer key on the API waits as well: one count per client.
    assert_eq!(api_get(&attacker, &app.base, API_KEY).await.status(), 429);
}
