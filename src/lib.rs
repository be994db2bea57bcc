//! waotp: a WhatsApp bot that verifies people with one-time passwords.
//!
//! The library holds everything; `main.rs` only parses the command line and calls in here.

pub mod otp;
pub mod store;
