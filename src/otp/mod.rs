//! One-time passwords: SPEC §9 as pure rules plus keyed hashing and sealing.
//!
//! Everything here is free of I/O and clock reads: callers pass the time and a random source.
//! The sled-backed ledger that applies these rules atomically lives in `store::otp`; the code
//! here must never learn about storage, and never log or print a code or a key.

pub mod code;
pub mod hash;
pub mod limits;
pub mod policy;
pub mod rules;
pub mod seal;
