//! One reconcile: read the kernel, plan, write, read back. The CLI's `apply`
//! runs it once; the agent runs it on every trigger.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::dataplane::Dataplane;
use crate::model::address::family_name;
use crate::model::{Cluster, Node};
use crate::plan::{self, Desired, Diff, Excluded, Inputs, RouteKey, RouteKind, Step, Uplink};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Kernel (and file) writes performed; 0 when already converged.
    pub changes: usize,
    pub steps: Vec<Step>,
    /// Desired routes not installed because a foreign route holds the key.
    pub conflicts: Vec<RouteKey>,
    /// Devices no longer in play that stay: they carry state that is not ours.
    pub kept: Vec<String>,
    /// Peers this node leaves out, with why.
    pub excluded: Vec<Excluded>,
    /// What the plan leaves unrouted or carries differently, as a whole
    /// (`ipv6: ...`).
    pub notes: Vec<String>,
    /// What each family's peer routes go through (`ipv4`, `ipv6`).
    pub families: BTreeMap<&'static str, FamilyRoutes>,
    pub pod_mtu: Option<u32>,
    /// Our routes in the kernel now.
    pub routes: usize,
}

/// A family's peer routes in a plan: how many, and the devices they use.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FamilyRoutes {
    pub routes: usize,
    pub devices: BTreeSet<String>,
}

impl FamilyRoutes {
    fn of(desired: &Desired) -> BTreeMap<&'static str, FamilyRoutes> {
        let mut out: BTreeMap<&'static str, FamilyRoutes> = BTreeMap::new();
        let peer_routes = desired
            .routes
            .values()
            .filter(|r| r.kind == RouteKind::Unicast);
        for route in peer_routes {
            let entry = out.entry(family_name(route.key.dst.ip())).or_default();
            entry.routes += 1;
            entry.devices.insert(route.dev.clone());
        }
        out
    }
}

impl Outcome {
    /// What `diff` towards `desired` comes to, after `changes` writes.
    pub fn of(desired: &Desired, diff: Diff, changes: usize) -> Outcome {
        Outcome {
            changes,
            steps: diff.steps,
            routes: desired.routes.len() - diff.conflicts.len(),
            conflicts: diff.conflicts,
            kept: diff.kept,
            excluded: desired.excluded.clone(),
            notes: desired.notes.clone(),
            families: FamilyRoutes::of(desired),
            pod_mtu: desired.pod_mtu,
        }
    }
}

/// The node this host is: by name when given, else the one whose IP is on a
/// local interface.
pub async fn local_node<'c>(
    dp: &Dataplane,
    cluster: &'c Cluster,
    name: Option<&str>,
) -> Result<&'c Node> {
    if let Some(name) = name {
        return cluster
            .node(name)
            .ok_or_else(|| Error::invalid("node", format!("{name:?} is not in the cluster file")));
    }
    let local = dp.local_addresses(None).await?;
    let mut found = cluster
        .nodes
        .iter()
        .filter(|n| n.ips().any(|ip| local.iter().any(|a| a.ip() == ip)));
    match (found.next(), found.next()) {
        (Some(node), None) => Ok(node),
        (None, _) => Err(Error::invalid(
            "node",
            "no node of the cluster file has an IP on this host; pass --node NAME",
        )),
        (Some(a), Some(b)) => Err(Error::invalid(
            "node",
            format!(
                "both {} and {} have an IP on this host; pass --node NAME",
                a.name, b.name
            ),
        )),
    }
}

/// Desired state of `local` in `cluster`, with the uplinks read from the
/// kernel; the one returned is the IPv4 uplink, else the IPv6 one.
pub async fn desired_for(
    dp: &mut Dataplane,
    cluster: &Cluster,
    local: &Node,
) -> Result<(Desired, Uplink)> {
    let routed = [
        local.v4().map(|(ip, _)| IpAddr::V4(ip)),
        local.v6().map(|(ip, _)| IpAddr::V6(ip)),
    ];
    let uplinks = dp
        .uplinks(&routed.into_iter().flatten().collect::<Vec<_>>())
        .await?;
    let (uplink, uplink6): (Vec<Uplink>, Vec<Uplink>) =
        uplinks.into_iter().partition(|u| u.address.is_ipv4());
    let (uplink, uplink6) = (uplink.into_iter().next(), uplink6.into_iter().next());
    let mut config = dp.config().clone();
    cluster.apply_to(&mut config);
    config.validate()?;
    let desired = plan::desired(Inputs {
        local,
        nodes: &cluster.nodes,
        plan: &cluster.plan,
        config: &config,
        uplink: uplink.as_ref(),
        uplink6: uplink6.as_ref(),
    })?;
    let uplink = uplink.or(uplink6).ok_or_else(|| {
        let why = "no family with both a node IP and a pod CIDR";
        Error::invalid("node", format!("{}: {why}", local.name))
    })?;
    Ok((desired, uplink))
}

/// The diff between `desired` and the kernel, without writing anything.
pub async fn dry_run(dp: &mut Dataplane, desired: &Desired) -> Result<Diff> {
    let observed = dp.observe(desired.sysctls.keys()).await?;
    Ok(plan::diff(desired, &observed))
}

/// What `converge` would do, refused as it refuses, with nothing written.
pub async fn preview(dp: &mut Dataplane, desired: &Desired) -> Result<Outcome> {
    Ok(Outcome::of(desired, allowed_diff(dp, desired).await?, 0))
}

/// The diff to `desired`. One that would touch what is not ours is refused
/// whole, before any write: a runtime failure (exit 1) naming what is in the way.
async fn allowed_diff(dp: &mut Dataplane, desired: &Desired) -> Result<Diff> {
    let diff = dry_run(dp, desired).await?;
    match diff.blocked.as_slice() {
        [] => Ok(diff),
        reasons => Err(Error::Foreign(reasons.join("; "))),
    }
}

/// Make the kernel hold `desired`, then read it back: success means the
/// kernel holds the plan, not merely that the writes were accepted.
pub async fn converge(dp: &mut Dataplane, desired: &Desired) -> Result<Outcome> {
    let diff = allowed_diff(dp, desired).await?;
    for key in &diff.conflicts {
        tracing::warn!(
            dst = %key.dst,
            table = key.table,
            "a route that is not ours holds this destination; leaving it alone"
        );
    }
    // An empty diff was computed from a fresh read: that read is the proof.
    let changes = if diff.is_empty() {
        0
    } else {
        let changes = dp.apply(&diff).await?;
        let after = dry_run(dp, desired).await?;
        if !after.is_empty() {
            let left: Vec<String> = after.steps.iter().map(ToString::to_string).collect();
            return Err(Error::Unconverged(left.join("; ")));
        }
        changes
    };
    Ok(Outcome::of(desired, diff, changes))
}
