//! `podroute switch --to MODE [--wait] [--abort]` and `podroute switch status`:
//! drive a cluster-wide switch by writing `spec.mode` of the ClusterRouting
//! object, and watch the coordinator roll it out (its status).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, WatchEvent, WatchParams};
use serde::Serialize;
use serde_json::json;

use super::{table, Output};
use crate::api::{ClusterRouting, ClusterRoutingStatus, CLUSTER_ROUTING_NAME};
use crate::api::{Mode, Phase};
use crate::store::crd::routing_read_error;
use crate::store::KubeStore;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SwitchArgs {
    #[command(subcommand)]
    pub command: Option<SwitchCommand>,
    /// The mode to switch the cluster to (writes spec.mode).
    #[arg(long, required_unless_present = "abort")]
    pub to: Option<Mode>,
    /// Abort the switch in progress: spec.mode back to status.from.
    #[arg(long, conflicts_with = "to")]
    pub abort: bool,
    /// Follow the rollout: a progress line whenever the phase or the nodes'
    /// counts change (rewritten in place on a terminal), then a summary;
    /// exit non-zero when it ends Blocked (or on --timeout-seconds).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_seconds: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// kubeconfig (default: $KUBECONFIG, which may list several files,
    /// ~/.kube/config, in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    pub output: Output,
}

#[derive(Debug, clap::Subcommand)]
pub enum SwitchCommand {
    /// Show where the switch stands (the ClusterRouting status).
    Status,
}

/// `switch status -o json`, and the summary of `switch --wait`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchReport {
    /// spec.mode: what the operator asked for.
    pub mode: Mode,
    /// metadata.generation of the spec.
    pub generation: Option<i64>,
    pub status: ClusterRoutingStatus,
    /// Seconds `--wait` waited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_seconds: Option<f64>,
}

pub async fn run(args: SwitchArgs) -> Result<()> {
    let client = KubeStore::client(args.common.kubeconfig.as_deref()).await?;
    let api: Api<ClusterRouting> = Api::all(client);
    let output = args.common.output;
    let object = get(&api).await?;
    if let Some(SwitchCommand::Status) = args.command {
        return output.print(&report(&object, None), render);
    }
    let target = if args.abort {
        let status = object.status.clone().unwrap_or_default();
        match (status.switch_phase, status.from) {
            (Some(phase), Some(from)) if phase != Phase::Steady => from,
            _ => {
                return Err(Error::invalid(
                    "--abort",
                    "no switch in progress (status.from is not set)",
                ))
            }
        }
    } else {
        args.to
            .ok_or_else(|| Error::invalid("--to", "a mode is required"))?
    };
    let patched = api
        .patch(
            CLUSTER_ROUTING_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": target}})),
        )
        .await
        .map_err(|e| Error::kube("writing spec.mode", e))?;
    let previous = object.spec.mode;
    if !args.wait {
        let verb = if args.abort { "aborting" } else { "switching" };
        let line = format!("{verb}: spec.mode {previous} -> {target}");
        return output.print(&report(&patched, None), |_| line.clone());
    }
    wait(&api, patched, target, output, args.timeout_seconds).await
}

