//! Which notifications are ours (pure): routes of our protocol (or an adopted
//! one) in our table; our two devices; permanent neighbours and FDB entries
//! on the VXLAN device, and any deletion there; addresses on our devices. A
//! device counts when it differs from the map (MTU, up/down, MAC, kind data),
//! so carrier and flag churn stays quiet. Our own writes come back too; the
//! agent coalesces them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourMessage;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::dataplane::neighbours::{destination, is_permanent, lladdr};
use crate::dataplane::routes;
use crate::model::Config;
use crate::plan::{is_our_device, route_owner, Fdb, Neigh, RouteOwner, Touched};

/// What the monitor remembers of a link.
#[derive(Debug, Clone, PartialEq)]
struct LinkState {
    name: String,
    mtu: u32,
    up: bool,
    /// Only for our devices: MAC, kind and kind data (VNI, port, ...).
    identity: Option<(Option<Vec<u8>>, Vec<LinkInfo>)>,
}

pub(super) struct Filter {
    config: Config,
    pub(super) uplink: Option<String>,
    links: HashMap<u32, LinkState>,
}

impl Filter {
    pub(super) fn new(config: &Config) -> Filter {
        Filter {
            config: config.clone(),
            uplink: None,
            links: HashMap::new(),
        }
    }

    fn watched(&self, name: &str) -> bool {
        is_our_device(&self.config, name) || self.uplink.as_deref() == Some(name)
    }

    fn name_of(&self, index: u32) -> Option<&str> {
        self.links.get(&index).map(|l| l.name.as_str())
    }

    pub(super) fn reset_links(&mut self, links: &[LinkMessage]) {
        self.links.clear();
        for link in links.iter().filter(|l| is_plain_link(l)) {
            let state = self.link_state(link, None);
            self.links.insert(link.header.index, state);
        }
    }

    /// What to report of one notification, if it is about what we own.
    pub(super) fn event(&mut self, message: &RouteNetlinkMessage) -> Option<String> {
        match message {
            RouteNetlinkMessage::NewRoute(m) => self.route(m, "added or changed"),
            RouteNetlinkMessage::DelRoute(m) => self.route(m, "deleted"),
            RouteNetlinkMessage::NewLink(m) => self.new_link(m),
            RouteNetlinkMessage::DelLink(m) => self.del_link(m),
            RouteNetlinkMessage::NewNeighbour(m) => self.neighbour(m, false),
            RouteNetlinkMessage::DelNeighbour(m) => self.neighbour(m, true),
            RouteNetlinkMessage::NewAddress(m) => self.address(m, "added"),
            RouteNetlinkMessage::DelAddress(m) => self.address(m, "deleted"),
            _ => None,
        }
    }

    /// The one object of ours a notification names, when repairing it
    /// alone is enough: a route of our own protocol, a neighbour or an FDB
    /// entry on our VXLAN devices. Call after [`Filter::event`] said it is
    /// ours. `None`: only a full pass will do.
    pub(super) fn touched(&self, message: &RouteNetlinkMessage) -> Option<Touched> {
        match message {
            RouteNetlinkMessage::NewRoute(m) => self.touched_route(m, false),
            RouteNetlinkMessage::DelRoute(m) => self.touched_route(m, true),
            RouteNetlinkMessage::NewNeighbour(m) => self.touched_neighbour(m, false),
            RouteNetlinkMessage::DelNeighbour(m) => self.touched_neighbour(m, true),
            _ => None,
        }
    }

