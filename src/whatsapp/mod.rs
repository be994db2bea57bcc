//! The door to WhatsApp's Graph API: the only code that knows Meta's outbound JSON and error
//! codes.
//!
//! [`messages`] turns waotp's own message types into Meta's request bodies within the
//! [`limits`] WhatsApp enforces, [`client`] posts them, [`errors`] reads Meta's error answers,
//! [`codes`] says what each error code means for the send, [`backoff`] spaces out retries, and
//! [`templates`] reads and registers the business account's message templates. It knows nothing of sessions, flows or storage: the outbox decides what to
//! send and when, and records the outcome.

pub mod backoff;
pub mod client;
pub mod codes;
pub mod errors;
pub mod explain;
pub mod limits;
pub mod messages;
pub mod templates;

pub use backoff::{backoff, Backoff};
pub use client::{GraphApi, GraphClient, GraphSetupError, GraphTimeouts};
pub use codes::{ErrorClass, GraphCode, PAIR_RATE_LIMIT_WAIT};
pub use errors::GraphError;
pub use limits::MessageError;
pub use messages::{Button, Outgoing, Row, Section, SendRequest};
