//! Where `plan` and `check` take this node's desired state from: a cluster
//! file, or the Kubernetes API exactly as this node's agent reads it.

use std::path::PathBuf;

use super::api_view::{self, api_node, ApiDesired, ApiView, Planned};
use super::host::{Host, NodeArgs};
use super::ConfigArgs;
use crate::dataplane::Dataplane;
use crate::model::{Cluster, Node};
use crate::plan::{Desired, Uplink};
use crate::{Error, Result};

/// Where this node's desired state comes from, and which kernel to read:
/// the flags `status`, `plan` and `check` share.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Static cluster file (YAML): mode, options, nodes with name, ip, podCIDR(s).
    #[arg(long, env = "PODROUTE_CLUSTER")]
    pub cluster: Option<PathBuf>,
    /// Read the desired state from the Kubernetes API as this node's agent
    /// does (read-only). In an agent pod its service account is used
    /// without it.
    #[arg(long, conflicts_with = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Work in this network namespace (`ip netns`) instead of this
    /// process's own; the API is still reached from here (labs, tests).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub enum Source {
    File(PathBuf),
    /// What the API said, read before entering any `--netns`.
    Api(Option<Cluster>, Box<ApiView>),
}

/// This node's desired state, read against this kernel.
pub struct Loaded {
    pub dp: Dataplane,
    pub cluster: Cluster,
    pub local: Node,
    pub desired: Desired,
    pub uplink: Uplink,
    /// What the API says, when read from it.
    pub view: Option<ApiView>,
}

impl Source {
    /// From the flags; the API is read now. `command` names the subcommand
    /// in the error for neither.
    pub async fn from_flags(args: &SourceArgs, command: &str) -> Result<Source> {
        let (cluster, kubeconfig) = (args.cluster.as_deref(), args.kubeconfig.as_deref());
        match (api_node(cluster, kubeconfig, &args.node)?, cluster) {
            (Some(node), _) => {
                let (cluster, view) = api_view::read(kubeconfig, &node).await?;
                Ok(Source::Api(cluster, Box::new(view)))
            }
            (None, Some(path)) => Ok(Source::File(path.to_path_buf())),
            (None, None) => Err(Error::invalid(
                "--cluster",
                format!(
                    "{command} needs a desired state: --cluster FILE, or --kubeconfig FILE \
                     --node NAME (in an agent pod: its service account and NODE_NAME)"
                ),
            )),
        }
    }

    /// Read against this kernel (call it inside the namespace to read).
    /// No plan for this node from the API is an error, not bad input: the
    /// cluster is not there yet. `doing` names the work in it.
    pub async fn load(self, node: &NodeArgs, config: &ConfigArgs, doing: &str) -> Result<Loaded> {
        match self {
            Source::File(path) => {
                let host = Host::load(&path, node, config).await?;
                Ok(Loaded {
                    dp: host.dp,
                    cluster: host.cluster,
                    local: host.local,
                    desired: host.desired,
                    uplink: host.uplink,
                    view: None,
                })
            }
            Source::Api(cluster, view) => match api_view::desired_state(cluster, *view, config)
                .await?
            {
                ApiDesired::Planned(planned) => {
                    let Planned {
                        dp,
                        cluster,
                        desired,
                        uplink,
                        view,
                    } = *planned;
                    let local = cluster.node(&view.node).cloned().ok_or_else(|| {
                        Error::invalid("--node", format!("no Node {} in the cluster", view.node))
                    })?;
                    Ok(Loaded {
                        dp,
                        cluster,
                        local,
                        desired,
                        uplink,
                        view: Some(view),
                    })
                }
                ApiDesired::Unplanned(unplanned) => Err(Error::io(
                    format!(
                        "{doing} node {} from the Kubernetes API",
                        unplanned.view.node
                    ),
                    std::io::Error::other(unplanned.why),
                )),
            },
        }
    }
}
