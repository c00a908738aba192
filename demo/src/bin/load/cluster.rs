//! `--cluster RMQTTD`: the demo over a real three-node MQTT 5 broker cluster (rmqttd with its
//! raft cluster plugin, on loopback): the gate and two processes each of `Chat` and `Login`,
//! each given the three nodes in its own order, players joining rooms and asking for their
//! room; then node 3 is killed (SIGKILL) and later started again. Per window: requests/s,
//! errors, p99, the slowest request, answers that were not the request's own (a room query
//! must name the room the player just joined), and whether sampled traces are whole; then the
//! first errors with their traces (how far each request got), and when each process that had
//! node 3 first announced itself again through another node.
//! `cargo xtask cluster` installs rmqttd once per machine and runs this.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo::client::GateClient;
use demo::harness::{server_spans, DemoProcess};
use rumqttc::QoS;

use crate::Cli;

/// One request as a player saw it.
struct Seen {
    at: Instant,
    took: Duration,
    /// The error, or what was wrong with the answer; `None` when right.
    error: Option<String>,
    /// The answer was another request's (a room other than the one just joined).
    crossed: bool,
    /// The trace id of an answered join.
    trace: Option<String>,
}

/// One rmqttd node: its process, its number, its MQTT port and the others it listens on.
struct Node {
    n: usize,
    child: Option<Child>,
    mqtt: u16,
    /// Its gRPC and raft ports.
    others: [u16; 2],
    dir: PathBuf,
}

