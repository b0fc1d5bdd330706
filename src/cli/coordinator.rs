//! `podroute coordinator`: the cluster-wide switch, on the Kubernetes API.
//! Run it as a Deployment (two replicas are fine: one leads, on a Lease).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::coordinator::kube::{run as run_coordinator, Options};
use crate::coordinator::metrics::CoordinatorMetrics;
use crate::http;
use crate::store::KubeStore;
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// kubeconfig (default: $KUBECONFIG, which may list several files,
    /// ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the leader-election Lease `podroute-coordinator`.
    #[arg(long, default_value = "podroute-system")]
    pub lease_namespace: String,
    /// This replica's name in the Lease (default: $POD_NAME, else the hostname).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration, in seconds: how long a dead leader blocks a successor.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// Renew the Lease this often, in seconds.
    #[arg(long, default_value_t = 5)]
    pub renew_seconds: u64,
    /// Native with `offSubnet: underlay`: before routing native, also wait
    /// on every node for this Node condition to be True (one that a
    /// cloud-specific controller sets once the node's routes are in the
    /// underlay; not NetworkUnavailable, which podroute writes itself).
    #[arg(long, value_name = "TYPE")]
    pub underlay_signal_condition: Option<String>,
    /// Listener for /healthz, /readyz (the API server answers) and /metrics.
    #[arg(long, env = "PODROUTE_LISTEN", default_value = "0.0.0.0:9470")]
    pub listen: SocketAddr,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("podroute-{}", std::process::id()))
}

pub async fn run(args: CoordinatorArgs) -> Result<()> {
    let identity = args.identity.clone().unwrap_or_else(hostname);
    let client = KubeStore::client(args.kubeconfig.as_deref()).await?;
    let options = Options {
        identity: identity.clone(),
        lease_namespace: args.lease_namespace.clone(),
        lease_duration: Duration::from_secs(args.lease_seconds.max(1)),
        renew_every: Duration::from_secs(args.renew_seconds.max(1)),
        underlay_signal_condition: args.underlay_signal_condition,
    };
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        super::wait_for_signal().await;
        tracing::info!("stopping");
        let _ = stop.send(true);
    });
    let metrics = Arc::new(CoordinatorMetrics::default());
    let bound = http::serve(args.listen, metrics.clone()).await?;
    tracing::info!(%identity, lease_namespace = %args.lease_namespace, listen = %bound, "coordinator started");
    run_coordinator(client, options, metrics, shutdown).await
}
