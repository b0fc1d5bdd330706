//! podroute's pure core: the decisions, made without a runtime, a socket or
//! an API client, so they are tested without root or a cluster. The node
//! model and the cluster file (`model`), what a node's kernel must hold and
//! the writes that get it there (`plan`), what stores report (`snapshot`),
//! and the cluster-wide switch (`switch`).

pub mod error;
pub mod input;
pub mod model;
pub mod plan;
pub mod snapshot;
pub mod switch;

pub use error::{Error, Result};
pub use podroute_api as api;