/// Follows every status write (a watch from the resourceVersion of our own
/// write, so no phase is missed however fast it goes) until the switch to
/// `target` is Steady with every node converged, or Blocked.
async fn wait(
    api: &Api<ClusterRouting>,
    patched: ClusterRouting,
    target: Mode,
    output: Output,
    timeout_seconds: u64,
) -> Result<()> {
    let generation = patched.metadata.generation;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_seconds);
    let mut progress = Progress::new(output);
    let mut version = patched
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let mut next = Some(patched);
    let timed_out = || {
        Error::io(
            format!("waiting for the switch to {target}"),
            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        )
    };
    loop {
        if let Some(object) = next.take() {
            if let Some(v) = &object.metadata.resource_version {
                version.clone_from(v);
            }
            let status = object.status.clone().unwrap_or_default();
            let elapsed = started.elapsed().as_secs_f64();
            if status.observed_generation >= generation {
                progress.show(&status, elapsed);
                let done = status.switch_phase == Some(Phase::Steady)
                    && status.to == Some(target)
                    && status.plan.as_ref().is_some_and(|p| p.route_mode == target)
                    && status.blocked.is_empty()
                    && status.nodes.as_ref().is_some_and(|n| n.waiting.is_empty());
                if done || !status.blocked.is_empty() {
                    progress.finish();
                    output.print(&report(&object, Some(elapsed)), render)?;
                    if !status.blocked.is_empty() {
                        return Err(Error::invalid(
                            "switch",
                            format!("Blocked on {}", status.blocked.join(", ")),
                        ));
                    }
                    return Ok(());
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let params = WatchParams::default()
            .fields(&format!("metadata.name={CLUSTER_ROUTING_NAME}"))
            .timeout(left.as_secs().clamp(1, 290) as u32);
        let stream = match api.watch(&params, &version).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!("watching ClusterRouting: {e}; reading it again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                next = Some(get(api).await?);
                continue;
            }
        };
        let mut stream = stream.boxed();
        loop {
            let item = match tokio::time::timeout(left, stream.next()).await {
                Err(_) => return Err(timed_out()),
                Ok(None) => break,
                Ok(Some(item)) => item,
            };
            match item {
                Ok(WatchEvent::Added(object)) | Ok(WatchEvent::Modified(object)) => {
                    next = Some(object);
                    break;
                }
                Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                Ok(WatchEvent::Deleted(_)) => {
                    return Err(Error::invalid(
                        "switch",
                        "ClusterRouting default was deleted",
                    ))
                }
                Ok(WatchEvent::Error(e)) => {
                    // 410 Gone and friends: start over from a fresh read.
                    tracing::debug!("watch: {e}; reading it again");
                    next = Some(get(api).await?);
                    break;
                }
                Err(e) => {
                    tracing::debug!("watch: {e}; reading it again");
                    next = Some(get(api).await?);
                    break;
                }
            }
        }
    }
}

/// The progress of `--wait`: on stdout (stderr with `-o json`, where stdout
/// is the summary), a line whenever what it shows, but the elapsed time,
/// changes. On a terminal a line is rewritten in place while the phase and
/// generation stay; elsewhere every change is a line of its own.
struct Progress {
    output: Output,
    terminal: bool,
    /// The phase and generation of the line shown, and what it showed.
    last: Option<(String, String)>,
    /// A terminal line is shown without its newline yet.
    open: bool,
}

impl Progress {
    fn new(output: Output) -> Progress {
        let terminal = match output {
            Output::Table => std::io::stdout().is_terminal(),
            Output::Json => std::io::stderr().is_terminal(),
        };
        Progress {
            output,
            terminal,
            last: None,
            open: false,
        }
    }

    fn show(&mut self, status: &ClusterRoutingStatus, elapsed: f64) {
        let (phase, counts) = progress_parts(status);
        let text = self.next(phase, counts, elapsed);
        self.write(&text);
    }

    /// What to write for this status: nothing when it shows nothing new.
    fn next(&mut self, phase: String, counts: String, elapsed: f64) -> String {
        if self
            .last
            .as_ref()
            .is_some_and(|(p, c)| *p == phase && *c == counts)
        {
            return String::new();
        }
        let same_phase = self.last.as_ref().is_some_and(|(p, _)| *p == phase);
        let line = format!("{elapsed:>6.1}s  {phase}  {counts}");
        let text = match (self.terminal, self.open, same_phase) {
            (false, _, _) => format!("{line}\n"),
            (true, true, true) => format!("\r\x1b[2K{line}"),
            (true, true, false) => format!("\n{line}"),
            (true, false, _) => line,
        };
        self.open = self.terminal;
        self.last = Some((phase, counts));
        text
    }

    /// End an open terminal line, before the summary.
    fn finish(&mut self) {
        if std::mem::take(&mut self.open) {
            self.write("\n");
        }
    }

    fn write(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        let written = match self.output {
            Output::Table => write_flushed(&mut std::io::stdout().lock(), text),
            Output::Json => write_flushed(&mut std::io::stderr().lock(), text),
        };
        if let Err(e) = written {
            tracing::debug!("writing progress: {e}");
        }
    }
}

fn write_flushed(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// ("{phase:<8}  generation G", "A/T nodes applied[  waiting: ...]").
fn progress_parts(status: &ClusterRoutingStatus) -> (String, String) {
    const SHOWN: usize = 10;
    let phase = status.phase.as_deref().unwrap_or("-");
    let generation = opt(status.plan.as_ref().map(|p| p.generation));
    let nodes = status.nodes.clone().unwrap_or_default();
    let mut counts = format!("{}/{} nodes applied", nodes.applied, nodes.total);
    if !nodes.waiting.is_empty() {
        let shown = &nodes.waiting[..nodes.waiting.len().min(SHOWN)];
        counts.push_str(&format!("  waiting: {}", shown.join(", ")));
        if nodes.waiting.len() > SHOWN {
            counts.push_str(&format!(" and {} more", nodes.waiting.len() - SHOWN));
        }
    }
    (format!("{phase:<8}  generation {generation}"), counts)
}

async fn get(api: &Api<ClusterRouting>) -> Result<ClusterRouting> {
    api.get(CLUSTER_ROUTING_NAME)
        .await
        .map_err(routing_read_error)
}

fn report(object: &ClusterRouting, elapsed: Option<f64>) -> SwitchReport {
    SwitchReport {
        mode: object.spec.mode,
        generation: object.metadata.generation,
        status: object.status.clone().unwrap_or_default(),
        elapsed_seconds: elapsed,
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

pub fn render(r: &SwitchReport) -> String {
    let s = &r.status;
    let nodes = s.nodes.clone().unwrap_or_default();
    let plan = s.plan.as_ref().map_or("-".into(), |p| {
        let decap: Vec<&str> = p.decap.iter().map(|m| m.as_str()).collect();
        format!(
            "generation {}: route {}, decap {{{}}}",
            p.generation,
            p.route_mode,
            decap.join(", ")
        )
    });
    let ready = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map_or("-".into(), |c| {
            format!(
                "{} ({}): {}",
                c.status,
                c.reason.as_deref().unwrap_or("-"),
                c.message.as_deref().unwrap_or("")
            )
        });
    let mut rows = vec![
        vec!["mode (spec)".into(), r.mode.to_string()],
        vec!["phase".into(), opt(s.phase.clone())],
        vec!["from".into(), opt(s.from)],
        vec!["to".into(), opt(s.to)],
        vec!["plan".into(), plan],
        vec![
            "applied".into(),
            format!("{}/{}", nodes.applied, nodes.total),
        ],
        vec!["waiting".into(), list(&nodes.waiting)],
        vec!["skipped".into(), list(&s.skipped)],
        vec!["blocked".into(), list(&s.blocked)],
        vec![
            "observed generation".into(),
            format!("{} of {}", opt(s.observed_generation), opt(r.generation)),
        ],
        vec!["ready".into(), ready],
    ];
    if let Some(e) = r.elapsed_seconds {
        rows.push(vec!["elapsed".into(), format!("{e:.1}s")]);
    }
    table(&["FIELD", "VALUE"], &rows)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::api::NodesStatus;
    use crate::cli::{Cli, Command};

    fn status(phase: &str, applied: u32, waiting: &[&str]) -> ClusterRoutingStatus {
        ClusterRoutingStatus {
            phase: Some(phase.into()),
            nodes: Some(NodesStatus {
                total: 3,
                applied,
                waiting: waiting.iter().map(|w| w.to_string()).collect(),
            }),
            ..ClusterRoutingStatus::default()
        }
    }

    fn shown(progress: &mut Progress, status: &ClusterRoutingStatus) -> String {
        let (phase, counts) = progress_parts(status);
        progress.next(phase, counts, 1.0)
    }

    #[test]
    fn progress_lines_follow_the_applied_count_within_a_phase() {
        let mut plain = Progress {
            output: Output::Table,
            terminal: false,
            last: None,
            open: false,
        };
        let first = shown(&mut plain, &status("Switch", 1, &["b", "c"]));
        assert!(first.contains("Switch") && first.contains("1/3 nodes applied  waiting: b, c"));
        assert!(first.ends_with('\n'));
        assert_eq!(
            shown(&mut plain, &status("Switch", 1, &["b", "c"])),
            "",
            "nothing new"
        );
        let later = shown(&mut plain, &status("Switch", 3, &[]));
        assert!(
            later.contains("Switch") && later.contains("3/3 nodes applied\n"),
            "{later}"
        );

        let mut terminal = Progress {
            terminal: true,
            ..plain
        };
        terminal.last = None;
        let first = shown(&mut terminal, &status("Switch", 1, &["b", "c"]));
        assert!(!first.contains('\n') && !first.contains('\r'));
        let rewritten = shown(&mut terminal, &status("Switch", 2, &["c"]));
        assert!(
            rewritten.starts_with("\r\x1b[2K") && rewritten.contains("2/3"),
            "{rewritten:?}"
        );
        let next_phase = shown(&mut terminal, &status("Finalize", 0, &["a", "b", "c"]));
        assert!(next_phase.starts_with('\n') && next_phase.contains("Finalize"));
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("podroute").chain(args.iter().copied()))
    }

    #[test]
    fn switch_takes_to_or_abort_or_status() {
        let Command::Switch(args) = parse(&["switch", "--to", "native", "--wait"])
            .unwrap()
            .command
        else {
            panic!("not switch");
        };
        assert_eq!(args.to, Some(crate::api::Mode::Native));
        assert!(args.wait && !args.abort);
        assert!(parse(&["switch", "--abort", "--wait", "-o", "json"]).is_ok());
        assert!(parse(&["switch", "status", "-o", "json"]).is_ok());
        assert!(parse(&["switch"]).is_err(), "--to or --abort is required");
        assert!(parse(&["switch", "--to", "native", "--abort"]).is_err());
        assert!(parse(&["switch", "--to", "geneve"]).is_err());
        assert!(parse(&["nodes", "-o", "json"]).is_ok());
        assert!(parse(&["coordinator", "--identity", "a", "--lease-namespace", "x"]).is_ok());
    }
}
