//! The end-to-end scenario: complete cash-on-delivery verifications against a server in sandbox
//! mode. Each virtual customer, one flow after another: start a `cod_confirmation` session
//! through the API, tap Confirm, wait for the code to be "sent" (recorded by the sandbox), type
//! it back, and wait for the signed `session.completed` callback at a local sink. Reports
//! completed flows per second and the latency of a whole flow.
//!
//! With several numbers (`--numbers N`, the merchant's first N numbers as `GET /v1/stats` lists
//! them) flow `i` goes through number `i % N`: started `from` it, the customer writes `to` it and
//! the code is read from what it sent. The report then gives each number's share beside the
//! total. With one number no number is named, as a single-merchant server expects.
//!
//! With several base URLs (`--base URL1,URL2`: instances sharing one PostgreSQL database) the
//! requests go to them in turn, as behind a round-robin load balancer: any instance may take any
//! call of any flow. The code is then looked for by short polls instead of a listing that waits
//! server-side, whose wake-up only follows what its own instance recorded.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Options of the scenario.
#[derive(Clone)]
pub struct CodOptions {
    /// The server's base URL, or several instances' in turn.
    pub bases: Vec<String>,
    pub api_key: String,
    pub sink: String,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// How many of the merchant's numbers the flows go through, in turn.
    pub numbers: usize,
}

/// Completed sessions seen at the callback sink, by session id.
#[derive(Default)]
struct Sink {
    done: Mutex<std::collections::HashSet<String>>,
    notify: Notify,
}

async fn callback(
    body: actix_web::web::Bytes,
    sink: actix_web::web::Data<Arc<Sink>>,
) -> actix_web::HttpResponse {
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if let Some(id) = v["session"]["id"].as_str() {
            sink.done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_owned());
            sink.notify.notify_waiters();
        }
    }
    actix_web::HttpResponse::Ok().finish()
}

struct Driver {
    http: reqwest::Client,
    opts: CodOptions,
    sink: Arc<Sink>,
    /// Requests made so far: the next one goes to `bases[turn % len]`.
    turn: AtomicU64,
}

impl Driver {
    /// The base URL of the next request.
    fn base(&self) -> &str {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) as usize;
        &self.opts.bases[turn % self.opts.bases.len()]
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        r.header("authorization", format!("Bearer {}", self.opts.api_key))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let res = self
            .auth(self.http.post(format!("{}{path}", self.base())))
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let v: Value = res.json().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {v}");
        Ok(v)
    }

    /// Waits for the code message: each listing waits server-side (`min`, `wait`) for one more
    /// message than the last one saw, so nobody polls in a loop.
    async fn code_for(
        &self,
        to: &str,
        number: Option<&str>,
        deadline: Instant,
    ) -> anyhow::Result<String> {
        let mut seen = 0;
        let from = number.map(|n| format!("&from={n}")).unwrap_or_default();
        let several = self.opts.bases.len() > 1;
        let wait = if several { 0 } else { 10 };
        let mut polled = false;
        loop {
            if several && polled {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let url = format!(
                "{}/v1/sandbox/messages?to=%2B{}&min={}&wait={wait}{from}",
                self.base(),
                to.trim_start_matches('+'),
                seen + 1
            );
            let v: Value = self.auth(self.http.get(&url)).send().await?.json().await?;
            let messages = v["messages"].as_array().cloned().unwrap_or_default();
            if let Some(code) = messages.iter().find_map(|m| m["code"].as_str()) {
                return Ok(code.to_owned());
            }
            anyhow::ensure!(Instant::now() < deadline, "no code for {to}");
            seen = messages.len();
            polled = true;
        }
    }

    async fn wait_done(&self, id: &str, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let notified = self.sink.notify.notified();
            if self
                .sink
                .done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id)
            {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "no callback for {id}");
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// One complete verification with customer `to` through the merchant's `number` (its first
    /// number when `None`); returns its duration.
    async fn one(&self, to: &str, number: Option<&str>) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        let mut start = json!({"flow": "cod_confirmation", "to": to,
                               "vars": {"customer_name": "Load", "order_id": "L-1", "total": "₹100"}});
        let mut confirm = json!({"from": to, "button": "confirm"});
        let mut code_back = json!({"from": to});
        if let Some(number) = number {
            start["from"] = number.into();
            confirm["to"] = number.into();
            code_back["to"] = number.into();
        }
        let session = self.post("/v1/sessions", start).await?;
        let id = session["id"].as_str().unwrap_or_default().to_owned();
        self.post("/v1/sandbox/inbound", confirm).await?;
        code_back["text"] = self.code_for(to, number, deadline).await?.into();
        self.post("/v1/sandbox/inbound", code_back).await?;
        self.wait_done(&id, deadline).await?;
        Ok(started.elapsed())
    }

    /// The phone number ids of the merchant's first `n` numbers, in the order its stats list
    /// them (the tenants file's order).
    async fn numbers(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let url = format!("{}/v1/stats", self.base());
        let res = self.auth(self.http.get(&url)).send().await?;
        let status = res.status();
        let v: Value = res.json().await?;
        anyhow::ensure!(status.is_success(), "/v1/stats: {status} {v}");
        let ids: Vec<String> = v["numbers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["phone_number_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        anyhow::ensure!(
            ids.len() >= n,
            "--numbers {n}, but the key's merchant has {} number(s)",
            ids.len()
        );
        Ok(ids.into_iter().take(n).collect())
    }
}

