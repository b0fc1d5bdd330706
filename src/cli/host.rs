//! What apply, plan and status share: the cluster file, this host's node in
//! it, and the desired state of that node read against this host's kernel.

use std::path::{Path, PathBuf};

use super::ConfigArgs;
use crate::dataplane::Dataplane;
use crate::engine;
use crate::model::{Cluster, Node};
use crate::plan::{Desired, Uplink};
use crate::{Error, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// This host's node name; default: the node whose IP is on this host.
    #[arg(long, env = "NODE_NAME")]
    pub node: Option<String>,
}

/// One host's view of a cluster file.
pub struct Host {
    pub dp: Dataplane,
    pub cluster: Cluster,
    pub local: Node,
    pub desired: Desired,
    pub uplink: Uplink,
}

impl Host {
    /// Everything is validated here, before any write: a peer this node
    /// would have to leave out is bad input too.
    pub async fn load(path: &Path, node: &NodeArgs, config: &ConfigArgs) -> Result<Host> {
        let cluster = Cluster::load(path)?;
        let config = config.config(Some(&cluster))?;
        let mut dp = Dataplane::connect(config)?;
        let local = engine::local_node(&dp, &cluster, node.node.as_deref())
            .await?
            .clone();
        // Errors about a node's fields name it as the file does.
        let in_file = |name: &str, field: &str, reason: String| {
            let i = cluster
                .nodes
                .iter()
                .position(|n| n.name == name)
                .unwrap_or(0);
            Error::invalid(format!("{}: nodes[{i}].{field}", path.display()), reason)
        };
        let (desired, uplink) = engine::desired_for(&mut dp, &cluster, &local)
            .await
            .map_err(|e| match e {
                Error::Invalid { field, reason } if field.starts_with("podCIDRs") => {
                    in_file(&local.name, &field, reason)
                }
                other => other,
            })?;
        if let Some(peer) = desired.excluded.first() {
            return Err(in_file(&peer.node, "podCIDRs[0]", peer.reason.clone()));
        }
        Ok(Host {
            dp,
            cluster,
            local,
            desired,
            uplink,
        })
    }
}

/// `--cluster FILE`, required.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Static cluster file (YAML): mode, options, nodes with name, ip, podCIDR(s).
    #[arg(long, env = "PODROUTE_CLUSTER")]
    pub cluster: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}
