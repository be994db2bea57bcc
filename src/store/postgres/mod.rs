//! The PostgreSQL engine.

pub mod audit;
pub mod otp;
