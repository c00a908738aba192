//! RPC: the calling side ([`Caller`](call::Caller), CLIENT span), the serving side (`dispatch`,
//! SERVER span), the registry of handlers, and what generated shims call (`shim`). Spans are
//! made in `trace::spans`.

pub mod call;
pub(crate) mod dispatch;
pub(crate) mod registry;
pub(crate) mod shim;

pub(crate) use registry::{HandlerFuture, ModuleRef, Registry};
pub use registry::{Lifecycle, RpcModule};
pub(crate) use shim::{decode_args, encode_args};
