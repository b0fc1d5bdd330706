//! `podroute bench [--peers 100,1000,10000] [--mode native|vxlan] [--family ipv4|ipv6|dual]
//! [--repeat R] [-o table|json]`:
//! runs [`crate::bench`] and prints its report.

use super::output::table;
use super::Output;
use crate::api::Mode;
use crate::bench::{self, kib_to_mib, BenchReport, Family, Settings};
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Peer counts to benchmark (comma-separated; run in ascending order).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub peers: Vec<usize>,
    /// Dataplane to program: native routes on the uplink, or VXLAN (device,
    /// routes, neighbours and FDB entries).
    #[arg(long, value_enum, default_value = "native")]
    pub mode: BenchMode,
    /// Address family to program: ipv4; ipv6 (IPv6-only nodes, against
    /// ip -6 -batch); dual (both, against ip -batch and ip -6 -batch).
    #[arg(long, value_enum, default_value = "ipv4")]
    pub family: BenchFamily,
    /// Run every phase this many times per N (engine and ip -batch
    /// alternating) and report the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// Keep podroute's per-write log lines during the timed phases. Off by
    /// default: they are suppressed so the bench times netlink, not stderr.
    #[arg(long)]
    pub step_logs: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    Native,
    Vxlan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFamily {
    Ipv4,
    Ipv6,
    Dual,
}

impl From<BenchFamily> for Family {
    fn from(family: BenchFamily) -> Family {
        match family {
            BenchFamily::Ipv4 => Family::Ipv4,
            BenchFamily::Ipv6 => Family::Ipv6,
            BenchFamily::Dual => Family::Dual,
        }
    }
}

impl BenchMode {
    fn mode(self) -> Mode {
        match self {
            BenchMode::Native => Mode::Native,
            BenchMode::Vxlan => Mode::Vxlan,
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let settings = Settings {
        mode: args.mode.mode(),
        family: args.family.into(),
        repeat: args.repeat,
        step_logs: args.step_logs,
        progress: |line| eprintln!("bench: {line}"),
    };
    let report = bench::run(&args.peers, &settings)?;
    args.output.print(&report, render)?;
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Unconverged(format!(
            "bench: {}",
            report.failures.join("; ")
        )))
    }
}

fn render(r: &BenchReport) -> String {
    let runs = if r.repeat > 1 {
        format!(", median of {} runs", r.repeat)
    } else {
        String::new()
    };
    let family = match r.family.as_str() {
        "ipv4" => String::new(),
        "ipv6" => " ipv6 (IPv6-only nodes),".into(),
        family => format!(" {family},"),
    };
    let mut out = format!(
        "podroute bench:{family} {} mode{runs}; netlink = requests sent (a dump counts once); RSS = {}\n",
        r.mode, r.rss_scope
    );
    let batch = match r.family.as_str() {
        "ipv4" => "ip -batch",
        "ipv6" => "ip -6 -batch",
        _ => "ip -batch + ip -6 -batch",
    };
    if r.mode == "vxlan" {
        out.push_str(&format!("ip -batch side: device (ip link/addr), neighbours and routes ({batch}), FDB (bridge -batch)\n"));
    } else if r.family != "ipv4" {
        out.push_str(&format!("ip -batch side: routes ({batch})\n"));
    }
    for result in &r.results {
        out.push_str(&format!(
            "\n{} peers, peak RSS {:.1} MiB\n",
            result.peers,
            kib_to_mib(result.peak_rss_kib)
        ));
        let rows: Vec<Vec<String>> = result
            .phases
            .iter()
            .map(|p| {
                let name = if p.tool == "podroute" {
                    p.phase.clone()
                } else {
                    format!("{} ({})", p.phase, p.tool)
                };
                vec![
                    name,
                    format!("{:.1}", p.ms),
                    p.writes.to_string(),
                    p.route_writes.to_string(),
                    p.netlink_messages.to_string(),
                    p.ratio_to_ip_batch
                        .map_or(String::new(), |x| format!("{x:.2}x")),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "PHASE",
                "TIME ms",
                "WRITES",
                "ROUTES",
                "NETLINK",
                "VS IP -BATCH",
            ],
            &rows,
        ));
        let rows: Vec<Vec<String>> = result
            .targets
            .iter()
            .map(|t| {
                vec![
                    format!("  {}", t.target),
                    t.measured.clone(),
                    if t.met { "met" } else { "MISSED" }.into(),
                ]
            })
            .collect();
        out.push_str(&table(&["TARGET", "MEASURED", ""], &rows));
    }
    for failure in &r.failures {
        out.push_str(&format!("\nFAIL: {failure}\n"));
    }
    out
}
