//! Errors of the RPC layer: what a caller gets back when a call does not produce a result.
//!
//! An `RpcError` crosses process boundaries intact: its serde form is
//! `{"kind": "<kind>", "detail": ...}` with the same `kind` as [`RpcError::kind`], so a caller
//! behind a broker sees the timeout, unknown method or handler error the callee saw.

use std::time::Duration;

/// Why an RPC call failed. Every variant renders as a sentence a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
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
        /// The timeout that applied (the caller's own, or what was left of its caller's budget).
        #[serde(rename = "timeout_ms", with = "millis")]
        timeout: Duration,
    },
    /// The call's deadline had passed before the handler could start, so it never ran: the
    /// caller's own caller had already used up the time budget, or the request waited too long
    /// on its way.
    #[error("deadline exceeded: `{0}` was not run because its caller's time budget was used up")]
    DeadlineExceeded(String),
    /// No process serving the target could be reached (no broker connection, or no subscriber).
    #[error("`{target}` is unreachable: {reason}")]
    Unreachable {
        /// `Module` or `Module@serverId`.
        target: String,
        /// What the transport saw.
        reason: String,
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
    #[serde(rename = "handler_error")]
    Handler(String),
    /// The handler panicked; the panic was contained.
    #[error("handler `{0}` panicked")]
    #[serde(rename = "panic")]
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
            RpcError::DeadlineExceeded(_) => "deadline_exceeded",
            RpcError::Unreachable { .. } => "unreachable",
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

/// `Duration` as whole milliseconds on the wire.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<RpcError> {
        let s = || "x".to_string();
        vec![
            RpcError::UnknownModule(s()),
            RpcError::UnknownMethod {
                module: s(),
                method: s(),
            },
            RpcError::NotClientReachable(s()),
            RpcError::Timeout {
                method: s(),
                timeout: Duration::from_millis(1500),
            },
            RpcError::DeadlineExceeded(s()),
            RpcError::Unreachable {
                target: s(),
                reason: s(),
            },
            RpcError::BadArgs {
                method: s(),
                reason: s(),
            },
            RpcError::BadReply {
                method: s(),
                reason: s(),
            },
            RpcError::Handler(s()),
            RpcError::Panicked(s()),
            RpcError::Unavailable(s()),
        ]
    }

    #[test]
    fn crosses_the_wire_intact_with_its_kind() {
        for e in every_kind() {
            let v = serde_json::to_value(&e).expect("serializes");
            assert_eq!(v["kind"], e.kind(), "{v}");
            let back: RpcError = serde_json::from_value(v).expect("deserializes");
            assert_eq!(back, e);
        }
        let t = serde_json::to_value(RpcError::Timeout {
            method: "M/f".into(),
            timeout: Duration::from_millis(1500),
        })
        .expect("json");
        assert_eq!(
            t,
            serde_json::json!({"kind": "timeout", "detail": {"method": "M/f", "timeout_ms": 1500}})
        );
    }

    #[test]
    fn unknown_kinds_are_an_error_not_a_panic() {
        assert!(serde_json::from_str::<RpcError>(r#"{"kind":"martian","detail":"?"}"#).is_err());
        assert!(serde_json::from_str::<RpcError>("null").is_err());
    }
}
