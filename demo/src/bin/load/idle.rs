//! `load --connections N`: the gate holding N idle client connections, half MQTT over TCP and
//! half MQTT over WebSocket, opened from many 127.0.0.x source addresses (a few hundred each,
//! under the gate's per-address limit); prints the gate's resident memory before and after
//! each half, the bytes one idle connection costs on each transport, whether every connection
//! still answers a PINGREQ, and a client's request latency with all of them held.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use demo::harness::{rss_mib, DemoProcess};
use demo::raw::{connect_from, start_mqtt, ws_binary};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::door::{Door, Kind};
use crate::Cli;

/// Connections opened from one source address, under the gate's default
/// `max_connections_per_ip` (256).
const PER_ADDRESS: usize = 250;

/// The keepalive the connections ask for, seconds (the gate's `max_idle_ms` bounds it).
const KEEPALIVE: u16 = 600;

/// Connections being opened at once.
const OPENING_AT_ONCE: usize = 200;

/// The bar the gate's memory must stay under with every connection held, MiB.
const MEMORY_BAR_MIB: f64 = 1024.0;

/// Raises this process's open-file limit (inherited by the demo it starts) to at least
/// `wanted`, as far as the hard limit (or, as root, the kernel) allows; answers the limit.
fn raise_open_files(wanted: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the one struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur >= wanted {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: lim.rlim_max.max(wanted),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return wanted;
        }
        let capped = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &capped) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

/// Opens connection number `i` to `to` from its source address and waits for the CONNACK.
async fn open(to: SocketAddr, ws: bool, i: usize) -> Result<TcpStream, String> {
    let source = Ipv4Addr::new(
        127,
        0,
        (1 + i / PER_ADDRESS / 250) as u8,
        (2 + i / PER_ADDRESS % 250) as u8,
    );
    let mut s = connect_from(source.into(), to)
        .await
        .map_err(|e| format!("connect from {source}: {e}"))?;
    let id = format!("idle-{}-{i}", if ws { "ws" } else { "tcp" });
    start_mqtt(&mut s, ws, &id, KEEPALIVE).await?;
    // CONNACK: 4 bytes, in a 2-byte frame header over WebSocket.
    let connack_len = if ws { 6 } else { 4 };
    let mut ack = [0u8; 6];
    tokio::time::timeout(
        Duration::from_secs(30),
        s.read_exact(&mut ack[..connack_len]),
    )
    .await
    .map_err(|_| "no CONNACK in 30 s".to_string())?
    .map_err(|e| format!("CONNACK: {e}"))?;
    let ack = &ack[connack_len - 4..connack_len];
    if ack[0] != 0x20 || ack[3] != 0 {
        return Err(format!("CONNACK refused: {ack:02x?}"));
    }
    Ok(s)
}

/// Opens `count` connections numbered from `first`, a few hundred at a time.
async fn open_many(
    to: SocketAddr,
    ws: bool,
    first: usize,
    count: usize,
) -> Result<Vec<TcpStream>, String> {
    let mut held = Vec::with_capacity(count);
    let mut set = JoinSet::new();
    let mut next = first;
    let started = Instant::now();
    while held.len() < count {
        while set.len() < OPENING_AT_ONCE && next < first + count {
            set.spawn(open(to, ws, next));
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(s))) => held.push(s),
            Some(Ok(Err(e))) => return Err(format!("after {} connections: {e}", held.len())),
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    println!(
        "  {} {} connections open in {:.1} s",
        held.len(),
        if ws { "WebSocket" } else { "TCP" },
        started.elapsed().as_secs_f64()
    );
    Ok(held)
}

/// How many of `held` answer a PINGREQ within a few seconds.
async fn answering(held: Vec<TcpStream>, ws: bool) -> (usize, Vec<TcpStream>) {
    let mut set = JoinSet::new();
    let mut alive = Vec::with_capacity(held.len());
    let mut ok = 0;
    for mut s in held {
        set.spawn(async move {
            let (ping, len) = if ws {
                (ws_binary(&[0xc0, 0]), 4)
            } else {
                (vec![0xc0, 0], 2)
            };
            let mut pong = [0u8; 4];
            let answered = s.write_all(&ping).await.is_ok()
                && tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut pong[..len]))
                    .await
                    .is_ok_and(|r| r.is_ok())
                && pong[len - 2] == 0xd0;
            (answered, s)
        });
        if set.len() >= 1000 {
            if let Some(Ok((a, s))) = set.join_next().await {
                ok += usize::from(a);
                alive.push(s);
            }
        }
    }
    while let Some(r) = set.join_next().await {
        if let Ok((a, s)) = r {
            ok += usize::from(a);
            alive.push(s);
        }
    }
    (ok, alive)
}

