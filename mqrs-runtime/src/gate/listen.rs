//! The gate's listeners (MQTT over TCP, over TLS, and over WebSocket, plain or TLS): binds
//! them, registers the gate's handlers, accepts clients within the connection limits, opens
//! the transport each door needs (TLS, then the WebSocket handshake, within the connect
//! timeout), and drains on shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mqrs_base::budget::Budget;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

use super::state::{Deps, Gate, IpSlot};
use super::stats::{GateCounters, OpenGuard};
use super::tls::{Tls, TlsError};
use super::{conn, handlers, ws};
use crate::config::GateSection;

/// How clients reach a listener: the transports below MQTT, and the session's `network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// MQTT straight over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket (binary frames, subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl Door {
    /// The session's `network` for clients that came in through this door.
    pub(crate) fn network(self) -> &'static str {
        match self {
            Door::Tcp => "tcp",
            Door::Tls => "tls",
            Door::Ws => "ws",
            Door::Wss => "wss",
        }
    }

    /// The scheme of the URL clients connect to.
    pub(crate) fn url_scheme(self) -> &'static str {
        crate::identity::url_scheme(self.network())
    }

    fn what(self) -> &'static str {
        match self {
            Door::Tcp => "the MQTT gate",
            Door::Tls => "the MQTT gate's TLS listener",
            Door::Ws | Door::Wss => "the MQTT gate's WebSocket listener",
        }
    }
}

/// A gate whose listeners are bound and whose handlers (`Gate/Bind`, ...) are registered, but
/// which accepts no client yet: the app first connects to the broker, so the first client's
/// calls to other processes can succeed.
pub(crate) struct Bound {
    gate: Arc<Gate>,
    listeners: Vec<(Door, TcpListener)>,
    tls: Option<Tls>,
    /// Where each door listens, in the order bound.
    pub(crate) doors: Vec<(Door, SocketAddr)>,
    pub(crate) counters: Arc<GateCounters>,
}

/// Why the gate cannot start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// A listener could not be bound: what it was for, where, and why.
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    Tls(TlsError),
}

async fn bind_door(door: Door, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let fail = |source| StartError::Bind {
        what: door.what(),
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    Ok((listener, local))
}

/// The TLS settings of `[gate]`: none, or a certificate and its key that load.
fn load_tls(cfg: &GateSection) -> Result<Option<Tls>, StartError> {
    match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Tls::load(cert, key).map(Some).map_err(StartError::Tls),
        (Some(path), None) | (None, Some(path)) => Err(StartError::Tls(TlsError {
            path: path.clone(),
            reason: "[gate] tls_cert and tls_key are set together or not at all".into(),
        })),
    }
}

