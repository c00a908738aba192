//! `cargo run -p demo`: the chat scenario — Gate, Login, Chat and the viewer in one process, or
//! some of them (`--modules gate,chat`), the rest running in other processes that share the
//! broker. Every flag can also come from the environment variable named in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The traced request path allocates a lot of small strings; mimalloc measured faster than the
/// system allocator for it (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::Config;

/// Runs the mqant chat scenario on mqrs. Stop with Ctrl-C. Log level: RUST_LOG (default info).
///
/// With no --broker, this process runs the embedded MQTT broker (on --broker-listen,
/// default 127.0.0.1:1883), so other processes can join with --broker mqtt://127.0.0.1:1883.
#[derive(Debug, Parser)]
#[command(name = "demo", version)]
struct Cli {
    /// Settings file (TOML); flags override it.
    #[arg(long, env = "MQRS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Modules this process runs: any of gate, login, chat.
    #[arg(
        long,
        env = "MQRS_MODULES",
        value_delimiter = ',',
        default_value = "gate,login,chat"
    )]
    modules: Vec<String>,

    /// Run the modules the settings file assigns to this process id (mqant's ProcessID):
    /// `[processes.<id>] modules = [...]`; the server id defaults to the process id.
    #[arg(
        long,
        env = "MQRS_PID",
        value_name = "ID",
        conflicts_with = "modules",
        requires = "config"
    )]
    pid: Option<String>,

    /// Broker for calls between processes: embedded (start one here), none (this process
    /// only), or mqtt://HOST:PORT; several URLs, comma-separated, are the nodes of one cluster.
    #[arg(long, env = "MQRS_BROKER", value_name = "URL")]
    broker: Option<String>,

    /// Where the embedded broker listens.
    #[arg(long, env = "MQRS_BROKER_LISTEN", value_name = "HOST:PORT")]
    broker_listen: Option<SocketAddr>,

    /// This process's server id (default: from its modules and process id when it does not
    /// run them all).
    #[arg(long, env = "MQRS_SERVER_ID")]
    server_id: Option<String>,

    /// MQTT gate listen address (default 127.0.0.1:3563).
    #[arg(long, env = "MQRS_GATE", value_name = "HOST:PORT")]
    gate: Option<SocketAddr>,

    /// MQTT over WebSocket listen address (default 127.0.0.1:3653); empty turns it off.
    #[arg(long, env = "MQRS_WS", value_name = "HOST:PORT")]
    ws: Option<String>,

    /// The gate's TLS certificate chain (PEM); with --tls-key it serves MQTT over TLS on
    /// --tls and WSS on --ws.
    #[arg(long, env = "MQRS_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "MQRS_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// MQTT over TLS listen address when a certificate is given (default 127.0.0.1:8883);
    /// empty turns it off.
    #[arg(long, env = "MQRS_TLS", value_name = "HOST:PORT")]
    tls: Option<String>,

    /// Messages one client may say per second in the chat (Chat/HD_Say).
    #[arg(long, env = "MQRS_SAY_PER_SECOND", value_name = "N", default_value_t = demo::chat::SAY_PER_SECOND)]
    say_per_second: u32,

    /// Trace viewer listen address (default 127.0.0.1:7700).
    #[arg(long, env = "MQRS_VIEWER", value_name = "HOST:PORT")]
    viewer: Option<SocketAddr>,

    /// Do not serve the trace viewer.
    #[arg(long, env = "MQRS_NO_VIEWER")]
    no_viewer: bool,

    /// Send spans by OTLP/HTTP to this collector (e.g. the first process's, at
    /// http://127.0.0.1:4318, or Jaeger's or Tempo's) instead of keeping them here: no store,
    /// viewer or collector in this process.
    #[arg(long, env = "MQRS_OTLP", value_name = "URL")]
    otlp: Option<String>,

    /// OTLP/HTTP collector listen address (default 127.0.0.1:4318).
    #[arg(long, env = "MQRS_COLLECTOR", value_name = "HOST:PORT")]
    collector: Option<SocketAddr>,

    /// Share of new traces recorded, 0.0 to 1.0 (`[trace] sample_ratio`); failed and slow
    /// requests are kept anyway.
    #[arg(long, env = "MQRS_SAMPLE_RATIO", value_name = "RATIO")]
    sample_ratio: Option<f64>,
    /// Count no calls (`[trace] metrics = false`): the dashboard and /metrics then show only
    /// what the spans held tell; for measuring what counting costs.
    #[arg(long)]
    no_metrics: bool,

    /// Keep the viewer's traces across restarts in this directory (`[trace] data_dir`).
    #[arg(long, env = "MQRS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The settings file's contents (defaults without one).
