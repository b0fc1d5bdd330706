//! What `status` says about a host, decided from observed facts alone.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::Mode;

use crate::model::Config;

use super::diff::foreign_on;
use super::family6::VXLAN6_OVERHEAD;
use super::state::{IpipDevice, Observed, RouteKind, Uplink};

/// The mode(s) our routes use now: `vxlan`, `native`, `ipip+native`, or `none`.
pub fn kernel_mode(observed: &Observed, config: &Config) -> String {
    let modes: BTreeSet<Mode> = observed
        .routes
        .values()
        .filter(|r| r.protocol == config.route_protocol && r.kind == RouteKind::Unicast)
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
    } else if dev == config.vxlan_device || dev == config.vxlan6_device {
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
    for (dev, kind) in &observed.foreign_devices {
        out.push(format!(
            "{dev} is a {kind} device, not podroute's: it is left alone, and the mode it is named for cannot run here"
        ));
    }
    for dev in observed.foreign_state.keys() {
        if let Some(foreign) = foreign_on(observed, dev) {
            out.push(format!(
                "{dev} carries state that is not podroute's ({foreign}): podroute never deletes or \
                 recreates it, and removes only its own addresses, routes, neighbours and FDB entries from it"
            ));
        }
    }
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
            in_play_ipip(observed).map(|d| (Mode::Ipip, &d.name, d.mtu, Mode::Ipip.overhead())),
            observed
                .vxlan
                .as_ref()
                .map(|d| (Mode::Vxlan, &d.name, d.mtu, Mode::Vxlan.overhead())),
            observed
                .vxlan6
                .as_ref()
                .map(|d| (Mode::Vxlan, &d.name, d.mtu, VXLAN6_OVERHEAD)),
        ];
        for (mode, name, mtu, overhead) in tunnels.into_iter().flatten() {
            let max = base.saturating_sub(overhead);
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
        observed.vxlan6.as_ref().map(|d| d.mtu),
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

pub const IPV6_FORWARDING: &str = "net/ipv6/conf/all/forwarding";

pub fn accept_ra_key(dev: &str) -> String {
    format!("net/ipv6/conf/{dev}/accept_ra")
}

/// What endangers IPv6 pod traffic: forwarding off, router advertisements
/// ignored once forwarding is on, and the reverse-path check IPv6 has in
/// place of rp_filter, firewalld's (`firewalld_conf`: the text of
/// firewalld.conf, when there is one).
pub fn ipv6_warnings(
    observed: &Observed,
    sysctls: &BTreeMap<String, Option<String>>,
    firewalld_conf: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    if !observed.routes.keys().any(|k| k.dst.is_ipv6()) {
        return out;
    }
    let value = |key: &str| sysctls.get(key).cloned().flatten();
    let forwarding = value(IPV6_FORWARDING);
    if forwarding.as_deref() != Some("1") {
        out.push(
            "net.ipv6.conf.all.forwarding is not 1: this node does not forward IPv6 pod traffic"
                .into(),
        );
    }
    for (key, v) in sysctls {
        let dev = key
            .strip_prefix("net/ipv6/conf/")
            .and_then(|k| k.strip_suffix("/accept_ra"));
        if let (Some(dev), Some("1"), Some("1")) = (dev, v.as_deref(), forwarding.as_deref()) {
            out.push(format!(
                "accept_ra is 1 on {dev} while IPv6 forwarding is on: its router advertisements \
                 are ignored, and routes learned from them are gone (2 keeps them; the agent sets \
                 2 on the IPv6 uplink)"
            ));
        }
    }
    let rpfilter = firewalld_conf.map(|text| {
        text.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("IPv6_rpfilter="))
            .map_or("yes".to_string(), |v| {
                v.trim().trim_matches('"').to_lowercase()
            })
    });
    if let Some(v) = rpfilter.filter(|v| !["loose", "loose-forward", "no"].contains(&v.as_str())) {
        out.push(format!(
            "firewalld's IPv6_rpfilter is {v:?} (strict): IPv6 has no rp_filter sysctl, this is \
             its reverse-path check, and it drops IPv6 pod packets while nodes disagree on the \
             mode; set it to loose, or exempt the pod CIDRs"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::Mac;
    use crate::plan::{Route, RouteKey, RouteKind, VxlanDevice, VxlanIdentity};

    const ADOPTED_BIRD: u8 = 12;

    fn route(dst: &str, dev: &str, protocol: u8) -> Route {
        Route {
            key: RouteKey {
                table: crate::model::MAIN_TABLE,
                dst: dst.parse().expect("dst"),
                metric: 0,
            },
            kind: RouteKind::Unicast,
            via: Some(Ipv4Addr::new(10, 250, 0, 2).into()),
            dev: dev.into(),
            onlink: dev != "eth0",
            mtu: None,
            protocol,
        }
    }

    fn with_routes(routes: &[Route]) -> Observed {
        Observed {
            routes: routes.iter().map(|r| (r.key, r.clone())).collect(),
            ..Observed::default()
        }
    }

    fn uplink(mtu: u32) -> Uplink {
        Uplink {
            name: "eth0".into(),
            mtu,
            address: "10.250.0.1/24".parse().expect("address"),
            accept_ra: None,
        }
    }

    fn vxlan(mtu: u32) -> VxlanDevice {
        VxlanDevice {
            name: "vxlan.calico".into(),
            identity: VxlanIdentity {
                vni: 4096,
                port: 4789,
                local: Ipv4Addr::new(10, 250, 0, 1).into(),
                link: "eth0".into(),
                mac: Mac::for_node("node-1"),
                learning: false,
            },
            mtu,
            up: true,
            addresses: BTreeSet::from([Ipv4Addr::new(10, 244, 1, 0).into()]),
        }
    }

    /// A converged vxlan node: nothing to warn about.
    fn healthy() -> (Observed, BTreeMap<String, Option<String>>) {
        let mut observed = with_routes(&[route("10.244.2.0/24", "vxlan.calico", 91)]);
        observed.vxlan = Some(vxlan(1450));
        observed.pod_mtu = Some(1450);
        let sysctls = [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/eth0/rp_filter", "2"),
            ("net/ipv4/conf/vxlan.calico/rp_filter", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect();
        (observed, sysctls)
    }

    fn warn(observed: &Observed, sysctls: &BTreeMap<String, Option<String>>) -> Vec<String> {
        warnings(observed, Some(&uplink(1500)), sysctls, &Config::default())
    }

    fn set(sysctls: &mut BTreeMap<String, Option<String>>, key: &str, value: &str) {
        sysctls.insert(key.into(), Some(value.into()));
    }

    #[test]
    fn kernel_mode_names_the_devices_our_routes_use() {
        let config = Config::default();
        let mode = |routes: &[Route]| kernel_mode(&with_routes(routes), &config);
        assert_eq!(mode(&[]), "none");
        assert_eq!(mode(&[route("10.244.2.0/24", "vxlan.calico", 91)]), "vxlan");
        assert_eq!(
            mode(&[
                route("10.244.2.0/24", "eth0", 91),
                route("10.244.3.0/24", "tunl0", 91),
            ]),
            "ipip+native"
        );
        // An adopted route is not ours yet: it says nothing about our mode.
        assert_eq!(
            mode(&[route("10.244.2.0/24", "eth0", ADOPTED_BIRD)]),
            "none"
        );
    }

    #[test]
    fn a_converged_node_has_no_warnings() {
        let (observed, sysctls) = healthy();
        assert_eq!(warn(&observed, &sysctls), Vec::<String>::new());
    }

    #[test]
    fn strict_rp_filter_is_the_larger_of_all_and_the_device() {
        let (observed, mut sysctls) = healthy();
        set(&mut sysctls, "net/ipv4/conf/eth0/rp_filter", "1");
        let w = warn(&observed, &sysctls);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("rp_filter is strict (1) on eth0"), "{w:?}");

        let (observed, mut sysctls) = healthy();
        set(&mut sysctls, "net/ipv4/conf/all/rp_filter", "1");
        set(&mut sysctls, "net/ipv4/conf/eth0/rp_filter", "0");
        let w = warn(&observed, &sysctls);
        assert_eq!(w.len(), 1, "all=1 makes eth0 strict: {w:?}");
        assert!(w[0].contains("on eth0"), "{w:?}");

        // all=1 with loose devices: the kernel applies max(1, 2) = loose.
        let (observed, mut sysctls) = healthy();
        set(&mut sysctls, "net/ipv4/conf/all/rp_filter", "1");
        assert_eq!(warn(&observed, &sysctls), Vec::<String>::new());
    }

    #[test]
    fn forwarding_off_warns_only_with_routes() {
        let (observed, mut sysctls) = healthy();
        set(&mut sysctls, "net/ipv4/ip_forward", "0");
        let w = warn(&observed, &sysctls);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("net.ipv4.ip_forward is not 1"), "{w:?}");
        assert_eq!(warn(&Observed::default(), &sysctls), Vec::<String>::new());
    }

    #[test]
    fn tunnel_mtu_over_what_the_uplink_leaves() {
        let (observed, sysctls) = healthy();
        let w = warnings(&observed, Some(&uplink(1400)), &sysctls, &Config::default());
        assert_eq!(
            w,
            [
                "vxlan.calico has MTU 1450, over the 1350 that eth0 (MTU 1400) leaves for vxlan: \
              large packets are dropped"
            ]
        );
        // An --mtu override counts, not the uplink's own MTU.
        let config = Config {
            mtu: Some(1400),
            ..Config::default()
        };
        let w = warnings(&observed, Some(&uplink(1500)), &sysctls, &config);
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn tunl0_without_our_address_is_not_in_play() {
        let (mut observed, sysctls) = healthy();
        observed.ipip = Some(IpipDevice {
            name: "tunl0".into(),
            mtu: 1500,
            up: true,
            addresses: BTreeSet::new(),
        });
        assert_eq!(warn(&observed, &sysctls), Vec::<String>::new());
        assert_eq!(
            watched_devices(&observed, Some(&uplink(1500))),
            ["eth0", "vxlan.calico"]
        );

        observed
            .ipip
            .as_mut()
            .expect("tunl0")
            .addresses
            .insert(Ipv4Addr::new(10, 244, 1, 0).into());
        let w = warn(&observed, &sysctls);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("tunl0 has MTU 1500, over the 1480"),
            "{w:?}"
        );
    }

    #[test]
    fn pod_mtu_missing_or_over_the_tunnel() {
        let (mut observed, sysctls) = healthy();
        observed.pod_mtu = None;
        let w = warn(&observed, &sysctls);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("no pod MTU file at /run/podroute/mtu"),
            "{w:?}"
        );

        observed.pod_mtu = Some(1500);
        assert_eq!(
            warn(&observed, &sysctls),
            ["pod MTU 1500 is over the tunnel MTU 1450: pods will see drops of large packets"]
        );

        // Nothing of ours on the host: no MTU file is expected.
        let nothing = Observed::default();
        assert_eq!(warn(&nothing, &sysctls), Vec::<String>::new());
    }

    #[test]
    fn ipv6_warnings_name_forwarding_accept_ra_and_firewalld() {
        let v6 = with_routes(&[route("fd00:244:2::/64", "eth0", 91)]);
        let sysctls = |pairs: &[(&str, &str)]| -> BTreeMap<String, Option<String>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect()
        };
        let fine = sysctls(&[
            (IPV6_FORWARDING, "1"),
            ("net/ipv6/conf/eth0/accept_ra", "2"),
        ]);
        let loose = "# comment\nIPv6_rpfilter=loose\n";
        assert!(ipv6_warnings(&v6, &fine, Some(loose)).is_empty());
        assert!(
            ipv6_warnings(&v6, &fine, None).is_empty(),
            "no firewalld, no warning"
        );

        let off = sysctls(&[(IPV6_FORWARDING, "0")]);
        let w = ipv6_warnings(&v6, &off, None);
        assert!(
            w[0].starts_with("net.ipv6.conf.all.forwarding is not 1"),
            "{w:?}"
        );

        let ra = sysctls(&[
            (IPV6_FORWARDING, "1"),
            ("net/ipv6/conf/eth0/accept_ra", "1"),
        ]);
        let w = ipv6_warnings(&v6, &ra, None);
        assert!(w[0].starts_with("accept_ra is 1 on eth0"), "{w:?}");

        for strict in [
            "IPv6_rpfilter=yes",
            "IPv6_rpfilter=strict-forward",
            "",
            "IPv6_rpfilter=\"strict\"",
        ] {
            let w = ipv6_warnings(&v6, &fine, Some(strict));
            assert!(
                w.iter().any(|w| w.starts_with("firewalld's IPv6_rpfilter")),
                "{strict}: {w:?}"
            );
        }
        // No IPv6 routes of ours: nothing to warn about.
        let v4 = with_routes(&[route("10.244.2.0/24", "eth0", 91)]);
        assert!(ipv6_warnings(&v4, &off, Some("IPv6_rpfilter=yes")).is_empty());
    }
}
