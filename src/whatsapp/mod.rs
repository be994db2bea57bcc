//! The door to WhatsApp's Graph API: the only code that knows Meta's outbound JSON and error
//! codes.
//!
//! [`messages`] turns waotp's own message types into Meta's request bodies, [`client`] posts
//! them, [`errors`] reads Meta's error answers and says what to do about them, and [`backoff`]
//! spaces out retries. It knows nothing of sessions, flows or storage: the outbox decides what to
//! send and when, and records the outcome.

pub mod backoff;
pub mod client;
pub mod errors;
pub mod messages;

pub use backoff::{backoff, Backoff};
pub use client::{GraphClient, GraphSetupError, GraphTimeouts};
pub use errors::{ErrorClass, GraphCode, GraphError};
pub use messages::{Button, MessageError, Outgoing, Row, Section, SendRequest};