/// Resident memory of `pid` once it has settled, MiB.
async fn settled_rss(pid: u32) -> Result<f64, String> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    rss_mib(pid).ok_or_else(|| "cannot read the gate's memory".to_string())
}

/// Connections one worker process holds: every process, the gate's included, may have only
/// so many open files, and on a machine where the limit cannot be raised the client side is
/// spread over several processes.
const PER_WORKER: usize = 5_000;

/// A worker process of this binary holding a share of the connections.
struct Worker {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stdin: tokio::process::ChildStdin,
}

impl Worker {
    /// Starts a worker that opens `count` connections numbered from `first` to `to`.
    async fn start(to: SocketAddr, ws: bool, first: usize, count: usize) -> Result<Worker, String> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let spec = format!("{}:{first}:{count}:{to}", if ws { "ws" } else { "tcp" });
        let mut child = tokio::process::Command::new(exe)
            .args(["--hold-worker", &spec])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let out = child.stdout.take().ok_or("worker without stdout")?;
        let stdin = child.stdin.take().ok_or("worker without stdin")?;
        let mut w = Worker {
            child,
            lines: tokio::io::BufReader::new(out).lines(),
            stdin,
        };
        // Its progress lines come first.
        while !w.line().await?.starts_with("open ") {}
        Ok(w)
    }

    /// The worker's next line; its errors come as `error ...`.
    async fn line(&mut self) -> Result<String, String> {
        match self.lines.next_line().await {
            Ok(Some(l)) if l.starts_with("error ") => Err(l["error ".len()..].to_string()),
            Ok(Some(l)) => Ok(l),
            _ => Err("a worker ended early".into()),
        }
    }

    /// How many of its connections answer a PINGREQ.
    async fn ping(&mut self) -> Result<usize, String> {
        self.stdin
            .write_all(b"ping\n")
            .await
            .map_err(|e| e.to_string())?;
        let l = self.line().await?;
        l.strip_prefix("answered ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("worker said `{l}`"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Worker mode (`--hold-worker tcp|ws:FIRST:COUNT:ADDR`): opens the connections, says
/// `open N`, answers `ping` lines with `answered K`, and exits when its input closes.
pub async fn hold(spec: &str) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let mut parts = spec.splitn(4, ':');
    let (kind, first, count, to) = (parts.next(), parts.next(), parts.next(), parts.next());
    let parsed = (|| {
        let ws = kind? == "ws";
        Some((
            ws,
            first?.parse().ok()?,
            count?.parse().ok()?,
            to?.parse().ok()?,
        ))
    })();
    let Some((ws, first, count, to)) = parsed else {
        return Err(format!(
            "--hold-worker `{spec}`: expected tcp|ws:FIRST:COUNT:ADDR"
        ));
    };
    raise_open_files(count as u64 + 256);
    let mut held = match open_many(to, ws, first, count).await {
        Ok(h) => h,
        Err(e) => {
            println!("error {e}");
            return Ok(());
        }
    };
    println!("open {}", held.len());
    let mut input = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(l)) = input.next_line().await {
        if l == "ping" {
            let (ok, alive) = answering(held, ws).await;
            held = alive;
            println!("answered {ok}");
        }
    }
    Ok(())
}

/// Opens `count` connections from workers of at most [`PER_WORKER`] each.
async fn open_in_workers(
    to: SocketAddr,
    ws: bool,
    first: usize,
    count: usize,
) -> Result<Vec<Worker>, String> {
    let started = Instant::now();
    let mut workers = Vec::new();
    let mut opened = 0;
    while opened < count {
        let share = PER_WORKER.min(count - opened);
        workers.push(Worker::start(to, ws, first + opened, share).await?);
        opened += share;
    }
    println!(
        "  {count} {} connections open in {:.1} s ({} worker processes)",
        if ws { "WebSocket" } else { "TCP" },
        started.elapsed().as_secs_f64(),
        workers.len()
    );
    Ok(workers)
}

