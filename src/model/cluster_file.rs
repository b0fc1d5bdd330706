//! The static cluster file (`--cluster FILE`): the whole cluster in YAML, for
//! hosts without Kubernetes and for one-shot `podroute apply`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::{validate_nodes, Config, Mode, Node, OffSubnet, Plan, Settings};
use crate::input::{read_text, MAX_INPUT_BYTES};
use crate::{Error, Result};

/// Flow collections (`[`, `{`) nested deeper than this are refused before
/// the YAML parser sees them: its cost grows with the square of the depth
/// (100 000 nested `[` took 42 s), and a cluster file needs two levels.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Plan generations live in Kubernetes objects, whose integers are int64.
pub const MAX_GENERATION: u64 = i64::MAX as u64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCluster {
    mode: Mode,
    #[serde(default)]
    off_subnet: Option<OffSubnet>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    generation: Option<u64>,
    /// Extra encapsulations to receive; only set during a switch.
    #[serde(default)]
    decap: Option<BTreeSet<Mode>>,
    #[serde(default)]
    vxlan: Option<RawVxlan>,
    nodes: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    vni: Option<u32>,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNode {
    /// `Option`: YAML's `null` and `~` are no name, not the text "null".
    #[serde(default)]
    name: Option<String>,
    ip: Option<String>,
    #[serde(default, rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(default, rename = "podCIDRs")]
    pod_cidrs: Vec<String>,
}

/// A validated cluster: nodes, the plan every node follows, and the
/// cluster-wide settings that override node-local defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub plan: Plan,
    pub settings: Settings,
}

impl Cluster {
    /// Read and validate a cluster file: a regular file of at most 32 MiB.
    pub fn load(path: &Path) -> Result<Cluster> {
        let text = read_text(path, "cluster file", MAX_INPUT_BYTES)?;
        Cluster::parse(&text).map_err(|e| match e {
            Error::Invalid { field, reason } => {
                Error::invalid(format!("{}: {field}", path.display()), reason)
            }
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Cluster> {
        // A byte-order mark is not YAML content (editors on Windows add one).
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        check_flow_depth(text)?;
        let raw: RawCluster = serde_yaml::from_str(text).map_err(|e| {
            let field = e
                .location()
                .map(|l| format!("cluster file line {}", l.line()))
                .unwrap_or_else(|| "cluster file".into());
            Error::invalid(field, e.to_string())
        })?;
        let mut nodes = Vec::with_capacity(raw.nodes.len());
        for (i, n) in raw.nodes.iter().enumerate() {
            let field = format!("nodes[{i}]");
            let cidrs = match (&n.pod_cidr, n.pod_cidrs.is_empty()) {
                (Some(_), false) => {
                    return Err(Error::invalid(field, "give podCIDR or podCIDRs, not both"));
                }
                (Some(one), true) => vec![one.clone()],
                (None, _) => n.pod_cidrs.clone(),
            };
            let name = n.name.as_deref().unwrap_or_default();
            nodes.push(Node::parse(&field, name, n.ip.as_deref(), &cidrs)?);
        }
        validate_nodes(&nodes)?;
        let generation = raw.generation.unwrap_or(1);
        if !(1..=MAX_GENERATION).contains(&generation) {
            return Err(Error::invalid(
                "generation",
                format!("{generation} is not in 1..={MAX_GENERATION} (Kubernetes integers are 64-bit signed)"),
            ));
        }
        let mut decap = raw.decap.unwrap_or_default();
        decap.insert(raw.mode);
        let settings = Settings {
            off_subnet: raw.off_subnet,
            mtu: raw.mtu,
            vxlan_vni: raw.vxlan.as_ref().and_then(|v| v.vni),
            vxlan_port: raw.vxlan.as_ref().and_then(|v| v.port),
        };
        settings.validate()?;
        Ok(Cluster {
            nodes,
            plan: Plan {
                generation,
                route_mode: raw.mode,
                decap,
            },
            settings,
        })
    }

    /// Cluster-wide settings win over node-local defaults.
    pub fn apply_to(&self, config: &mut Config) {
        self.settings.apply_to(config);
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Refuses flow collections nested deeper than [`MAX_FLOW_DEPTH`], reading
/// the text once. Quoted scalars and comments are skipped; a bracket inside a
/// plain scalar may be over-counted, which only matters past the limit.
fn check_flow_depth(text: &str) -> Result<()> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut quote: Option<char> = None;
    let mut previous = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\n') => line += 1,
            (Some('\''), '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
            }
            (Some('"'), '\\') => {
                chars.next_if(|&c| c != '\n');
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            // A quote opens a scalar only at its start (`it's` is plain).
            (None, '\'' | '"') if previous.is_whitespace() || "[{,".contains(previous) => {
                quote = Some(c)
            }
            (None, '#') if previous.is_whitespace() => {
                while chars.next_if(|&c| c != '\n').is_some() {}
            }
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(Error::invalid(
                        format!("cluster file line {line}"),
                        format!("collections nested deeper than {MAX_FLOW_DEPTH} levels"),
                    ));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    Ok(())
}