fn settings(cli: &Cli) -> Result<Config, String> {
    match &cli.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

/// The modules this process runs and the settings it runs them with.
fn setup(cli: &Cli) -> Result<(demo::Parts, Config), String> {
    let mut config = settings(cli)?;
    let parts = match &cli.pid {
        Some(pid) => {
            let p = config
                .process(pid)
                .map_err(|e| format!("--pid: {e}"))?
                .clone();
            config.app.server_id = p.server_id.clone().unwrap_or_else(|| pid.clone());
            demo::Parts::parse(&p.modules).map_err(|e| format!("[processes.{pid}]: {e}"))?
        }
        None => demo::Parts::parse(&cli.modules).map_err(|e| format!("--modules: {e}"))?,
    };
    apply_flags(cli, parts, &mut config)?;
    Ok((parts, config))
}

/// An address flag's value: none when empty.
fn optional_addr(flag: &str, text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|e| format!("{flag} `{a}`: {e}")),
    }
}

fn apply_flags(cli: &Cli, parts: demo::Parts, config: &mut Config) -> Result<(), String> {
    if let Some(b) = &cli.broker {
        config.broker.url = match b.as_str() {
            "embedded" => BrokerUrl::Embedded,
            "none" => BrokerUrl::None,
            list => BrokerUrl::parse_list(list.split(',').map(str::to_string).collect())
                .map_err(|e| format!("--broker: {e}"))?,
        };
    }
    if let Some(a) = cli.broker_listen {
        config.broker.embedded_addr = a;
    }
    if let Some(g) = cli.gate {
        config.gate.tcp_addr = g;
    }
    if let Some(w) = &cli.ws {
        config.gate.ws_addr = optional_addr("--ws", w)?;
    }
    if let Some(t) = &cli.tls {
        config.gate.tls_addr = optional_addr("--tls", t)?;
    }
    if cli.tls_cert.is_some() {
        config.gate.tls_cert.clone_from(&cli.tls_cert);
        config.gate.tls_key.clone_from(&cli.tls_key);
    }
    if let Some(v) = cli.viewer {
        config.trace.viewer_addr = v;
    }
    if cli.no_viewer {
        config.trace.viewer = false;
    }
    if let Some(c) = cli.collector {
        config.trace.collector_addr = c;
    }
    if let Some(dir) = &cli.data_dir {
        config.trace.data_dir = dir.display().to_string();
    }
    if cli.no_metrics {
        config.trace.metrics = false;
    }
    if let Some(r) = cli.sample_ratio {
        config.trace.sample_ratio = r;
    }
    if let Some(url) = &cli.otlp {
        config.trace.otlp_export = url.clone();
        config.trace.store = false;
        config.trace.viewer = false;
        config.trace.collector = false;
    }
    match &cli.server_id {
        Some(id) => config.app.server_id = id.clone(),
        None if cli.pid.is_none() && parts != demo::Parts::ALL => {
            config.app.server_id = format!("{}-{}", cli.modules.join("-"), std::process::id())
        }
        None => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Log lines go to stdout; those made inside a traced handler also become events (and
    // `tracing` spans child spans) of its RPC span in the viewer.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,mqtt5=warn")),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
        )
        .with(mqrs_runtime::trace::layer())
        .init();
    let (parts, config) = match setup(&cli) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}\n\nRun `demo --help` for the flags.");
            return ExitCode::from(2);
        }
    };
    let result = async {
        let settings = demo::Settings {
            say_per_second: cli.say_per_second,
        };
        let viewer = config
            .trace
            .viewer
            .then(|| format!("http://{}", config.trace.viewer_addr));
        let page = config.gate.ws_addr.filter(|_| parts.gate).map(|a| {
            let scheme = if config.gate.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{a}/")
        });
        let app = demo::build_with(config, parts, settings)?;
        tracing::info!(handlers = ?app.handlers(), "modules ready");
        if parts.gate {
            tracing::info!("try it: cargo run -p demo --bin client -- --users 3 --requests 5");
        }
        if let Some(page) = page {
            demo::web::add_pages(&app, viewer.as_deref());
            tracing::info!("chat page on {page} (open it in two browser tabs)");
        }
        app.run().await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
