//! `cargo run -p mqrs-viewer`: the trace viewer, its Jaeger-compatible API and the OTLP/HTTP
//! collector, on their own. Every mqrs process started with `--otlp http://HOST:4318` (and any
//! OpenTelemetry SDK) sends its spans here, so one request crossing several processes reads as
//! one trace without any process of the app running the viewer itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mqrs_viewer::{serve_collector, serve_viewer, StoreLimits, TraceStore};
use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The mqrs trace viewer and OTLP/HTTP collector. Stop with Ctrl-C or SIGTERM. Log level:
/// RUST_LOG (default info).
#[derive(Debug, Parser)]
#[command(name = "mqrs-viewer", version)]
struct Cli {
    /// Settings file (TOML); only its `[trace]` section matters here; flags override it.
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

/// The keys of an mqrs settings file's `[trace]` section that the viewer reads, with the
/// runtime's defaults; the section's other keys (sampling, export) are for apps.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct TraceFile {
    max_traces: usize,
    max_bytes: usize,
    max_spans_per_trace: usize,
    max_traces_per_session: usize,
    data_dir: String,
    collector_max_body: usize,
    collector_max_skew_s: u64,
}

impl Default for TraceFile {
    fn default() -> Self {
        let limits = StoreLimits::default();
        TraceFile {
            max_traces: limits.max_traces,
            max_bytes: limits.max_bytes,
            max_spans_per_trace: limits.max_spans_per_trace,
            max_traces_per_session: limits.max_traces_per_session,
            data_dir: String::new(),
            collector_max_body: 4 << 20,
            collector_max_skew_s: 3600,
        }
    }
}

/// The `[trace]` section of the settings file at `path`.
fn read_settings(path: &Path) -> Result<TraceFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read settings file {}: {e}", path.display()))?;
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        trace: Option<toml::Value>,
    }
    let file: File = toml::from_str(&text)
        .map_err(|e| format!("settings file {} is not valid: {e}", path.display()))?;
    match file.trace {
        Some(t) => t
            .try_into()
            .map_err(|e| format!("settings file {}: [trace]: {e}", path.display())),
        None => Ok(TraceFile::default()),
    }
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
    let mut file = match &cli.config {
        Some(path) => match read_settings(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => TraceFile::default(),
    };
    if let Some(n) = cli.max_traces {
        file.max_traces = n;
    }
    if let Some(n) = cli.max_bytes {
        file.max_bytes = n;
    }
    if let Some(dir) = &cli.data_dir {
        file.data_dir = dir.display().to_string();
    }
    match run(&cli, &file).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the viewer and the collector over one store until Ctrl-C or SIGTERM, then lets the
/// store write what it holds.
async fn run(cli: &Cli, file: &TraceFile) -> Result<(), String> {
    let limits = StoreLimits {
        max_traces: file.max_traces,
        max_bytes: file.max_bytes,
        max_spans_per_trace: file.max_spans_per_trace,
        max_traces_per_session: file.max_traces_per_session,
    };
    let store = if file.data_dir.is_empty() {
        Arc::new(TraceStore::new(limits))
    } else {
        TraceStore::persistent(limits, Path::new(&file.data_dir))
            .map_err(|e| format!("trace data directory {} cannot be used: {e}", file.data_dir))?
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (addr, viewer) = serve_viewer(store.clone(), cli.viewer, stopped.clone())
        .await
        .map_err(|e| format!("the trace viewer cannot listen on {}: {e}", cli.viewer))?;
    tracing::info!("trace viewer on http://{addr}/");
    let (addr, collector) = serve_collector(
        store.clone(),
        cli.collector,
        file.collector_max_body,
        Duration::from_secs(file.collector_max_skew_s),
        stopped,
    )
    .await
    .map_err(|e| format!("the OTLP collector cannot listen on {}: {e}", cli.collector))?;
    tracing::info!("OTLP collector on http://{addr}/v1/traces");
    let signal = stop_signal().await;
    tracing::info!(signal, "stopping");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = viewer.await;
        let _ = collector.await;
    })
    .await;
    // Writing the store's last spans is file work: off the async runtime.
    let _ = tokio::task::spawn_blocking(move || store.close()).await;
    Ok(())
}

/// The name of the first stop signal to arrive (Ctrl-C, or SIGTERM as systemd, Docker and
/// Kubernetes send it).
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
                return "Ctrl-C";
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
