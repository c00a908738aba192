//! The gate: the client-facing MQTT server. Clients publish to `Module/HD_Handler/msgid` and
//! get the reply on the same topic. It also serves `Gate/Bind`, `Gate/UnBind`, `Gate/Push` and
//! `Gate/Send` (see `handlers`), so a handler in any process can change the session the gate
//! keeps for a connection, or send its client a message.

mod conn;
pub(crate) mod handlers;
mod request;
mod rules;
pub mod topic;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use rumqttc::mqttbytes::v4::Publish;

use crate::app::HookCell;
use crate::config::GateSection;
use crate::error::RpcError;
use crate::rpc::call::Caller;
use crate::rpc::Registry;
use crate::session::Session;
use crate::trace::ServiceTracer;
use conn::ConnShared;

/// The module name the gate registers its own handlers and spans under.
pub const GATE_MODULE: &str = "Gate";

/// The method the gate calls (fire-and-forget, untraced, with the client's last session) on
/// every module of its process that has one, when a client connection ends: mqant's
/// `OnDisconnect`. Not reachable by clients (no `HD_` prefix).
pub const ON_DISCONNECT: &str = "OnDisconnect";

/// Counters of a running gate, read with [`App::gate_stats`](crate::App::gate_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GateStats {
    /// TCP connections accepted since start.
    pub accepted: u64,
    /// Connections refused because `max_connections` were open.
    pub refused: u64,
    /// Connections open now.
    pub open: u64,
    /// Panics inside the gate's own tasks (a connection or a request), each contained to its
    /// task and logged. Handler panics are not counted here: they become error replies.
    pub panics: u64,
    /// Connections closed because the client broke an MQTT 3.1.1 rule (a wildcard or empty
    /// topic in a PUBLISH, reserved flags set, a password without a user name, ...).
    pub protocol_violations: u64,
    /// Connections closed because the client did not read its replies (`max_outgoing_bytes`
    /// waiting, or its queue full for 10 s) or stopped in the middle of a packet.
    pub slow_clients: u64,
    /// Connections refused because their IP address had `max_connections_per_ip` open.
    pub refused_per_ip: u64,
    /// Bytes of requests received and not yet handled, over all connections, now.
    pub request_bytes_held: u64,
}

/// The counters behind [`GateStats`], shared by the gate's tasks.
#[derive(Debug, Default)]
pub(crate) struct GateCounters {
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicU64,
    panics: AtomicU64,
    protocol_violations: AtomicU64,
    slow_clients: AtomicU64,
    refused_per_ip: AtomicU64,
    pub(crate) request_bytes_held: AtomicU64,
}

impl GateCounters {
    /// A snapshot.
    pub(crate) fn snapshot(&self) -> GateStats {
        GateStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            protocol_violations: self.protocol_violations.load(Ordering::Relaxed),
            slow_clients: self.slow_clients.load(Ordering::Relaxed),
            refused_per_ip: self.refused_per_ip.load(Ordering::Relaxed),
            request_bytes_held: self.request_bytes_held.load(Ordering::Relaxed),
        }
    }
}

/// What the gate needs from the app: a caller, the registry for its own handlers, its tracer,
/// the tracing hook and the server id it writes into sessions.
pub(crate) struct Deps {
    pub(crate) caller: Caller,
    pub(crate) registry: Arc<Registry>,
    pub(crate) tracer: ServiceTracer,
    pub(crate) hook: HookCell,
    pub(crate) server_id: String,
}

/// The running gate: its settings, its connections by session id.
pub(crate) struct Gate {
    cfg: GateSection,
    caller: Caller,
    hook: HookCell,
    server_id: String,
    tracer: ServiceTracer,
    conns: Mutex<HashMap<String, Arc<ConnShared>>>,
    /// The process's routes, to find the modules that want to hear of a disconnect.
    registry: Arc<Registry>,
    /// Open connections per client IP address.
    per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// Bytes of requests received and not yet handled, over all connections
    /// (`max_total_request_bytes` permits).
    request_bytes: Arc<Semaphore>,
    /// Bytes of large packets still arriving, over all connections: half the total budget, its
    /// own, so clients stalling in large packets cannot starve everyone's small requests.
    arriving_bytes: Arc<Semaphore>,
    counters: Arc<GateCounters>,
}

impl Gate {
    /// Largest packet the gate sends a client: its own `max_packet_size`, at least 1 MiB.
    fn max_outgoing(&self) -> usize {
        self.cfg.max_packet_size.max(1 << 20)
    }

    fn new_session_id(&self) -> String {
        format!("{:032x}", rand::random::<u128>())
    }

