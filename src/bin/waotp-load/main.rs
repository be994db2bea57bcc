//! `waotp-load`: a load generator for the webhook.
//!
//! Sends correctly signed WhatsApp webhook POSTs to a running server: unique message ids, a
//! realistic mix (customer texts and button replies, delivery statuses for sent messages, a share
//! of repeated deliveries), either open-loop at a fixed rate (latency measured from each
//! request's intended start, so a stalled server cannot hide its queueing) or closed-loop with a
//! fixed number of connections to find saturation. Reports throughput, latency percentiles,
//! errors, and — given the server's pid — its CPU use and resident memory.
//!
//! Only loopback or this machine's own test hosts should ever be targets.

// The report goes to standard output by design.
#![allow(clippy::print_stdout)]

mod cod;
mod seed;

use clap::Parser;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use waotp::webhook::signature::SignatureVerifier;

#[derive(Parser)]
#[command(name = "waotp-load", about = "Signed webhook load generator for waotp")]
struct Args {
    /// Webhook URL; several, comma-separated, are sent requests in turn (instances sharing one
    /// database behind a round-robin load balancer).
    #[arg(long, default_value = "http://127.0.0.1:8080/webhook")]
    url: String,
    /// App Secret the server verifies with.
    #[arg(long, env = "WAOTP_APP_SECRET", default_value = "")]
    secret: String,
    /// Open loop: requests per second. Without it, closed loop (saturation).
    #[arg(long)]
    rate: Option<u64>,
    /// Closed loop: requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Fraction of requests that repeat an earlier delivery.
    #[arg(long, default_value_t = 0.1)]
    duplicates: f64,
    /// Distinct customers.
    #[arg(long, default_value_t = 1000)]
    customers: u64,
    /// Server pid, to report its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Scenario: `webhook` (signed webhook POSTs), `cod` (complete cash-on-delivery
    /// verifications through the API against a sandbox-mode server) or `seed` (write idle
    /// sessions into a data directory, for memory and start-up measurements).
    #[arg(long, default_value = "webhook")]
    scenario: String,
    /// For `cod`: the server's base URL, or several comma-separated (instances sharing one
    /// PostgreSQL database), taking the requests in turn.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    /// For `cod`: an API key of the server.
    #[arg(long, env = "WAOTP_API_KEY", default_value = "")]
    api_key: String,
    /// For `cod`: where to receive callbacks (start the server with
    /// WAOTP_CALLBACK_URL=http://<this address>/callback).
    #[arg(long, default_value = "127.0.0.1:18099")]
    sink: String,
    /// For `cod`: how many of the API key's merchant's numbers the flows go through in turn
    /// (its first N, as `GET /v1/stats` lists them). With 1, no number is named.
    #[arg(long, default_value_t = 1)]
    numbers: usize,
    /// For `seed`: the data directory to fill (the server must not be running on it).
    #[arg(long, default_value = "./data")]
    data_dir: std::path::PathBuf,
    /// For `seed`: the flows directory.
    #[arg(long, default_value = "./flows")]
    flows: std::path::PathBuf,
    /// For `seed`: how many idle sessions to write.
    #[arg(long, default_value_t = 100_000)]
    sessions: u64,
    /// A second webhook URL measured right after the first with the same load, normally
    /// `waotp-bare`; the report then gives the pipeline's throughput as a share of it.
    #[arg(long)]
    bare_url: Option<String>,
    /// The bare server's pid, to report its CPU and memory.
    #[arg(long)]
    bare_pid: Option<u32>,
}

/// Builds webhook bodies: unique ids, a mix of kinds, some repeats.
struct BodyMaker {
    run: u64,
    next: u64,
    rng: StdRng,
    recent: Vec<(String, String)>,
    verifier: SignatureVerifier,
    customers: u64,
    duplicates: f64,
}

impl BodyMaker {
    fn new(secret: &str, customers: u64, duplicates: f64) -> BodyMaker {
        let mut rng = StdRng::from_entropy();
        BodyMaker {
            run: rng.gen(),
            next: 0,
            rng,
            recent: Vec::with_capacity(1024),
            verifier: SignatureVerifier::new(secret.as_bytes()),
            customers: customers.max(1),
            duplicates,
        }
    }

