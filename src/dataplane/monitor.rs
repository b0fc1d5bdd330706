//! Netlink notifications on what we own, for the agent's reconcile loop: a
//! route, neighbour, FDB entry, address or device of ours that someone else
//! deleted or changed is reported at once, and so is a lost notification
//! (the kernel's ENOBUFS on a full socket), after which only a full resync
//! is safe.
//!
//! The monitor subscribes to the IPv4 route, link, neighbour and IPv4
//! address groups and filters by [`Config`]: routes of our protocol (or an
//! adopted one) in our table; our two devices; permanent neighbours and FDB
//! entries on the VXLAN device, and any deletion there; addresses on our
//! devices. Our own writes come back too; the agent coalesces them.
//!
//! Devices are known by name. The monitor keeps an index -> link map, filled
//! by a link dump when it starts (after subscribing, so no link is missing
//! from the map) and kept current by link notifications; after an overrun it
//! dumps again before it reports [`KernelEvent::Overrun`]. A change to one of
//! our devices is reported when it differs from what the map holds (MTU,
//! up/down, MAC, kind data), so carrier and flag churn stays quiet.
//!
//! How an overrun surfaces: netlink-proto 0.14 turns `ENOBUFS` from
//! `recvfrom` into a synthetic `NLMSG_OVERRUN` message with sequence number
//! 0, which matches no request and so arrives on the unsolicited channel as
//! `NetlinkPayload::Overrun`; the connection keeps reading afterwards.
//!
//! Caveat that is the kernel's, not ours: IPv4 removes routes whose device
//! went down (or lost its last address) without sending RTM_DELROUTE. For
//! our tunnel devices the link event covers that; for native routes via the
//! uplink, tell the monitor the uplink ([`Monitor::watch_uplink`]) and its
//! up/down, MTU and address changes are reported too.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, AsyncSocket, Socket, SocketAddr};
use rtnetlink::MulticastGroup;

use crate::model::{Config, Mac};
use crate::{Error, Result};

/// Receive buffer asked for by [`Monitor::start`]: room for a burst of some
/// ten thousand notifications (the kernel doubles it for bookkeeping).
pub const RECEIVE_BUFFER: usize = 4 << 20;

const NUD_PERMANENT: u16 = 0x80;
const DUMP_TIMEOUT_SECS: i64 = 5;

/// Why the agent should look at the kernel again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// Something of ours changed (deleted or modified): a short description
    /// for the log, e.g. "route 10.244.2.0/24 (proto 91) deleted".
    Changed(String),
    /// The kernel dropped notifications (ENOBUFS): only a full resync is safe.
    Overrun,
}

type Messages = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A subscription to the kernel's notifications on what we own, in the
/// network namespace of the thread that called [`Monitor::start`].
pub struct Monitor {
    messages: Messages,
    filter: Filter,
    /// A plain blocking socket for link dumps, opened in the monitor's
    /// namespace (whichever thread later polls the monitor).
    dumper: LinkDumper,
    connection: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Subscribe in the calling thread's network namespace (must run inside
    /// a tokio runtime, like `Dataplane::connect`). Start the monitor before
    /// the agent's first full observe: a change made between the two is then
    /// either seen by that observe or reported here.
    pub fn start(config: &Config) -> Result<Monitor> {
        Monitor::start_with_receive_buffer(config, RECEIVE_BUFFER)
    }

