//! One-time passwords: the rules of docs/otp-rules.md as pure functions, plus keyed hashing and
//! sealing.
//!
//! Everything here is free of storage and clock reads: callers pass the time and a random
//! source (`rand::rngs::OsRng` in production). The ledger that applies these rules
//! atomically is the store's (`store::OtpStore`); the code here must never learn about storage, and never
//! log or print a code or a key.

pub mod code;
pub mod hash;
pub mod key;
pub mod limits;
pub mod policy;
pub mod record_seal;
pub mod rules;
pub mod seal;

pub use code::{find_attempt, generate, normalize_attempt, InvalidCodeLength, OtpCode};
pub use hash::{OtpDigest, OtpSubject};
pub use key::{KeyError, OtpKey};
pub use limits::{CustomerActivity, CustomerNumber, InvalidCustomerNumber};
pub use policy::{OtpPolicy, PolicyError};
pub use record_seal::RecordSealer;
pub use rules::{CodeStatus, IssueRefusal, IssueRequest, OtpRecord, VerifyOutcome};
pub use seal::{CodeSealer, SealError, SealedCode};
