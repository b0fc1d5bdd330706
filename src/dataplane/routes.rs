//! Routes: a strict-check dump of one table, split into ours (our protocol
//! or an adopted one) and the keys of everyone else's.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use rtnetlink::packet_core::{NlasIterator, ParseableParametrized};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteLwEnCapType, RouteMessage,
    RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::dump::DumpSocket;
use super::netlink::{errno, ignoring, nl_err};
use crate::plan::{Route, RouteKey, RouteKind};
use crate::Result;

/// `struct rtmsg`, before the attributes.
const RTMSG_LEN: usize = 12;

/// A route as dumped, with its device still an index.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub route: Route,
    pub oif: Option<u32>,
}

/// Every route of `table`, IPv4 then IPv6, handed to `each` as it is
/// parsed. The kernel filters by table and family (NETLINK_GET_STRICT_CHK);
/// ownership is decided by the caller.
pub async fn dump(socket: &DumpSocket, table: u32, mut each: impl FnMut(Dumped)) -> Result<()> {
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
        let request = RouteNetlinkMessage::GetRoute(message);
        socket
            .dump(request, "routes", |kind, payload| {
                if kind != libc::RTM_NEWROUTE {
                    return;
                }
                if let Some(d) = parse(payload).filter(|d| d.route.key.table == table) {
                    each(d);
                }
            })
            .await?;
    }
    Ok(())
}

/// The attributes a route is read from; the rest are not even parsed.
fn wanted(kind: u16) -> bool {
    use libc::{RTA_DST, RTA_GATEWAY, RTA_METRICS, RTA_OIF, RTA_PRIORITY, RTA_TABLE};
    matches!(
        kind,
        RTA_DST | RTA_OIF | RTA_GATEWAY | RTA_PRIORITY | RTA_METRICS | RTA_TABLE
    )
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route notification (already parsed by rtnetlink), read as a dump is.
pub fn parse_message(message: &RouteMessage) -> Option<Dumped> {
    read(&message.header, message.attributes.iter().cloned())
}

/// One message of a route dump (an `rtmsg` and its attributes).
fn parse(payload: &[u8]) -> Option<Dumped> {
    let header = RouteHeader::parse(payload).ok()?;
    let encap = (header.address_family, header.kind, RouteLwEnCapType::None);
    let attributes = NlasIterator::new(payload.get(RTMSG_LEN..)?)
        .filter_map(|nla| nla.ok().filter(|nla| wanted(nla.kind())))
        .filter_map(|nla| RouteAttribute::parse_with_param(&nla, encap).ok());
    read(&header, attributes)
}

fn read(h: &RouteHeader, attributes: impl Iterator<Item = RouteAttribute>) -> Option<Dumped> {
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
    for attr in attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = address(&a)?,
            RouteAttribute::Gateway(a) => route.via = address(&a),
            RouteAttribute::Oif(index) => oif = Some(index),
            RouteAttribute::Priority(metric) => route.key.metric = metric,
            RouteAttribute::Table(t) => table = t,
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    if let RouteMetric::Mtu(mtu) = m {
                        route.mtu = Some(mtu);
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
    let done = handle
        .route()
        .add(typed(route, oif))
        .replace()
        .execute()
        .await;
    done.map_err(nl_err(|| format!("route replace {route}")))
}

/// Add `route` only where its key is free (NLM_F_EXCL); `false` when a
/// route already holds the key, whoever's it is.
pub async fn add(handle: &Handle, route: &Route, oif: Option<u32>) -> Result<bool> {
    match handle.route().add(typed(route, oif)).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(nl_err(|| format!("route add {route}"))(e)),
    }
}

fn typed(route: &Route, oif: Option<u32>) -> RouteMessage {
    let mut message = message(route, oif);
    message.header.kind = match route.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
        RouteKind::Other(n) => RouteType::from(n),
    };
    message
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

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::Emitable;
    use rtnetlink::packet_route::route::RoutePreference;

    use super::*;

    fn bytes(message: &RouteMessage) -> Vec<u8> {
        let mut out = vec![0; message.buffer_len()];
        message.emit(&mut out);
        out
    }

    fn ours(dst: &str, via: Option<&str>) -> Route {
        Route {
            key: RouteKey {
                table: 254,
                dst: dst.parse().unwrap(),
                metric: 1024,
            },
            kind: RouteKind::Unicast,
            via: via.map(|v| v.parse().unwrap()),
            dev: String::new(),
            onlink: true,
            mtu: Some(1430),
            protocol: 91,
        }
    }

    #[test]
    fn a_dumped_route_reads_back_as_it_was_written() {
        for route in [
            ours("10.244.3.0/24", Some("10.244.3.0")),
            ours("fd00:244:3::/64", Some("fe80::a:3")),
        ] {
            let mut message = message(&route, Some(7));
            // What a dump adds that the reader skips.
            message.attributes.extend([
                RouteAttribute::Preference(RoutePreference::Medium),
                RouteAttribute::Table(254),
            ]);
            let read = parse(&bytes(&message)).expect("parsed");
            assert_eq!(read.oif, Some(7));
            assert_eq!(read.route, route);
        }
    }

    #[test]
    fn a_reject_route_has_no_device() {
        let mut unreachable = ours("fd00:244:1::/64", None);
        unreachable.kind = RouteKind::Unreachable;
        unreachable.onlink = false;
        unreachable.mtu = None;
        let mut message = message(&unreachable, Some(1));
        message.header.kind = RouteType::Unreachable;
        let read = parse(&bytes(&message)).expect("parsed");
        assert_eq!(read.oif, None, "IPv6 reports lo for reject routes");
        assert_eq!(read.route, unreachable);
        assert!(parse(&[0; 5]).is_none(), "shorter than an rtmsg");
    }
}
