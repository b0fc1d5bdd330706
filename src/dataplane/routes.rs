//! Routes: a strict-check dump of one table, split into ours (our protocol
//! or an adopted one) and the keys of everyone else's.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::netlink::{for_each, ignoring, nl_err};
use crate::plan::{Route, RouteKey, RouteKind};
use crate::Result;

/// A route as dumped, with its device still an index.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub route: Route,
    pub oif: Option<u32>,
}

/// Every route of `table`, IPv4 then IPv6, handed to `each` as it is
/// parsed. The kernel filters by table and family (NETLINK_GET_STRICT_CHK);
/// ownership is decided by the caller.
pub async fn dump(handle: &Handle, table: u32, mut each: impl FnMut(Dumped)) -> Result<()> {
    for mut message in [
        RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(table)
            .build(),
        RouteMessageBuilder::<Ipv6Addr>::new()
            .table_id(table)
            .build(),
    ] {
        // Zero means "any" in a strict dump: all protocols, all types.
        message.header.protocol = RouteProtocol::Unspec;
        message.header.kind = RouteType::Unspec;
        message.header.scope = RouteScope::Universe;
        for_each(handle.route().get(message).execute(), "routes", |m| {
            if let Some(d) = parse(&m).filter(|d| d.route.key.table == table) {
                each(d);
            }
        })
        .await?;
    }
    Ok(())
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn parse(msg: &RouteMessage) -> Option<Dumped> {
    let h = &msg.header;
    let mut dst = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut table = u32::from(h.table);
    let mut route = Route {
        key: RouteKey {
            table: 0,
            dst: IpNetwork::from(dst),
            metric: 0,
        },
        kind: match h.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::BlackHole => RouteKind::Blackhole,
            RouteType::Unreachable => RouteKind::Unreachable,
            RouteType::Prohibit => RouteKind::Prohibit,
            other => RouteKind::Other(u8::from(other)),
        },
        via: None,
        dev: String::new(),
        onlink: h.flags.contains(RouteFlags::Onlink),
        mtu: None,
        protocol: u8::from(h.protocol),
    };
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = address(a)?,
            RouteAttribute::Gateway(a) => route.via = address(a),
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Priority(metric) => route.key.metric = *metric,
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    if let RouteMetric::Mtu(mtu) = m {
                        route.mtu = Some(*mtu);
                    }
                }
            }
            _ => {}
        }
    }
    route.key.table = table;
    route.key.dst = IpNetwork::new(dst, h.destination_prefix_length).ok()?;
    // IPv6 reject routes name the loopback device; only unicast routes
    // leave through a device of their own.
    if route.kind != RouteKind::Unicast {
        oif = None;
    }
    Some(Dumped { route, oif })
}

fn message(route: &Route, oif: Option<u32>) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .table_id(route.key.table)
        .protocol(RouteProtocol::from(route.protocol));
    if route.key.metric != 0 {
        builder = builder.priority(route.key.metric);
    }
    if let Some(index) = oif {
        builder = builder.output_interface(index);
    }
    if route.onlink {
        builder = builder.onlink();
    }
    let mut message = builder.build();
    let (dst, prefix) = (route.key.dst.network(), route.key.dst.prefix());
    message.header.address_family = match dst {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.destination_prefix_length = prefix;
    message
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    if let Some(via) = route.via {
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(via)));
    }
    if let Some(mtu) = route.mtu {
        message
            .attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    message
}

pub async fn replace(handle: &Handle, route: &Route, oif: Option<u32>) -> Result<()> {
    let mut message = message(route, oif);
    message.header.kind = match route.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
        RouteKind::Other(n) => RouteType::from(n),
    };
    let done = handle.route().add(message).replace().execute().await;
    done.map_err(nl_err(|| format!("route replace {route}")))
}

/// Delete exactly this route: the kernel matches table, destination,
/// metric and protocol, so a route that turned foreign meanwhile survives.
pub async fn del(handle: &Handle, route: &Route) -> Result<()> {
    let mut msg = message(route, None);
    msg.header.kind = RouteType::Unspec;
    msg.header.scope = RouteScope::NoWhere;
    msg.attributes
        .retain(|a| !matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::Metrics(_)));
    let done = handle.route().del(msg).execute().await;
    ignoring(done, libc::ESRCH, || format!("route del {route}"))
}

impl Dumped {
    /// The route with its output device resolved to a name.
    pub fn named(self, names: &BTreeMap<u32, String>) -> Route {
        let mut route = self.route;
        if let Some(name) = self.oif.and_then(|i| names.get(&i)) {
            route.dev = name.clone();
        }
        route
    }
}
