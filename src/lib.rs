//! podroute: pod routes over ipip, VXLAN or native routing, programmed over
//! netlink, and a seamless switch between them. See docs/design.md.

pub mod agent;
pub mod bench;
pub mod check;
pub mod cli;
pub mod coordinator;
pub mod dataplane;
pub mod engine;
pub mod http;
pub mod lab;
pub mod privilege;
pub mod store;

pub use podroute_api as api;
pub use podroute_core::{error, input, model, plan, Error, Result};
