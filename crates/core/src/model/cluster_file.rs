//! The static cluster file (`--cluster FILE`): the whole cluster in YAML, for
//! hosts without Kubernetes and for one-shot `podroute apply`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::{validate_nodes, Config, Node, NodeIps, Settings};
use crate::api::{Mode, OffSubnet, Plan, VxlanSpec, MAX_GENERATION};
use crate::input::{read_text, MAX_INPUT_BYTES};
use crate::{Error, Result};

/// Flow collections (`[`, `{`) nested deeper than this are refused before
/// the YAML parser sees them: its cost grows with the square of the depth
/// (100 000 nested `[` took 42 s), and a cluster file needs two levels.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Block nesting shows as indentation (and `- ` markers): a line whose
/// structure starts further in than this is refused for the same reason.
pub const MAX_INDENT: usize = 256;

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
    vxlan: Option<VxlanSpec>,
    nodes: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNode {
    /// `Option`: YAML's `null` and `~` are no name, not the text "null".
    #[serde(default)]
    name: Option<String>,
    ip: Option<String>,
    /// One address per family, instead of `ip`.
    #[serde(default)]
    ips: Vec<String>,
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
        check_nesting(text)?;
        let raw: RawCluster = serde_yaml::from_str(text).map_err(|e| {
            // Several documents: from where the second starts, or the first.
            let line = e
                .location()
                .map(|l| l.line())
                .or_else(|| second_document(text))
                .unwrap_or(1);
            let field = format!("cluster file line {line}");
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
            let ips = match (&n.ip, n.ips.is_empty()) {
                (Some(_), false) => return Err(Error::invalid(field, "give ip or ips, not both")),
                (ip, true) => NodeIps::One(ip.as_deref()),
                (None, false) => NodeIps::List(&n.ips),
            };
            let name = n.name.as_deref().unwrap_or_default();
            nodes.push(Node::parse(&field, name, ips, &cidrs)?);
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
        let settings = Settings::from_wire(raw.off_subnet, raw.mtu, raw.vxlan.as_ref())?;
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

/// Refuses YAML nested deeper than the parser can take in linear time,
/// reading the text once: flow collections (`[`, `{`) deeper than
/// [`MAX_FLOW_DEPTH`], or block structure (indentation plus `- ` markers)
/// starting past column [`MAX_INDENT`]. Quoted scalars and comments are
/// skipped; a bracket inside a plain scalar may be over-counted, which only
/// matters past the limit.
fn check_nesting(text: &str) -> Result<()> {
    let refuse =
        |line: usize, what: String| Error::invalid(format!("cluster file line {line}"), what);
    let (mut depth, mut line) = (0usize, 1usize);
    let mut quote: Option<char> = None;
    let mut previous = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if previous == '\n' && quote.is_none() {
            let mut column = usize::from(c == ' ' || c == '\t' || c == '-');
            while let Some(&next) = chars.peek() {
                if !matches!(next, ' ' | '\t' | '-') || column > MAX_INDENT {
                    break;
                }
                column += 1;
                chars.next();
            }
            if column > MAX_INDENT {
                return Err(refuse(
                    line,
                    format!("block structure nested past column {MAX_INDENT}"),
                ));
            }
        }
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
                    return Err(refuse(
                        line,
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

/// The line where a second YAML document starts (serde_yaml's error for a
/// stream of several has no location).
fn second_document(text: &str) -> Option<usize> {
    let mut starts = text.lines().enumerate().filter(|(_, l)| {
        *l == "---" || l.starts_with("--- ") || *l == "..." || l.starts_with("... ")
    });
    let (first, line) = starts.next()?;
    // A leading `---` opens the first document, not a second one.
    let leading = text
        .lines()
        .take(first)
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    match leading && line.starts_with("---") {
        true => starts.next().map(|(i, _)| i + 1),
        false => Some(first + 1),
    }
}
