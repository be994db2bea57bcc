//! The `seed` scenario: writes N idle `cod_confirmation` sessions (each waiting for the customer
//! with a pending timer, exactly as a started session is stored) straight into a data directory,
//! so that memory, database size and start-up time can be measured with many sessions on disk
//! without starting them one by one through the API.

use chrono::{Duration as Span, Utc};
use serde_json::json;
use std::path::Path;
use std::time::Instant;
use waotp::flow::engine;
use waotp::store::{SessionRecord, StepWrite, Storage};

/// Writes `count` sessions of the bundled `cod_confirmation` flow found in `flows`.
pub async fn run(data_dir: &Path, flows: &Path, count: u64) -> anyhow::Result<()> {
    let set = waotp::flow::load_dir(flows).map_err(|e| anyhow::anyhow!("{e}"))?;
    let flow = set
        .get("cod_confirmation")
        .ok_or_else(|| anyhow::anyhow!("no cod_confirmation flow in {}", flows.display()))?
        .clone();
    let storage = Storage::embedded(data_dir, None, |_| {})?;
    let sessions = &storage.sessions;
    sessions
        .put_flow_source(
            flow.hash(),
            &flow.path().display().to_string(),
            flow.source(),
        )
        .await?;
    let started = Instant::now();
    let now = Utc::now();
    // Sessions are written in the scope the server gives a single merchant in sandbox mode
    // (no settings), so that they read as its own: written without one, the first start would
    // take them for a store from before merchants existed and move every key.
    let scope = waotp::tenants::Scope::new(
        waotp::tenants::DEFAULT_MERCHANT,
        waotp::tenants::SANDBOX_NUMBER,
    );
    // What a server's first start does on an empty store: marks it as holding scoped keys.
    sessions.adopt_unscoped_keys(&scope).await?;
    let vars = json!({"customer_name": "Asha", "order_id": "A-1001", "total": "₹1,499"});
    let vars: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_value(vars)?;
    let base = engine::new_session(&flow, vars, "en", now)?;
    let (waiting, _) = engine::step(
        &flow,
        &base,
        engine::Event::Start,
        now,
        &mut rand::thread_rng(),
    );
    for i in 0..count {
        let id = format!("ses_seed{i:016x}");
        let customer = format!("91{:010}", 7_000_000_000u64 + i);
        let due = now + Span::hours(6) + Span::milliseconds((i % 3_600_000) as i64);
        let timer_key = waotp::store::TimerRef::new(due, &id, "state");
        let record = SessionRecord {
            id: id.clone(),
            to: format!("+{customer}"),
            customer: customer.clone(),
            created_at: now,
            updated_at: now,
            step: 1,
            engine: waiting.clone(),
            timer_key: Some(timer_key.clone()),
            otp_purpose: None,
            otp_bound: Vec::new(),
            last_inbound: 0,
            otp_refused: None,
            merchant: scope.merchant.clone(),
            number: scope.number.clone(),
        };
        sessions
            .apply_step(StepWrite {
                record: Some(record),
                activate: Some((scope.customer_key(&customer), "cod_confirmation".into())),
                timer_set: Some((timer_key, 1)),
                ..StepWrite::default()
            })
            .await?;
        if i % 100_000 == 99_999 {
            storage.engine.durable().await?;
            eprintln!("{} sessions written", i + 1);
        }
    }
    storage.engine.flush().await?;
    println!(
        "seeded {count} idle sessions in {:.1} s; database {:.1} MiB on disk",
        started.elapsed().as_secs_f64(),
        storage.engine.approximate_size().await as f64 / 1_048_576.0
    );
    Ok(())
}
