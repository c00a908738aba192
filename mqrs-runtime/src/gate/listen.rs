//! The gate's listener: binds, registers the gate's handlers, accepts clients within the
//! connection limits, and drains on shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use mqrs_base::budget::Budget;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::state::{Deps, Gate, IpSlot};
use super::stats::{GateCounters, OpenGuard};
use super::{conn, handlers};
use crate::config::GateSection;

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
        request_bytes: Budget::new(cfg.max_total_request_bytes),
        arriving_bytes: Budget::new(cfg.max_total_request_bytes / 2),
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
    let limit = Budget::new(gate.cfg.max_connections);
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
        let Some(place) = limit.try_take(1) else {
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