    /// [`Monitor::start`] with a chosen receive buffer (bytes, before the
    /// kernel doubles it). Tests use a tiny one to provoke an overrun.
    pub fn start_with_receive_buffer(config: &Config, bytes: usize) -> Result<Monitor> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::io(
                "starting the netlink monitor",
                io::Error::other(format!("not inside a tokio runtime: {e}")),
            )
        })?;
        // Subscribe first, then dump: every link is in the dump or in a
        // later notification. (A change of our device in that instant is
        // already in the dump and goes unreported; the agent's first full
        // observe, which comes after `start`, sees it.)
        let (mut connection, _handle, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Ipv4Route,
            MulticastGroup::Link,
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Ifaddr,
        ])
        .map_err(|e| Error::io("subscribing to netlink notifications", e))?;
        set_receive_buffer(connection.socket_mut().socket_mut(), bytes)?;

        let mut dumper = LinkDumper::open()?;
        let mut filter = Filter::new(config);
        filter.reset_links(&dumper.dump()?);

        // `_handle` is dropped: the monitor sends no requests on this socket.
        let connection = runtime.spawn(connection);
        Ok(Monitor {
            messages,
            filter,
            dumper,
            connection,
        })
    }

    /// Also report the uplink going down or up, a change of its MTU and
    /// addresses added or deleted on it: IPv4 drops routes via a device that
    /// goes down without telling anyone, so native routes need this.
    /// `None` stops watching.
    pub fn watch_uplink(&mut self, name: Option<&str>) {
        self.filter.uplink = name.map(str::to_string);
    }

    /// Next event; None when the socket is gone. Cancel-safe: an event is
    /// never lost when the future is dropped (fine in `tokio::select!`).
    pub async fn next(&mut self) -> Option<KernelEvent> {
        loop {
            let (message, _) = self.messages.next().await?;
            match message.payload {
                NetlinkPayload::InnerMessage(inner) => {
                    if let Some(what) = self.filter.event(&inner) {
                        tracing::debug!(%what, "netlink monitor");
                        return Some(KernelEvent::Changed(what));
                    }
                }
                NetlinkPayload::Overrun(_) => {
                    tracing::warn!("netlink monitor: the kernel dropped notifications (ENOBUFS)");
                    // Link notifications were lost too: dump again before
                    // the agent's resync, so later events compare against
                    // the current state.
                    match self.dumper.dump() {
                        Ok(links) => self.filter.reset_links(&links),
                        Err(e) => tracing::warn!(error = %e, "netlink monitor: link dump"),
                    }
                    return Some(KernelEvent::Overrun);
                }
                other => tracing::debug!(?other, "netlink monitor: ignored message"),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // The connection would otherwise linger until the next notification.
        self.connection.abort();
    }
}

/// SO_RCVBUFFORCE (CAP_NET_ADMIN, may exceed rmem_max), else SO_RCVBUF.
fn set_receive_buffer(socket: &Socket, bytes: usize) -> Result<()> {
    setsockopt(socket, sockopt::RcvBufForce, &bytes)
        .or_else(|_| setsockopt(socket, sockopt::RcvBuf, &bytes))
        .map_err(|e| Error::io("setting the netlink monitor's receive buffer", e.into()))
}

/// Blocking RTM_GETLINK dumps on a socket of its own.
struct LinkDumper {
    socket: Socket,
    sequence: u32,
}

impl LinkDumper {
    fn open() -> Result<LinkDumper> {
        let context = "opening a netlink socket for link dumps";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io(context, e))?;
        socket.bind_auto().map_err(|e| Error::io(context, e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io(context, e))?;
        // The kernel always answers a dump; never hang the agent if not.
        setsockopt(
            &socket,
            sockopt::ReceiveTimeout,
            &TimeVal::new(DUMP_TIMEOUT_SECS, 0),
        )
        .map_err(|e| Error::io(context, e.into()))?;
        Ok(LinkDumper {
            socket,
            sequence: 0,
        })
    }

    fn dump(&mut self) -> Result<Vec<LinkMessage>> {
        let context = "dumping links for the netlink monitor";
        let fail = |e: io::Error| Error::io(context, e);
        self.sequence = self.sequence.wrapping_add(1);
        let mut request =
            NetlinkMessage::from(RouteNetlinkMessage::GetLink(LinkMessage::default()));
        request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        request.header.sequence_number = self.sequence;
        request.finalize();
        let mut buffer = vec![0; request.buffer_len()];
        request.serialize(&mut buffer);
        self.socket.send(&buffer, 0).map_err(fail)?;

        let mut links = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(fail)?;
            let mut rest = datagram.as_slice();
            while !rest.is_empty() {
                let length = NetlinkBuffer::new_checked(rest)
                    .map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?
                    .length() as usize;
                let (this, next) = rest.split_at(length.next_multiple_of(4).min(rest.len()));
                rest = next;
                let message = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(this) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "netlink monitor: unparsable link skipped");
                        continue;
                    }
                };
                if message.header.sequence_number != self.sequence {
                    continue; // the tail of an earlier, abandoned dump
                }
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(links),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(fail(e.to_io())),
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        links.push(link)
                    }
                    _ => {}
                }
            }
        }
    }
}

/// What the monitor remembers of a link.
#[derive(Debug, Clone, PartialEq)]
struct LinkState {
    name: String,
    mtu: u32,
    up: bool,
    /// Only for our devices: MAC, kind and kind data (VNI, port, ...).
    identity: Option<(Option<Vec<u8>>, Vec<LinkInfo>)>,
}

/// Decides which notifications are about what we own. Pure: no I/O.
struct Filter {
    protocol: u8,
    adopted: Vec<u8>,
    table: u32,
    ipip: String,
    vxlan: String,
    uplink: Option<String>,
    links: HashMap<u32, LinkState>,
}

impl Filter {
    fn new(config: &Config) -> Filter {
        Filter {
            protocol: config.route_protocol,
            adopted: config.adopt_route_protocols.clone(),
            table: config.route_table,
            ipip: config.ipip_device.clone(),
            vxlan: config.vxlan_device.clone(),
            uplink: None,
            links: HashMap::new(),
        }
    }

