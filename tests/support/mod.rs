//! Local HTTP fakes of the parties waotp calls: real servers on 127.0.0.1, port 0.
#![allow(dead_code)]

pub mod graph_fake;
pub mod http_fake;
pub mod merchant_signature;
