//! The tracing hook (mqant's `OnRequestTracing`): decides per client request whether a trace
//! is started.

use std::sync::{Arc, RwLock};

pub use rumqttc::mqttbytes::v4::Publish;

use crate::session::Session;

/// Decides per client request whether a trace is started (mqant's `OnRequestTracing`).
pub type TracingHook = Arc<dyn Fn(&Session, &Publish) -> bool + Send + Sync>;

/// The current tracing hook, shared with the gate so a later `set_on_request_tracing` applies.
pub(crate) type HookCell = Arc<RwLock<TracingHook>>;
