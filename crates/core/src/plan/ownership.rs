//! Which kernel routes and devices are ours: the one rule that both the
//! observer (`Dataplane::observe`) and the netlink monitor apply.

use crate::model::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOwner {
    /// Our protocol in our table.
    Ours,
    /// An adopted protocol in our table, never a default route: the plan decides.
    Adoptable,
    Foreign,
}

pub fn route_owner(config: &Config, protocol: u8, table: u32, prefix_len: u8) -> RouteOwner {
    if table != config.route_table {
        RouteOwner::Foreign
    } else if protocol == config.route_protocol {
        RouteOwner::Ours
    } else if prefix_len > 0 && config.adopt_route_protocols.contains(&protocol) {
        RouteOwner::Adoptable
    } else {
        RouteOwner::Foreign
    }
}

/// One of the tunnel devices we create.
pub fn is_our_device(config: &Config, name: &str) -> bool {
    name == config.ipip_device || name == config.vxlan_device || name == config.vxlan6_device
}

#[cfg(test)]
mod tests {
    use super::{RouteOwner::*, *};

    #[test]
    fn routes_by_protocol_table_and_prefix_devices_by_name() {
        let c = Config {
            adopt_route_protocols: vec![12],
            ..Config::default()
        };
        let (ours, t) = (c.route_protocol, c.route_table);
        #[rustfmt::skip]
        let cases = [
            (ours, t, 24, Ours), (ours, t, 0, Ours), (12, t, 24, Adoptable), (12, t, 0, Foreign),
            (2, t, 24, Foreign), (4, t, 24, Foreign), (ours, t + 1, 24, Foreign), (12, t + 1, 24, Foreign),
        ];
        for (protocol, table, len, want) in cases {
            assert_eq!(
                route_owner(&c, protocol, table, len),
                want,
                "{protocol} {table} /{len}"
            );
        }
        assert!(is_our_device(&c, "tunl0") && is_our_device(&c, "vxlan.calico"));
        assert!(!is_our_device(&c, "eth0") && !is_our_device(&c, ""));
    }
}
