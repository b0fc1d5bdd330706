//! Permanent ARP and FDB entries on our VXLAN device: everything permanent
//! there is ours; entries the kernel learns or resolves are left alone.

use std::net::IpAddr;

use futures::TryStreamExt;

use rtnetlink::packet_core::{NlasIterator, ParseableParametrized};
use rtnetlink::packet_route::neighbour::NeighbourHeader;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;

use super::dump::DumpSocket;
use super::netlink::{ignoring, nl_err};
use crate::model::Mac;
use crate::plan::{Fdb, Neigh};
use crate::Result;

pub(super) const NUD_PERMANENT: u16 = 0x80;

/// The kernel's entries for `ip` on any device, resolved or not, as
/// (ifindex, state): how far ARP or NDP got for a next hop.
pub async fn states_of(handle: &Handle, ip: IpAddr) -> Result<Vec<(u32, NeighbourState)>> {
    let family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let mut entries = handle
        .neighbours()
        .get()
        .set_address_family(family)
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = entries
        .try_next()
        .await
        .map_err(nl_err(|| format!("reading the neighbour entry of {ip}")))?
    {
        let dst = msg.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            _ => None,
        });
        if dst == Some(ip) {
            out.push((msg.header.ifindex, msg.header.state));
        }
    }
    Ok(out)
}
/// `struct ndmsg`, before the attributes.
const NDMSG_LEN: usize = 12;

/// Permanent neighbours of `family` on `index`, handed to `each` as (ip, mac).
pub async fn dump_neighbours(
    socket: &DumpSocket,
    index: u32,
    family: AddressFamily,
    mut each: impl FnMut(IpAddr, Mac),
) -> Result<()> {
    let mut request = NeighbourMessage::default();
    request.header.family = family;
    request.attributes.push(NeighbourAttribute::IfIndex(index));
    let request = RouteNetlinkMessage::GetNeighbour(request);
    socket
        .dump(request, "neighbours", |kind, payload| {
            if let Some((ip, mac)) = permanent_entry(kind, payload, index) {
                each(ip, mac);
            }
        })
        .await
}

/// Permanent FDB entries of the device itself (`self`), handed to `each`
/// as (mac, dst).
pub async fn dump_fdb(
    socket: &DumpSocket,
    index: u32,
    mut each: impl FnMut(Mac, IpAddr),
) -> Result<()> {
    let mut request = NeighbourMessage::default();
    request.header.family = AddressFamily::Bridge;
    request.header.ifindex = index;
    let request = RouteNetlinkMessage::GetNeighbour(request);
    socket
        .dump(request, "fdb", |kind, payload| {
            if let Some((dst, mac)) = permanent_entry(kind, payload, index) {
                each(mac, dst);
            }
        })
        .await
}

/// The destination and link-layer address of one message of a neighbour
/// or FDB dump, when it is a permanent entry on `index` (the kernel may
/// return other devices' too). Only those two attributes are parsed.
fn permanent_entry(kind: u16, payload: &[u8], index: u32) -> Option<(IpAddr, Mac)> {
    if kind != libc::RTM_NEWNEIGH {
        return None;
    }
    let header = NeighbourHeader::parse(payload).ok()?;
    if header.ifindex != index || !is_permanent(header.state) {
        return None;
    }
    let family = header.family;
    let attributes = NlasIterator::new(payload.get(NDMSG_LEN..)?)
        .filter_map(|nla| {
            nla.ok()
                .filter(|n| matches!(n.kind(), libc::NDA_DST | libc::NDA_LLADDR))
        })
        .filter_map(|nla| NeighbourAttribute::parse_with_param(&nla, family).ok());
    let mut message = NeighbourMessage::default();
    message.header = header;
    message.attributes = attributes.collect();
    Some((destination(&message)?, lladdr(&message)?))
}

/// FDB entries of a VXLAN device are NUD_PERMANENT|NUD_NOARP.
pub(super) fn is_permanent(state: NeighbourState) -> bool {
    u16::from(state) & NUD_PERMANENT != 0
}

pub(super) fn destination(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        // In AF_BRIDGE messages the parser cannot know the address family.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

pub(super) fn lladdr(m: &NeighbourMessage) -> Option<Mac> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => Mac::from_slice(bytes),
        _ => None,
    })
}

