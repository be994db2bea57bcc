//! `GET /healthz` (the process answers), `GET /readyz` (the database is open and startup
//! replay is done) and `GET /metrics` (Prometheus text). None needs an API key.

use crate::metrics::Metrics;
use crate::store::Store;
use actix_web::{web, HttpResponse};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the health routes look at.
#[derive(Debug, Clone)]
pub struct HealthState {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Set once startup (replay of unhandled events) is complete.
    pub ready: Arc<AtomicBool>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<HealthState>) -> HttpResponse {
    let database = state.store.healthy();
    let started = state.ready.load(Ordering::Acquire);
    let body = serde_json::json!({
        "status": if database && started { "ready" } else { "not_ready" },
        "database": if database { "ok" } else { "unavailable" },
        "startup": if started { "done" } else { "in_progress" },
    });
    if database && started {
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
