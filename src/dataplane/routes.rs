//! Routes: a strict-check dump of one table, split into ours (our protocol
//! or an adopted one) and the keys of everyone else's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
    RouteType,
};
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

/// Every IPv4 route of `table`, handed to `each` as it is parsed. The
/// kernel filters by table and family (NETLINK_GET_STRICT_CHK); ownership
/// is decided by the caller.
pub async fn dump(handle: &Handle, table: u32, mut each: impl FnMut(Dumped)) -> Result<()> {
    let mut message = RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(table)
        .build();
    // Zero means "any" in a strict dump: all protocols, all types.
    message.header.protocol = RouteProtocol::Unspec;
    message.header.kind = RouteType::Unspec;
    message.header.scope = RouteScope::Universe;
    for_each(handle.route().get(message).execute(), "routes", |m| {
        if let Some(d) = parse(&m).filter(|d| d.route.key.table == table) {
            each(d);
        }
    })
    .await
}

fn parse(msg: &RouteMessage) -> Option<Dumped> {
    let h = &msg.header;
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut table = u32::from(h.table);
    let mut route = Route {
        key: RouteKey {
            table: 0,
            dst: Ipv4Network::from(Ipv4Addr::UNSPECIFIED),
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
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.via = Some(*ip),
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
    route.key.dst = Ipv4Network::new(dst, h.destination_prefix_length).ok()?;
    Some(Dumped { route, oif })
}

fn message(route: &Route, oif: Option<u32>) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.key.dst.network(), route.key.dst.prefix())
        .table_id(route.key.table)
        .protocol(RouteProtocol::from(route.protocol));
    if route.key.metric != 0 {
        builder = builder.priority(route.key.metric);
    }
    if let Some(index) = oif {
        builder = builder.output_interface(index);
    }
    if let Some(via) = route.via {
        builder = builder.gateway(via);
    }
    if route.onlink {
        builder = builder.onlink();
    }
    let mut message = builder.build();
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
    done.map_err(nl_err(format!("route replace {route}")))
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
    ignoring(done, libc::ESRCH, format!("route del {route}"))
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
