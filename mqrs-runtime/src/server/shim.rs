//! What the macro-generated dispatch shims call: argument decoding, reply encoding, the
//! downcast to the module's type. Reached by generated code through `mqrs_runtime::__private`;
//! not part of the public API.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::registry::ModuleRef;
use crate::error::RpcError;

/// Turns a handler's return value into the JSON reply or an error; implemented for `Result<T, E>`.
pub trait IntoReply {
    /// The success type carried back to the caller.
    type Ok;
    /// Encodes the value for the wire.
    fn into_reply(self, method: &str) -> Result<Vec<u8>, RpcError>;
}

impl<T: Serialize, E: std::fmt::Display> IntoReply for Result<T, E> {
    type Ok = T;
    fn into_reply(self, method: &str) -> Result<Vec<u8>, RpcError> {
        match self {
            Ok(v) => serde_json::to_vec(&v).map_err(|e| RpcError::BadReply {
                method: method.to_string(),
                reason: e.to_string(),
            }),
            Err(e) => Err(RpcError::Handler(e.to_string())),
        }
    }
}

/// Decodes a handler's arguments: a JSON array matching the tuple `T`.
pub fn decode_args<T: DeserializeOwned>(method: &str, args: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(args).map_err(|e| RpcError::BadArgs {
        method: method.to_string(),
        reason: e.to_string(),
    })
}

/// Checks that a handler without arguments got none.
///
/// Accepted: no input, `null`, `[]`, and one ignorable argument, because mqant clients send a
/// body with every request: `[{}]` (body `{}`), `[null]`, and `["null"]` (the gate passes a body
/// that does not start with `{` as a string, so a `null` body arrives as the text `null`).
pub fn decode_no_args(method: &str, args: &[u8]) -> Result<(), RpcError> {
    let trimmed = args.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(());
    }
    let ignorable = |v: &serde_json::Value| match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::String(s) => s.trim() == "null",
        _ => false,
    };
    match serde_json::from_slice::<Vec<serde_json::Value>>(trimmed) {
        Ok(v) if v.is_empty() || (v.len() == 1 && ignorable(&v[0])) => Ok(()),
        _ => Err(RpcError::BadArgs {
            method: method.to_string(),
            reason: format!(
                "takes no arguments but got {}",
                String::from_utf8_lossy(&trimmed[..trimmed.len().min(64)])
            ),
        }),
    }
}

/// Encodes call arguments (a tuple) as JSON.
pub fn encode_args<A: Serialize + ?Sized>(method: &str, args: &A) -> Result<Vec<u8>, RpcError> {
    serde_json::to_vec(args).map_err(|e| RpcError::BadArgs {
        method: method.to_string(),
        reason: e.to_string(),
    })
}

/// Downcasts the registered instance to the module type the shim was generated for.
pub fn downcast<M: Send + Sync + 'static>(
    module: ModuleRef,
    method: &str,
) -> Result<std::sync::Arc<M>, RpcError> {
    module.downcast::<M>().map_err(|_| {
        RpcError::Unavailable(format!(
            "`{method}` is registered with an instance of another type"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::decode_no_args;

    #[test]
    fn no_argument_handlers_accept_what_mqant_clients_send() {
        for ok in [
            &b""[..],
            b" ",
            b"null",
            b"[]",
            b"[{}]",
            b"[ { } ]",
            b"[null]",
            br#"["null"]"#,
        ] {
            assert!(
                decode_no_args("M/f", ok).is_ok(),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &br#"[{"a":1}]"#[..],
            b"[1]",
            b"[{}, {}]",
            br#"["x"]"#,
            b"{}",
            b"nul",
        ] {
            let e = decode_no_args("M/f", bad).expect_err("refused");
            assert!(e.to_string().contains("takes no arguments"), "{e}");
        }
    }
}