    /// Linux before 6.x sends, beside the VXLAN driver's own FDB notice
    /// (which names the destination), a generic one without NDA_DST for
    /// every FDB change made through netlink. It repeats what the first
    /// said; acting on it would cost a full pass per FDB change.
    pub(super) fn is_fdb_echo_without_destination(message: &RouteNetlinkMessage) -> bool {
        match message {
            RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m) => {
                m.header.family == AddressFamily::Bridge && destination(m).is_none()
            }
            _ => false,
        }
    }

    fn touched_route(&self, m: &RouteMessage, deleted: bool) -> Option<Touched> {
        let dumped = routes::parse_message(m)?;
        let mut route = dumped.route;
        if route.protocol != self.config.route_protocol
            || route.key.table != self.config.route_table
        {
            return None;
        }
        if let Some(index) = dumped.oif {
            route.dev = self.name_of(index)?.to_string();
        }
        let key = route.key;
        Some(Touched::Route {
            key,
            now: (!deleted).then_some(route),
        })
    }

    fn touched_neighbour(&self, m: &NeighbourMessage, deleted: bool) -> Option<Touched> {
        let dev = self.name_of(m.header.ifindex)?.to_string();
        match m.header.family {
            AddressFamily::Inet | AddressFamily::Inet6 => {
                let ip = destination(m)?;
                let now = match deleted {
                    true => None,
                    false => Some(Neigh {
                        dev,
                        ip,
                        mac: lladdr(m)?,
                    }),
                };
                Some(Touched::Neigh { ip, now })
            }
            AddressFamily::Bridge => {
                let mac = lladdr(m)?;
                let now = match deleted {
                    true => None,
                    false => Some(Fdb {
                        dev,
                        mac,
                        dst: destination(m)?,
                    }),
                };
                Some(Touched::Fdb { mac, now })
            }
            _ => None,
        }
    }

    fn route(&self, m: &RouteMessage, verb: &str) -> Option<String> {
        let h = &m.header;
        let mut dst: IpAddr = match h.address_family {
            AddressFamily::Inet => Ipv4Addr::UNSPECIFIED.into(),
            AddressFamily::Inet6 => Ipv6Addr::UNSPECIFIED.into(),
            _ => return None,
        };
        let mut table = u32::from(h.table);
        for attr in &m.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = (*ip).into(),
                RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = (*ip).into(),
                _ => {}
            }
        }
        let (protocol, prefix_len) = (u8::from(h.protocol), h.destination_prefix_length);
        if route_owner(&self.config, protocol, table, prefix_len) == RouteOwner::Foreign {
            return None;
        }
        Some(format!(
            "route {dst}/{prefix_len} (proto {protocol}) {verb}"
        ))
    }

    fn link_state(&self, m: &LinkMessage, old: Option<&LinkState>) -> LinkState {
        let mut name = None;
        let mut mtu = old.map_or(0, |o| o.mtu);
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n),
                LinkAttribute::Mtu(v) => mtu = *v,
                _ => {}
            }
        }
        let name = match (name, old) {
            (Some(n), _) => n.clone(),
            (None, Some(o)) => o.name.clone(),
            (None, None) => String::new(),
        };
        let identity = is_our_device(&self.config, &name).then(|| {
            let mut mac = None;
            let mut info = Vec::new();
            for attr in &m.attributes {
                match attr {
                    LinkAttribute::Address(bytes) => mac = Some(bytes.clone()),
                    LinkAttribute::LinkInfo(infos) => info = infos.clone(),
                    _ => {}
                }
            }
            (mac, info)
        });
        LinkState {
            name,
            mtu,
            up: m.header.flags.contains(LinkFlags::Up),
            identity,
        }
    }

    fn new_link(&mut self, m: &LinkMessage) -> Option<String> {
        if !is_plain_link(m) {
            return None;
        }
        let index = m.header.index;
        let old = self.links.get(&index);
        let new = self.link_state(m, old);
        let what = self.link_change(old, &new);
        self.links.insert(index, new);
        what
    }

    fn link_change(&self, old: Option<&LinkState>, new: &LinkState) -> Option<String> {
        let was_watched = old.is_some_and(|o| self.watched(&o.name));
        if !was_watched && !self.watched(&new.name) {
            return None;
        }
        let Some(old) = old else {
            return Some(format!("link {} appeared", new.name));
        };
        if old.name != new.name {
            return Some(format!("link {} renamed to {}", old.name, new.name));
        }
        let mut changes = Vec::new();
        if old.mtu != new.mtu {
            changes.push(format!("mtu {} -> {}", old.mtu, new.mtu));
        }
        if old.up != new.up {
            changes.push(if new.up { "set up" } else { "set down" }.to_string());
        }
        if old.identity != new.identity {
            changes.push("attributes changed".to_string());
        }
        if changes.is_empty() {
            return None;
        }
        Some(format!("link {} {}", new.name, changes.join(", ")))
    }

    fn del_link(&mut self, m: &LinkMessage) -> Option<String> {
        if !is_plain_link(m) {
            return None;
        }
        let old = self.links.remove(&m.header.index)?;
        self.watched(&old.name)
            .then(|| format!("link {} deleted", old.name))
    }

    /// Neighbour (AF_INET, AF_INET6) and FDB (AF_BRIDGE) entries on the
    /// VXLAN devices: a deletion always counts (a deleted permanent entry is
    /// reported in the state it fell to), an addition or change only when
    /// permanent.
    fn neighbour(&self, m: &NeighbourMessage, deleted: bool) -> Option<String> {
        let vxlan = self.name_of(m.header.ifindex)?;
        if vxlan != self.config.vxlan_device && vxlan != self.config.vxlan6_device {
            return None;
        }
        if !deleted && !is_permanent(m.header.state) {
            return None; // ARP churn: STALE, REACHABLE, ...
        }
        let mac = lladdr(m).map_or(String::new(), |mac| format!(" lladdr {mac}"));
        let dst = |prefix| destination(m).map_or(String::new(), |ip| format!(" {prefix}{ip}"));
        // In the kernel's attribute order: NDA_DST first in ARP, last in FDB.
        let what = match m.header.family {
            AddressFamily::Inet | AddressFamily::Inet6 => format!("neigh{}{mac}", dst("")),
            AddressFamily::Bridge => format!("fdb{mac}{}", dst("dst ")),
            _ => return None,
        };
        let verb = if deleted {
            "deleted"
        } else {
            "added or changed"
        };
        Some(format!("{what} on {vxlan} {verb}"))
    }

    fn address(&self, m: &AddressMessage, verb: &str) -> Option<String> {
        let dev = self.name_of(m.header.index)?;
        if !self.watched(dev) {
            return None;
        }
        let ip = m.attributes.iter().fold(None, |found, attr| match attr {
            AddressAttribute::Local(ip) => Some(*ip),
            AddressAttribute::Address(ip) => found.or(Some(*ip)),
            _ => found,
        });
        let ip = ip.unwrap_or(Ipv4Addr::UNSPECIFIED.into());
        // The kernel gives every device an IPv6 link-local address: not ours.
        if matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
            return None;
        }
        let len = m.header.prefix_len;
        Some(format!("address {ip}/{len} on {dev} {verb}"))
    }
}

