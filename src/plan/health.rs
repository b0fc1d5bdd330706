//! What `status` says about a host, decided from observed facts alone.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Config, Mode};

use super::state::{IpipDevice, Observed, Uplink};

/// The mode(s) our routes use now: `vxlan`, `native`, `ipip+native`, or `none`.
pub fn kernel_mode(observed: &Observed, config: &Config) -> String {
    let modes: BTreeSet<Mode> = observed
        .routes
        .values()
        .filter(|r| r.protocol == config.route_protocol)
        .map(|r| route_mode(&r.dev, config))
        .collect();
    if modes.is_empty() {
        return "none".into();
    }
    modes
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join("+")
}

pub fn route_mode(dev: &str, config: &Config) -> Mode {
    if dev == config.ipip_device {
        Mode::Ipip
    } else if dev == config.vxlan_device {
        Mode::Vxlan
    } else {
        Mode::Native
    }
}

/// tunl0 counts only while it carries our address: the kernel keeps the
/// fallback device around, and someone else may keep it up.
fn in_play_ipip(observed: &Observed) -> Option<&IpipDevice> {
    observed
        .ipip
        .as_ref()
        .filter(|d| d.up && !d.addresses.is_empty())
}

/// The devices whose rp_filter matters: the uplink and our tunnels.
pub fn watched_devices(observed: &Observed, uplink: Option<&Uplink>) -> Vec<String> {
    uplink
        .map(|u| u.name.clone())
        .into_iter()
        .chain(in_play_ipip(observed).map(|d| d.name.clone()))
        .chain(observed.vxlan.as_ref().map(|d| d.name.clone()))
        .collect()
}

pub fn rp_filter_key(dev: &str) -> String {
    format!("net/ipv4/conf/{dev}/rp_filter")
}

/// Warnings for an operator; `sysctls` holds ip_forward, `all` and each
/// watched device's rp_filter.
pub fn warnings(
    observed: &Observed,
    uplink: Option<&Uplink>,
    sysctls: &BTreeMap<String, Option<String>>,
    config: &Config,
) -> Vec<String> {
    let mut out = Vec::new();
    let value = |key: &str| -> Option<u32> {
        sysctls
            .get(key)
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
    };
    let has_routes = !observed.routes.is_empty();
    if has_routes && value("net/ipv4/ip_forward") != Some(1) {
        out.push("net.ipv4.ip_forward is not 1: this node does not forward pod traffic".into());
    }
    let all = value(&rp_filter_key("all")).unwrap_or(0);
    for dev in watched_devices(observed, uplink) {
        // The kernel applies the larger of `all` and the device's value.
        let effective = all.max(value(&rp_filter_key(&dev)).unwrap_or(0));
        if effective == 1 {
            out.push(format!(
                "rp_filter is strict (1) on {dev}: replies are dropped while nodes disagree on the mode; \
                 loose (2) is safe (the agent sets it with --rp-filter loose)"
            ));
        }
    }
    if let Some(uplink) = uplink {
        let base = config.mtu.unwrap_or(uplink.mtu);
        let tunnels = [
            in_play_ipip(observed).map(|d| (Mode::Ipip, &d.name, d.mtu)),
            observed
                .vxlan
                .as_ref()
                .map(|d| (Mode::Vxlan, &d.name, d.mtu)),
        ];
        for (mode, name, mtu) in tunnels.into_iter().flatten() {
            let max = base.saturating_sub(mode.overhead());
            if mtu > max {
                out.push(format!(
                    "{name} has MTU {mtu}, over the {max} that {} (MTU {base}) leaves for {mode}: large packets are dropped",
                    uplink.name
                ));
            }
        }
    }
    let smallest_tunnel = [
        in_play_ipip(observed).map(|d| d.mtu),
        observed.vxlan.as_ref().map(|d| d.mtu),
    ]
    .into_iter()
    .flatten()
    .min();
    match (observed.pod_mtu, smallest_tunnel) {
        (None, _) if has_routes => out.push(format!(
            "no pod MTU file at {}: the CNI plugin cannot learn the pod MTU",
            config.mtu_file.display()
        )),
        (Some(pod), Some(tunnel)) if pod > tunnel => out.push(format!(
            "pod MTU {pod} is over the tunnel MTU {tunnel}: pods will see drops of large packets"
        )),
        _ => {}
    }
    out
}
