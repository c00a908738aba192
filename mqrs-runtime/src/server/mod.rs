//! The serving side of RPC: the registry of handlers, `dispatch` (which runs a handler inside
//! its SERVER span, made in `trace::spans`), and what generated shims call (`shim`). Transports
//! reach it through `dispatch`; the calling side is `crate::client`.

pub(crate) mod dispatch;
pub(crate) mod registry;
pub(crate) mod shim;

pub(crate) use registry::{Announced, HandlerFuture, ModuleRef, Registry};
pub(crate) use shim::{decode_args, encode_args};
