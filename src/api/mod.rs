//! HTTP routes other than the webhook: the merchant API, the sandbox, health, readiness and
//! metrics. Handlers translate between HTTP and the runtime; they hold no business rules.

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod list;
pub mod openapi;
pub mod rate;
pub mod routes;
pub mod sandbox;
pub mod sessions;
pub mod stats;
pub mod throttle;
pub mod vars;
