//! The running gate's state, shared by its listener, its connections and its handlers: settings,
//! the open connections by session id, the byte budgets, the counters.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use mqrs_base::budget::Budget;
use mqrs_base::sync::Locked;

use super::admit::{ConnectCell, Strikes};
use super::hook::HookCell;
use super::pages::PagesCell;
use super::peer::Peer;
use super::stats::GateCounters;
use crate::client::Caller;
use crate::config::GateSection;
use crate::error::RpcError;
use crate::server::Registry;
use crate::session::Session;
use crate::trace::ServiceTracer;

/// The module name the gate registers its own handlers and spans under.
pub const GATE_MODULE: &str = "Gate";

/// The method the gate calls (fire-and-forget, untraced, with the client's last session) on
/// every module of its process that has one, when a client connection ends: mqant's
/// `OnDisconnect`. Not reachable by clients (no `HD_` prefix).
pub const ON_DISCONNECT: &str = "OnDisconnect";

/// What the gate needs from the app: a caller, the registry for its own handlers, its tracer,
/// the tracing and connect hooks and the server id it writes into sessions.
pub(crate) struct Deps {
    pub(crate) caller: Caller,
    pub(crate) registry: Arc<Registry>,
    pub(crate) tracer: ServiceTracer,
    pub(crate) hook: HookCell,
    pub(crate) on_connect: ConnectCell,
    pub(crate) pages: PagesCell,
    pub(crate) server_id: String,
    /// Where every connection's requests are kept, when they are.
    pub(crate) history: Option<Arc<mqrs_base::history::History>>,
}

/// The running gate: its settings, its connections by session id.
pub(crate) struct Gate {
    pub(super) cfg: GateSection,
    pub(super) caller: Caller,
    pub(super) hook: HookCell,
    pub(super) on_connect: ConnectCell,
    /// Pages the WebSocket port serves to plain GET requests.
    pub(super) pages: PagesCell,
    /// Recent CONNECT refusals per address.
    pub(super) strikes: Strikes,
    pub(super) server_id: String,
    pub(super) tracer: ServiceTracer,
    /// Where every client request is counted, traced or not (SERVER side, service `Gate`).
    pub(super) red: Arc<mqrs_base::red::Red>,
    /// Every connection's requests, whatever is sampled, when kept.
    pub(super) history: Option<Arc<mqrs_base::history::History>>,
    pub(super) conns: Mutex<HashMap<String, Arc<Peer>>>,
    /// The process's routes, to find the modules that want to hear of a disconnect.
    pub(super) registry: Arc<Registry>,
    /// Open connections per client IP address.
    pub(super) per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// Open connections, over every listener (`max_connections`).
    pub(super) connections: Budget,
    /// Bytes of requests received and not yet handled, over all connections
    /// (`max_total_request_bytes`).
    pub(super) request_bytes: Budget,
    /// Bytes of large packets still arriving, over all connections: half the total budget, its
    /// own, so clients stalling in large packets cannot starve everyone's small requests.
    pub(super) arriving_bytes: Budget,
    pub(super) counters: Arc<GateCounters>,
}

impl Gate {
    /// Largest packet the gate sends a client: its own `max_packet_size`, at least 1 MiB.
    pub(super) fn max_outgoing(&self) -> usize {
        self.cfg.max_packet_size.max(1 << 20)
    }

    pub(super) fn new_session_id(&self) -> String {
        format!("{:032x}", rand::random::<u128>())
    }

    pub(super) fn register(&self, id: &str, c: Arc<Peer>) {
        self.lock().insert(id.to_string(), c);
    }

    /// Tells every module with an [`ON_DISCONNECT`] method that this client is gone.
    pub(super) fn disconnected(&self, session: &Session) {
        for module in self.registry.modules_with(ON_DISCONNECT) {
            self.caller.call_nr(&module, ON_DISCONNECT, session, ());
        }
    }

    pub(super) fn unregister(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Spawns one of the gate's tasks; a panic in it is contained, counted and logged.
    pub(super) fn spawn_contained(
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Peer>>> {
        self.conns.locked()
    }

    /// The open connection whose session id is `sessionid`.
    pub(super) fn connection(&self, sessionid: &str) -> Result<Arc<Peer>, RpcError> {
        self.lock().get(sessionid).cloned().ok_or_else(|| {
            RpcError::Handler(format!(
                "no client connection with session id `{sessionid}`"
            ))
        })
    }

    /// Closes connection `sessionid` (mqant's `Session.Close`) once what was queued for it
    /// has been written; the error says when there is no such connection.
    pub(super) fn kick(&self, sessionid: &str, reason: &str) -> Result<(), RpcError> {
        let conn = self.connection(sessionid)?;
        self.counters.kicked.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%sessionid, reason = %mqrs_base::text::clip(reason, 256), "gate: client kicked");
        conn.kicked.notify_one();
        Ok(())
    }

    /// Applies `f` to the stored session of connection `sessionid`.
    pub(super) fn update(
        &self,
        sessionid: &str,
        f: impl FnOnce(&mut crate::session::SessionData),
    ) -> Result<(), RpcError> {
        let conn = self.connection(sessionid)?;
        let mut data = conn.data.locked();
        f(data.data_mut());
        if let Some(h) = &self.history {
            // Its requests, those before a login included, are the user's it is bound to.
            h.set_user(sessionid, data.userid());
        }
        Ok(())
    }
}

/// One connection's place in its IP address's count; given back when dropped.
pub(super) struct IpSlot(Arc<Gate>, std::net::IpAddr);

impl IpSlot {
    /// A place for one more connection from `ip`, unless it has `max_connections_per_ip`.
    pub(super) fn take(gate: &Arc<Gate>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut per_ip = gate.per_ip.locked();
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
        let mut per_ip = self.0.per_ip.locked();
        if let Some(n) = per_ip.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.1);
            }
        }
    }
}