/// What one number carried during the measured window.
struct NumberTally {
    /// Its phone number id; `None` for the merchant's first number, not named.
    id: Option<String>,
    ok: AtomicU64,
    failed: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl NumberTally {
    fn new(id: Option<String>) -> anyhow::Result<NumberTally> {
        Ok(NumberTally {
            id,
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        })
    }

    /// Its figures; the histogram of the whole run gets its latencies merged in.
    fn report(&self, secs: f64, all: &mut Histogram<u64>) -> Value {
        let h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let _ = all.add(&*h);
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let ok = self.ok.load(Ordering::Relaxed);
        json!({
            "phone_number_id": self.id,
            "flows_per_s": ok as f64 / secs,
            "completed": ok,
            "failed": self.failed.load(Ordering::Relaxed),
            "flow_latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": h.max() as f64 / 1000.0},
        })
    }
}

/// Runs the scenario and prints its report.
pub async fn run(opts: CodOptions, json_out: bool) -> anyhow::Result<()> {
    let sink = Arc::new(Sink::default());
    let data = actix_web::web::Data::new(sink.clone());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .default_service(actix_web::web::post().to(callback))
    })
    .workers(1)
    .bind(&opts.sink)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);

    let driver = Arc::new(Driver {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        opts: opts.clone(),
        sink,
        turn: AtomicU64::new(0),
    });
    let ids: Vec<Option<String>> = if opts.numbers > 1 {
        driver
            .numbers(opts.numbers)
            .await?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    let numbers = Arc::new(
        ids.into_iter()
            .map(NumberTally::new)
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let (next_flow, printed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let run_id: u32 = rand::random::<u32>() % 1_000;
    let mut workers = Vec::new();
    for w in 0..opts.concurrency {
        let (driver, numbers) = (driver.clone(), numbers.clone());
        let (next_flow, printed) = (next_flow.clone(), printed.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                // A fresh customer per flow: one active session per customer per flow. A possible
                // Indian mobile number (+91 and ten digits), as the API accepts only those.
                let to = format!("+919{:03}{:02}{:04}", run_id, w % 100, n % 10_000);
                // Flows take the numbers in turn, whichever customer runs them, so that every
                // number carries the same share.
                let i = next_flow.fetch_add(1, Ordering::Relaxed) as usize % numbers.len();
                let number = &numbers[i];
                let t1 = Instant::now();
                let result = driver.one(&to, number.id.as_deref()).await;
                // A flow that fails counts if it began in the window, however late it ends, so
                // that a hung flow cannot hide outside the measurement.
                let counted = match &result {
                    Ok(_) => Instant::now() >= measure_from && Instant::now() <= end,
                    Err(_) => t1 >= measure_from && t1 <= end,
                };
                if !counted {
                    continue;
                }
                match result {
                    Ok(d) => {
                        number.ok.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut h) = number.latency.lock() {
                            let _ = h.record(d.as_micros() as u64);
                        }
                    }
                    Err(e) => {
                        number.failed.fetch_add(1, Ordering::Relaxed);
                        if printed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("flow failed: {e:#}");
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    handle.stop(false).await;
    let secs = opts.duration.as_secs_f64();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let per_number: Vec<Value> = numbers.iter().map(|n| n.report(secs, &mut h)).collect();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let ok: u64 = numbers.iter().map(|n| n.ok.load(Ordering::Relaxed)).sum();
    let failed: u64 = numbers
        .iter()
        .map(|n| n.failed.load(Ordering::Relaxed))
        .sum();
    let report = json!({
        "mode": format!(
            "cod_confirmation end to end, {} customers in parallel, {} number(s)",
            opts.concurrency,
            numbers.len()
        ),
        "flows_per_s": ok as f64 / secs,
        "completed": ok,
        "failed": failed,
        "flow_latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": h.max() as f64 / 1000.0},
        "numbers": per_number,
    });
    if json_out {
        println!("{report}");
    } else {
        println!(
            "mode:        {}",
            report["mode"].as_str().unwrap_or_default()
        );
        println!(
            "throughput:  {:.0} complete verifications/s over {secs:.0} s",
            ok as f64 / secs
        );
        println!("responses:   {ok} completed, {failed} failed");
        println!(
            "flow ms:     p50 {:.1}  p99 {:.1}  max {:.1}",
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1000.0
        );
        if numbers.len() > 1 {
            for n in &per_number {
                let f = |v: &Value| v.as_f64().unwrap_or(0.0);
                println!(
                    "number {:<16} {:.0}/s ({} completed, {} failed), p50 {:.1} ms, p99 {:.1} ms",
                    n["phone_number_id"].as_str().unwrap_or_default(),
                    f(&n["flows_per_s"]),
                    n["completed"],
                    n["failed"],
                    f(&n["flow_latency_ms"]["p50"]),
                    f(&n["flow_latency_ms"]["p99"]),
                );
            }
        }
    }
    Ok(())
}
