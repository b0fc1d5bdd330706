//! What apply, plan and status share: the cluster file, this host's node in
//! it, and the desired state of that node read against this host's kernel.

use std::path::{Path, PathBuf};

use super::ConfigArgs;
use crate::dataplane::Dataplane;
use crate::engine;
use crate::model::{Cluster, Node};
use crate::plan::{Desired, Uplink};
use crate::Result;

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
    /// Everything is validated here, before any write.
    pub async fn load(cluster: &Path, node: &NodeArgs, config: &ConfigArgs) -> Result<Host> {
        let cluster = Cluster::load(cluster)?;
        let config = config.config(Some(&cluster))?;
        let mut dp = Dataplane::connect(config)?;
        let local = engine::local_node(&dp, &cluster, node.node.as_deref())
            .await?
            .clone();
        let (desired, uplink) = engine::desired_for(&mut dp, &cluster, &local).await?;
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