/// Loads the TLS certificate if one is set, binds the listeners and registers the gate's
/// handlers.
pub(crate) async fn bind(deps: Deps, cfg: GateSection) -> Result<Bound, StartError> {
    let tls = load_tls(&cfg)?;
    let mut wanted = vec![(Door::Tcp, cfg.tcp_addr)];
    if let Some(at) = cfg.ws_addr {
        wanted.push((if tls.is_some() { Door::Wss } else { Door::Ws }, at));
    }
    if let (Some(_), Some(at)) = (&tls, cfg.tls_addr) {
        wanted.push((Door::Tls, at));
    }
    let (mut listeners, mut doors) = (Vec::new(), Vec::new());
    for (door, at) in wanted {
        let (listener, local) = bind_door(door, at).await?;
        listeners.push((door, listener));
        doors.push((door, local));
    }
    let counters = Arc::new(GateCounters::default());
    let gate = Arc::new(Gate {
        server_id: deps.server_id,
        red: deps.tracer.policy.red.clone(),
        history: deps.history,
        tracer: deps.tracer,
        caller: deps.caller,
        hook: deps.hook,
        on_connect: deps.on_connect,
        pages: deps.pages,
        strikes: Default::default(),
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
        tls,
        doors,
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
            .map(|(door, listener)| {
                let tls = self.tls.clone();
                accept_loop(gate.clone(), door, listener, tls, shutdown.clone())
            })
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
    tls: Option<Tls>,
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
        let tls = tls.clone();
        gate.spawn_contained("connection", async move {
            let _open = (open, place, ip_slot);
            let counters = g.counters.clone();
            let Some(result) = open_and_serve(g, door, tls, stream, peer, rx).await else {
                return;
            };
            report(&counters, peer, result);
        });
    }
}

/// Opens the transports of `door` over `stream` (TLS, the WebSocket handshake) within the
/// connect timeout, then serves MQTT over them; `None` when an opening was refused (counted)
/// or the gate stopped meanwhile.
async fn open_and_serve(
    g: Arc<Gate>,
    door: Door,
    tls: Option<Tls>,
    stream: TcpStream,
    peer: SocketAddr,
    rx: watch::Receiver<bool>,
) -> Option<Result<(), conn::ConnError>> {
    let within = std::time::Duration::from_millis(g.cfg.connect_timeout_ms);
    let open = Opening {
        peer,
        shutdown: rx.clone(),
        by: tokio::time::Instant::now() + within,
        counters: g.counters.clone(),
        tls,
        pages: g.pages.clone(),
    };
    let (net, who) = (door.network(), peer);
    // Every step boxed: a connection's task is held as long as the client stays (most of a
    // gate's clients are idle), so it keeps only the state of the transport it has, not room
    // for the largest handshake or stream type of any door.
    Some(match door {
        Door::Tcp => Box::pin(conn::serve(g, stream, net, who, rx)).await,
        Door::Tls => {
            let tls = Box::pin(open.tls(stream)).await?;
            Box::pin(conn::serve(g, tls, net, who, rx)).await
        }
        Door::Ws => {
            let ws = Box::pin(open.ws(stream)).await?;
            Box::pin(conn::serve(g, ws, net, who, rx)).await
        }
        Door::Wss => {
            let tls = Box::pin(open.tls(stream)).await?;
            let ws = Box::pin(open.ws(tls)).await?;
            Box::pin(conn::serve(g, ws, net, who, rx)).await
        }
    })
}

/// The handshakes of one connection, all to be done `by` the connect timeout.
struct Opening {
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    by: tokio::time::Instant,
    counters: Arc<GateCounters>,
    /// A TLS door exists only with a certificate.
    tls: Option<Tls>,
    pages: super::PagesCell,
}

impl Opening {
    /// The TLS handshake; `None` (counted in `tls_refused`) when it fails.
    async fn tls<S>(&self, io: S) -> Option<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = async {
            match &self.tls {
                Some(tls) => tls.accept(io).await,
                None => Err(std::io::Error::other("no TLS certificate")),
            }
        };
        self.bounded(&self.counters.tls_refused, "TLS", handshake)
            .await
    }

    /// The WebSocket handshake; `None` when it is refused (counted in `ws_refused`) or the
    /// request was for a page (served).
    async fn ws<S>(&self, io: S) -> Option<ws::WsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let opened = ws::open(io, &self.pages);
        match self
            .bounded(&self.counters.ws_refused, "WebSocket", opened)
            .await?
        {
            ws::Opened::Ws(s) => Some(s),
            ws::Opened::Page => None,
        }
    }

    /// What `handshake` opens by the deadline; `None` (counted in `refused`, logged) when it
    /// fails or takes too long, and when the gate stops meanwhile.
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        refused: &AtomicU64,
        what: &'static str,
        handshake: impl std::future::Future<Output = Result<T, E>>,
    ) -> Option<T> {
        let mut shutdown = self.shutdown.clone();
        let why = tokio::select! {
            _ = shutdown.changed() => return None,
            r = tokio::time::timeout_at(self.by, handshake) => match r {
                Ok(Ok(opened)) => return Some(opened),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no handshake within the connect timeout".to_string(),
            },
        };
        refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer = %self.peer, reason = %why, "gate: {what} handshake refused");
        None
    }
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
