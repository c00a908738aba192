//! `cargo run -p mqrs-viewer`: the trace viewer, its Jaeger-compatible API and the OTLP/HTTP
//! collector, on their own. Every mqrs process started with `--otlp http://HOST:4318` (and any
//! OpenTelemetry SDK) sends its spans here, so one request crossing several processes reads as
//! one trace without any process of the app running the viewer itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::{App, Config};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The mqrs trace viewer and OTLP/HTTP collector. Stop with Ctrl-C or SIGTERM. Log level:
/// RUST_LOG (default info).
#[derive(Debug, Parser)]
#[command(name = "mqrs-viewer", version)]
struct Cli {
    /// Settings file (TOML); only its `[app]` and `[trace]` sections matter here; flags
    /// override it.
    #[arg(long, env = "MQRS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the viewer and its API listen.
    #[arg(
        long,
        env = "MQRS_VIEWER",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:7700"
    )]
    viewer: SocketAddr,
    /// Where the OTLP/HTTP collector listens (`POST /v1/traces`).
    #[arg(
        long,
        env = "MQRS_COLLECTOR",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:4318"
    )]
    collector: SocketAddr,
    /// Most traces kept.
    #[arg(long, env = "MQRS_MAX_TRACES")]
    max_traces: Option<usize>,
    /// Most bytes of spans kept.
    #[arg(long, env = "MQRS_MAX_BYTES")]
    max_bytes: Option<usize>,
    /// Keep the traces across restarts in this directory (`[trace] data_dir`).
    #[arg(long, env = "MQRS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with(tracing_subscriber::fmt::layer())
        .init();
    let mut cfg = match &cli.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    // Only the store, its viewer and the collector: no gate, no broker, no export onward.
    cfg.app.name = "mqrs-viewer".into();
    cfg.gate.enabled = false;
    cfg.broker.url = BrokerUrl::None;
    cfg.trace.store = true;
    cfg.trace.viewer = true;
    cfg.trace.collector = true;
    cfg.trace.otlp_export.clear();
    cfg.trace.viewer_addr = cli.viewer;
    cfg.trace.collector_addr = cli.collector;
    if let Some(n) = cli.max_traces {
        cfg.trace.max_traces = n;
    }
    if let Some(n) = cli.max_bytes {
        cfg.trace.max_bytes = n;
    }
    if let Some(dir) = &cli.data_dir {
        cfg.trace.data_dir = dir.display().to_string();
    }
    let app = match App::builder().config(cfg).build() {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match app.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
