//! The standalone viewer as a process of its own: an app that exports its spans by OTLP (as
//! `demo --otlp` does) sends them there, the viewer's Jaeger API returns the whole trace, and
//! SIGTERM stops the viewer cleanly.

use std::time::{Duration, Instant};

use mqrs_runtime::config::BrokerUrl;
use mqrs_runtime::{rpc, rpc_module, App, Config, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A module to call, in the exporting app.
pub struct Echo;

#[rpc_module]
impl Echo {
    #[rpc]
    async fn echo(&self, _session: Session, x: u32) -> Result<u32, String> {
        Ok(x)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Status and JSON body of `GET path` on 127.0.0.1:`port`; `None` while nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporting_apps_trace_reads_whole_from_the_standalone_viewer() {
    let (viewer, collector) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqrs-viewer"))
        .args(["--viewer", &format!("127.0.0.1:{viewer}")])
        .args(["--collector", &format!("127.0.0.1:{collector}")])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("mqrs-viewer starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(viewer, "/api/services").await.is_none() {
        assert!(Instant::now() < deadline, "the viewer never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut cfg = Config::ephemeral();
    cfg.app.name = "exporter".into();
    cfg.broker.url = BrokerUrl::None;
    cfg.gate.enabled = false;
    cfg.trace.store = false;
    cfg.trace.viewer = false;
    cfg.trace.collector = false;
    cfg.trace.otlp_export = format!("http://127.0.0.1:{collector}");
    let app = App::builder()
        .config(cfg)
        .module(|_| Echo)
        .build()
        .expect("app");
    app.start().await.expect("app starts");
    let root = app.start_trace("nightly job", &Session::default());
    let trace_id = root.session().trace_id().expect("traced");
    let back: u32 = app
        .call("Echo", "echo", root.session(), (7u32,))
        .await
        .expect("call");
    assert_eq!(back, 7);
    drop(root);
    // A clean stop flushes what waits for export.
    app.shutdown().await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        if let Some((200, body)) = get(viewer, &format!("/api/traces/{trace_id}")).await {
            let spans = body["data"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if spans.len() >= 3 {
                break body["data"][0].clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} never arrived whole"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let names: Vec<&str> = spans["spans"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x["operationName"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names.len(), 3, "{spans}");
    for n in ["nightly job", "Echo/echo"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let services = spans["processes"].to_string();
    assert!(
        services.contains("Echo") && services.contains("exporter"),
        "{services}"
    );

    // SIGTERM, as systemd, Docker and Kubernetes stop a process: a clean exit.
    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops within 10 s")
        .expect("exit status");
    assert!(status.success(), "{status}");
}
