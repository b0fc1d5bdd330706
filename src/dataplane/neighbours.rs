//! Permanent ARP and FDB entries on our VXLAN device: everything permanent
//! there is ours; entries the kernel learns or resolves are left alone.

use std::net::IpAddr;

use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use super::netlink::{for_each, ignoring, nl_err};
use crate::model::Mac;
use crate::plan::{Fdb, Neigh};
use crate::Result;

pub(super) const NUD_PERMANENT: u16 = 0x80;

/// Permanent neighbours of `family` on `index`, handed to `each` as (ip, mac).
pub async fn dump_neighbours(
    handle: &Handle,
    index: u32,
    family: AddressFamily,
    mut each: impl FnMut(IpAddr, Mac),
) -> Result<()> {
    let mut request = handle.neighbours().get().set_address_family(family);
    request
        .message_mut()
        .attributes
        .push(NeighbourAttribute::IfIndex(index));
    for_each(request.execute(), "neighbours", |m| {
        if !ours(&m, index) {
            return;
        }
        if let (Some(ip), Some(mac)) = (destination(&m), lladdr(&m)) {
            each(ip, mac);
        }
    })
    .await
}

/// Permanent FDB entries of the device itself (`self`), handed to `each`
/// as (mac, dst).
pub async fn dump_fdb(
    handle: &Handle,
    index: u32,
    mut each: impl FnMut(Mac, IpAddr),
) -> Result<()> {
    let mut request = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge);
    request.message_mut().header.ifindex = index;
    for_each(request.execute(), "fdb", |m| {
        if !ours(&m, index) {
            return;
        }
        if let (Some(mac), Some(dst)) = (lladdr(&m), destination(&m)) {
            each(mac, dst);
        }
    })
    .await
}

/// A permanent entry on `index`: the kernel may return other devices' too.
fn ours(m: &NeighbourMessage, index: u32) -> bool {
    m.header.ifindex == index && is_permanent(m.header.state)
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
