//! `waotp stats`: the verification funnel of a running server, as a table in the terminal.
//!
//! The embedded database allows one process, so the figures are read from the server's
//! `GET /v1/stats` rather than from the data directory. A key sees its own merchant only, so
//! the report covers the merchants of the keys given (`--key k1,k2` or `WAOTP_API_KEYS`), each
//! listed once with its per-number breakdown; `--merchant ID` keeps one of them.

use crate::api::dashboard::svg::{percent, seconds, thousands};
use crate::flow::duration::parse_duration;
use chrono::Utc;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

/// What `waotp stats` was asked for.
pub struct StatsArgs<'a> {
    pub url: &'a str,
    /// One key or several, comma-separated: every merchant they belong to is reported.
    pub key: Option<&'a str>,
    pub flow: Option<&'a str>,
    /// Only this merchant (default: every merchant of the keys).
    pub merchant: Option<&'a str>,
    pub since: &'a str,
}

impl std::fmt::Debug for StatsArgs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key is a secret: shown only as present or not.
        f.debug_struct("StatsArgs")
            .field("url", &self.url)
            .field("key", &self.key.map(|_| "[redacted]"))
            .field("flow", &self.flow)
            .field("merchant", &self.merchant)
            .field("since", &self.since)
            .finish()
    }
}

/// Fetches and prints; returns the exit code (2 for bad usage, 1 when the server fails).
pub fn run(args: &StatsArgs<'_>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let since = match parse_duration(args.since) {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(err, "waotp stats: --since: {e}");
            return 2;
        }
    };
    let keys: Vec<&str> = args
        .key
        .map(|k| {
            k.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if keys.is_empty() {
        let _ = writeln!(err, "waotp stats: give --key or set WAOTP_API_KEYS");
        return 2;
    }
    let to = Utc::now();
    let mut query = vec![("from", (to - since).to_rfc3339()), ("to", to.to_rfc3339())];
    if let Some(flow) = args.flow {
        query.push(("flow", flow.to_owned()));
    }
    let url = format!("{}/v1/stats", args.url.trim_end_matches('/'));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "waotp stats: cannot start the async runtime: {e}");
            return 1;
        }
    };
    // One report per merchant, in the order of the keys.
    let mut reports: Vec<Value> = Vec::new();
    let mut refused = None;
    for (i, key) in keys.iter().enumerate() {
        let answer = runtime.block_on(async {
            let response = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?
                .get(&url)
                .bearer_auth(key)
                .query(&query)
                .send()
                .await?;
            let status = response.status();
            let body: Value = response.json().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        match answer {
            Ok((status, body)) if status.is_success() => {
                if reports.iter().all(|r| r["merchant"] != body["merchant"]) {
                    reports.push(body);
                }
            }
            // A key the server does not know (a list that also holds stale keys) is passed
            // over; it fails the command only when no key is accepted.
            Ok((status, body)) if status == reqwest::StatusCode::UNAUTHORIZED => {
                let message = body["error"]["message"].as_str().unwrap_or("no details");
                let _ = writeln!(
                    err,
                    "waotp stats: key {} of {} refused: {message}",
                    i + 1,
                    keys.len()
                );
                refused = Some(status);
            }
            Ok((status, body)) => {
                let message = body["error"]["message"].as_str().unwrap_or("no details");
                let _ = writeln!(err, "waotp stats: the server answered {status}: {message}");
                return if status.is_client_error() { 2 } else { 1 };
            }
            Err(e) => {
                let _ = writeln!(err, "waotp stats: cannot read {url}: {e}");
                return 1;
            }
        }
    }
    if reports.is_empty() {
        if let Some(status) = refused {
            let _ = writeln!(
                err,
                "waotp stats: the server answered {status} to every key"
            );
        }
        return 2;
    }
    if let Some(wanted) = args.merchant {
        reports.retain(|r| r["merchant"] == wanted);
        if reports.is_empty() {
            let _ = writeln!(
                err,
                "waotp stats: no key given belongs to merchant `{wanted}`"
            );
            return 2;
        }
    }
    let several = reports.len() > 1;
    for (i, r) in reports.iter().enumerate() {
        if several {
            let _ = writeln!(
                out,
                "{}merchant {}\n",
                if i > 0 { "\n" } else { "" },
                r["merchant"].as_str().unwrap_or("?")
            );
        }
        let _ = out.write_all(render(r).as_bytes());
    }
    0
}

fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| "0".to_owned(), thousands)
}

fn latency(v: &Value) -> String {
    format!(
        "median {}, p90 {} ({} measured)",
        seconds(v["p50"].as_f64()),
        seconds(v["p90"].as_f64()),
        count(&v["count"])
    )
}

fn section(out: &mut String, title: &str, map: &Value) {
    let Some(map) = map.as_object().filter(|m| !m.is_empty()) else {
        return;
    };
    let _ = writeln!(out, "\n{title}");
    for (k, v) in map {
        let _ = writeln!(out, "  {k:<26}{:>14}", count(v));
    }
}