/// How many connections of `workers` answer a PINGREQ.
async fn ping_all(workers: &mut [Worker]) -> Result<usize, String> {
    let mut ok = 0;
    for w in workers {
        ok += w.ping().await?;
    }
    Ok(ok)
}

/// Runs the idle-connections measurement.
pub async fn run(cli: &Cli, wanted: usize) -> Result<(), String> {
    if cli.gate.is_some() {
        return Err(
            "--connections starts its own demo, with room for that many connections".into(),
        );
    }
    // The gate holds one socket per client beside its own few dozen files.
    let limit = raise_open_files(wanted as u64 + 4096);
    let n = wanted.min(limit.saturating_sub(128) as usize);
    if n < wanted {
        println!(
            "this machine lets a process have {limit} open files (a hard limit this user cannot \
             raise), so the gate can hold {n} of the {wanted} connections asked for"
        );
    }
    let dir = std::env::temp_dir().join(format!("mqrs-load-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("idle.toml");
    std::fs::write(&config, format!("[gate]\nmax_connections = {}\n", n + 100))
        .map_err(|e| e.to_string())?;
    let config_arg = config.display().to_string();
    let demo = DemoProcess::start(&["--config", &config_arg])?;
    let _ = std::fs::remove_dir_all(&dir);
    let ws_addr = demo
        .ws
        .clone()
        .ok_or("the demo did not log its WebSocket address")?;
    let parse = |a: &str| a.parse::<SocketAddr>().map_err(|e| format!("{a}: {e}"));
    let (tcp_to, ws_to) = (parse(&demo.gate)?, parse(&ws_addr)?);
    let pid = demo.pid();
    println!("idle connections: {n} (half TCP, half WebSocket), {PER_ADDRESS} per source address");
    let before = settled_rss(pid).await?;
    println!("  gate RSS with no client: {before:.1} MiB");
    let tcp_count = n / 2;
    let mut tcp = open_in_workers(tcp_to, false, 0, tcp_count).await?;
    let after_tcp = settled_rss(pid).await?;
    let mut ws = open_in_workers(ws_to, true, tcp_count, n - tcp_count).await?;
    let after_ws = settled_rss(pid).await?;
    let per = |mib: f64, count: usize| mib * 1024.0 * 1024.0 / count.max(1) as f64;
    let (tcp_each, ws_each) = (
        per(after_tcp - before, tcp_count),
        per(after_ws - after_tcp, n - tcp_count),
    );
    println!(
        "{:<10} {:>12} {:>14} {:>18}",
        "transport", "connections", "gate RSS", "bytes/connection"
    );
    println!(
        "{:<10} {:>12} {:>10.1} MiB {:>18.0}",
        "tcp", tcp_count, after_tcp, tcp_each
    );
    println!(
        "{:<10} {:>12} {:>10.1} MiB {:>18.0}",
        "ws",
        n - tcp_count,
        after_ws,
        ws_each
    );
    // A client's requests with every connection held.
    let door = Door::parse(&demo.gate, Kind::Tcp, Some(pid))?;
    let c = door.connect("idle-probe").await?;
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = c
            .request(&cli.handler, b"{}", QoS::AtMostOnce)
            .await
            .map_err(|e| e.to_string())?;
        if r["Error"] != "" {
            return Err(format!("{}: {r}", cli.handler));
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    c.disconnect().await;
    let (tcp_ok, ws_ok) = (ping_all(&mut tcp).await?, ping_all(&mut ws).await?);
    let bar = if after_ws < MEMORY_BAR_MIB {
        "under"
    } else {
        "OVER"
    };
    println!(
        "with all {n} held: gate RSS {after_ws:.1} MiB ({bar} the 1 GiB bar); PINGREQ answered by \
         {tcp_ok}/{tcp_count} TCP and {ws_ok}/{} WebSocket connections; a client's {} p50 {:.2} ms",
        n - tcp_count,
        cli.handler,
        lat[lat.len() / 2].as_secs_f64() * 1000.0
    );
    let at_20k = before + (tcp_each + ws_each) / 2.0 * 20_000.0 / (1024.0 * 1024.0);
    println!("at these rates 20,000 connections (half each) take about {at_20k:.0} MiB");
    Ok(())
}