impl Node {
    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt)
    }

    /// Starts the node once its ports can be bound again: a killed node's sockets linger
    /// (FIN_WAIT) until its peers close theirs, and rmqttd's raft listener does not start on a
    /// port still held. Returns how long that wait took.
    fn start(&mut self, rmqttd: &Path) -> Result<Duration, String> {
        let waited = Instant::now();
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        while ![self.mqtt, self.others[0], self.others[1]]
            .into_iter()
            .all(free)
        {
            if waited.elapsed() > Duration::from_secs(120) {
                return Err(format!("node {}'s ports still held after 120 s", self.n));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let waited = waited.elapsed();
        let log = std::fs::File::create(self.dir.join("node.log")).map_err(|e| e.to_string())?;
        let child = Command::new(rmqttd)
            .arg("-f")
            .arg(self.dir.join("rmqtt.toml"))
            .current_dir(&self.dir)
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", rmqttd.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.mqtt)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "node {} did not listen within 30 s (see {})",
                    self.n,
                    self.dir.join("node.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(waited)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nine free loopback ports in a row below the kernel's ephemeral range (32768 and up), so
/// that no connection the nodes make takes one between this check and their start.
fn free_ports() -> Result<u16, String> {
    let offset = (std::process::id() as u16 % 500) * 16;
    (0..750u16)
        .map(|k| 20_000 + (offset + k * 16) % 12_000)
        .find(|base| {
            let held: Vec<_> = (0..9)
                .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
                .collect();
            held.len() == 9
        })
        .ok_or_else(|| "no nine free ports in a row between 20000 and 32000".to_string())
}

/// Writes three nodes' settings under `dir` (each its own MQTT, gRPC and raft port; shared
/// plugin settings: raft cluster, retainer, shared subscriptions) and returns the nodes.
fn configure(dir: &Path, node_timeout_ms: u64) -> Result<Vec<Node>, String> {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
    let base = free_ports()?;
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|i| (base + i, base + 3 + i, base + 6 + i))
        .collect();
    let list = |f: &dyn Fn(&(u16, u16, u16)) -> u16| {
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("\"{}@127.0.0.1:{}\"", i + 1, f(p)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        plugins.join("rmqtt-cluster-raft.toml"),
        format!(
            "worker_threads = 2\nnode_grpc_addrs = [{}]\nraft_peer_addrs = [{}]\nleader_id = 1\n\
             node_grpc_client_timeout = \"{node_timeout_ms}ms\"\n\
             raft.proposal_batch_timeout = \"10ms\"\n",
            list(&|p| p.1),
            list(&|p| p.2)
        ),
    )?;
    write(
        plugins.join("rmqtt-retainer.toml"),
        "storage.type = \"ram\"\nretained_message_ttl = \"0s\"\n".into(),
    )?;
    write(
        plugins.join("rmqtt-shared-subscription.toml"),
        "strategy = \"round_robin\"\n".into(),
    )?;
    let mut nodes = Vec::new();
    for (i, (mqtt, grpc, raft)) in ports.iter().enumerate() {
        let node_dir = dir.join(format!("node{}", i + 1));
        std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
        write(
            node_dir.join("rmqtt.toml"),
            format!(
                "node.id = {}\nrpc.server_addr = \"127.0.0.1:{grpc}\"\nlog.to = \"console\"\n\
                 log.level = \"warn\"\nplugins.dir = \"{}\"\n\
                 plugins.default_startups = [\"rmqtt-cluster-raft\", \"rmqtt-retainer\", \"rmqtt-shared-subscription\"]\n\
                 plugins.disabled_default_startups = [\"rmqtt-http-api\", \"rmqtt-counter\", \"rmqtt-acl\"]\n\
                 listener.tcp.external.addr = \"127.0.0.1:{mqtt}\"\n\
                 listener.tcp.external.workers = 2\n\
                 listener.tcp.external.allow_anonymous = true\n\
                 listener.tcp.external.max_packet_size = \"2M\"\n\
                 listener.tcp.external.session_expiry_interval = \"5m\"\n",
                i + 1,
                plugins.display()
            ),
        )?;
        nodes.push(Node {
            n: i + 1,
            child: None,
            mqtt: *mqtt,
            others: [*grpc, *raft],
            dir: node_dir,
        });
    }
    Ok(nodes)
}

/// Waits until a message published on node `from` reaches a subscriber on node `to`.
async fn routes(from: &Node, to: &Node) -> Result<(), String> {
    let sub = GateClient::connect("cluster-check-sub", "127.0.0.1", to.mqtt)
        .await
        .map_err(|e| format!("node {}: {e}", to.n))?;
    let topic = format!("mqrs/check/{}", rand_suffix());
    sub.subscribe(&topic)
        .await
        .map_err(|e| format!("node {}: {e}", to.n))?;
    let publ = GateClient::connect("cluster-check-pub", "127.0.0.1", from.mqtt)
        .await
        .map_err(|e| format!("node {}: {e}", from.n))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        publ.publish(&topic, b"x", QoS::AtLeastOnce)
            .await
            .map_err(|e| e.to_string())?;
        if sub.message(Duration::from_millis(500)).await.is_some() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "node {} does not route to node {} after 60 s",
                from.n, to.n
            ));
        }
    }
    sub.disconnect().await;
    publ.disconnect().await;
    Ok(())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs the scenario against rmqttd at `rmqttd` and prints its table.
pub async fn run(cli: &Cli, rmqttd: &Path) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("mqrs-cluster-{}", std::process::id()));
    let mut nodes = configure(&dir, cli.node_timeout_ms)?;
    for node in &mut nodes {
        node.start(rmqttd)?;
    }
    routes(&nodes[0], &nodes[2]).await?;
    routes(&nodes[2], &nodes[1]).await?;
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let order = |first: usize| -> String {
        (0..3)
            .map(|k| urls[(first + k) % 3].clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "cluster: rmqttd nodes {} (raft, retainer, shared subscriptions); {} logged-in players, one request in flight each",
        urls.join(" "),
        cli.clients
    );
    // The gate on node 1; Chat on nodes 2 and 3, Login on nodes 3 and 2, each with the
    // others next in its list.
    // Room in the gate's store for every trace of the run, so none is evicted before it is
    // checked.
    let settings = dir.join("gate.toml");
    std::fs::write(
        &settings,
        "[trace]\nmax_traces = 500000\nmax_bytes = 2147483648\nmax_traces_per_session = 100000\n",
    )
    .map_err(|e| e.to_string())?;
    let settings = settings.to_string_lossy().to_string();
    let gate = DemoProcess::start(&[
        "--modules",
        "gate",
        "--broker",
        &order(0),
        "--config",
        &settings,
    ])?;
    let otlp = format!("http://{}", gate.collector);
    let mut modules = Vec::new();
    for (module, id, first) in [
        ("chat", "chat-a", 1),
        ("chat", "chat-b", 2),
        ("login", "login-a", 2),
        ("login", "login-b", 1),
    ] {
        let broker = order(first);
        modules.push(DemoProcess::start_instance(module, id, &broker, &otlp)?);
    }
    let players =
        crate::door::logged_in(cli.clients, &gate.gate, "cluster", Duration::from_secs(20)).await?;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let announced = watch_presence(&nodes[0], &stop).await?;
    let tasks = play(&players, &seen, &stop);

    let mut windows: Vec<(String, Instant, Instant)> = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    windows.push(("no fault".into(), t, Instant::now()));
    let killed = Instant::now();
    nodes[2].kill();
    tokio::time::sleep(Duration::from_secs(15)).await;
    windows.push(("node 3 killed (15 s)".into(), killed, Instant::now()));
    let t = Instant::now();
    let waited = nodes[2].start(rmqttd)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    windows.push((
        format!(
            "node 3 back ({:.0} s to free its ports, 10 s)",
            waited.as_secs_f64()
        ),
        t,
        Instant::now(),
    ));
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    windows.push(("after".into(), t, Instant::now()));

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let announced = announced.await.unwrap_or_default();
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    print(&windows, &seen, killed, &gate.viewer).await;
    // The processes that had node 3 first: when each announced itself again through another
    // node (once all its subscriptions are back; it takes calls from a little before).
    for id in ["chat-b", "login-a"] {
        match announced
            .iter()
            .find(|(at, who)| *at >= killed && who == id)
        {
            Some((at, _)) => println!(
                "{id} (node 3 first) announced itself again through another node {:.2} s after the kill",
                at.duration_since(killed).as_secs_f64()
            ),
            None => println!("{id} (node 3 first) did not announce itself again after the kill"),
        }
    }
    drop(modules);
    drop(gate);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Watches every process's presence through `node` until `stop`: when each announcement
/// came, and whose it was (server id).
async fn watch_presence(
    node: &Node,
    stop: &Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<Vec<(Instant, String)>>, String> {
    let watch = GateClient::connect("cluster-presence-watch", "127.0.0.1", node.mqtt)
        .await
        .map_err(|e| format!("node {}: {e}", node.n))?;
    watch
        .subscribe("mqrs/presence/+")
        .await
        .map_err(|e| format!("node {}: {e}", node.n))?;
    let stop = stop.clone();
    Ok(tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some((topic, _)) = watch.message(Duration::from_millis(200)).await {
                let id = topic.rsplit('/').next().unwrap_or_default().to_string();
                seen.push((Instant::now(), id));
            }
        }
        watch.disconnect().await;
        seen
    }))
}

