//! The tracing hook (mqant's `OnRequestTracing`): decides per client request whether a trace
//! is started, from the session and the request as [`GateRequest`] shows it.

use std::sync::{Arc, RwLock};

use crate::session::Session;

/// A client's request as the tracing hook sees it: its topic (`Module/HD_handler[/msgid]`),
/// its body and its QoS.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct GateRequest<'a> {
    /// The PUBLISH topic.
    pub topic: &'a str,
    /// The PUBLISH payload.
    pub payload: &'a [u8],
    /// The PUBLISH QoS: 0, 1 or 2.
    pub qos: u8,
}

/// Decides per client request whether a trace is started (mqant's `OnRequestTracing`).
pub type TracingHook = Arc<dyn Fn(&Session, &GateRequest<'_>) -> bool + Send + Sync>;

/// The current tracing hook, shared with the gate so a later `set_on_request_tracing` applies.
pub(crate) type HookCell = Arc<RwLock<TracingHook>>;
