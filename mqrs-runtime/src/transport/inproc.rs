//! The in-process transport: modules in one binary. Arguments and replies still cross as
//! JSON, so a handler behaves exactly as it will behind a broker; the session is handed over
//! by value (its clone is what a remote side would decode).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::Transport;
use crate::error::RpcError;
use crate::rpc::dispatch::dispatch;
use crate::rpc::Registry;
use crate::session::Session;

/// Calls handlers registered in this process directly, on the caller's task.
pub struct InProcess {
    registry: Arc<Registry>,
}

impl InProcess {
    /// A transport over `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        InProcess { registry }
    }
}

impl Transport for InProcess {
    fn request(
        &self,
        module: &str,
        method: &str,
        session: Session,
        args: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        match self.registry.resolve(module, method) {
            Ok(route) => dispatch(route, session, args).boxed(),
            Err(e) => futures_util::future::ready(Err(e)).boxed(),
        }
    }
}