/// One loop per player: join a room, then ask for the room, which must be the one joined.
fn play(
    players: &[Arc<GateClient>],
    seen: &Arc<Mutex<Vec<Seen>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    players
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (c, seen, stop) = (c.clone(), seen.clone(), stop.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut room: Option<String> = None;
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let at = Instant::now();
                    let s = if n % 2 == 1 {
                        let want = format!("room-{i}-{}", n % 5);
                        let body = serde_json::json!({ "roomName": want }).to_string();
                        let r = c
                            .request("Chat/HD_JoinChat", body.as_bytes(), QoS::AtLeastOnce)
                            .await;
                        match r {
                            Ok(v) if v["Error"] == "" => {
                                let crossed = v["Result"]["roomName"] != want.as_str();
                                room = Some(want);
                                let trace = v["TraceId"].as_str().map(str::to_string);
                                (None, crossed, trace)
                            }
                            // A join that failed may still have been made (its reply lost):
                            // the room is not known until the next join.
                            Ok(v) => {
                                room = None;
                                let trace = v["TraceId"].as_str().map(str::to_string);
                                (Some(format!("HD_JoinChat: {}", v["Error"])), false, trace)
                            }
                            Err(e) => {
                                room = None;
                                (Some(format!("HD_JoinChat: {e}")), false, None)
                            }
                        }
                    } else {
                        let r = c
                            .request("Chat/HD_CurrentRoom", b"", QoS::AtLeastOnce)
                            .await;
                        match r {
                            Ok(v) if v["Error"] == "" => {
                                let crossed = room.as_deref().is_some_and(|r| v["Result"] != r);
                                (None, crossed, None)
                            }
                            Ok(v) => (Some(format!("HD_CurrentRoom: {}", v["Error"])), false, None),
                            Err(e) => (Some(format!("HD_CurrentRoom: {e}")), false, None),
                        }
                    };
                    mine.push(Seen {
                        at,
                        took: at.elapsed(),
                        error: s.0,
                        crossed: s.1,
                        trace: s.2,
                    });
                }
                seen.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
            })
        })
        .collect()
}

/// True when the trace `id` at the viewer has the join's SERVER span in Chat and the track
/// chain's in Login.
fn whole(viewer: &str, id: &str) -> bool {
    let servers = server_spans(viewer, id);
    ["Chat/HD_JoinChat", "Login/track", "Login/track2"]
        .iter()
        .all(|n| servers.iter().any(|s| s == n))
}

