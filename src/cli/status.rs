//! `podroute status [--cluster FILE | --kubeconfig FILE] [--node NAME]`
//!
//! The kernel's state, and with a desired state the drift from it: from a
//! cluster file, or from the Kubernetes API (`--kubeconfig`, or in a pod the
//! service account) exactly as this node's agent computes it.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::Serialize;

use super::api_view::{self, api_node, render_api, ApiDesired, ApiView, Planned, Unplanned};
use super::apply::{notes_text, steps_table, warnings_text};
use super::host::Host;
use super::output::table;
use super::source::SourceArgs;
use super::{ConfigArgs, Output};
use crate::dataplane::{read_sysctl, Dataplane};
use crate::engine;
use crate::input::read_text;
use crate::lab::netns::in_netns_or_here;
use crate::model::address::family_name;
use crate::model::{Cluster, Config};
use crate::plan::health::{self, rp_filter_key};
use crate::plan::{self, ForeignState, Observed, Step, Uplink};
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    pub kind: &'static str,
    pub up: bool,
    pub mtu: u32,
    pub addresses: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyCounts {
    pub owned_routes: usize,
    pub neighbours: usize,
    pub fdb_entries: usize,
}

/// Where firewalld keeps its settings; its IPv6_rpfilter is IPv6's
/// reverse-path check.
const FIREWALLD_CONF: &str = "/etc/firewalld/firewalld.conf";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub mode: String,
    pub uplink: Option<Uplink>,
    pub devices: Vec<Device>,
    pub owned_routes: usize,
    /// Routes of an adopted protocol that podroute would take over.
    pub adopted_routes: usize,
    /// What is not podroute's on its devices, by device.
    pub foreign_state: BTreeMap<String, ForeignState>,
    /// Devices with podroute's names but another kind: name -> kind.
    pub foreign_devices: BTreeMap<String, String>,
    pub neighbours: usize,
    pub fdb_entries: usize,
    /// The counts above, per family (`ipv4`, `ipv6`).
    pub families: BTreeMap<&'static str, FamilyCounts>,
    pub pod_mtu: Option<u32>,
    pub sysctls: BTreeMap<String, Option<String>>,
    /// Writes apply would make (only with --cluster).
    pub drift: Option<Vec<Step>>,
    /// How the plan treats a family as a whole (only with --cluster).
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
    /// What the Kubernetes API says (only when read from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ApiView>,
}

/// What the kernel is compared with.
struct Compared {
    dp: Dataplane,
    drift: Option<Vec<Step>>,
    uplink: Option<Uplink>,
    adopt: plan::AdoptScope,
    notes: Vec<String>,
    api: Option<ApiView>,
}

impl Compared {
    /// Nothing to compare with: the kernel alone, and why in `notes`.
    fn kernel_only(config: Config, notes: Vec<String>, api: Option<ApiView>) -> Result<Compared> {
        let adopt = plan::nothing(&config).adopt;
        Ok(Compared {
            dp: Dataplane::connect(config)?,
            drift: None,
            uplink: None,
            adopt,
            notes,
            api,
        })
    }
}

