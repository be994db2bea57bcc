//! The PostgreSQL engine.

pub mod audit;
pub mod otp;
pub mod stats;
pub mod templates;
