//! A model of what the kernel does with each op, on `Observed`. The property
//! tests use it to check that applying a diff reaches Desired; the netns test
//! `switching::the_kernel_holds_what_the_model_predicts` holds the real
//! kernel to it (vxlan and native, sysctls aside; ipip runs only in the VM).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::diff::sysctl_device;
use super::ops::Op;
use super::state::{IpipDevice, Observed};

/// The ipip fallback device as the kernel creates it.
const IPIP_FALLBACK_MTU: u32 = 1480;

pub fn apply(observed: &mut Observed, op: &Op) {
    match op {
        Op::CreateIpip { name } => {
            observed.ipip.get_or_insert_with(|| IpipDevice {
                name: name.clone(),
                mtu: IPIP_FALLBACK_MTU,
                up: false,
                addresses: BTreeSet::new(),
            });
        }
        Op::CreateVxlan { device } => {
            let mut device = device.as_ref().clone();
            device.addresses.clear();
            match device.identity.local {
                IpAddr::V4(_) => observed.vxlan = Some(device),
                IpAddr::V6(_) => observed.vxlan6 = Some(device),
            }
        }
        Op::DeleteLink { name, .. } => {
            for vxlan in [&mut observed.vxlan, &mut observed.vxlan6] {
                if vxlan.as_ref().is_some_and(|d| &d.name == name) {
                    *vxlan = None;
                }
            }
            if observed.ipip.as_ref().is_some_and(|d| &d.name == name) {
                observed.ipip = None;
            }
            forget_device(observed, name);
        }
        Op::SetMtu { dev, mtu } => with_link(observed, dev, |m, _, _| *m = *mtu),
        Op::SetUp { dev } => with_link(observed, dev, |_, up, _| *up = true),
        Op::SetDown { dev } => {
            with_link(observed, dev, |_, up, _| *up = false);
            // The kernel flushes routes through a device that goes down.
            observed.routes.retain(|_, r| &r.dev != dev);
            observed.adoptable.retain(|_, r| &r.dev != dev);
        }
        Op::AddAddress { dev, ip } => with_link(observed, dev, |_, _, a| {
            a.insert(*ip);
        }),
        Op::DelAddress { dev, ip, .. } => with_link(observed, dev, |_, _, a| {
            a.remove(ip);
        }),
        Op::SetSysctl { key, value } => {
            observed.sysctls.insert(key.clone(), Some(value.clone()));
        }
        Op::WritePodMtu { mtu } => observed.pod_mtu = Some(*mtu),
        Op::RemovePodMtu => observed.pod_mtu = None,
        Op::ReplaceNeigh { neigh } => {
            observed.neighs.insert(neigh.ip, neigh.clone());
        }
        Op::DelNeigh { neigh } => {
            observed.neighs.remove(&neigh.ip);
        }
        Op::ReplaceFdb { fdb } => {
            observed.fdb.insert(fdb.mac, fdb.clone());
        }
        Op::DelFdb { fdb } => {
            observed.fdb.remove(&fdb.mac);
        }
        Op::ReplaceRoute { route } => {
            // A replace would also overwrite a foreign route with this key.
            observed.foreign_routes.remove(&route.key);
            observed.adoptable.remove(&route.key);
            observed.routes.insert(route.key, route.clone());
        }
        Op::DelRoute { route } => {
            // The kernel matches the protocol: only that route goes.
            for routes in [&mut observed.routes, &mut observed.adoptable] {
                if routes
                    .get(&route.key)
                    .is_some_and(|r| r.protocol == route.protocol)
                {
                    routes.remove(&route.key);
                }
            }
        }
    }
}

fn with_link(
    observed: &mut Observed,
    dev: &str,
    f: impl FnOnce(&mut u32, &mut bool, &mut BTreeSet<IpAddr>),
) {
    if let Some(d) = observed.ipip.as_mut().filter(|d| d.name == dev) {
        f(&mut d.mtu, &mut d.up, &mut d.addresses);
    } else if let Some(d) = [&mut observed.vxlan, &mut observed.vxlan6]
        .into_iter()
        .find_map(|v| v.as_mut().filter(|d| d.name == dev))
    {
        f(&mut d.mtu, &mut d.up, &mut d.addresses);
    }
}

fn forget_device(observed: &mut Observed, dev: &str) {
    observed.routes.retain(|_, r| r.dev != dev);
    observed.adoptable.retain(|_, r| r.dev != dev);
    observed.neighs.retain(|_, n| n.dev != dev);
    observed.fdb.retain(|_, f| f.dev != dev);
    observed.foreign_state.remove(dev);
    observed
        .sysctls
        .retain(|k, _| sysctl_device(k) != Some(dev));
}

pub fn apply_all<'a>(observed: &mut Observed, ops: impl IntoIterator<Item = &'a Op>) {
    for op in ops {
        apply(observed, op);
    }
}
