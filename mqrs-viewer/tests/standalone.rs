//! The standalone viewer as a process of its own: an app that exports its spans by OTLP (as
//! `demo --otlp` does) sends them there, the viewer's Jaeger API returns the whole trace, and
//! SIGTERM stops the viewer cleanly; with `--data-dir`, traces outlive a restart and a kill.

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

/// A running `mqrs-viewer` and its ports.
struct Viewer {
    child: tokio::process::Child,
    viewer: u16,
    collector: u16,
}

/// Starts `mqrs-viewer` with `extra` flags and waits until its API answers.
async fn start_viewer(extra: &[String]) -> Viewer {
    let (viewer, collector) = (free_port(), free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqrs-viewer"))
        .args(["--viewer", &format!("127.0.0.1:{viewer}")])
        .args(["--collector", &format!("127.0.0.1:{collector}")])
        .args(extra)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("mqrs-viewer starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(viewer, "/api/services").await.is_none() {
        assert!(Instant::now() < deadline, "the viewer never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Viewer {
        child,
        viewer,
        collector,
    }
}

impl Viewer {
    /// Sends `signal` (`TERM`, `KILL`) and waits for the process to end; its exit status.
    async fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = tokio::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .await
            .expect("kill");
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("stops within 10 s")
            .expect("exit status")
    }

    /// The trace `id` once it holds at least `spans` spans (10 s at most).
    async fn wait_trace(&self, id: &str, spans: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((200, body)) = get(self.viewer, &format!("/api/traces/{id}")).await {
                let n = body["data"][0]["spans"].as_array().map_or(0, Vec::len);
                if n >= spans {
                    return body["data"][0].clone();
                }
            }
            assert!(Instant::now() < deadline, "trace {id} never arrived whole");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs an app that exports by OTLP to `collector`, makes one traced call, and stops it
/// cleanly (which flushes the export); the trace id.
async fn export_one_trace(collector: u16) -> String {
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
    trace_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporting_apps_trace_reads_whole_from_the_standalone_viewer() {
    let v = start_viewer(&[]).await;
    let trace_id = export_one_trace(v.collector).await;
    let spans = v.wait_trace(&trace_id, 3).await;
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
    let status = v.stop("TERM").await;
    assert!(status.success(), "{status}");
}

/// `--data-dir` keeps the traces across a clean stop (all of them) and across a kill (all but
/// at most the last second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_outlive_a_restart_and_a_kill_with_a_data_dir() {
    let dir =
        std::env::temp_dir().join(format!("mqrs-data-{}-{}", std::process::id(), free_port()));
    let _ = std::fs::remove_dir_all(&dir);
    let flags = ["--data-dir".to_string(), dir.display().to_string()];

    let v = start_viewer(&flags).await;
    let first = export_one_trace(v.collector).await;
    let before = v.wait_trace(&first, 3).await;
    let status = v.stop("TERM").await;
    assert!(status.success(), "{status}");

    // A clean stop loses nothing: the same trace, span for span.
    let v = start_viewer(&flags).await;
    let after = v.wait_trace(&first, 3).await;
    let ids = |t: &serde_json::Value| -> Vec<String> {
        let mut ids: Vec<String> = t["spans"]
            .as_array()
            .map(|s| s.iter().map(|x| x["spanID"].to_string()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after), ids(&before));

    // A kill loses at most the last second: a trace older than that is there after it.
    let second = export_one_trace(v.collector).await;
    v.wait_trace(&second, 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = v.stop("KILL").await;
    assert!(!status.success(), "killed");
    let v = start_viewer(&flags).await;
    v.wait_trace(&first, 3).await;
    v.wait_trace(&second, 3).await;
    let (_, stats) = get(v.viewer, "/api/stats").await.expect("stats");
    assert_eq!(stats["traces"], 2, "{stats}");
    assert!(v.stop("TERM").await.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A data directory that cannot be used (here: a file) stops the viewer from starting, and
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_data_dir_refuses_to_start() {
    let file = std::env::temp_dir().join(format!("mqrs-not-a-dir-{}", std::process::id()));
    std::fs::write(&file, b"a file").expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqrs-viewer"))
        .args(["--viewer", &format!("127.0.0.1:{}", free_port())])
        .args(["--collector", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", &file.display().to_string()])
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("exits by itself")
        .expect("ran");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trace data directory"), "{err}");
    let _ = std::fs::remove_file(&file);
}
