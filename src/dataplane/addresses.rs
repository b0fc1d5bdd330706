//! Tunnel addresses: /32s and /128s on our devices, marked with our protocol (IFA_PROTO)
//! so an address someone else put on the same device is never touched.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use super::netlink::{collect, ignoring};
use crate::Result;

#[derive(Debug, Clone, Copy)]
pub struct Address {
    pub index: u32,
    pub network: IpNetwork,
    pub protocol: u8,
}

/// Every address of both families.
pub async fn dump(handle: &Handle) -> Result<Vec<Address>> {
    let mut request = handle.address().get();
    request.message_mut().header.family = AddressFamily::Unspec;
    let messages = collect(request.execute(), "addresses").await?;
    Ok(messages.iter().filter_map(parse).collect())
}

fn parse(msg: &AddressMessage) -> Option<Address> {
    let mut ip = None;
    let mut protocol = 0;
    for attr in &msg.attributes {
        match attr {
            // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on
            // point-to-point links, so it only counts when there is no local.
            AddressAttribute::Local(local) => ip = Some(*local),
            AddressAttribute::Address(address) if ip.is_none() => ip = Some(*address),
            AddressAttribute::Protocol(p) => protocol = u8::from(*p),
            _ => {}
        }
    }
    let network = IpNetwork::new(ip?, msg.header.prefix_len).ok()?;
    Some(Address {
        index: msg.header.index,
        network,
        protocol,
    })
}

/// Addresses by interface index.
pub fn by_index(addresses: &[Address]) -> BTreeMap<u32, Vec<Address>> {
    let mut out: BTreeMap<u32, Vec<Address>> = BTreeMap::new();
    for a in addresses {
        out.entry(a.index).or_default().push(*a);
    }
    out
}

/// Our tunnel address: a host route's worth, /32 or /128. An IPv6 one skips
/// duplicate address detection (unique by construction, and usable at
/// once) and the prefix route IPv6 adds even for a /128: that route, proto
/// kernel through our device, would be state that is not ours.
pub async fn add(handle: &Handle, index: u32, dev: &str, ip: IpAddr, protocol: u8) -> Result<()> {
    let prefix = IpNetwork::from(ip).prefix();
    let mut request = handle.address().add(index, ip, prefix);
    let message = request.message_mut();
    message
        .attributes
        .push(AddressAttribute::Protocol(AddressProtocol::from(protocol)));
    if ip.is_ipv6() {
        let flags = AddressFlags::Nodad | AddressFlags::Noprefixroute;
        message.attributes.push(AddressAttribute::Flags(flags));
    }
    let done = request.execute().await;
    // Someone holds the same address already: it serves, and it is theirs.
    ignoring(done, libc::EEXIST, || {
        format!("adding {ip}/{prefix} to {dev}")
    })
}

pub async fn del(handle: &Handle, index: u32, dev: &str, ip: IpAddr) -> Result<()> {
    let prefix = IpNetwork::from(ip).prefix();
    let mut request = handle.address().add(index, ip, prefix);
    let message = std::mem::take(request.message_mut());
    let done = handle.address().del(message).execute().await;
    ignoring(done, libc::EADDRNOTAVAIL, || {
        format!("removing {ip}/{prefix} from {dev}")
    })
}