/// The report of `/v1/stats` as a plain-text table.
pub fn render(r: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — {} to {}\n",
        r["flow"].as_str().unwrap_or("all flows"),
        r["from"].as_str().unwrap_or("?"),
        r["to"].as_str().unwrap_or("?")
    );
    let rows = [
        (
            "sessions started",
            count(&r["sessions_started"]),
            String::new(),
        ),
        ("codes sent", count(&r["codes_sent"]), String::new()),
        (
            "codes delivered",
            count(&r["codes_delivered"]),
            format!("delivery rate {}", percent(r["delivery_rate"].as_f64())),
        ),
        (
            "codes read",
            count(&r["codes_read"]),
            format!("read rate {}", percent(r["read_rate"].as_f64())),
        ),
        (
            "verified",
            count(&r["verified"]),
            format!("conversion {}", percent(r["conversion_rate"].as_f64())),
        ),
    ];
    for (label, value, note) in rows {
        let line = format!("  {label:<26}{value:>14}  {note}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(
        out,
        "  {:<26}{}",
        "sent → verified",
        latency(&r["sent_to_verified_seconds"])
    );
    let _ = writeln!(
        out,
        "  {:<26}{}",
        "sent → delivered",
        latency(&r["sent_to_delivered_seconds"])
    );
    section(&mut out, "outcomes", &r["outcomes"]);
    if let Some(failures) = r["delivery_failures"].as_array().filter(|f| !f.is_empty()) {
        let _ = writeln!(out, "\ndelivery failures (Meta error code)");
        for f in failures {
            let code = f["code"]
                .as_i64()
                .map_or_else(|| "—".to_owned(), |c| c.to_string());
            let _ = writeln!(
                out,
                "  {code:<10}{:>14}  {}",
                count(&f["count"]),
                f["explanation"].as_str().unwrap_or_default()
            );
        }
    }
    section(&mut out, "limit breaches", &r["limit_breaches"]);
    if let Some(numbers) = r["numbers"].as_array().filter(|n| !n.is_empty()) {
        let _ = writeln!(
            out,
            "\n{:<36}{:>14}{:>14}{:>14}  conversion",
            "per number", "started", "codes sent", "verified"
        );
        for n in numbers {
            let id = n["phone_number_id"].as_str().unwrap_or("?");
            let name = match n["business_number"].as_str() {
                Some(b) => format!("{b} ({id})"),
                None => id.to_owned(),
            };
            let _ = writeln!(
                out,
                "  {name:<34}{:>14}{:>14}{:>14}  {}",
                count(&n["sessions_started"]),
                count(&n["codes_sent"]),
                count(&n["verified"]),
                percent(n["conversion_rate"].as_f64())
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;
    use crate::api::stats::{report, HourRange};
    use crate::store::Totals;

    #[test]
    fn the_table_shows_every_figure_of_the_report() {
        let mut t = Totals {
            started: 1234,
            code_sent: 1000,
            code_delivered: 900,
            code_read: 800,
            verified: 617,
            ..Totals::default()
        };
        t.outcomes.insert("verified".into(), 617);
        t.failures.insert(Some(131026), 7);
        t.limit_breaches.insert("cooldown".into(), 2);
        t.verify_latency.counts[3] = 10;
        let range = HourRange {
            from_hour: 0,
            to_hour: 24,
        };
        let mut with_numbers = report(Some("signup_verification"), range, &t);
        with_numbers["numbers"] = serde_json::json!([
            {"phone_number_id": "106540352242922", "business_number": "+15550001111", "sessions_started": 1200, "codes_sent": 990, "verified": 600, "conversion_rate": 0.5},
            {"phone_number_id": "206540352242922", "business_number": null, "sessions_started": 34, "codes_sent": 10, "verified": 17, "conversion_rate": 0.5},
        ]);
        let numbers = render(&with_numbers);
        assert!(numbers.contains("per number"), "{numbers}");
        assert!(
            numbers.contains("+15550001111 (106540352242922)"),
            "{numbers}"
        );
        assert!(numbers.contains("  206540352242922 "), "{numbers}");
        let table = render(&report(Some("signup_verification"), range, &t));
        for want in [
            "signup_verification — 1970-01-01T00:00:00+00:00 to 1970-01-02T00:00:00+00:00",
            "1,234",
            "delivery rate 90.0%",
            "conversion 50.0%",
            "median ≤ 10 s, p90 ≤ 10 s (10 measured)",
            "median —, p90 — (0 measured)",
            "131026",
            "Message undeliverable",
            "cooldown",
        ] {
            assert!(table.contains(want), "missing {want:?} in\n{table}");
        }
        let empty = render(&report(None, range, &Totals::default()));
        assert!(empty.starts_with("all flows — "));
        assert!(empty.contains("conversion —"));
        assert!(!empty.contains("outcomes"));
    }
}