    /// Returns (body, signature, is_repeat).
    fn make(&mut self) -> (String, String, bool) {
        if !self.recent.is_empty() && self.rng.gen_bool(self.duplicates.clamp(0.0, 1.0)) {
            let (b, s) = self.recent[self.rng.gen_range(0..self.recent.len())].clone();
            return (b, s, true);
        }
        self.next += 1;
        let n = self.next;
        let customer = format!("9198{:08}", self.rng.gen_range(0..self.customers));
        let ts = 1_700_000_000 + n;
        let value = match self.rng.gen_range(0..10) {
            0..=4 => format!(
                r#"{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Load Test"}},"wa_id":"{customer}"}}],"messages":[{{"from":"{customer}","id":"wamid.load.{run:x}.{n}","timestamp":"{ts}","type":"text","text":{{"body":"{code}"}}}}]}}"#,
                run = self.run,
                code = self.rng.gen_range(100_000..1_000_000)
            ),
            5..=6 => format!(
                r#"{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Load Test"}},"wa_id":"{customer}"}}],"messages":[{{"context":{{"from":"15550783881","id":"wamid.out.{run:x}.{prev}"}},"from":"{customer}","id":"wamid.load.{run:x}.{n}","timestamp":"{ts}","type":"interactive","interactive":{{"type":"button_reply","button_reply":{{"id":"confirm","title":"Confirm"}}}}}}]}}"#,
                run = self.run,
                prev = n.saturating_sub(1)
            ),
            _ => {
                let status = ["sent", "delivered", "read"][self.rng.gen_range(0..3)];
                format!(
                    r#"{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"statuses":[{{"id":"wamid.out.{run:x}.{n}","status":"{status}","timestamp":"{ts}","recipient_id":"{customer}","conversation":{{"id":"c1","origin":{{"type":"service"}}}},"pricing":{{"billable":true,"pricing_model":"CBP","category":"service"}}}}]}}"#,
                    run = self.run
                )
            }
        };
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{value},"field":"messages"}}]}}]}}"#
        );
        let signature = self.verifier.sign(body.as_bytes());
        if self.recent.len() < 1024 {
            self.recent.push((body.clone(), signature.clone()));
        } else {
            let i = self.rng.gen_range(0..1024);
            self.recent[i] = (body.clone(), signature.clone());
        }
        (body, signature, false)
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    failures: AtomicU64,
    repeats: AtomicU64,
}

struct Shared {
    client: reqwest::Client,
    urls: Vec<String>,
    next_url: std::sync::atomic::AtomicUsize,
    latency: Mutex<Histogram<u64>>,
    tally: Tally,
    measuring: std::sync::atomic::AtomicBool,
}

impl Shared {
    async fn send(&self, body: String, signature: String, intended: Instant, repeat: bool) {
        let result = self
            .client
            .post(&self.urls[self.next_url.fetch_add(1, Ordering::Relaxed) % self.urls.len()])
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await;
        let micros = intended.elapsed().as_micros() as u64;
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        let t = &self.tally;
        match result {
            Ok(res) if res.status().is_success() => t.ok.fetch_add(1, Ordering::Relaxed),
            Ok(res) if res.status().is_client_error() => {
                t.client_errors.fetch_add(1, Ordering::Relaxed)
            }
            Ok(_) => t.server_errors.fetch_add(1, Ordering::Relaxed),
            Err(_) => t.failures.fetch_add(1, Ordering::Relaxed),
        };
        if repeat {
            t.repeats.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record(micros.max(1));
        }
    }
}

/// CPU seconds (user + system) and resident bytes of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some((ticks / 100.0, rss_pages * 4096))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    if args.scenario == "seed" {
        return runtime.block_on(seed::run(&args.data_dir, &args.flows, args.sessions));
    }
    if args.scenario == "cod" {
        let opts = cod::CodOptions {
            bases: args
                .base
                .split(',')
                .map(|b| b.trim().trim_end_matches('/').to_owned())
                .filter(|b| !b.is_empty())
                .collect(),
            api_key: args.api_key.clone(),
            sink: args.sink.clone(),
            concurrency: args.concurrency,
            warmup: Duration::from_secs(args.warmup),
            duration: Duration::from_secs(args.duration),
            numbers: args.numbers.max(1),
        };
        return runtime.block_on(cod::run(opts, args.json));
    }
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let pipeline = measure(&args, &args.url, args.server_pid).await?;
    let Some(bare_url) = &args.bare_url else {
        print_report(&pipeline, args.json);
        return Ok(());
    };
    let bare = measure(&args, bare_url, args.bare_pid).await?;
    let throughput = |r: &serde_json::Value| r["throughput_per_s"].as_f64().unwrap_or(0.0);
    let share = throughput(&pipeline) / throughput(&bare).max(f64::MIN_POSITIVE);
    if args.json {
        let both = serde_json::json!({"pipeline": pipeline, "bare": bare, "pipeline_share_of_bare": share});
        println!("{both}");
    } else {
        println!("== waotp ({})", args.url);
        print_report(&pipeline, false);
        println!("== bare ({bare_url})");
        print_report(&bare, false);
        println!(
            "pipeline:    {:.0}% of the bare handler's throughput",
            share * 100.0
        );
    }
    Ok(())
}

