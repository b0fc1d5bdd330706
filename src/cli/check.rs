//! `podroute check [--cluster FILE | --kubeconfig FILE] [--peer NAME]...`
//!
//! Packets, not just routes: from this node, a probe to every peer (or the
//! named ones) over the path pods' packets take, answered by the peer's
//! agent. Per peer: reachable, round trip, whether full-size packets with DF
//! pass, and where the path breaks. Exits 1 when a path is broken.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::output::table;
use super::source::{Loaded, Source, SourceArgs};
use super::{ConfigArgs, Output};
use crate::check::verdict::underlay_break;
use crate::check::{self, verdict, PeerCheck};
use crate::lab::netns::in_netns_or_here;
use crate::model::Cluster;
use crate::plan::check::{locate, targets, ProbeTarget};
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Check only this peer (repeatable); default: every peer this node routes.
    #[arg(long = "peer", value_name = "NAME")]
    pub peers: Vec<String>,
    /// UDP port the peers' agents answer on (their --check-port).
    #[arg(long, env = "PODROUTE_CHECK_PORT", default_value_t = check::DEFAULT_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// How long to wait for each peer's answers, in milliseconds (3 tries within it).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(30..=60_000))]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub node: String,
    pub mode: String,
    pub port: u16,
    pub peers: Vec<PeerCheck>,
    pub checked: usize,
    pub ok: usize,
    pub unreachable: usize,
    pub mtu_failing: usize,
    /// From the first probe to the last verdict, in milliseconds.
    pub took_ms: u64,
}

pub async fn run(args: CheckArgs) -> Result<()> {
    let source = Source::from_flags(&args.source, "check").await?;
    let output = args.output;
    let netns = args.source.netns.clone();
    let report = in_netns_or_here(netns, move || async move { check(&args, source).await }).await?;
    output.print(&report, render)?;
    let broken = report.checked - report.ok;
    if broken > 0 {
        return Err(Error::Failing(format!(
            "{broken} of {} peer paths are broken",
            report.checked
        )));
    }
    Ok(())
}

async fn check(args: &CheckArgs, source: Source) -> Result<CheckReport> {
    let Loaded {
        mut dp,
        cluster,
        local,
        desired,
        uplink,
        ..
    } = source
        .load(&args.source.node, &args.config, "checking")
        .await?;
    let all = targets(&desired, &cluster.nodes, &local, uplink.mtu);
    let chosen = chosen(all, &args.peers, &cluster, &desired.excluded)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let started = Instant::now();
    let probed = check::probe_all(&chosen, args.port, timeout).await;
    // What this node's kernel lacks explains a silence best: read it once,
    // and only when some probe went unanswered.
    let observed = match probed.iter().any(|p| p.small.is_err()) {
        true => Some(dp.observe(std::iter::empty()).await?),
        false => None,
    };
    let mut peers = Vec::with_capacity(chosen.len());
    for (t, p) in chosen.iter().zip(&probed) {
        let mut located = observed
            .as_ref()
            .filter(|_| p.small.is_err())
            .and_then(|o| locate(t, &desired, o));
        if let (None, Err(_), Some(ip)) = (&located, &p.small, t.underlay) {
            located = underlay_break(t, &dp.neighbour_states(ip).await?);
        }
        peers.push(verdict(t, p, located, args.port, timeout));
    }
    for p in peers.iter().filter(|p| !p.ok()) {
        tracing::debug!(peer = %p.peer, family = p.family, broken = ?p.broken, "broken path");
    }
    let count = |f: fn(&PeerCheck) -> bool| peers.iter().filter(|p| f(p)).count();
    Ok(CheckReport {
        node: local.name.clone(),
        mode: cluster.plan.route_mode.to_string(),
        port: args.port,
        checked: peers.len(),
        ok: count(PeerCheck::ok),
        unreachable: count(|p| !p.reachable),
        mtu_failing: count(|p| p.mtu_ok == Some(false)),
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        peers,
    })
}

/// The targets of the `--peer` names (all without any); a name this node
/// does not route is bad input, named with the reason.
fn chosen(
    all: Vec<ProbeTarget>,
    names: &[String],
    cluster: &Cluster,
    excluded: &[crate::plan::Excluded],
) -> Result<Vec<ProbeTarget>> {
    for name in names {
        if all.iter().any(|t| &t.peer == name) {
            continue;
        }
        let why = match (
            cluster.node(name),
            excluded.iter().find(|e| &e.node == name),
        ) {
            (_, Some(e)) => format!("{name} is left out by this node: {}", e.reason),
            (Some(_), None) => format!("{name} is this node, or has no route from it"),
            (None, None) => format!("no node named {name} in the cluster"),
        };
        return Err(Error::invalid("--peer", why));
    }
    Ok(all
        .into_iter()
        .filter(|t| names.is_empty() || names.contains(&t.peer))
        .collect())
}

fn render(r: &CheckReport) -> String {
    let broken = r.checked - r.ok;
    let mut out = format!(
        "node {} ({}): {} peer paths checked in {} ms: {} ok, {} broken\n",
        r.node, r.mode, r.checked, r.took_ms, r.ok, broken
    );
    let rows: Vec<Vec<String>> = r
        .peers
        .iter()
        .map(|p| {
            vec![
                p.peer.clone(),
                p.family.to_string(),
                p.dst.to_string(),
                p.dev.clone(),
                if p.reachable { "yes" } else { "no" }.to_string(),
                p.rtt_ms.map_or("-".into(), |ms| format!("{ms:.2} ms")),
                match p.mtu_ok {
                    Some(true) => format!("{} ok", p.mtu),
                    Some(false) => format!("{} FAILS", p.mtu),
                    None => format!("{} ?", p.mtu),
                },
                p.broken.as_ref().map_or("-".into(), |b| {
                    format!("{}: {}", stage_name(b.stage), b.detail)
                }),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PEER",
            "FAMILY",
            "TO",
            "DEV",
            "REACHABLE",
            "RTT",
            "MTU",
            "BROKEN AT",
        ],
        &rows,
    ));
    out
}

fn stage_name(stage: crate::plan::check::Stage) -> String {
    serde_json::to_value(stage)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
