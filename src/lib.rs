//! waotp: a WhatsApp bot that verifies people with one-time passwords.
//!
//! Data flows one way: `webhook/` (verify, parse, record) → `runtime/` (per-customer ordering)
//! → handlers; `store/` (one contract, an embedded and a PostgreSQL engine) sits under everything stateful. `main.rs` only calls [`cli::run`].

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod flow;
pub mod merchant;
pub mod metrics;
pub mod otp;
pub mod outbox;
pub mod request_deadline;
pub mod request_id;
pub mod runtime;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod tenants;
pub mod webhook;
pub mod whatsapp;

pub use app::Application;
pub use config::Settings;
