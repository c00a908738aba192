//! The contract between callers and transports: where a call goes ([`Target`]), what it
//! carries ([`Request`]), and how it is moved ([`Transport`]).

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::deadline::Deadline;
use crate::error::RpcError;
use crate::session::Session;

/// Where a call goes: a module, optionally pinned to one server (mqant's `Module@serverId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target<'a> {
    /// Module name, e.g. `Login`.
    pub module: &'a str,
    /// Server id, when the call must reach that one instance of the module.
    pub server_id: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Any instance of `module`.
    pub fn module(module: &'a str) -> Self {
        Target {
            module,
            server_id: None,
        }
    }

    /// The instance of `module` on server `server_id`.
    pub fn on_server(module: &'a str, server_id: &'a str) -> Self {
        Target {
            module,
            server_id: Some(server_id),
        }
    }

    /// Reads `Module` or `Module@serverId`; an empty server id means any instance.
    pub fn parse(s: &'a str) -> Self {
        match s.split_once('@') {
            Some((module, sid)) if !sid.is_empty() => Target::on_server(module, sid),
            Some((module, _)) => Target::module(module),
            None => Target::module(s),
        }
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.server_id {
            Some(sid) => write!(f, "{}@{sid}", self.module),
            None => f.write_str(self.module),
        }
    }
}

/// One call as a transport sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// Module (and server) to reach.
    pub target: Target<'a>,
    /// Handler name.
    pub method: &'a str,
    /// The caller's session; when traced it carries the caller's CLIENT span's context (to
    /// send on; the span itself is held by the caller and is not tagged through this session).
    pub session: Session,
    /// Arguments, a JSON array.
    pub args: Vec<u8>,
    /// When the caller stops waiting; the callee refuses work that arrives after it.
    pub deadline: Deadline,
}

/// Moves calls to their handlers, and replies back.
pub trait Transport: Send + Sync + 'static {
    /// Request/reply: resolves to the handler's JSON reply or the error it (or the way to it)
    /// produced. The caller applies the deadline; a transport may fail earlier.
    fn request(&self, req: Request<'_>) -> BoxFuture<'static, Result<Vec<u8>, RpcError>>;

    /// Fire-and-forget (mqant's `RpcInvokeNR`): hands the call over and returns; the handler's
    /// result is not reported. An error means the call could not even be handed over.
    fn notify(&self, req: Request<'_>) -> Result<(), RpcError>;

    /// False when `target` certainly cannot serve `method`: no process runs the module, or it
    /// runs here without that method. The gate asks before it calls on a client's behalf, so an
    /// unknown route costs nothing and leaves no trace named after it. Default: true.
    fn reaches(&self, target: Target<'_>, method: &str) -> bool {
        let _ = (target, method);
        true
    }

    /// How many instances of `module` a retried call can choose between (fewer than 2: it is
    /// not retried). Default: 0, the transport does not choose instances.
    fn instances(&self, module: &str) -> usize {
        let _ = module;
        0
    }

    /// An instance (server id) of `module` not among `tried`, for a retried call's next
    /// attempt; instances take turns. Default: none.
    fn pick(&self, module: &str, tried: &[Arc<str>]) -> Option<Arc<str>> {
        let _ = (module, tried);
        None
    }

    /// Notes that `instance` did not answer an attempt in time: picks pass it over for a
    /// while when another instance can serve. Default: nothing.
    fn pass_over(&self, instance: &str) {
        let _ = instance;
    }

    /// False while this process's own way to other instances is down (its broker connection
    /// lost, a reconnection under way): a failure then is not the instance's. Default: true.
    fn linked(&self) -> bool {
        true
    }

    /// True when the instances serving `module` declare `method` idempotent (safe to run twice),
    /// so a failed call of it may be retried on another. Default: false.
    fn idempotent(&self, module: &str, method: &str) -> bool {
        let _ = (module, method);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("Chat"), Target::module("Chat"));
        assert_eq!(Target::parse("Chat@s1"), Target::on_server("Chat", "s1"));
        assert_eq!(Target::parse("Chat@"), Target::module("Chat"));
        assert_eq!(Target::on_server("Chat", "s1").to_string(), "Chat@s1");
        assert_eq!(Target::module("Chat").to_string(), "Chat");
    }
}
