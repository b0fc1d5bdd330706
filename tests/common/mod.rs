//! Small builders shared by the unprivileged planner and model tests.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};
use podroute::model::Node;
use podroute::plan::Uplink;
use podroute::Error;

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

/// A node with one IPv4 pod CIDR, built directly (no parsing).
pub fn node(name: &str, node_ip: &str, pod_cidr: &str) -> Node {
    Node {
        name: name.into(),
        node_ip: Some(ip(node_ip)),
        node_ip6: None,
        pod_cidrs: vec![IpNetwork::V4(net(pod_cidr))],
    }
}

/// The uplink `name` holding `address` (node IP with the subnet prefix).
pub fn uplink(name: &str, mtu: u32, address: &str) -> Uplink {
    Uplink {
        name: name.into(),
        mtu,
        address: net(address).into(),
        accept_ra: None,
    }
}

/// The `(field, reason)` of an `Error::Invalid`; panics on anything else.
#[track_caller]
pub fn invalid<T: std::fmt::Debug>(result: Result<T, Error>) -> (String, String) {
    match result {
        Err(Error::Invalid { field, reason }) => (field, reason),
        Err(other) => panic!("expected Error::Invalid, got {other:?}"),
        Ok(v) => panic!("expected Error::Invalid, got Ok({v:?})"),
    }
}

/// Asserts `result` is `Error::Invalid` naming exactly `field`; returns the reason.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Error>, field: &str) -> String {
    let (got, reason) = invalid(result);
    assert_eq!(got, field, "wrong field (reason: {reason})");
    assert!(!reason.is_empty(), "empty reason for {field}");
    reason
}
