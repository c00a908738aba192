//! The gate's listeners (MQTT over TCP, and over WebSocket): binds them, registers the gate's
//! handlers, accepts clients within the connection limits, opens the transport each door
//! needs, and drains on shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use mqrs_base::budget::Budget;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::state::{Deps, Gate, IpSlot};
use super::stats::{GateCounters, OpenGuard};
use super::{conn, handlers, ws};
use crate::config::GateSection;

/// How clients reach a listener: the transport below MQTT, and the session's `network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// MQTT straight over TCP.
    Tcp,
    /// MQTT over WebSocket (binary frames, subprotocol `mqtt`).
    Ws,
}

impl Door {
    /// The session's `network` for clients that came in through this door.
    pub(crate) fn network(self) -> &'static str {
        match self {
            Door::Tcp => "tcp",
            Door::Ws => "ws",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Door::Tcp => "the MQTT gate",
            Door::Ws => "the MQTT gate's WebSocket listener",
        }
    }
}

/// A gate whose listeners are bound and whose handlers (`Gate/Bind`, ...) are registered, but
/// which accepts no client yet: the app first connects to the broker, so the first client's
/// calls to other processes can succeed.
pub(crate) struct Bound {
    gate: Arc<Gate>,
    listeners: Vec<(Door, TcpListener)>,
    pub(crate) addr: SocketAddr,
    pub(crate) ws_addr: Option<SocketAddr>,
    pub(crate) counters: Arc<GateCounters>,
}

/// A listener that could not be bound: what it was for, where, and why.
#[derive(Debug)]
pub(crate) struct BindError {
    pub(crate) what: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) source: std::io::Error,
}

async fn bind_door(door: Door, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let fail = |source| BindError {
        what: door.what(),
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    Ok((listener, local))
}

/// Binds the listeners and registers the gate's handlers.
pub(crate) async fn bind(deps: Deps, cfg: GateSection) -> Result<Bound, BindError> {
    let (tcp, addr) = bind_door(Door::Tcp, cfg.tcp_addr).await?;
    let mut listeners = vec![(Door::Tcp, tcp)];
    let mut ws_addr = None;
    if let Some(at) = cfg.ws_addr {
        let (ws, local) = bind_door(Door::Ws, at).await?;
        listeners.push((Door::Ws, ws));
        ws_addr = Some(local);
    }
    let counters = Arc::new(GateCounters::default());
    let gate = Arc::new(Gate {
        server_id: deps.server_id,
        tracer: deps.tracer,
        caller: deps.caller,
        hook: deps.hook,
        conns: Mutex::new(HashMap::new()),
        registry: deps.registry.clone(),
        per_ip: Mutex::new(HashMap::new()),
        connections: Budget::new(cfg.max_connections),
        request_bytes: Budget::new(cfg.max_total_request_bytes),
        arriving_bytes: Budget::new(cfg.max_total_request_bytes / 2),
        counters: counters.clone(),
        cfg,
    });
    handlers::register(&deps.registry, &gate);
    Ok(Bound {
        gate,
        listeners,
        addr,
        ws_addr,
        counters,
    })
}

impl Bound {
    /// Starts accepting clients on every listener until `shutdown`; the task ends once the
    /// gate has drained.
    pub(crate) fn serve(self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let gate = self.gate;
        let loops: Vec<_> = self
            .listeners
            .into_iter()
            .map(|(door, listener)| accept_loop(gate.clone(), door, listener, shutdown.clone()))
            .collect();
        tokio::spawn(async move {
            futures_util::future::join_all(loops).await;
        })
    }
}

async fn accept_loop(
    gate: Arc<Gate>,
    door: Door,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => {
                // Refuse new clients at once; let the requests in flight finish.
                drop(listener);
                drain(&gate).await;
                return;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "gate: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(place) = gate.connections.try_take(1) else {
            gate.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, max = gate.cfg.max_connections, "gate: connection limit reached; refusing");
            continue;
        };
        let Some(ip_slot) = IpSlot::take(&gate, peer.ip()) else {
            let n = gate.counters.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(%peer, max = gate.cfg.max_connections_per_ip, refused = n + 1, "gate: too many connections from one address; refusing");
            }
            continue;
        };
        gate.counters.accepted.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "gate: cannot set TCP_NODELAY");
        }
        let (g, rx) = (gate.clone(), shutdown.clone());
        let open = OpenGuard::new(&gate.counters);
        gate.spawn_contained("connection", async move {
            let _open = (open, place, ip_slot);
            let counters = g.counters.clone();
            let result = match door {
                Door::Tcp => conn::serve(g, stream, door.network(), peer.to_string(), rx).await,
                Door::Ws => {
                    let Some(ws) = open_ws(&g, stream, peer, rx.clone()).await else {
                        return;
                    };
                    conn::serve(g, ws, door.network(), peer.to_string(), rx).await
                }
            };
            report(&counters, peer, result);
        });
    }
}

/// The WebSocket over `stream` once its handshake is done, within the connect timeout;
/// `None` (counted) when it is refused, and when the gate stops meanwhile.
async fn open_ws(
    gate: &Gate,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Option<ws::WsStream<TcpStream>> {
    let within = std::time::Duration::from_millis(gate.cfg.connect_timeout_ms);
    let refused = tokio::select! {
        _ = shutdown.changed() => return None,
        r = tokio::time::timeout(within, ws::open(stream)) => match r {
            Ok(Ok(ws)) => return Some(ws),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no handshake within the connect timeout".to_string(),
        },
    };
    gate.counters.ws_refused.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, reason = %refused, "gate: WebSocket handshake refused");
    None
}

/// Counts and logs how a connection ended.
fn report(counters: &GateCounters, peer: SocketAddr, result: Result<(), conn::ConnError>) {
    match result {
        Ok(()) => {}
        Err(conn::ConnError::Protocol(why)) => {
            counters.protocol_violations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, violation = why, "gate: client broke the MQTT protocol; disconnected");
        }
        Err(conn::ConnError::Io(e)) if ws::violation(&e).is_some() => {
            counters.protocol_violations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, error = %e, "gate: client broke the WebSocket protocol; disconnected");
        }
        Err(e @ (conn::ConnError::SlowReader | conn::ConnError::Stalled)) => {
            counters.slow_clients.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, reason = %e, "gate: slow client disconnected");
        }
        Err(e) => tracing::debug!(%peer, error = %e, "gate: connection closed on error"),
    }
}

/// Waits until every connection has finished its requests in flight and closed, for at most
/// the grace period.
async fn drain(gate: &Gate) {
    let grace = std::time::Duration::from_millis(gate.cfg.shutdown_grace_ms);
    let deadline = tokio::time::Instant::now() + grace;
    while gate.counters.open.load(Ordering::Relaxed) > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                open = gate.counters.open.load(Ordering::Relaxed),
                grace_ms = gate.cfg.shutdown_grace_ms,
                "gate: connections still busy after the shutdown grace period"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