    fn ours(&self, name: &str) -> bool {
        name == self.ipip || name == self.vxlan
    }

    fn watched(&self, name: &str) -> bool {
        self.ours(name) || self.uplink.as_deref() == Some(name)
    }

    fn name_of(&self, index: u32) -> Option<&str> {
        self.links.get(&index).map(|l| l.name.as_str())
    }

    fn reset_links(&mut self, links: &[LinkMessage]) {
        self.links.clear();
        for link in links.iter().filter(|l| is_plain_link(l)) {
            let state = self.link_state(link, None);
            self.links.insert(link.header.index, state);
        }
    }

    /// What to report of one notification, if it is about what we own.
    fn event(&mut self, message: &RouteNetlinkMessage) -> Option<String> {
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

    fn route(&self, m: &RouteMessage, verb: &str) -> Option<String> {
        let h = &m.header;
        if h.address_family != AddressFamily::Inet {
            return None;
        }
        let protocol = u8::from(h.protocol);
        // A default route is never adopted (as in `Dataplane::observe`).
        let owned = protocol == self.protocol
            || (h.destination_prefix_length > 0 && self.adopted.contains(&protocol));
        if !owned {
            return None;
        }
        let mut table = u32::from(h.table);
        let mut dst = Ipv4Addr::UNSPECIFIED;
        for attr in &m.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                _ => {}
            }
        }
        if table != self.table {
            return None;
        }
        Some(format!(
            "route {dst}/{} (proto {protocol}) {verb}",
            h.destination_prefix_length
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
        let identity = self.ours(&name).then(|| {
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

    /// ARP (AF_INET) and FDB (AF_BRIDGE) entries on the VXLAN device: a
    /// deletion always counts (a deleted permanent entry is reported in the
    /// state it fell to), an addition or change only when permanent.
    fn neighbour(&self, m: &NeighbourMessage, deleted: bool) -> Option<String> {
        let h = &m.header;
        if self.name_of(h.ifindex) != Some(self.vxlan.as_str()) {
            return None;
        }
        let permanent = u16::from(h.state) & NUD_PERMANENT != 0;
        if !deleted && !permanent {
            return None; // ARP churn: STALE, REACHABLE, ...
        }
        let mut what = match h.family {
            AddressFamily::Inet => "neigh".to_string(),
            AddressFamily::Bridge => "fdb".to_string(),
            _ => return None,
        };
        for attr in &m.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))
                    if h.family == AddressFamily::Inet =>
                {
                    let _ = write!(what, " {ip}");
                }
                // In AF_BRIDGE messages the parser cannot know the family.
                NeighbourAttribute::Destination(NeighbourAddress::Other(bytes))
                    if h.family == AddressFamily::Bridge =>
                {
                    if let Ok(ip) = <[u8; 4]>::try_from(bytes.as_slice()) {
                        let _ = write!(what, " dst {}", Ipv4Addr::from(ip));
                    }
                }
                NeighbourAttribute::LinkLayerAddress(bytes) => {
                    if let Some(mac) = Mac::from_slice(bytes) {
                        let _ = write!(what, " lladdr {mac}");
                    }
                }
                _ => {}
            }
        }
        let verb = if deleted {
            "deleted"
        } else {
            "added or changed"
        };
        Some(format!("{what} on {} {verb}", self.vxlan))
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
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Some(format!(
            "address {ip}/{} on {dev} {verb}",
            m.header.prefix_len
        ))
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
    use rtnetlink::packet_route::neighbour::NeighbourState;
    use rtnetlink::packet_route::route::RouteProtocol;

    use super::*;

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
        if family == AddressFamily::Inet {
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    Ipv4Addr::new(10, 244, 2, 0),
                )));
        }
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]));
        m
    }

    #[test]
    fn start_outside_a_runtime_is_an_error_and_next_is_send() {
        let err = Monitor::start(&Config::default())
            .err()
            .expect("no runtime");
        assert!(err.to_string().contains("tokio runtime"), "{err}");
        fn send<T: Send>(_: &T) {}
        fn check(monitor: &mut Monitor) {
            send(&monitor.next());
        }
        let _ = check;
    }

    #[test]
    fn routes_of_ours_in_our_table_only() {
        let mut f = filter();
        let del = RouteNetlinkMessage::DelRoute(route([10, 244, 2, 0], 24, 91, 254));
        assert_eq!(
            f.event(&del).as_deref(),
            Some("route 10.244.2.0/24 (proto 91) deleted")
        );
        let new = RouteNetlinkMessage::NewRoute(route([10, 244, 2, 0], 24, 91, 254));
        assert!(f.event(&new).unwrap().contains("added or changed"));
        // Adopted protocol: yes, except a default route.
        let bird = RouteNetlinkMessage::DelRoute(route([10, 244, 3, 0], 24, 12, 254));
        assert!(f.event(&bird).is_some());
        let bird_default = RouteNetlinkMessage::DelRoute(route([0, 0, 0, 0], 0, 12, 254));
        assert_eq!(f.event(&bird_default), None);
        // Static, kernel, another table.
        for m in [
            route([10, 244, 2, 0], 24, 4, 254),
            route([10, 250, 0, 0], 24, 2, 254),
            route([10, 244, 2, 0], 24, 91, 100),
        ] {
            assert_eq!(f.event(&RouteNetlinkMessage::DelRoute(m)), None);
        }
    }

    #[test]
    fn links_report_only_relevant_changes_of_our_devices() {
        let mut f = filter();
        let same = link(VXLAN, "vxlan.calico", 1450, true, Some(4096));
        assert_eq!(f.event(&RouteNetlinkMessage::NewLink(same)), None);
        let mtu = link(VXLAN, "vxlan.calico", 1400, true, Some(4096));
        assert_eq!(
            f.event(&RouteNetlinkMessage::NewLink(mtu)).as_deref(),
            Some("link vxlan.calico mtu 1450 -> 1400")
        );
        let down = link(VXLAN, "vxlan.calico", 1400, false, Some(4096));
        assert!(f
            .event(&RouteNetlinkMessage::NewLink(down))
            .unwrap()
            .contains("set down"));
        let vni = link(VXLAN, "vxlan.calico", 1400, false, Some(1));
        assert!(f
            .event(&RouteNetlinkMessage::NewLink(vni))
            .unwrap()
            .contains("attributes changed"));
        // Other links: silent, until one of them is the watched uplink.
        let eth0 = link(ETH0, "eth0", 9000, true, None);
        assert_eq!(f.event(&RouteNetlinkMessage::NewLink(eth0)), None);
        f.uplink = Some("eth0".into());
        let eth0 = link(ETH0, "eth0", 9000, false, None);
        assert_eq!(
            f.event(&RouteNetlinkMessage::NewLink(eth0)).as_deref(),
            Some("link eth0 set down")
        );
        // A bridge-port DELLINK is not a deletion.
        let mut port = link(VXLAN, "vxlan.calico", 1400, false, Some(1));
        port.header.interface_family = AddressFamily::Bridge;
        assert_eq!(f.event(&RouteNetlinkMessage::DelLink(port)), None);
        let del = link(VXLAN, "vxlan.calico", 1400, false, Some(1));
        assert_eq!(
            f.event(&RouteNetlinkMessage::DelLink(del)).as_deref(),
            Some("link vxlan.calico deleted")
        );
        // Renamed in: appears under its new name.
        let renamed = link(9, "tunl0", 1480, false, None);
        assert_eq!(
            f.event(&RouteNetlinkMessage::NewLink(renamed)).as_deref(),
            Some("link tunl0 appeared")
        );
    }

    #[test]
    fn neighbours_on_vxlan_permanent_or_deleted() {
        let mut f = filter();
        let permanent = neigh(AddressFamily::Inet, VXLAN, NUD_PERMANENT);
        assert_eq!(
            f.event(&RouteNetlinkMessage::NewNeighbour(permanent))
                .as_deref(),
            Some("neigh 10.244.2.0 lladdr 02:00:00:00:00:01 on vxlan.calico added or changed")
        );
        let stale = neigh(AddressFamily::Inet, VXLAN, 0x04);
        assert_eq!(f.event(&RouteNetlinkMessage::NewNeighbour(stale)), None);
        let failed = neigh(AddressFamily::Inet, VXLAN, 0x20);
        assert!(f
            .event(&RouteNetlinkMessage::DelNeighbour(failed))
            .is_some());
        let fdb = neigh(AddressFamily::Bridge, VXLAN, 0xc0);
        assert!(f
            .event(&RouteNetlinkMessage::NewNeighbour(fdb))
            .unwrap()
            .starts_with("fdb lladdr 02:00:00:00:00:01"));
        let elsewhere = neigh(AddressFamily::Inet, ETH0, NUD_PERMANENT);
        assert_eq!(f.event(&RouteNetlinkMessage::DelNeighbour(elsewhere)), None);
    }

    #[test]
    fn addresses_on_our_devices() {
        let mut f = filter();
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.index = VXLAN;
        m.header.prefix_len = 32;
        m.attributes
            .push(AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(
                10, 244, 1, 0,
            ))));
        assert_eq!(
            f.event(&RouteNetlinkMessage::DelAddress(m.clone()))
                .as_deref(),
            Some("address 10.244.1.0/32 on vxlan.calico deleted")
        );
        m.header.index = ETH0;
        assert_eq!(f.event(&RouteNetlinkMessage::DelAddress(m)), None);
    }
}
