use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use podroute::cli::{self, Cli, LogFormat};

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_filter(), cli.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(cli::run(cli)) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = cli::env_filter(filter).unwrap_or_else(|why| {
        eprintln!("warning: {why}; logging at info");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
