//! Links: dump, and the writes on our tunnel devices.

use std::net::IpAddr;

use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkIpIp, LinkUnspec, LinkVxlan};

use super::netlink::{collect, errno, nl_err};
use crate::model::Mac;
use crate::plan::VxlanDevice;
use crate::{Error, Result};

/// What we read of any link.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub kind: Option<InfoKind>,
    pub mac: Option<Mac>,
    pub vxlan: Option<VxlanAttrs>,
}

#[derive(Debug, Clone, Default)]
pub struct VxlanAttrs {
    pub vni: u32,
    pub port: u16,
    pub local: Option<IpAddr>,
    pub link: Option<u32>,
    pub learning: bool,
}

pub async fn dump(handle: &Handle) -> Result<Vec<Link>> {
    let messages = collect(handle.link().get().execute(), "links").await?;
    Ok(messages.iter().map(parse).collect())
}

fn parse(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
        mac: None,
        vxlan: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(bytes) => link.mac = Mac::from_slice(bytes),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.clone()),
                        LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                            link.vxlan = Some(parse_vxlan(attrs))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn parse_vxlan(attrs: &[InfoVxlan]) -> VxlanAttrs {
    let mut out = VxlanAttrs::default();
    for attr in attrs {
        match attr {
            InfoVxlan::Id(v) => out.vni = *v,
            InfoVxlan::Port(v) => out.port = *v,
            InfoVxlan::Local(v) => out.local = Some(IpAddr::V4(*v)),
            InfoVxlan::Local6(v) => out.local = Some(IpAddr::V6(*v)),
            InfoVxlan::Link(v) => out.link = Some(*v),
            InfoVxlan::Learning(v) => out.learning = *v,
            _ => {}
        }
    }
    out
}

/// Create the ipip device; when the kernel already made the fallback
/// `tunl0`, that one is ours to use.
pub async fn create_ipip(handle: &Handle, name: &str) -> Result<()> {
    let msg = LinkIpIp::new(name).build();
    match handle.link().add(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EOPNOTSUPP) => Err(Error::Netlink {
            context: format!(
                "creating {name}: this kernel has no ipip support (module ipip not loaded?)"
            ),
            source: e.into(),
        }),
        Err(e) => Err(nl_err(|| format!("creating {name} (ipip)"))(e)),
    }
}

pub async fn create_vxlan(handle: &Handle, device: &VxlanDevice, link_index: u32) -> Result<()> {
    let id = &device.identity;
    let builder = LinkVxlan::new(&device.name, id.vni).port(id.port);
    let builder = match id.local {
        IpAddr::V4(v4) => builder.local(v4),
        IpAddr::V6(v6) => builder.local6(v6),
    };
    let msg = builder
        .dev(link_index)
        .learning(id.learning)
        .address(id.mac.0.to_vec())
        .mtu(device.mtu)
        .up()
        .build();
    let done = handle.link().add(msg).execute().await;
    let (name, vni) = (&device.name, id.vni);
    done.map_err(nl_err(|| format!("creating {name} (vxlan id {vni})")))
}

pub async fn set_mtu(handle: &Handle, index: u32, name: &str, mtu: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
    let done = handle.link().set(msg).execute().await;
    done.map_err(nl_err(|| format!("setting mtu {mtu} on {name}")))
}

pub async fn set_up(handle: &Handle, index: u32, name: &str, up: bool) -> Result<()> {
    let builder = LinkUnspec::new_with_index(index);
    let msg = if up { builder.up() } else { builder.down() }.build();
    let state = if up { "up" } else { "down" };
    let done = handle.link().set(msg).execute().await;
    done.map_err(nl_err(|| format!("setting {name} {state}")))
}

pub async fn delete(handle: &Handle, index: u32, name: &str) -> Result<()> {
    let done = handle.link().del(index).execute().await;
    done.map_err(nl_err(|| format!("deleting {name}")))
}
