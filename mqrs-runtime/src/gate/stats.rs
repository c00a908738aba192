//! The gate's counters ([`GateStats`]), shared by its tasks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Counters of a running gate, read with [`App::gate_stats`](crate::App::gate_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GateStats {
    /// Connections accepted since start, over every listener.
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
    /// WebSocket handshakes refused: not an upgrade, subprotocols without `mqtt`, a head over
    /// 8 KiB, or none finished within `connect_timeout_ms`.
    pub ws_refused: u64,
    /// TLS handshakes refused: not TLS, a client that does not accept the certificate, or
    /// none finished within `connect_timeout_ms`.
    pub tls_refused: u64,
    /// CONNECTs the connect hook refused (bad user name or password, not authorized).
    pub connect_refused: u64,
    /// Connections closed by the app (`App::kick`).
    pub kicked: u64,
}

mqrs_base::counters! {
    /// The counters behind [`GateStats`], shared by the gate's tasks.
    pub(crate) struct GateCounters => GateStats {
        accepted,
        refused,
        open,
        panics,
        protocol_violations,
        slow_clients,
        refused_per_ip,
        request_bytes_held,
        ws_refused,
        tls_refused,
        connect_refused,
        kicked,
    }
}

/// Counts a connection as open until dropped (also when its task panics).
pub(super) struct OpenGuard(Arc<GateCounters>);

impl OpenGuard {
    pub(super) fn new(c: &Arc<GateCounters>) -> Self {
        c.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(c.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