/// Link messages of the device itself; AF_BRIDGE ones describe bridge
/// ports (an RTM_DELLINK there means "left the bridge", not "deleted").
fn is_plain_link(m: &LinkMessage) -> bool {
    m.header.interface_family == AddressFamily::Unspec
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVxlan};
    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourState,
    };
    use rtnetlink::packet_route::route::{RouteProtocol, RouteType};

    use super::*;
    use crate::dataplane::neighbours::NUD_PERMANENT;
    use RouteNetlinkMessage as M;

    const VXLAN: u32 = 7;
    const ETH0: u32 = 2;

    fn filter() -> Filter {
        let config = Config {
            adopt_route_protocols: vec![12],
            ..Config::default()
        };
        let mut f = Filter::new(&config);
        f.reset_links(&[
            link(ETH0, "eth0", 1500, true, None),
            link(VXLAN, "vxlan.calico", 1450, true, Some(4096)),
        ]);
        f
    }

    fn link(index: u32, name: &str, mtu: u32, up: bool, vni: Option<u32>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(vni) = vni {
            m.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![InfoVxlan::Id(vni)])),
            ]));
        }
        m
    }

    fn route(dst: [u8; 4], len: u8, protocol: u8, table: u32) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = len;
        m.header.protocol = RouteProtocol::from(protocol);
        m.header.table = 254;
        m.attributes.push(RouteAttribute::Table(table));
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst.into())));
        m
    }

    fn neigh(family: AddressFamily, index: u32, state: u16) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = family;
        m.header.ifindex = index;
        m.header.state = NeighbourState::from(state);
        let ip = NeighbourAddress::Inet(Ipv4Addr::new(10, 244, 2, 0));
        if family == AddressFamily::Inet {
            m.attributes.push(NeighbourAttribute::Destination(ip));
        }
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]));
        m
    }

    #[test]
    fn objects_of_ours_are_named_whole_for_a_repair_alone() {
        let f = filter();
        let mut ours = route([10, 244, 2, 0], 24, 91, 254);
        ours.header.kind = RouteType::Unicast;
        let gateway = RouteAddress::Inet(Ipv4Addr::new(10, 244, 2, 0));
        ours.attributes
            .extend([RouteAttribute::Oif(VXLAN), RouteAttribute::Gateway(gateway)]);
        match f.touched(&M::NewRoute(ours.clone())) {
            Some(Touched::Route { key, now: Some(r) }) => {
                assert_eq!(key.dst.to_string(), "10.244.2.0/24");
                assert_eq!((r.dev.as_str(), r.protocol), ("vxlan.calico", 91));
                assert_eq!(r.via, Some(Ipv4Addr::new(10, 244, 2, 0).into()));
            }
            other => panic!("{other:?}"),
        }
        let deleted = f.touched(&M::DelRoute(ours.clone()));
        assert!(matches!(deleted, Some(Touched::Route { now: None, .. })));
        // An adopted protocol, another table, a device the monitor does
        // not know: only a full pass can judge those.
        let bird = route([10, 244, 3, 0], 24, 12, 254);
        assert_eq!(f.touched(&M::DelRoute(bird)), None);
        let elsewhere = route([10, 244, 2, 0], 24, 91, 100);
        assert_eq!(f.touched(&M::DelRoute(elsewhere)), None);
        let mut unknown = ours;
        unknown.attributes.push(RouteAttribute::Oif(99));
        unknown
            .attributes
            .retain(|a| *a != RouteAttribute::Oif(VXLAN));
        assert_eq!(f.touched(&M::NewRoute(unknown)), None);

        let permanent = neigh(AddressFamily::Inet, VXLAN, NUD_PERMANENT);
        let ip: IpAddr = Ipv4Addr::new(10, 244, 2, 0).into();
        let mac = crate::model::Mac([2, 0, 0, 0, 0, 1]);
        let dev = "vxlan.calico".to_string();
        let neigh_now = Neigh { dev, ip, mac };
        assert_eq!(
            f.touched(&M::NewNeighbour(permanent.clone())),
            Some(Touched::Neigh {
                ip,
                now: Some(neigh_now)
            })
        );
        assert_eq!(
            f.touched(&M::DelNeighbour(permanent)),
            Some(Touched::Neigh { ip, now: None })
        );
        let mut fdb = neigh(AddressFamily::Bridge, VXLAN, NUD_PERMANENT);
        let generic = M::NewNeighbour(fdb.clone());
        assert!(Filter::is_fdb_echo_without_destination(&generic));
        let dst = NeighbourAddress::Inet(Ipv4Addr::new(10, 250, 0, 2));
        fdb.attributes.push(NeighbourAttribute::Destination(dst));
        assert!(!Filter::is_fdb_echo_without_destination(&M::NewNeighbour(
            fdb.clone()
        )));
        match f.touched(&M::NewNeighbour(fdb)) {
            Some(Touched::Fdb {
                mac: m,
                now: Some(entry),
            }) => {
                assert_eq!((m, entry.dst), (mac, Ipv4Addr::new(10, 250, 0, 2).into()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routes_of_ours_in_our_table_only() {
        let mut f = filter();
        let del = M::DelRoute(route([10, 244, 2, 0], 24, 91, 254));
        assert_eq!(
            f.event(&del).as_deref(),
            Some("route 10.244.2.0/24 (proto 91) deleted")
        );
        let new = M::NewRoute(route([10, 244, 2, 0], 24, 91, 254));
        assert!(f.event(&new).unwrap().contains("added or changed"));
        // Adopted protocol: yes, except a default route.
        let bird = M::DelRoute(route([10, 244, 3, 0], 24, 12, 254));
        assert!(f.event(&bird).is_some());
        let bird_default = M::DelRoute(route([0, 0, 0, 0], 0, 12, 254));
        assert_eq!(f.event(&bird_default), None);
        // Static, kernel, another table.
        for m in [
            route([10, 244, 2, 0], 24, 4, 254),
            route([10, 250, 0, 0], 24, 2, 254),
            route([10, 244, 2, 0], 24, 91, 100),
        ] {
            assert_eq!(f.event(&M::DelRoute(m)), None);
        }
    }

    #[test]
    fn links_report_only_relevant_changes_of_our_devices() {
        let mut f = filter();
        let same = link(VXLAN, "vxlan.calico", 1450, true, Some(4096));
        assert_eq!(f.event(&M::NewLink(same)), None);
        let mtu = link(VXLAN, "vxlan.calico", 1400, true, Some(4096));
        assert_eq!(
            f.event(&M::NewLink(mtu)).as_deref(),
            Some("link vxlan.calico mtu 1450 -> 1400")
        );
        let down = link(VXLAN, "vxlan.calico", 1400, false, Some(4096));
        assert!(f.event(&M::NewLink(down)).unwrap().contains("set down"));
        let vni = link(VXLAN, "vxlan.calico", 1400, false, Some(1));
        assert!(f
            .event(&M::NewLink(vni))
            .unwrap()
            .contains("attributes changed"));
        // Other links: silent, until one of them is the watched uplink.
        let eth0 = link(ETH0, "eth0", 9000, true, None);
        assert_eq!(f.event(&M::NewLink(eth0)), None);
        f.uplink = Some("eth0".into());
        let eth0 = link(ETH0, "eth0", 9000, false, None);
        assert_eq!(
            f.event(&M::NewLink(eth0)).as_deref(),
            Some("link eth0 set down")
        );
        // A bridge-port DELLINK is not a deletion.
        let mut port = link(VXLAN, "vxlan.calico", 1400, false, Some(1));
        port.header.interface_family = AddressFamily::Bridge;
        assert_eq!(f.event(&M::DelLink(port)), None);
        let del = link(VXLAN, "vxlan.calico", 1400, false, Some(1));
        assert_eq!(
            f.event(&M::DelLink(del)).as_deref(),
            Some("link vxlan.calico deleted")
        );
        // Renamed in: appears under its new name.
        let renamed = link(9, "tunl0", 1480, false, None);
        assert_eq!(
            f.event(&M::NewLink(renamed)).as_deref(),
            Some("link tunl0 appeared")
        );
    }

    #[test]
    fn neighbours_on_vxlan_permanent_or_deleted() {
        let mut f = filter();
        let permanent = neigh(AddressFamily::Inet, VXLAN, NUD_PERMANENT);
        assert_eq!(
            f.event(&M::NewNeighbour(permanent)).as_deref(),
            Some("neigh 10.244.2.0 lladdr 02:00:00:00:00:01 on vxlan.calico added or changed")
        );
        let stale = neigh(AddressFamily::Inet, VXLAN, 0x04);
        assert_eq!(f.event(&M::NewNeighbour(stale)), None);
        let failed = neigh(AddressFamily::Inet, VXLAN, 0x20);
        assert!(f.event(&M::DelNeighbour(failed)).is_some());
        let fdb = neigh(AddressFamily::Bridge, VXLAN, 0xc0);
        assert!(f
            .event(&M::NewNeighbour(fdb))
            .unwrap()
            .starts_with("fdb lladdr 02:00:00:00:00:01"));
        let elsewhere = neigh(AddressFamily::Inet, ETH0, NUD_PERMANENT);
        assert_eq!(f.event(&M::DelNeighbour(elsewhere)), None);
    }

    #[test]
    fn addresses_on_our_devices() {
        let mut f = filter();
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.index = VXLAN;
        m.header.prefix_len = 32;
        let ip = Ipv4Addr::new(10, 244, 1, 0);
        m.attributes.push(AddressAttribute::Local(ip.into()));
        assert_eq!(
            f.event(&M::DelAddress(m.clone())).as_deref(),
            Some("address 10.244.1.0/32 on vxlan.calico deleted")
        );
        m.header.index = ETH0;
        assert_eq!(f.event(&M::DelAddress(m)), None);
    }
}
