//! HTTP routes other than the webhook: health, readiness and metrics (the merchant API joins
//! here). Handlers translate between HTTP and the runtime; they hold no business rules.

pub mod health;