pub async fn replace_arp(handle: &Handle, index: u32, neigh: &Neigh) -> Result<()> {
    let Neigh { ip, mac, dev } = neigh;
    handle
        .neighbours()
        .add(index, *ip)
        .link_layer_address(&mac.0)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(nl_err(|| {
            format!("neigh replace {ip} lladdr {mac} dev {dev}")
        }))
}

pub async fn del_arp(handle: &Handle, index: u32, neigh: &Neigh) -> Result<()> {
    let Neigh { ip, dev, .. } = neigh;
    let mut message = NeighbourMessage::default();
    message.header.family = family(*ip);
    message.header.ifindex = index;
    let dst = NeighbourAttribute::Destination(NeighbourAddress::from(*ip));
    message.attributes.push(dst);
    let done = handle.neighbours().del(message).execute().await;
    ignoring(done, libc::ENOENT, || format!("neigh del {ip} dev {dev}"))
}

pub async fn replace_fdb(handle: &Handle, index: u32, fdb: &Fdb) -> Result<()> {
    let Fdb { mac, dev, dst } = fdb;
    handle
        .neighbours()
        .add_bridge(index, &mac.0)
        .destination(*dst)
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(nl_err(|| format!("fdb replace {mac} dev {dev} dst {dst}")))
}

pub async fn del_fdb(handle: &Handle, index: u32, fdb: &Fdb) -> Result<()> {
    let Fdb { mac, dev, dst } = fdb;
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = index;
    message.header.flags = NeighbourFlags::Own;
    let lladdr = NeighbourAttribute::LinkLayerAddress(mac.0.to_vec());
    let dst_attr = NeighbourAttribute::Destination(NeighbourAddress::from(*dst));
    message.attributes.extend([lladdr, dst_attr]);
    let done = handle.neighbours().del(message).execute().await;
    ignoring(done, libc::ENOENT, || {
        format!("fdb del {mac} dev {dev} dst {dst}")
    })
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::{DefaultNla, Emitable};

    use super::*;

    fn entry(family: AddressFamily, index: u32, state: NeighbourState, dst: IpAddr) -> Vec<u8> {
        let mut message = NeighbourMessage::default();
        message.header.family = family;
        message.header.ifindex = index;
        message.header.state = state;
        message.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::from(dst)),
            NeighbourAttribute::LinkLayerAddress(vec![0x66, 0, 0, 0, 0, 3]),
            NeighbourAttribute::Other(DefaultNla::new(99, vec![1, 2, 3, 4])),
            NeighbourAttribute::Probes(0),
        ];
        let mut out = vec![0; message.buffer_len()];
        message.emit(&mut out);
        out
    }

    #[test]
    fn a_permanent_entry_on_the_device_reads_back_as_written() {
        let mac = Mac([0x66, 0, 0, 0, 0, 3]);
        let permanent = NeighbourState::Permanent;
        for (family, dst) in [
            (AddressFamily::Inet, "10.244.3.0"),
            (AddressFamily::Inet6, "fe80::a:3"),
            (AddressFamily::Bridge, "fd00:250::4"),
            (AddressFamily::Bridge, "10.250.0.4"),
        ] {
            let dst: IpAddr = dst.parse().unwrap();
            let payload = entry(family, 9, permanent, dst);
            let read = permanent_entry(libc::RTM_NEWNEIGH, &payload, 9);
            assert_eq!(read, Some((dst, mac)), "{family:?} {dst}");
        }
    }

    #[test]
    fn entries_of_other_devices_learned_ones_and_other_messages_are_not_ours() {
        let dst: IpAddr = "10.244.3.0".parse().unwrap();
        let inet = AddressFamily::Inet;
        let other_device = entry(inet, 8, NeighbourState::Permanent, dst);
        assert_eq!(permanent_entry(libc::RTM_NEWNEIGH, &other_device, 9), None);
        let learned = entry(inet, 9, NeighbourState::Reachable, dst);
        assert_eq!(permanent_entry(libc::RTM_NEWNEIGH, &learned, 9), None);
        let ours = entry(inet, 9, NeighbourState::Permanent, dst);
        assert_eq!(permanent_entry(libc::RTM_NEWROUTE, &ours, 9), None);
        assert_eq!(permanent_entry(libc::RTM_NEWNEIGH, &ours[..7], 9), None);
    }
}