/// The cluster file's desired state, the API's (read before: `api`), or
/// none (kernel only).
async fn compared(args: &StatusArgs, api: Option<(Option<Cluster>, ApiView)>) -> Result<Compared> {
    if let Some(path) = &args.source.cluster {
        let mut host = Host::load(path, &args.source.node, &args.config).await?;
        let drift = engine::dry_run(&mut host.dp, &host.desired).await?.steps;
        return Ok(Compared {
            dp: host.dp,
            drift: Some(drift),
            uplink: Some(host.uplink),
            adopt: host.desired.adopt,
            notes: host.desired.notes,
            api: None,
        });
    }
    let Some((cluster, view)) = api else {
        return Compared::kernel_only(args.config.config(None)?, Vec::new(), None);
    };
    match api_view::desired_state(cluster, view, &args.config).await? {
        ApiDesired::Unplanned(unplanned) => {
            let Unplanned { config, why, view } = *unplanned;
            let why = format!("{why}: nothing to compare with");
            Compared::kernel_only(config, vec![why], Some(view))
        }
        ApiDesired::Planned(planned) => {
            let Planned {
                mut dp,
                desired,
                uplink,
                view,
                ..
            } = *planned;
            let drift = engine::dry_run(&mut dp, &desired).await?.steps;
            Ok(Compared {
                dp,
                drift: Some(drift),
                uplink: Some(uplink),
                adopt: desired.adopt,
                notes: desired.notes,
                api: Some(view),
            })
        }
    }
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let cluster = args.source.cluster.as_deref();
    let api = match api_node(
        cluster,
        args.source.kubeconfig.as_deref(),
        &args.source.node,
    )? {
        Some(node) => match api_view::read(args.source.kubeconfig.as_deref(), &node).await {
            Ok(api) => Some(api),
            // Asked for with --kubeconfig: an error. Found in a pod: the
            // kernel is still worth showing while the API is away.
            Err(e) if args.source.kubeconfig.is_none() => {
                tracing::warn!("the Kubernetes API could not be read ({e}): the kernel alone");
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let output = args.output;
    // The kernel's state, sysctls included, as a thread inside the
    // namespace sees it.
    let netns = args.source.netns.clone();
    let report = in_netns_or_here(netns, move || async move { report(&args, api).await }).await?;
    output.print(&report, render)
}

async fn report(
    args: &StatusArgs,
    api: Option<(Option<Cluster>, ApiView)>,
) -> Result<StatusReport> {
    let Compared {
        mut dp,
        drift,
        mut uplink,
        adopt,
        notes,
        api,
    } = compared(args, api).await?;
    let config = dp.config().clone();
    let observed = dp.observe(std::iter::empty()).await?;
    if uplink.is_none() {
        uplink = guess_uplink(&mut dp, &observed).await;
    }

    let mut sysctls = BTreeMap::new();
    let ipv6_devices = [
        uplink.as_ref().map(|u| u.name.clone()),
        observed.vxlan6.as_ref().map(|v| v.identity.link.clone()),
    ];
    let keys = ["net/ipv4/ip_forward".to_string(), rp_filter_key("all")]
        .into_iter()
        .chain(
            health::watched_devices(&observed, uplink.as_ref())
                .into_iter()
                .map(|d| rp_filter_key(&d)),
        )
        .chain([health::IPV6_FORWARDING.to_string()])
        .chain(
            ipv6_devices
                .into_iter()
                .flatten()
                .map(|d| health::accept_ra_key(&d)),
        );
    for key in keys {
        let value = read_sysctl(&config.proc_sys, &key)?;
        sysctls.insert(key, value);
    }
    let mut warnings = health::warnings(&observed, uplink.as_ref(), &sysctls, &config);
    let firewalld = std::path::Path::new(FIREWALLD_CONF);
    let firewalld = firewalld
        .exists()
        .then(|| read_text(firewalld, "firewalld.conf", 1 << 20).ok())
        .flatten();
    warnings.extend(health::ipv6_warnings(
        &observed,
        &sysctls,
        firewalld.as_deref(),
    ));
    let adopted = observed
        .adoptable
        .values()
        .filter(|r| adopt.covers(r))
        .count();
    let report = StatusReport {
        mode: health::kernel_mode(&observed, &config),
        devices: devices(&observed),
        owned_routes: observed.routes.len(),
        adopted_routes: adopted,
        neighbours: observed.neighs.len(),
        fdb_entries: observed.fdb.len(),
        families: family_counts(&observed),
        pod_mtu: observed.pod_mtu,
        foreign_state: observed.foreign_state.clone(),
        foreign_devices: observed.foreign_devices.clone(),
        uplink,
        sysctls,
        drift,
        notes,
        warnings,
        cluster: api,
    };
    Ok(report)
}

/// Without a cluster file: the VXLAN device's link, or the device of a native route.
async fn guess_uplink(dp: &mut Dataplane, observed: &Observed) -> Option<Uplink> {
    let config = dp.config().clone();
    let name = observed
        .vxlan
        .as_ref()
        .map(|v| v.identity.link.clone())
        .filter(|l| !l.is_empty())
        .or_else(|| {
            observed
                .routes
                .values()
                .find(|r| {
                    health::route_mode(&r.dev, &config) == crate::api::Mode::Native
                        && !r.dev.is_empty()
                })
                .map(|r| r.dev.clone())
        })?;
    let link = dp.links().iter().find(|l| l.name == name)?.clone();
    let address = dp
        .local_addresses(Some(link.index))
        .await
        .ok()?
        .into_iter()
        .find(IpNetwork::is_ipv4)?;
    Some(Uplink {
        name,
        mtu: link.mtu,
        address,
        accept_ra: None,
    })
}

fn devices(observed: &Observed) -> Vec<Device> {
    let mut out = Vec::new();
    if let Some(d) = &observed.ipip {
        out.push(Device {
            name: d.name.clone(),
            kind: "ipip",
            up: d.up,
            mtu: d.mtu,
            addresses: host_addresses(&d.addresses),
            detail: String::new(),
        });
    }
    for d in [&observed.vxlan, &observed.vxlan6].into_iter().flatten() {
        let i = &d.identity;
        out.push(Device {
            name: d.name.clone(),
            kind: "vxlan",
            up: d.up,
            mtu: d.mtu,
            addresses: host_addresses(&d.addresses),
            detail: format!(
                "vni {} port {} local {} dev {} mac {}",
                i.vni, i.port, i.local, i.link, i.mac
            ),
        });
    }
    out
}

fn family_counts(observed: &Observed) -> BTreeMap<&'static str, FamilyCounts> {
    let mut out: BTreeMap<&'static str, FamilyCounts> = BTreeMap::new();
    for key in observed.routes.keys() {
        out.entry(family_name(key.dst.ip()))
            .or_default()
            .owned_routes += 1;
    }
    for ip in observed.neighs.keys() {
        out.entry(family_name(*ip)).or_default().neighbours += 1;
    }
    for fdb in observed.fdb.values() {
        out.entry(family_name(fdb.dst)).or_default().fdb_entries += 1;
    }
    out
}

/// Our tunnel addresses as host networks: `10.244.1.0/32`, `fd00:244:1::/128`.
fn host_addresses(addresses: &std::collections::BTreeSet<std::net::IpAddr>) -> Vec<String> {
    addresses
        .iter()
        .map(|a| IpNetwork::from(*a).to_string())
        .collect()
}

fn render(r: &StatusReport) -> String {
    let mut out = r.cluster.as_ref().map(render_api).unwrap_or_default();
    out.push_str(&format!("mode in the kernel: {}\n", r.mode));
    if let Some(u) = &r.uplink {
        out.push_str(&format!("uplink: {} {} mtu {}\n", u.name, u.address, u.mtu));
    }
    if r.devices.is_empty() {
        out.push_str("devices: none of ours\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .devices
            .iter()
            .map(|d| {
                vec![
                    d.name.clone(),
                    d.kind.into(),
                    if d.up { "up" } else { "down" }.into(),
                    d.mtu.to_string(),
                    d.addresses.join(","),
                    d.detail.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["DEVICE", "KIND", "STATE", "MTU", "ADDRESSES", "DETAIL"],
            &rows,
        ));
    }
    out.push_str(&format!(
        "routes: {} owned, {} adopted; neighbours: {}; fdb: {}; pod MTU file: {}\n",
        r.owned_routes,
        r.adopted_routes,
        r.neighbours,
        r.fdb_entries,
        r.pod_mtu.map_or("missing".into(), |m| m.to_string())
    ));
    if r.families.len() > 1 {
        for (family, c) in &r.families {
            out.push_str(&format!(
                "  {family}: {} routes, {} neighbours, {} fdb\n",
                c.owned_routes, c.neighbours, c.fdb_entries
            ));
        }
    }
    for (key, value) in &r.sysctls {
        out.push_str(&format!(
            "{} = {}\n",
            plan::sysctl_name(key),
            value.as_deref().unwrap_or("-")
        ));
    }
    match &r.drift {
        None => {}
        Some(steps) if steps.is_empty() => out.push_str("drift: none, the kernel holds the plan\n"),
        Some(steps) => out.push_str(&format!(
            "drift: {} writes to converge\n{}",
            steps.len(),
            steps_table(steps)
        )),
    }
    out.push_str(&notes_text(&r.notes));
    out.push_str(&warnings_text(&r.warnings));
    out
}
