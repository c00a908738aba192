//! `cargo run -p demo`: the chat scenario in one process — Gate, Login, Chat and the viewer.

use std::process::ExitCode;

use mqrs_runtime::Config;

const USAGE: &str = "usage: demo [--config FILE] [--gate HOST:PORT] [--viewer HOST:PORT]

Runs the mqant chat scenario: an MQTT gate (default 127.0.0.1:3563), the Login and Chat
modules, and the trace viewer (default http://127.0.0.1:7700). Stop with Ctrl-C.
Log level: RUST_LOG (default info).";

fn parse_args() -> Result<Config, String> {
    let mut config = Config::default();
    let mut args = std::env::args().skip(1);
    let mut gate = None;
    let mut viewer = None;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--config" => {
                config = Config::from_file(value("--config")?).map_err(|e| e.to_string())?
            }
            "--gate" => gate = Some(value("--gate")?),
            "--viewer" => viewer = Some(value("--viewer")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if let Some(g) = gate {
        config.gate.tcp_addr = g.parse().map_err(|e| format!("--gate `{g}`: {e}"))?;
    }
    if let Some(v) = viewer {
        config.trace.viewer_addr = v.parse().map_err(|e| format!("--viewer `{v}`: {e}"))?;
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = async {
        let app = demo::build_app(config)?;
        tracing::info!(handlers = ?app.handlers(), "modules ready");
        tracing::info!("try it: cargo run -p demo --bin client -- --users 3 --requests 5");
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
