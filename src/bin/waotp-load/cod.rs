//! The end-to-end scenario: complete cash-on-delivery verifications against a server in sandbox
//! mode. Each virtual customer, one flow after another: start a `cod_confirmation` session
//! through the API, tap Confirm, wait for the code to be "sent" (recorded by the sandbox), type
//! it back, and wait for the signed `session.completed` callback at a local sink. Reports
//! completed flows per second and the latency of a whole flow.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Options of the scenario.
#[derive(Clone)]
pub struct CodOptions {
    pub base: String,
    pub api_key: String,
    pub sink: String,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
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
}

impl Driver {
    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        r.header("authorization", format!("Bearer {}", self.opts.api_key))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let res = self
            .auth(self.http.post(format!("{}{path}", self.opts.base)))
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
    async fn code_for(&self, to: &str, deadline: Instant) -> anyhow::Result<String> {
        let mut seen = 0;
        loop {
            let url = format!(
                "{}/v1/sandbox/messages?to=%2B{}&min={}&wait=10",
                self.opts.base,
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

    /// One complete verification; returns its duration.
    async fn one(&self, to: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        let session = self
            .post(
                "/v1/sessions",
                json!({"flow": "cod_confirmation", "to": to,
                       "vars": {"customer_name": "Load", "order_id": "L-1", "total": "₹100"}}),
            )
            .await?;
        let id = session["id"].as_str().unwrap_or_default().to_owned();
        self.post(
            "/v1/sandbox/inbound",
            json!({"from": to, "button": "confirm"}),
        )
        .await?;
        let code = self.code_for(to, deadline).await?;
        self.post("/v1/sandbox/inbound", json!({"from": to, "text": code}))
            .await?;
        self.wait_done(&id, deadline).await?;
        Ok(started.elapsed())
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
    });
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let run_id: u32 = rand::random::<u32>() % 1_000;
    let mut workers = Vec::new();
    for w in 0..opts.concurrency {
        let (driver, latency, ok, failed) =
            (driver.clone(), latency.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                // A fresh customer per flow: one active session per customer per flow. A possible
                // Indian mobile number (+91 and ten digits), as the API accepts only those.
                let to = format!("+919{:03}{:02}{:04}", run_id, w % 100, n % 10_000);
                let t1 = Instant::now();
                let result = driver.one(&to).await;
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
                        ok.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut h) = latency.lock() {
                            let _ = h.record(d.as_micros() as u64);
                        }
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
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
    let h = latency.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let secs = opts.duration.as_secs_f64();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let ok = ok.load(Ordering::Relaxed);
    let report = json!({
        "mode": format!("cod_confirmation end to end, {} customers in parallel", opts.concurrency),
        "flows_per_s": ok as f64 / secs,
        "completed": ok,
        "failed": failed.load(Ordering::Relaxed),
        "flow_latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": h.max() as f64 / 1000.0},
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
        println!("responses:   {ok} completed, {} failed", report["failed"]);
        println!(
            "flow ms:     p50 {:.1}  p99 {:.1}  max {:.1}",
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}
