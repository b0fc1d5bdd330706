//! podroute: pod routes over ipip, VXLAN or native routing, programmed over
//! netlink, and a seamless switch between them. See docs/design.md.

pub mod agent;
pub mod api;
pub mod bench;
pub mod cli;
pub mod coordinator;
pub mod dataplane;
pub mod engine;
pub mod error;
pub mod http;
pub mod input;
pub mod lab;
pub mod model;
pub mod plan;
pub mod privilege;
pub mod store;

pub use error::{Error, Result};
