//! `cargo run -p demo --bin client -- --users N --requests M`: logs in N users over real MQTT
//! (TCP, or WebSocket with `--ws`), sends M `Chat/HD_JoinChat` each, and prints every reply's
//! trace id and viewer link; with `--say TEXT`, each then says TEXT to the room and prints
//! what it hears.

use std::process::ExitCode;

use std::time::Duration;

use demo::client::GateClient;
use rumqttc::{MqttOptions, QoS, Transport};

const USAGE: &str = "usage: client [--gate HOST:PORT | --ws HOST:PORT] [--viewer URL] [--users N]
              [--requests M] [--room NAME] [--say TEXT]

Defaults: --gate 127.0.0.1:3563 --viewer http://127.0.0.1:7700 --users 1 --requests 3 --room mqant
--ws connects over WebSocket (ws://HOST:PORT/mqtt) instead of TCP.";

struct Args {
    host: String,
    port: u16,
    viewer: String,
    users: usize,
    requests: usize,
    room: String,
    /// Speak MQTT over WebSocket.
    ws: bool,
    say: Option<String>,
}

/// `HOST:PORT` of a flag.
fn host_port(flag: &str, v: &str) -> Result<(String, u16), String> {
    let (h, p) = v
        .rsplit_once(':')
        .ok_or(format!("{flag} `{v}`: expected HOST:PORT"))?;
    let port = p.parse().map_err(|_| format!("{flag} `{v}`: bad port"))?;
    Ok((h.to_string(), port))
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 3563,
        viewer: "http://127.0.0.1:7700".into(),
        users: 1,
        requests: 3,
        room: "mqant".into(),
        ws: false,
        say: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--gate" => (a.host, a.port) = host_port("--gate", &value("--gate")?)?,
            "--ws" => {
                (a.host, a.port) = host_port("--ws", &value("--ws")?)?;
                a.ws = true;
            }
            "--say" => a.say = Some(value("--say")?),
            "--viewer" => a.viewer = value("--viewer")?.trim_end_matches('/').to_string(),
            "--users" => {
                a.users = value("--users")?
                    .parse()
                    .map_err(|_| "--users needs a number")?
            }
            "--requests" => {
                a.requests = value("--requests")?
                    .parse()
                    .map_err(|_| "--requests needs a number")?
            }
            "--room" => a.room = value("--room")?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

async fn run_user(a: &Args, n: usize) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let user = format!("user{n}");
    let id = format!("demo-client-{n}-{}", std::process::id());
    let c = if a.ws {
        let url = format!("ws://{}:{}/mqtt", a.host, a.port);
        let mut opts = MqttOptions::new(id, url, a.port);
        opts.set_transport(Transport::Ws);
        GateClient::connect_with(opts).await?
    } else {
        GateClient::connect(&id, &a.host, a.port).await?
    };
    let body = serde_json::json!({"userName": user, "passWord": "123456"}).to_string();
    let reply = c
        .request("Login/HD_Login", body.as_bytes(), QoS::AtLeastOnce)
        .await?;
    println!("{user} HD_Login -> {reply}");
    for i in 0..a.requests {
        let body = serde_json::json!({"roomName": a.room}).to_string();
        let reply = c
            .request("Chat/HD_JoinChat", body.as_bytes(), QoS::AtLeastOnce)
            .await?;
        let err = reply["Error"].as_str().unwrap_or("");
        match reply["TraceId"].as_str() {
            Some(id) => println!(
                "{user} HD_JoinChat #{i}: users={} error={err:?} trace {id} -> {}/trace/{id}",
                reply["Result"]["users"], a.viewer
            ),
            None => println!("{user} HD_JoinChat #{i}: {reply} (not traced)"),
        }
    }
    if let Some(text) = &a.say {
        let body = serde_json::json!({ "text": text }).to_string();
        let reply = c
            .request("Chat/HD_Say", body.as_bytes(), QoS::AtLeastOnce)
            .await?;
        println!("{user} HD_Say -> {reply}");
        // What the room says meanwhile (this user's own message too).
        while let Some((topic, body)) = c.message(Duration::from_millis(500)).await {
            println!("{user} heard {topic} {}", String::from_utf8_lossy(&body));
        }
    }
    c.disconnect().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let a = std::sync::Arc::new(a);
    let tasks: Vec<_> = (0..a.users)
        .map(|n| {
            let a = a.clone();
            tokio::spawn(async move { run_user(&a, n).await.map_err(|e| e.to_string()) })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        let r = t
            .await
            .unwrap_or_else(|e| Err(format!("user task failed: {e}")));
        if let Err(e) = r {
            eprintln!("error: {e} (is the demo running? `cargo run -p demo`)");
            failed += 1;
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
