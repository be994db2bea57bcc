//! Flows: the TOML language merchants write conversations in, its loader and validator, and the
//! pure engine that runs a session one event at a time.
//!
//! Everything here is free of network, database and wall-clock access; only `load` and `cli`
//! read files or the terminal. The runtime owns persistence and delivery and calls
//! [`engine::step`] with the current time.

pub mod builtin_texts;
pub mod cli;
pub mod duration;
pub mod engine;
pub mod graph;
pub mod guard;
pub mod ids;
pub mod load;
pub mod located;
pub mod model;
pub mod reference;
pub mod render;
pub mod script;
pub mod simulate;
pub mod template_content;
pub mod transcript;
pub mod urls;
pub mod validate;
pub mod versions;
pub mod words;

pub use ids::{FlowId, StateId};
pub use load::{load_dir, load_files, parse_flow, Diagnostic, Flow, FlowSet, LoadError};
pub use versions::FlowVersions;