/// The spans of trace `id` in the order they started: operation, the instance a CLIENT span
/// tried (`mqrs.server.id`), the process, whether it failed.
fn path(viewer: &str, id: &str) -> String {
    let v = match demo::harness::http_get_json(viewer, &format!("/api/traces/{id}")) {
        Ok((200, v)) => v,
        Ok((status, _)) => return format!("not at the viewer (HTTP {status})"),
        Err(e) => return e,
    };
    let trace = &v["data"][0];
    let mut spans: Vec<&serde_json::Value> =
        trace["spans"].as_array().into_iter().flatten().collect();
    spans.sort_by_key(|s| s["startTime"].as_u64().unwrap_or_default());
    let tag = |s: &serde_json::Value, key: &str| {
        s["tags"].as_array().and_then(|t| {
            t.iter()
                .find(|t| t["key"] == key)
                .map(|t| t["value"].to_string().trim_matches('"').to_string())
        })
    };
    spans
        .iter()
        .map(|s| {
            let process = s["processID"]
                .as_str()
                .and_then(|p| trace["processes"][p]["serviceName"].as_str())
                .unwrap_or("?");
            let kind = tag(s, "span.kind").unwrap_or_default();
            let to = tag(s, "mqrs.server.id")
                .map(|i| format!("->{i}"))
                .unwrap_or_default();
            let failed = if tag(s, "error").as_deref() == Some("true") {
                " FAILED"
            } else {
                ""
            };
            format!(
                "{} {kind}{to} in {process} {:.0}ms{failed}",
                s["operationName"].as_str().unwrap_or("?"),
                s["duration"].as_f64().unwrap_or_default() / 1000.0
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One line per window, then when errors stopped after the kill and the first few errors.
async fn print(
    windows: &[(String, Instant, Instant)],
    seen: &[Seen],
    killed: Instant,
    viewer: &str,
) {
    // Spans reach the collector a moment after the replies.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{:<46} {:>8} {:>7} {:>9} {:>9} {:>8} {:>14}",
        "window", "req/s", "errors", "p99", "max", "crossed", "traces whole"
    );
    let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
    let mut shown = Vec::new();
    for (name, from, to) in windows {
        let inside: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.at >= *from && s.at < *to)
            .collect();
        let mut took: Vec<Duration> = inside
            .iter()
            .filter(|s| s.error.is_none())
            .map(|s| s.took)
            .collect();
        took.sort();
        let errors: Vec<&String> = inside.iter().filter_map(|s| s.error.as_ref()).collect();
        for s in inside.iter().filter(|s| s.error.is_some()).take(3) {
            let at = s.at.duration_since(*from).as_secs_f64();
            let path = s
                .trace
                .as_deref()
                .map(|id| format!("\n      trace: {}", path(viewer, id)))
                .unwrap_or_default();
            shown.push(format!(
                "{name}, +{at:.1} s: {}{path}",
                s.error.as_deref().unwrap_or_default()
            ));
        }
        let crossed = inside.iter().filter(|s| s.crossed).count();
        let traces: Vec<&String> = inside
            .iter()
            .filter(|s| s.error.is_none())
            .filter_map(|s| s.trace.as_ref())
            .collect();
        let step = (traces.len() / 50).max(1);
        let sample: Vec<&&String> = traces.iter().step_by(step).collect();
        let whole_n = sample.iter().filter(|id| whole(viewer, id)).count();
        let secs = to.duration_since(*from).as_secs_f64().max(1e-9);
        println!(
            "{:<46} {:>8.0} {:>7} {:>9} {:>9} {:>8} {:>14}",
            name,
            took.len() as f64 / secs,
            errors.len(),
            ms(took.get(took.len() * 99 / 100).copied().unwrap_or_default()),
            ms(took.last().copied().unwrap_or_default()),
            crossed,
            format!("{whole_n} of {}", sample.len())
        );
    }
    match seen
        .iter()
        .filter(|s| s.at >= killed && s.error.is_some())
        .map(|s| s.at + s.took)
        .max()
    {
        Some(last) => println!(
            "after the kill, the last error came {:.1} s later",
            last.duration_since(killed).as_secs_f64()
        ),
        None => println!("after the kill: no error"),
    }
    for e in shown {
        println!("  {e}");
    }
}
