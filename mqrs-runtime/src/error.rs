//! Errors of the RPC layer: what a caller gets back when a call does not produce a result.

use std::time::Duration;

/// Why an RPC call failed. Every variant renders as a sentence a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No module of that name is running in this app.
    #[error("unknown module `{0}`")]
    UnknownModule(String),
    /// The module runs but has no handler of that name.
    #[error("module `{module}` has no handler `{method}`")]
    UnknownMethod {
        /// Module that was asked.
        module: String,
        /// Handler that was asked for.
        method: String,
    },
    /// The handler is not one of the `HD_` handlers that clients may call.
    #[error("`{0}` is not reachable from clients: only handlers named HD_* are")]
    NotClientReachable(String),
    /// The call did not complete within the configured RPC timeout.
    #[error("call to `{method}` timed out after {}ms", timeout.as_millis())]
    Timeout {
        /// `Module/method` that timed out.
        method: String,
        /// The timeout that applied.
        timeout: Duration,
    },
    /// The arguments could not be encoded by the caller or decoded by the handler.
    #[error("bad arguments for `{method}`: {reason}")]
    BadArgs {
        /// `Module/method` called.
        method: String,
        /// What serde said.
        reason: String,
    },
    /// The reply could not be encoded by the handler or decoded by the caller.
    #[error("bad reply from `{method}`: {reason}")]
    BadReply {
        /// `Module/method` called.
        method: String,
        /// What serde said.
        reason: String,
    },
    /// The handler ran and returned an error; the text is its `Display`.
    #[error("{0}")]
    Handler(String),
    /// The handler panicked; the panic was contained.
    #[error("handler `{0}` panicked")]
    Panicked(String),
    /// The app is shutting down or the transport is gone.
    #[error("transport unavailable: {0}")]
    Unavailable(String),
}

impl RpcError {
    /// A short, stable name for the failure, used as the `error.type` span attribute.
    pub fn kind(&self) -> &'static str {
        match self {
            RpcError::UnknownModule(_) => "unknown_module",
            RpcError::UnknownMethod { .. } => "unknown_method",
            RpcError::NotClientReachable(_) => "not_client_reachable",
            RpcError::Timeout { .. } => "timeout",
            RpcError::BadArgs { .. } => "bad_args",
            RpcError::BadReply { .. } => "bad_reply",
            RpcError::Handler(_) => "handler_error",
            RpcError::Panicked(_) => "panic",
            RpcError::Unavailable(_) => "unavailable",
        }
    }
}

/// Lets handlers that return `Result<T, String>` use `?` on RPC calls, as mqant's string errors do.
impl From<RpcError> for String {
    fn from(e: RpcError) -> String {
        e.to_string()
    }
}
