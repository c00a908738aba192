//! The in-process transport: modules in one binary. Arguments and replies still cross as
//! JSON, so a handler behaves exactly as it will behind a broker; the session is handed over
//! by value (its clone is what a remote side would decode).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Request, Transport};
use crate::error::RpcError;
use crate::server::dispatch::dispatch;
use crate::server::Registry;

/// Calls handlers registered in this process directly, on the caller's task.
pub struct InProcess {
    registry: Arc<Registry>,
}

impl InProcess {
    /// A transport over `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        InProcess { registry }
    }

    /// True when a module of that name runs in this process.
    pub fn serves(&self, module: &str) -> bool {
        self.registry.has_module(module)
    }
}

impl Transport for InProcess {
    fn request(&self, req: Request<'_>) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        match self.registry.resolve(req.target.module, req.method) {
            Ok(route) => dispatch(route, req.session, req.args, req.deadline).boxed(),
            Err(e) => futures_util::future::ready(Err(e)).boxed(),
        }
    }

    fn notify(&self, req: Request<'_>) -> Result<(), RpcError> {
        let route = self.registry.resolve(req.target.module, req.method)?;
        tokio::spawn(async move {
            if let Err(e) = dispatch(route.clone(), req.session, req.args, req.deadline).await {
                tracing::warn!(method = %route.name, error = %e, "notified handler failed");
            }
        });
        Ok(())
    }

    fn reaches(&self, target: super::Target<'_>, method: &str) -> bool {
        self.registry.resolve(target.module, method).is_ok()
    }
}
