//! `podroute` subcommands, one file each. The ones that print a result (apply,
//! plan, status, check, cleanup, nodes, switch, lab, bench) take `-o table|json`.

mod agent;
mod api_view;
mod apply;
mod bench;
mod check;
mod cleanup;
mod config_args;
mod coordinator;
mod crd;
mod host;
mod lab;
mod nodes;
mod output;
mod plan;
mod source;
mod status;
mod switch;

use clap::{Parser, Subcommand};

pub use config_args::ConfigArgs;
use output::{table, Output};

use crate::Result;

#[derive(Debug, Parser)]
#[command(
    name = "podroute",
    version,
    about = "Pod routes over ipip, VXLAN or native routing, and a seamless switch between them"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log filter (tracing env-filter syntax), e.g. `info`, `podroute=debug`.
    /// Default: `info`; `warn` for `lab`, whose nodes would drown its progress line.
    #[arg(long, global = true, env = "PODROUTE_LOG")]
    pub log: Option<String>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: keep this host's dataplane converged and report readiness.
    Agent(agent::AgentArgs),
    /// Program this host once from a static cluster file, and print what changed.
    Apply(apply::ApplyArgs),
    /// Print the writes `apply` would make; changes nothing.
    Plan(plan::PlanArgs),
    /// Show what the kernel holds of ours, drift against a cluster file, and warnings.
    Status(status::StatusArgs),
    /// Probe every peer over the pods' path: reachable, RTT, MTU, and where it breaks.
    Check(check::CheckArgs),
    /// Remove everything podroute owns from this host.
    Cleanup(cleanup::CleanupArgs),
    /// A virtual cluster in network namespaces: a live switch under traffic.
    Lab(lab::LabArgs),
    /// Benchmark programming N peers against `ip -batch` in a scratch namespace.
    Bench(bench::BenchArgs),
    /// Print the ClusterRouting CRD (YAML)
    Crd(crd::CrdArgs),
    /// Run the cluster-wide switch coordinator (leader-elected on a Lease).
    Coordinator(coordinator::CoordinatorArgs),
    /// Switch the cluster to another mode, abort a switch, or show where it stands.
    Switch(switch::SwitchArgs),
    /// Every Node's applied plan, NetworkUnavailable, and switch state.
    Nodes(nodes::NodesArgs),
}

impl Cli {
    pub fn log_filter(&self) -> &str {
        match (&self.log, &self.command) {
            (Some(filter), _) => filter,
            (None, Command::Lab(_)) => "warn",
            (None, _) => "info",
        }
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Agent(args) => agent::run(args).await,
        Command::Apply(args) => apply::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Check(args) => check::run(args).await,
        Command::Cleanup(args) => cleanup::run(args).await,
        Command::Lab(args) => lab::run(args).await,
        Command::Bench(args) => bench::run(args),
        Command::Crd(args) => crd::run(args),
        Command::Coordinator(args) => coordinator::run(args).await,
        Command::Switch(args) => switch::run(args).await,
        Command::Nodes(args) => nodes::run(args).await,
    }
}

/// The log filter of `--log` / `PODROUTE_LOG`, or why it is not one. Each
/// directive is trimmed first: tracing-subscriber 0.3 panics on a directive
/// with leading whitespace and non-ASCII text. Should another input still
/// make it panic, that is caught (quietly): a log filter is not worth a crash.
pub fn env_filter(text: &str) -> std::result::Result<tracing_subscriber::EnvFilter, String> {
    let directives: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let filter = directives.join(",");
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let parsed = std::panic::catch_unwind(|| tracing_subscriber::EnvFilter::try_new(&filter));
    std::panic::set_hook(hook);
    match parsed {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => Err(format!("log filter {text:?} is not valid: {e}")),
        Err(_) => Err(format!("log filter {text:?} is not valid")),
    }
}

/// SIGTERM (what Kubernetes and systemd send) or Ctrl-C.
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
