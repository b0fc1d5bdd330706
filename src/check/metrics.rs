//! The periodic check's metrics, on the agent's registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `peer` and `family`.
pub type PeerLabels = Vec<(String, String)>;

#[derive(Clone)]
pub struct PeerMetrics {
    /// 1 when the latest small probe to the peer came back.
    pub reachable: Family<PeerLabels, Gauge>,
    pub rtt_seconds: Histogram,
    /// Probed peers by result: `ok`, `mtu`, `unreachable`.
    pub results: Family<Vec<(String, String)>, Counter>,
    pub unreachable: Gauge,
    pub mtu_failing: Gauge,
}

impl PeerMetrics {
    pub fn register(registry: &mut Registry) -> PeerMetrics {
        let m = PeerMetrics {
            reachable: Family::default(),
            rtt_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            results: Family::default(),
            unreachable: Gauge::default(),
            mtu_failing: Gauge::default(),
        };
        registry.register(
            "peer_reachable",
            "1 when the latest probe of the peer over the pods' path was answered (periodic check)",
            m.reachable.clone(),
        );
        registry.register(
            "peer_rtt_seconds",
            "Round trip of the periodic check's small probes, all peers",
            m.rtt_seconds.clone(),
        );
        registry.register(
            "peer_checks",
            "Peers checked by the periodic check, by result: ok, mtu (full-size DF probes lost), unreachable",
            m.results.clone(),
        );
        registry.register(
            "peers_unreachable",
            "Peers whose latest probe got no answer",
            m.unreachable.clone(),
        );
        registry.register(
            "peers_mtu_failing",
            "Peers that answer small probes but not full-size ones with DF",
            m.mtu_failing.clone(),
        );
        m
    }
}

pub fn labels(peer: &str, family: &str) -> PeerLabels {
    vec![
        ("peer".to_string(), peer.to_string()),
        ("family".to_string(), family.to_string()),
    ]
}
