//! Transports carry a call from the caller to the process that runs the handler.
//!
//! Only the in-process transport exists so far; an MQTT transport through a broker will
//! implement the same trait.

mod inproc;

pub use inproc::InProcess;

use futures_util::future::BoxFuture;

use crate::error::RpcError;
use crate::session::Session;

/// Moves one request to its handler and its encoded reply back.
pub trait Transport: Send + Sync + 'static {
    /// Sends `args` (JSON) to `module/method` with `session`; resolves to the JSON reply.
    fn request(
        &self,
        module: &str,
        method: &str,
        session: Session,
        args: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>>;
}
