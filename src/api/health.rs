//! `GET /healthz` (the process answers), `GET /readyz` (the database is open, startup replay
//! is done and the process is not stopping) and `GET /metrics` (Prometheus text). None needs an API key.

use crate::metrics::Metrics;
use crate::store::Engine;
use actix_web::{web, HttpResponse};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the health routes look at.
#[derive(Debug, Clone)]
pub struct HealthState {
    /// The storage engine, asked whether it answers.
    pub engine: Arc<dyn Engine>,
    pub metrics: Arc<Metrics>,
    /// Set once startup (replay of unhandled events) is complete.
    pub ready: Arc<AtomicBool>,
    /// Set when a SIGTERM/SIGINT starts the graceful stop (`crate::shutdown`).
    pub stopping: Arc<AtomicBool>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz(state: web::Data<HealthState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok", "engine": state.engine.name()}))
}

async fn readyz(state: web::Data<HealthState>) -> HttpResponse {
    let database = state.engine.healthy().await;
    let started = state.ready.load(Ordering::Acquire);
    let stopping = state.stopping.load(Ordering::Acquire);
    let ready = database && started && !stopping;
    let mut body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": if database { "ok" } else { "unavailable" },
        "engine": state.engine.name(),
        "startup": if started { "done" } else { "in_progress" },
    });
    if stopping {
        body["stopping"] = serde_json::json!(true);
    }
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<HealthState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}
