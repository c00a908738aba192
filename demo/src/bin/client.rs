//! `cargo run -p demo --bin client -- --users N --requests M`: logs in N users over real MQTT,
//! sends M `Chat/HD_JoinChat` each, and prints every reply's trace id and viewer link.

use std::process::ExitCode;

use demo::client::GateClient;
use rumqttc::QoS;

const USAGE: &str =
    "usage: client [--gate HOST:PORT] [--viewer URL] [--users N] [--requests M] [--room NAME]

Defaults: --gate 127.0.0.1:3563 --viewer http://127.0.0.1:7700 --users 1 --requests 3 --room mqant";

struct Args {
    host: String,
    port: u16,
    viewer: String,
    users: usize,
    requests: usize,
    room: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 3563,
        viewer: "http://127.0.0.1:7700".into(),
        users: 1,
        requests: 3,
        room: "mqant".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--gate" => {
                let g = value("--gate")?;
                let (h, p) = g
                    .rsplit_once(':')
                    .ok_or(format!("--gate `{g}`: expected HOST:PORT"))?;
                a.host = h.to_string();
                a.port = p.parse().map_err(|_| format!("--gate `{g}`: bad port"))?;
            }
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
    let c = GateClient::connect(
        &format!("demo-client-{n}-{}", std::process::id()),
        &a.host,
        a.port,
    )
    .await?;
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
