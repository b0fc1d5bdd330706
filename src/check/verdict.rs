//! One peer's result: reachable or not, the round trip, whether pods'
//! full-size packets pass, and where the path breaks when it does.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::probe::{Lost, Probed};
use super::socket::overhead;
use super::wire::HEADER_LEN;
use crate::plan::check::{Break, ProbeTarget, Stage};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerCheck {
    pub peer: String,
    pub family: &'static str,
    /// Where the probes went, and through which device.
    pub dst: IpAddr,
    pub dev: String,
    pub reachable: bool,
    /// The small probe's round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The pod MTU of the route: the size of the DF probe.
    pub mtu: u32,
    /// Whether the full-size DF probe came back; unknown when nothing did.
    pub mtu_ok: Option<bool>,
    /// Where the path breaks, when it does.
    pub broken: Option<Break>,
}

impl PeerCheck {
    pub fn ok(&self) -> bool {
        self.reachable && self.mtu_ok == Some(true)
    }
}

/// The verdict on `target` from its probes, and, when the small probe got
/// no answer, from what this node's kernel lacks (`located`).
pub fn verdict(
    target: &ProbeTarget,
    probed: &Probed,
    located: Option<Break>,
    port: u16,
    timeout: Duration,
) -> PeerCheck {
    let reachable = probed.small.is_ok();
    let mtu_ok = reachable.then(|| probed.full.is_ok());
    let broken = match (&probed.small, &probed.full) {
        (Ok(_), Ok(_)) => None,
        (Ok(_), Err(lost)) => Some(mtu_break(target, lost)),
        (Err(lost), _) => Some(located.unwrap_or_else(|| lost_break(target, lost, port, timeout))),
    };
    PeerCheck {
        peer: target.peer.clone(),
        family: target.family,
        dst: target.dst,
        dev: target.dev.clone(),
        reachable,
        rtt_ms: probed.small.as_ref().ok().map(|d| d.as_secs_f64() * 1000.0),
        mtu: target.mtu,
        mtu_ok,
        broken,
    }
}

/// When ARP or NDP for the peer's node address failed (or is still
/// trying), that is where the path breaks. `states`: (device, state) of the
/// kernel's entries for `target.underlay`.
pub fn underlay_break(target: &ProbeTarget, states: &[(String, String)]) -> Option<Break> {
    let ip = target.underlay?;
    let (dev, state) = states
        .iter()
        .find(|(_, state)| state == "failed" || state == "incomplete")?;
    Some(Break::new(
        Stage::Neighbour,
        format!(
            "the underlay neighbour {ip} on {dev} is {state}: nothing answers ARP/NDP for it (is {} or its link down?)",
            target.peer
        ),
    ))
}

fn mtu_break(target: &ProbeTarget, lost: &Lost) -> Break {
    let mtu = target.mtu;
    let small = HEADER_LEN + overhead(target.dst);
    let detail = match lost {
        Lost::TooBig(Some(path)) => {
            format!("the path MTU is {path}, below the pod MTU {mtu}")
        }
        Lost::ShortReply => format!(
            "{mtu}-byte probes arrive but their answers do not fit the way back"
        ),
        _ => format!(
            "{mtu}-byte probes with DF get no answer, {small}-byte ones do: the path MTU is below the pod MTU"
        ),
    };
    Break::new(Stage::Mtu, detail)
}

fn lost_break(target: &ProbeTarget, lost: &Lost, port: u16, timeout: Duration) -> Break {
    match lost {
        Lost::NoSource(why) => Break::new(Stage::Device, why.clone()),
        Lost::Send(why) => Break::new(Stage::Route, format!("the kernel will not send: {why}")),
        Lost::Refused => Break::new(
            Stage::Answer,
            format!(
                "{} answers, but nothing listens on UDP {port}: is its agent running?",
                target.peer
            ),
        ),
        _ => Break::new(
            Stage::Answer,
            format!(
                "no answer from {} in {} ms: the path beyond this node, or the peer",
                target.dst,
                timeout.as_millis()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ProbeTarget {
        ProbeTarget {
            peer: "node-2".into(),
            family: "ipv4",
            route: "10.244.2.0/24".parse().expect("cidr"),
            dev: "vxlan.calico".into(),
            via: Some("10.244.2.0".parse().expect("ip")),
            tunnel: true,
            dst: "10.244.2.0".parse().expect("ip"),
            src: Some("10.244.1.0".parse().expect("ip")),
            mtu: 1450,
            underlay: Some("10.250.0.2".parse().expect("ip")),
        }
    }

    fn probed(small: Result<Duration, Lost>, full: Result<Duration, Lost>) -> Probed {
        Probed { small, full }
    }

    const MS: Duration = Duration::from_millis(1);
    const T: Duration = Duration::from_secs(1);

    #[test]
    fn both_answered_is_ok() {
        let c = verdict(&target(), &probed(Ok(MS), Ok(MS)), None, 9471, T);
        assert!(c.ok(), "{c:?}");
        assert_eq!(c.rtt_ms, Some(1.0));
    }

    #[test]
    fn only_the_small_answered_is_reachable_with_the_mtu_broken() {
        for lost in [Lost::Timeout, Lost::TooBig(Some(1400)), Lost::ShortReply] {
            let c = verdict(&target(), &probed(Ok(MS), Err(lost.clone())), None, 9471, T);
            assert!(c.reachable && !c.ok(), "{c:?}");
            assert_eq!(c.mtu_ok, Some(false));
            let b = c.broken.expect("broken");
            assert_eq!(b.stage, Stage::Mtu, "{lost:?}");
            assert!(b.detail.contains("1450"), "{b:?}");
        }
    }

    #[test]
    fn what_the_kernel_lacks_comes_before_what_the_probe_saw() {
        let located = Break::new(Stage::Fdb, "no FDB entry");
        let c = verdict(
            &target(),
            &probed(Err(Lost::Timeout), Err(Lost::Timeout)),
            Some(located.clone()),
            9471,
            T,
        );
        assert!(!c.reachable);
        assert_eq!(c.mtu_ok, None);
        assert_eq!(c.broken, Some(located));
    }

    #[test]
    fn an_unresolved_underlay_neighbour_is_where_it_breaks() {
        let states = |s: &str| vec![("eth0".to_string(), s.to_string())];
        let b = underlay_break(&target(), &states("failed")).expect("broken");
        assert_eq!(b.stage, Stage::Neighbour);
        assert!(b.detail.contains("10.250.0.2 on eth0 is failed"), "{b:?}");
        assert!(underlay_break(&target(), &states("incomplete")).is_some());
        assert_eq!(underlay_break(&target(), &states("reachable")), None);
        assert_eq!(underlay_break(&target(), &[]), None);
    }

    #[test]
    fn a_refusal_names_the_port_and_a_silence_the_address() {
        let lost = |l: Lost| verdict(&target(), &probed(Err(l.clone()), Err(l)), None, 9471, T);
        let refused = lost(Lost::Refused).broken.expect("broken");
        assert_eq!(refused.stage, Stage::Answer);
        assert!(refused.detail.contains("UDP 9471"), "{refused:?}");
        let silent = lost(Lost::Timeout).broken.expect("broken");
        assert!(
            silent.detail.contains("10.244.2.0 in 1000 ms"),
            "{silent:?}"
        );
        let unbound = lost(Lost::NoSource("10.244.1.0 is not on this node".into()));
        assert_eq!(unbound.broken.expect("broken").stage, Stage::Device);
    }
}