    fn register(&self, id: &str, c: Arc<ConnShared>) {
        self.lock().insert(id.to_string(), c);
    }

    /// Tells every module with an [`ON_DISCONNECT`] method that this client is gone.
    fn disconnected(&self, session: &Session) {
        for module in self.registry.modules_with(ON_DISCONNECT) {
            self.caller.call_nr(&module, ON_DISCONNECT, session, ());
        }
    }

    fn unregister(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Spawns one of the gate's tasks; a panic in it is contained, counted and logged.
    fn spawn_contained(
        &self,
        what: &'static str,
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let counters = self.counters.clone();
        tokio::spawn(async move {
            if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
                counters.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(task = what, "gate: a task panicked; it was contained");
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ConnShared>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open connection whose session id is `sessionid`.
    fn connection(&self, sessionid: &str) -> Result<Arc<ConnShared>, RpcError> {
        self.lock().get(sessionid).cloned().ok_or_else(|| {
            RpcError::Handler(format!(
                "no client connection with session id `{sessionid}`"
            ))
        })
    }

    /// Applies `f` to the stored session of connection `sessionid`.
    fn update(
        &self,
        sessionid: &str,
        f: impl FnOnce(&mut crate::session::SessionData),
    ) -> Result<(), RpcError> {
        f(self
            .connection(sessionid)?
            .data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .data_mut());
        Ok(())
    }
}

/// A gate whose listener is bound and whose handlers (`Gate/Bind`, ...) are registered, but
/// which accepts no client yet: the app first connects to the broker, so the first client's
/// calls to other processes can succeed.
pub(crate) struct Bound {
    gate: Arc<Gate>,
    listener: TcpListener,
    pub(crate) addr: SocketAddr,
    pub(crate) counters: Arc<GateCounters>,
}

/// Binds the listener and registers the gate's handlers.
pub(crate) async fn bind(deps: Deps, cfg: GateSection) -> std::io::Result<Bound> {
    let listener = TcpListener::bind(cfg.tcp_addr).await?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(GateCounters::default());
    let gate = Arc::new(Gate {
        server_id: deps.server_id,
        tracer: deps.tracer,
        caller: deps.caller,
        hook: deps.hook,
        conns: Mutex::new(HashMap::new()),
        registry: deps.registry.clone(),
        per_ip: Mutex::new(HashMap::new()),
        request_bytes: Arc::new(Semaphore::new(permits(cfg.max_total_request_bytes))),
        arriving_bytes: Arc::new(Semaphore::new(permits(cfg.max_total_request_bytes / 2))),
        counters: counters.clone(),
        cfg,
    });
    handlers::register(&deps.registry, &gate);
    Ok(Bound {
        gate,
        listener,
        addr,
        counters,
    })
}

impl Bound {
    /// Starts accepting clients until `shutdown`; the task ends once the gate has drained.
    pub(crate) fn serve(self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(accept_loop(self.gate, self.listener, shutdown))
    }
}

async fn accept_loop(gate: Arc<Gate>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(gate.cfg.max_connections.max(1)));
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
        let Ok(permit) = limit.clone().try_acquire_owned() else {
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
            let _open = (open, permit, ip_slot);
            let counters = g.counters.clone();
            match conn::serve(g, stream, "tcp", peer.to_string(), rx).await {
                Ok(()) => {}
                Err(conn::ConnError::Protocol(why)) => {
                    counters.protocol_violations.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, violation = why, "gate: client broke the MQTT protocol; disconnected");
                }
                Err(e @ (conn::ConnError::SlowReader | conn::ConnError::Stalled)) => {
                    counters.slow_clients.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, reason = %e, "gate: slow client disconnected");
                }
                Err(e) => tracing::debug!(%peer, error = %e, "gate: connection closed on error"),
            }
        });
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

/// A byte budget as semaphore permits (at least one, at most what a semaphore holds).
pub(crate) fn permits(bytes: usize) -> usize {
    bytes.clamp(1, u32::MAX as usize)
}

/// One connection's place in its IP address's count; given back when dropped.
struct IpSlot(Arc<Gate>, std::net::IpAddr);

impl IpSlot {
    /// A place for one more connection from `ip`, unless it has `max_connections_per_ip`.
    fn take(gate: &Arc<Gate>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut per_ip = gate.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= gate.cfg.max_connections_per_ip.max(1) {
            return None;
        }
        *n += 1;
        Some(IpSlot(gate.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut per_ip = self.0.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.1);
            }
        }
    }
}

/// Counts a connection as open until dropped (also when its task panics).
struct OpenGuard(Arc<GateCounters>);

impl OpenGuard {
    fn new(c: &Arc<GateCounters>) -> Self {
        c.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(c.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