/// One measured run against `url` (warm-up included); returns the report.
async fn measure(args: &Args, url: &str, pid: Option<u32>) -> anyhow::Result<serde_json::Value> {
    let urls: Vec<String> = url
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    anyhow::ensure!(!urls.is_empty(), "no webhook URL given");
    let shared = Arc::new(Shared {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency.max(256))
            .timeout(Duration::from_secs(30))
            .build()?,
        urls,
        next_url: Default::default(),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        tally: Tally::default(),
        measuring: false.into(),
    });
    let maker = Arc::new(Mutex::new(BodyMaker::new(
        &args.secret,
        args.customers,
        args.duplicates,
    )));
    let warmup = Duration::from_secs(args.warmup);
    let measured = Duration::from_secs(args.duration);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measured;

    let cpu_flag = shared.clone();
    let usage = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        cpu_flag.measuring.store(true, Ordering::Relaxed);
        let before = pid.and_then(process_usage);
        tokio::time::sleep_until(end.into()).await;
        cpu_flag.measuring.store(false, Ordering::Relaxed);
        let after = pid.and_then(process_usage);
        (before, after)
    });

    match args.rate {
        Some(rate) => {
            // Open loop: request i is due at start + i/rate, whether or not earlier ones finished.
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut i: u64 = 0;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                while start + interval.mul_f64(i as f64) <= now {
                    let intended = start + interval.mul_f64(i as f64);
                    let (body, sig, repeat) = lock(&maker).make();
                    let s = shared.clone();
                    tokio::spawn(async move { s.send(body, sig, intended, repeat).await });
                    i += 1;
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
        None => {
            let mut workers = Vec::new();
            for _ in 0..args.concurrency.max(1) {
                let (s, m) = (shared.clone(), maker.clone());
                workers.push(tokio::spawn(async move {
                    while Instant::now() < end {
                        let (body, sig, repeat) = lock(&m).make();
                        s.send(body, sig, Instant::now(), repeat).await;
                    }
                }));
            }
            for w in workers {
                w.await?;
            }
        }
    }
    let (before, after) = usage.await?;
    // Let stragglers finish so they are counted in neither window.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t = &shared.tally;
    let h = lock(&shared.latency).clone();
    let secs = measured.as_secs_f64();
    let ok = t.ok.load(Ordering::Relaxed);
    let completed =
        ok + t.client_errors.load(Ordering::Relaxed) + t.server_errors.load(Ordering::Relaxed);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (cpu, rss) = match (before, after) {
        (Some((b, _)), Some((a, rss))) => (Some((a - b) / secs * 100.0), Some(rss)),
        _ => (None, None),
    };
    let report = serde_json::json!({
        "mode": match args.rate { Some(r) => format!("open loop at {r}/s"), None => format!("closed loop, {} in flight", args.concurrency) },
        "seconds": secs,
        "throughput_per_s": completed as f64 / secs,
        "ok": ok,
        "repeats": t.repeats.load(Ordering::Relaxed),
        "http_4xx": t.client_errors.load(Ordering::Relaxed),
        "http_5xx": t.server_errors.load(Ordering::Relaxed),
        "failed": t.failures.load(Ordering::Relaxed),
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99.9": ms(0.999), "max": h.max() as f64 / 1000.0},
        "server_cpu_percent": cpu,
        "server_rss_mib": rss.map(|b| b as f64 / 1048576.0),
    });
    Ok(report)
}

fn print_report(report: &serde_json::Value, json: bool) {
    if json {
        println!("{report}");
        return;
    }
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let latency = &report["latency_ms"];
    println!(
        "mode:        {}",
        report["mode"].as_str().unwrap_or_default()
    );
    println!(
        "throughput:  {:.0} req/s over {:.0} s",
        f(&report["throughput_per_s"]),
        f(&report["seconds"])
    );
    println!(
        "responses:   {} ok ({} repeats), {} 4xx, {} 5xx, {} failed",
        report["ok"], report["repeats"], report["http_4xx"], report["http_5xx"], report["failed"]
    );
    println!(
        "latency ms:  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        f(&latency["p50"]),
        f(&latency["p90"]),
        f(&latency["p99"]),
        f(&latency["p99.9"]),
        f(&latency["max"])
    );
    if let (Some(cpu), Some(rss)) = (
        report["server_cpu_percent"].as_f64(),
        report["server_rss_mib"].as_f64(),
    ) {
        println!("server:      {cpu:.0}% CPU, {rss:.1} MiB resident");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
