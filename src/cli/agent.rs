//! `podroute agent`: the per-node daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ConfigArgs;
use crate::agent::{pump, Agent, AgentOptions};
use crate::check::{self, CheckOptions};
use crate::dataplane::monitor::Monitor;
use crate::dataplane::Dataplane;
use crate::http;
use crate::lab::node_agent::NodeAgent;
use crate::privilege;
use crate::store::{ClusterStore, FileStore, KubeStore};
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// This node's name (in a pod: NODE_NAME from the downward API).
    #[arg(long = "node-name", visible_alias = "node", env = "NODE_NAME")]
    pub node_name: String,
    /// Static cluster file to follow (hosts without Kubernetes). Without it
    /// the agent uses the Kubernetes API (kubeconfig or in-cluster config).
    #[arg(long, env = "PODROUTE_CLUSTER")]
    pub cluster: Option<PathBuf>,
    /// kubeconfig for the Kubernetes store (default: $KUBECONFIG, which
    /// may list several files, ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Where the peers' routing facts come from in Kubernetes: `records`,
    /// the small PodrouteNode objects that change only when a node's
    /// routing does; or `nodes`, every Node object, as before records
    /// (every kubelet status write then reaches every agent).
    #[arg(long, value_enum, default_value = "records")]
    pub peers_from: PeersFrom,
    /// Full resync interval, in seconds, even when nothing was heard.
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Listener for /healthz, /readyz and /metrics.
    #[arg(long, env = "PODROUTE_LISTEN", default_value = "0.0.0.0:9469")]
    pub listen: SocketAddr,
    /// For the lab and tests: program the dataplane of this named network
    /// namespace (ip netns) instead of the agent's own; the cluster store
    /// still connects from the agent's namespace. Keeps every capability.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// UDP port of the check responder, which answers `podroute check` and
    /// the peers' periodic checks; 0 turns the responder and the periodic
    /// check off.
    #[arg(long, env = "PODROUTE_CHECK_PORT", default_value_t = check::DEFAULT_PORT)]
    pub check_port: u16,
    /// Probe every routed peer once per this many seconds (the periodic
    /// check, exported as podroute_peer_reachable); 0: only answer probes.
    #[arg(long, default_value_t = 60)]
    pub check_interval_seconds: u64,
    /// Peers the periodic check probes per second, at most: with many
    /// peers a round then takes longer than the interval.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub check_max_rate: u32,
    /// Keep every capability the process started with (default: drop all but CAP_NET_ADMIN).
    #[arg(long)]
    pub keep_capabilities: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeersFrom {
    Records,
    Nodes,
}

pub async fn run(args: AgentArgs) -> Result<()> {
    privilege::require(
        privilege::NET_ADMIN,
        "capabilities",
        "podroute agent needs CAP_NET_ADMIN (run privileged, or add NET_ADMIN)",
    )?;
    // Capabilities belong to threads, and new threads copy their creator's:
    // dropping them first, while this is the only thread, leaves no thread
    // (inotify watcher, blocking pool, ...) with more than CAP_NET_ADMIN.
    // `--netns` keeps them: its dataplane thread enters the namespace later.
    if !args.keep_capabilities && args.netns.is_none() {
        privilege::drop_all_but_net_admin()?;
    }
    let config = args.config.config(None)?;
    let store: Arc<dyn ClusterStore> = match &args.cluster {
        Some(path) => Arc::new(FileStore::open(path)?),
        None => {
            let client = KubeStore::client(args.kubeconfig.as_deref()).await?;
            Arc::new(match args.peers_from {
                PeersFrom::Records => KubeStore::for_agent(client, &args.node_name)?,
                PeersFrom::Nodes => KubeStore::new(client)?,
            })
        }
    };
    let mut options = AgentOptions::new(&args.node_name);
    options.resync = Duration::from_secs(args.resync_seconds.max(1));
    options.check = (args.check_port != 0).then(|| CheckOptions {
        port: args.check_port,
        interval: Duration::from_secs(args.check_interval_seconds),
        max_rate: args.check_max_rate,
        timeout: check::PROBE_TIMEOUT,
    });
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        super::wait_for_signal().await;
        tracing::info!("stopping; the dataplane stays as it is");
        let _ = stop.send(true);
    });
    if let Some(netns) = &args.netns {
        let agent = NodeAgent::spawn(netns, options, store, config, None)?;
        let bound = http::serve(args.listen, agent.metrics_handle()).await?;
        tracing::info!(node = %args.node_name, %netns, listen = %bound, "agent started");
        let mut shutdown = shutdown;
        let _ = shutdown.wait_for(|stop| *stop).await;
        return agent.stop();
    }

    // The monitor first: a change between it and the first observe is then
    // either seen by that observe or reported by the monitor.
    let monitor = Monitor::start(&config)?;
    let dataplane = Dataplane::connect(config)?;
    let agent = Agent::new(options, store, dataplane);
    let bound = http::serve(args.listen, agent.metrics()).await?;
    tracing::info!(node = %args.node_name, listen = %bound, "agent started");

    let events = pump(monitor, agent.uplink_updates());
    agent.run(events, shutdown).await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn help_documents_every_flag() {
        let mut cli = super::super::Cli::command();
        cli.build();
        let agent = cli.find_subcommand_mut("agent").expect("agent subcommand");
        let help = agent.render_long_help().to_string();
        for arg in agent.get_arguments() {
            let id = arg.get_id();
            assert!(!arg.is_hide_set(), "--{id} is hidden from --help");
            assert!(
                arg.get_help().is_some() || arg.get_long_help().is_some(),
                "--{id} has no help text"
            );
            let long = arg.get_long().expect("every agent flag is long");
            assert!(
                help.contains(&format!("--{long}")),
                "--{long} missing from agent --help:\n{help}"
            );
        }
    }
}
